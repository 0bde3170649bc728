# SPDX-License-Identifier: MIT
"""No fault turns enforcement off: reload faults, log sink faults, crashes, cleanup.

Each test runs the real daemon (or the real Service) in the test's own
namespaces with a real diversion, and checks that the policy is still enforced
after the fault, or, for a crash, that fail_open decides what the kernel does.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from shim.daemon.control import query
from shim.adapters.diversion import cleanup_all, ipt_chain_name, nft_table_name
from shim.lab.netns import Topology, in_netns
from shim.daemon.notify import Notifier
from shim.lab.packets import icmp6_packet
from shim.lab.runner import ShimProcess
from shim.daemon.service import Service
from tests.integration.wire import A, B, Wire

pytestmark = pytest.mark.netns

REPO = Path(__file__).resolve().parent.parent.parent
DROP_ECHO = '[[rule]]\nname = "drop-echo"\ntype = "echo-request"\nverdict = "drop"\n'
ACCEPT_ECHO = '[[rule]]\nname = "accept-echo"\ntype = "echo-request"\nverdict = "accept"\n'


def _echo(tag: bytes) -> bytes:
    return icmp6_packet(A, B, 128, 0, b"\x00\x09\x00\x01" + tag)


def _break_non_utf8(cfg: Path) -> str:
    (cfg / "rules.d" / "50-bad.toml").write_bytes(b'[[rule]]\nname = "caf\xe9"\n')
    return "not UTF-8"


def _break_deep(cfg: Path) -> str:
    (cfg / "rules.d" / "50-bad.toml").write_text("x = " + "[" * 50_000 + "]" * 50_000 + "\n")
    return "nested too deep"


def _break_loop(cfg: Path) -> str:
    (cfg / "rules.d" / "50-bad.toml").symlink_to(cfg / "rules.d" / "50-bad.toml")
    return "symlink loop"


def _break_main(cfg: Path) -> str:
    (cfg / "icmp6-shim.toml").rename(cfg / "icmp6-shim.toml.moved")
    return "cannot read: missing"


BREAKS = {"non-utf8": _break_non_utf8, "deep": _break_deep, "symlink-loop": _break_loop,
          "main-missing": _break_main}


class TestReloadFaults:
    @pytest.mark.parametrize("workers", [1, 2])
    @pytest.mark.parametrize("fault", sorted(BREAKS))
    def test_broken_files_keep_the_rules(
        self, three_node: Topology, shim_on: Callable[..., ShimProcess],
        config_dir: Callable[..., Path], wire: Callable[..., Wire], fault: str, workers: int,
    ) -> None:
        """A reload of a broken directory: the daemon stays up, the user rule is still enforced."""
        cfg = config_dir(f"[queue]\nworkers = {workers}\n" + DROP_ECHO)
        shim = shim_on(three_node.ns("g"), cfg, extra=())
        w = wire()
        expected = BREAKS[fault](cfg)
        shim.signal(signal.SIGHUP)
        status = shim.wait_notify("READY", "1")
        assert "reload failed" in status["STATUS"] and expected in status["STATUS"], status
        w.send(_echo(b"after-" + fault.encode()))
        assert w.arrived("b", b"after-" + fault.encode()) == 0  # still dropped
        snap = query(shim.control_socket)
        assert snap["reload_failures"] == 1 and expected in str(snap["last_reload_error"])
        assert shim.proc is not None and shim.proc.poll() is None
        assert expected in shim.wait_notify("STATUS", timeout=5)["STATUS"]  # stays in STATUS


class TestReloadOffThePacketPath:
    def test_big_reload_while_pings_stream(
        self, three_node: Topology, shim_on: Callable[..., ShimProcess],
        config_dir: Callable[..., Path], wire: Callable[..., Wire],
    ) -> None:
        """A reload of 20,000 rules: packets sent meanwhile get verdicts while it parses."""
        from shim.config.loader import MAX_RULES

        cfg = config_dir(ACCEPT_ECHO)
        shim = shim_on(three_node.ns("g"), cfg, extra=())
        w = wire()
        w.flush()
        big = "".join(f'[[rule]]\nname = "r{i}"\ntype = "echo-request"\nverdict = "drop"\n'
                      f'src = "2001:db8:{i // 256 + 0x100:x}:{i % 256:x}::/64"\n'
                      for i in range(MAX_RULES - 1))
        (cfg / "rules.d" / "90-big.toml").write_text(big)
        stop = threading.Event()
        sent = 0

        def stream() -> None:
            nonlocal sent
            while not stop.is_set() and sent < 20_000:  # bounded in count and (below) time
                w.send(_echo(b"during%06d" % sent))
                sent += 1
                time.sleep(0.002)

        sender = threading.Thread(target=stream)
        sender.start()
        try:
            time.sleep(0.3)
            shim.signal(signal.SIGHUP)
            shim.wait_notify("READY", "1", timeout=120)
        finally:
            stop.set()
            sender.join(10)
        done = shim.next_event("reload_ok", timeout=5)
        assert done is not None, shim.events[-5:]
        assert isinstance(done["rules"], int) and done["rules"] > MAX_RULES - 1  # the big table is in
        # Judged by the loop while the reload thread parsed and compiled.
        assert isinstance(done["judged_during"], int) and done["judged_during"] > 0, done
        assert w.arrived("b", b"during", timeout=1.0, contains=True) >= 1


class TestLogSinkFaults:
    @pytest.mark.parametrize("sink", ["dev-full", "closed-pipe"])
    def test_stdout_failure_keeps_judging(
        self, three_node: Topology, config_dir: Callable[..., Path],
        wire: Callable[..., Wire], sink: str,
    ) -> None:
        """stdout on /dev/full or a pipe nobody reads: verdicts go on, failures are counted apart."""
        if sink == "dev-full":
            fd = os.open("/dev/full", os.O_WRONLY)
        else:
            r, fd = os.pipe()
            os.close(r)
        shim = ShimProcess(config_dir(DROP_ECHO), netns=three_node.ns("g"), stdout=fd)
        try:
            shim.start()
            os.close(fd)
            shim.wait_ready()
            w = wire()
            for i in range(5):
                w.send(_echo(b"logfault%d" % i))  # --trace: a log line per packet
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                snap = query(shim.control_socket)
                if snap["types"].get("128", 0) >= 5:  # type: ignore[union-attr]
                    break
                time.sleep(0.2)
            assert snap["types"]["128"] == 5 and snap["errors"] == 0  # type: ignore[index]
            log = snap["log"]
            assert isinstance(log, dict) and log["failures"] >= 1 and log["sink"] != "stdout"
            assert w.arrived("b", b"logfault4") == 0  # still dropped
            assert shim.stop() == 0
            assert "Traceback" not in "\n".join(shim.stderr_lines)
        finally:
            shim.close()


class _Crashing(Service):
    """A Service whose loop fails with an unexpected exception once it serves."""

    def _loop(self, wake: object) -> None:
        raise RuntimeError("injected crash")


def _diversion_present(ns: str, queue: int = 0) -> bool:
    table = subprocess.run(["ip", "netns", "exec", ns, "ip6tables", "-t", "mangle", "-S",
                            ipt_chain_name(queue)], capture_output=True, timeout=30)
    nft = subprocess.run(["ip", "netns", "exec", ns, "nft", "list", "table", "inet",
                          nft_table_name(queue)], capture_output=True, timeout=30)
    return table.returncode == 0 or nft.returncode == 0


class TestCrash:
    @pytest.mark.parametrize("fail_open", [False, True])
    def test_crash_follows_fail_open(self, three_node: Topology, config_dir: Callable[..., Path],
                                     fail_open: bool) -> None:
        """A crash keeps the diversion when fail-closed (the kernel drops) and removes it when fail-open."""
        ns = three_node.ns("g")
        cfg = config_dir(f"[queue]\nfail_open = {str(fail_open).lower()}\n" + DROP_ECHO)
        with in_netns(ns):
            svc = _Crashing(cfg, notifier=Notifier({}), control_socket="")
            with pytest.raises(RuntimeError, match="injected crash"):
                svc.run()
        try:
            assert _diversion_present(ns) is not fail_open
        finally:
            with in_netns(ns):
                cleanup_all()


def _start_then_die(ns: str, cfg: Path) -> None:
    """A daemon that installed its diversion and died without a stop: a child process that
    starts a Service and exits, so the kernel closes its sockets as after a real death (the
    queue unbinds; a fail-open nft table, owned by its socket, goes with it). In this
    process the socket would outlive the test and keep the table from `cleanup`."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            with in_netns(ns):
                _Crashing(cfg, notifier=Notifier({}), control_socket="").start()
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


class TestCleanupUnlessFailedClosed:
    @pytest.mark.parametrize(("result", "fail_open", "kept"), [
        ("exit-code", False, True), ("watchdog", False, True), ("exit-code", True, False),
        ("success", False, False)])
    def test_exec_stop_post(self, three_node: Topology, config_dir: Callable[..., Path],
                            result: str, fail_open: bool, kept: bool) -> None:
        """ExecStopPost keeps the diversion only after a failure with fail_open = false."""
        ns = three_node.ns("g")
        cfg = config_dir(f"[queue]\nfail_open = {str(fail_open).lower()}\n")
        _start_then_die(ns, cfg)
        env = dict(os.environ, SERVICE_RESULT=result, EXIT_CODE="exited", EXIT_STATUS="70")
        out = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-m", "shim", "cleanup",
                              "--unless-failed-closed", "--config", str(cfg)],
                             capture_output=True, text=True, timeout=60, cwd=REPO, env=env)
        try:
            assert out.returncode == 0, out.stderr
            assert out.stdout.startswith("kept the diversion") is kept, out.stdout
            assert _diversion_present(ns) is kept
        finally:
            with in_netns(ns):
                cleanup_all()

    @pytest.mark.parametrize("unless_failed_closed", [False, True], ids=["cleanup", "exec-stop-post"])
    def test_a_running_instance_keeps_its_diversion(
        self, three_node: Topology, shim_on: Callable[..., ShimProcess],
        config_dir: Callable[..., Path], unless_failed_closed: bool,
    ) -> None:
        """While a process reads the instance's queue, cleanup leaves its diversion and says
        why: by hand that is an error (exit 1); as ExecStopPost after a second start that
        failed at the bind (fail-open, so it would otherwise remove), it is the outcome."""
        ns = three_node.ns("g")
        cfg = config_dir("[queue]\nfail_open = true\n")
        shim = shim_on(ns, cfg, extra=())
        argv = ["ip", "netns", "exec", ns, sys.executable, "-m", "shim", "cleanup", "--config", str(cfg)]
        env = dict(os.environ)
        if unless_failed_closed:
            argv.append("--unless-failed-closed")
            env.update(SERVICE_RESULT="exit-code", EXIT_CODE="exited", EXIT_STATUS="3")
        out = subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=REPO, env=env)
        assert out.returncode == (0 if unless_failed_closed else 1), out.stderr
        assert out.stdout.startswith("kept the diversion: queue 0") and "bound" in out.stdout, out.stdout
        assert _diversion_present(ns)
        assert shim.stop() == 0
        assert not _diversion_present(ns)
