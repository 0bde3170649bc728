# SPDX-License-Identifier: MIT
"""The daemon as systemd sees it (notify, reload, watchdog) and its counters."""

from __future__ import annotations

import json
import re
import signal
import struct
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from shim.daemon.control import query
from shim.lab.netns import Topology
from shim.lab.packets import icmp6_packet
from shim.lab.runner import ShimProcess
from tests.integration.wire import A, B, Wire

pytestmark = pytest.mark.netns

DROP_ECHO = '[[rule]]\nname = "drop-echo"\ntype = "echo-request"\nverdict = "drop"\n'
ACCEPT_ECHO = '[[rule]]\nname = "accept-echo"\ntype = "echo-request"\nverdict = "accept"\n'
BROKEN = '[[rule]]\nname = "broken"\ntype = "no-such-type"\nverdict = "drop"\n'
NO_BUDGET = "[overload]\nbudget = false\n"


def _echo(tag: bytes, src: str = A) -> bytes:
    return icmp6_packet(src, B, 128, 0, b"\x00\x09\x00\x01" + tag)


class TestNotify:
    def test_ready_status_reload_watchdog_stopping(
        self, three_node: Topology, config_dir: Callable[..., Path],
    ) -> None:
        """READY with STATUS, watchdog pings, RELOADING+MONOTONIC_USEC then READY on SIGHUP, STOPPING on SIGTERM."""
        with ShimProcess(config_dir(""), netns=three_node.ns("g"), watchdog_usec=400_000) as shim:
            ready = shim.wait_notify("READY", "1")
            assert "packets" in ready.get("STATUS", "")
            shim.wait_notify("WATCHDOG", "1", timeout=3)
            shim.signal(signal.SIGHUP)
            reloading = shim.wait_notify("RELOADING", "1")
            assert int(reloading["MONOTONIC_USEC"]) > 0
            assert "reloads" in shim.wait_notify("READY", "1").get("STATUS", "")
            shim.wait_notify("WATCHDOG", "1", timeout=3)
            shim.signal(signal.SIGTERM)
            shim.wait_notify("STOPPING", "1")
            assert shim.proc is not None and shim.proc.wait(15) == 0


class TestReload:
    def test_bad_config_keeps_the_old_table(
        self, three_node: Topology, shim_on: Callable[..., ShimProcess],
        config_dir: Callable[..., Path], wire: Callable[..., Wire],
    ) -> None:
        """A config that fails validation changes nothing and says so in STATUS; a good one switches."""
        cfg = config_dir(DROP_ECHO)
        shim = shim_on(three_node.ns("g"), cfg)
        w = wire()
        w.send(_echo(b"before"))
        assert w.arrived("b", b"before") == 0
        (cfg / "icmp6-shim.toml").write_text(BROKEN)
        shim.signal(signal.SIGHUP)
        status = shim.wait_notify("READY", "1")
        assert "reload failed" in status["STATUS"] and "no-such-type" in status["STATUS"]
        w.send(_echo(b"after-bad"))
        assert w.arrived("b", b"after-bad") == 0
        (cfg / "icmp6-shim.toml").write_text(ACCEPT_ECHO)
        shim.signal(signal.SIGHUP)
        shim.wait_notify("READY", "1")
        w.send(_echo(b"after-good"))
        assert w.arrived("b", b"after-good") == 1
        snap = query(shim.control_socket)
        assert snap["reloads"] == 1 and snap["reload_failures"] == 1

    def test_steady_stream_through_reloads_loses_nothing(
        self, three_node: Topology, shim_on: Callable[..., ShimProcess],
        config_dir: Callable[..., Path], wire: Callable[..., Wire],
    ) -> None:
        """Packets sent while reloading good and bad configs: each judged once, none lost, verdicts switch."""
        # Up to ~2000 echoes a second from one link: over the default per-interface budget,
        # which would cut some in the kernel before the queue. This test is about reloads.
        cfg = config_dir(DROP_ECHO + NO_BUDGET)
        shim = shim_on(three_node.ns("g"), cfg, extra=())
        w = wire()
        w.flush()
        total, stop = 3000, threading.Event()
        arrived: list[int] = []

        def listen() -> None:
            sock = w.rx["b"]
            sock.settimeout(0.2)
            while not stop.is_set():
                try:
                    data = sock.recv(2048)
                except TimeoutError:
                    continue
                if data[:1] == b"\x80" and b"stream" in data:
                    arrived.append(struct.unpack("!I", data[-4:])[0])

        listener = threading.Thread(target=listen)
        listener.start()
        try:
            for i in range(total):
                w.send(_echo(b"stream" + struct.pack("!I", i)))
                if i % 500 == 250:
                    body = (BROKEN, ACCEPT_ECHO, DROP_ECHO)[(i // 500) % 3]
                    (cfg / "icmp6-shim.toml").write_text(body)
                    shim.signal(signal.SIGHUP)
                time.sleep(0.0005)
            time.sleep(1.0)
        finally:
            stop.set()
            listener.join(5)
        snap = query(shim.control_socket)
        hits = {r["rule"]: r["hits"] for r in snap["rules"]}  # type: ignore[union-attr]
        assert snap["types"]["128"] == total  # type: ignore[index]
        assert hits.get("drop-echo", 0) + hits.get("accept-echo", 0) == total
        assert hits["accept-echo"] == len(arrived) == len(set(arrived))
        assert 0 < hits["drop-echo"] < total
        assert all(k["queue_dropped"] == 0 and k["user_dropped"] == 0 for k in snap["kernel"])  # type: ignore[union-attr, index]
        assert snap["reload_failures"] >= 1 and snap["reloads"] >= 2


class TestStats:
    def test_stats_command_human_and_json(
        self, three_node: Topology, shim_on: Callable[..., ShimProcess],
        config_dir: Callable[..., Path], wire: Callable[..., Wire],
    ) -> None:
        """`icmp6-shim stats` shows per-rule hits, per-type counts and the kernel's queue counters."""
        shim = shim_on(three_node.ns("g"), config_dir(DROP_ECHO))
        w = wire()
        for i in range(5):
            w.send(_echo(b"stats%d" % i))
        time.sleep(0.5)
        out = three_node.run("g", sys.executable, "-m", "shim", "stats", "--json",
                             "--socket", shim.control_socket)
        assert out.returncode == 0, out.stderr
        snap = json.loads(out.stdout)
        assert {r["rule"]: r["hits"] for r in snap["rules"]}["drop-echo"] == 5
        assert snap["types"]["128"] == 5 and snap["kernel"][0]["queue"] == 0
        human = three_node.run("g", sys.executable, "-m", "shim", "stats", "--socket", shim.control_socket)
        assert "drop-echo" in human.stdout and "kernel queue 0" in human.stdout

    def test_stats_by_config_after_a_failed_reload(
        self, three_node: Topology, config_dir: Callable[..., Path], wire: Callable[..., Wire],
    ) -> None:
        """The config no longer compiles: `stats --config` still answers, JSON and human,
        with the reload error, and the old table still drops."""
        cfg = config_dir(DROP_ECHO)
        with ShimProcess(cfg, netns=three_node.ns("g"), extra=()) as shim:
            (cfg / "icmp6-shim.toml").write_text(f'[control]\nsocket = "{shim.control_socket}"\n'
                                                 + DROP_ECHO)
            shim.wait_notify("READY", "1")
            (cfg / "icmp6-shim.toml").write_text(f'[control]\nsocket = "{shim.control_socket}"\n'
                                                 + BROKEN)
            shim.signal(signal.SIGHUP)
            assert "reload failed" in shim.wait_notify("READY", "1")["STATUS"]
            w = wire()
            w.send(_echo(b"kept"))
            assert w.arrived("b", b"kept") == 0
            out = three_node.run("g", sys.executable, "-m", "shim", "stats", "--json",
                                 "--config", str(cfg))
            assert out.returncode == 0, out.stderr
            snap = json.loads(out.stdout)
            assert snap["reload_failures"] == 1 and "no-such-type" in snap["last_reload_error"]
            human = three_node.run("g", sys.executable, "-m", "shim", "stats", "--config", str(cfg))
            assert human.returncode == 0, human.stderr
            assert "last reload failed, old table kept" in human.stdout and "drop-echo" in human.stdout

    def test_stats_without_daemon_is_one_line(self, tmp_path: Path) -> None:
        """No daemon: a precise line and a non-zero exit."""
        from shim.cli.main import main
        assert main(["stats", "--socket", str(tmp_path / "none.sock")]) == 1


class TestWorkers:
    def test_two_workers_share_the_load_and_a_dead_one_is_restarted(
        self, three_node: Topology, shim_on: Callable[..., ShimProcess],
        config_dir: Callable[..., Path], wire: Callable[..., Wire], backend: str,
    ) -> None:
        """workers = 2: one rule queues to 0-1, flows spread over both, counters add up, a
        killed worker comes back."""
        shim = shim_on(three_node.ns("g"), config_dir("[queue]\nworkers = 2\n" + ACCEPT_ECHO), extra=())
        if backend == "nft":
            rules = three_node.run("g", "nft", "list", "table", "inet", "icmp6_shim_q0").stdout
            # nft lists the statement in its own words: `queue num 0-1 bypass` comes back
            # as `queue flags bypass to 0-1` from nftables 1.0 (Debian 12) on.
            queue = r"queue (?:num |(?:flags \S+ )?to )"
            assert re.search(queue + r"0-1\b", rules), rules
            assert not re.search(queue + r"\d+(?!-)\b", rules), rules
        else:
            rules = three_node.run("g", "ip6tables-save", "-t", "mangle").stdout
            assert "--queue-balance 0:1" in rules and "--queue-num" not in rules, rules
        w = wire()
        sources = [f"2001:db8:1::{i:x}" for i in range(0x100, 0x120)]
        for i in range(320):
            w.send(_echo(b"wk%d" % i, src=sources[i % len(sources)]))
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            snap = query(shim.control_socket)
            if snap["types"].get("128", 0) >= 320:  # type: ignore[union-attr]
                break
            time.sleep(0.3)
        assert snap["types"]["128"] == 320  # type: ignore[index]
        per_worker = [x["packets"] for x in snap["workers"]]  # type: ignore[union-attr, index]
        assert len(per_worker) == 2 and all(n > 0 for n in per_worker), per_worker
        victim = snap["workers"][0]["pid"]  # type: ignore[index]
        import os
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            snap = query(shim.control_socket)
            if snap["worker_failures"] == 1 and snap["workers"][0]["pid"] != victim:  # type: ignore[index]
                break
            time.sleep(0.2)
        assert snap["worker_failures"] == 1
        assert shim.next_event("worker_died", timeout=1, queue=0) is not None or any(
            e.get("event") == "worker_died" for e in shim.events)
        time.sleep(1.0)
        w.flush()  # b's raw socket buffer holds ~200 messages: empty it before counting again
        for i in range(64):
            w.send(_echo(b"after%d" % i, src=sources[i % len(sources)]))
        assert w.arrived("b", b"after63", timeout=2, icmp_type=128) == 1  # not an error quoting it


    @pytest.mark.parametrize("fail_open", [True, False])
    def test_workers_die_with_a_killed_supervisor(
        self, three_node: Topology, shim_on: Callable[..., ShimProcess],
        config_dir: Callable[..., Path], wire: Callable[..., Wire], fail_open: bool,
    ) -> None:
        """SIGKILL of the supervisor (workers = 2): both workers exit and free their queues; the
        kernel's bypass then follows fail_open (unjudged echoes pass, or are dropped)."""
        import os

        from shim.adapters.diversion import cleanup_all
        from shim.lab.netns import in_netns

        cfg = config_dir(f"[queue]\nworkers = 2\nfail_open = {str(fail_open).lower()}\n" + DROP_ECHO)
        shim = shim_on(three_node.ns("g"), cfg, extra=())
        w = wire()
        w.send(_echo(b"judged"))
        assert w.arrived("b", b"judged") == 0
        workers = [x["pid"] for x in query(shim.control_socket)["workers"]]  # type: ignore[union-attr]
        assert len(workers) == 2 and all(workers)
        shim.signal(signal.SIGKILL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(_running(p) for p in workers):
            time.sleep(0.1)
        try:
            assert not any(_running(p) for p in workers), [_running(p) for p in workers]
            bound = three_node.run("g", "cat", "/proc/net/netfilter/nfnetlink_queue").stdout
            assert [ln.split()[0] for ln in bound.splitlines() if ln.split()[:1] in (["0"], ["1"])] == []
            w.flush()
            sources = [f"2001:db8:1::{i:x}" for i in range(0x100, 0x110)]  # both queues' flows
            for i in range(16):
                w.send(_echo(b"orphan%02d" % i, src=sources[i]))
            if fail_open:  # bypass: the last echo of both queues' flows gets through, unjudged
                # Requests only: b's reply to the spoofed source comes back as G's Destination
                # Unreachable quoting it, within a window scaled for emulation.
                assert w.arrived("b", b"orphan15", timeout=1.0, icmp_type=128) == 1
            else:
                assert w.arrived("b", b"orphan", timeout=1.0, contains=True) == 0
        finally:
            for pid in [p for p in workers if _running(p)]:  # an orphan must not outlive a failure
                os.kill(pid, signal.SIGKILL)
            with in_netns(three_node.ns("g")):
                cleanup_all()


def _running(pid: int) -> bool:
    """Whether `pid` still runs (a zombie holds no socket: it counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


class TestQueueOverflow:
    @pytest.mark.parametrize("fail_open", [True, False])
    def test_full_queue_fails_open_or_closed_and_is_counted(
        self, three_node: Topology, shim_on: Callable[..., ShimProcess],
        config_dir: Callable[..., Path], wire: Callable[..., Wire], fail_open: bool,
    ) -> None:
        """With the reader stalled, packets beyond maxlen pass (fail-open) or drop and are counted."""
        cfg = config_dir(f"[queue]\nmaxlen = 8\nqueue_fail_open = {str(fail_open).lower()}\n" + DROP_ECHO)
        shim = shim_on(three_node.ns("g"), cfg, extra=())
        w = wire()
        # Resolve neighbours first: with the reader stalled, g's own ND would sit in the queue.
        three_node.run("a", "ping", "-6", "-c", "1", "-W", "1", "2001:db8:2::b")  # dropped; ND is done
        w.flush()
        time.sleep(0.3)
        before = {r["rule"]: r["hits"] for r in query(shim.control_socket)["rules"]}  # type: ignore[union-attr]
        shim.signal(signal.SIGSTOP)
        try:
            for i in range(40):
                w.send(_echo(b"ovf%02d" % i))
            arrived = w.arrived("b", b"ovf", timeout=1.0, contains=True)
        finally:
            shim.signal(signal.SIGCONT)
        time.sleep(0.5)
        snap = query(shim.control_socket)
        kernel = snap["kernel"][0]  # type: ignore[index]
        hits = {r["rule"]: r["hits"] - before.get(r["rule"], 0) for r in snap["rules"]}  # type: ignore[union-attr]
        # The 8 slots are shared with g's own ND traffic, so count rather than assume.
        assert 1 <= hits["drop-echo"] <= 8  # the queued ones are judged after SIGCONT
        if fail_open:
            assert arrived + hits["drop-echo"] == 40 and kernel["queue_dropped"] == 0
        else:
            assert arrived == 0 and kernel["queue_dropped"] >= 40 - hits["drop-echo"]


class TestPrometheus:
    def test_metrics_endpoint_on_loopback(
        self, three_node: Topology, shim_on: Callable[..., ShimProcess],
        config_dir: Callable[..., Path], wire: Callable[..., Wire],
    ) -> None:
        """With [metrics] prometheus set, /metrics on loopback shows rule hits and kernel counters."""
        import urllib.request

        from shim.lab.netns import in_netns

        shim = shim_on(three_node.ns("g"), config_dir('[metrics]\nprometheus = "127.0.0.1:9477"\n' + DROP_ECHO))
        w = wire()
        for i in range(3):
            w.send(_echo(b"prom%d" % i))
        time.sleep(0.5)
        with in_netns(three_node.ns("g")):
            body = urllib.request.urlopen("http://127.0.0.1:9477/metrics", timeout=5).read().decode()
        assert 'icmp6_shim_rule_hits_total{origin="user",rule="drop-echo",verdict="drop"} 3.0' in body
        assert 'icmp6_shim_kernel_queue{counter="queue_dropped",queue="0"} 0.0' in body
        assert shim.events


class TestShadow:
    def test_shadow_rules_are_counted_never_enforced(
        self, three_node: Topology, shim_on: Callable[..., ShimProcess],
        config_dir: Callable[..., Path], wire: Callable[..., Wire],
    ) -> None:
        """A shadow file that would drop Echo: packets still arrive; each difference is counted and logged."""
        cfg = config_dir('[engine]\nkind = "netfilterqueue"\n[shadow]\nrules = "candidate.toml"\n')
        (cfg / "candidate.toml").write_text(
            '[[rule]]\nname = "try-drop-echo"\ntype = "echo-request"\nverdict = "drop"\n')
        shim = shim_on(three_node.ns("g"), cfg, extra=())
        w = wire()
        w.flush()
        for i in range(4):
            w.send(_echo(b"shadow%d" % i))
        assert w.arrived("b", b"shadow3", timeout=1.0) == 1
        snap = query(shim.control_socket)
        shadow = snap["shadow"]
        assert isinstance(shadow, dict) and shadow["differences"] == 4
        assert shadow["pairs"][0] == {"enforced": "transit-echo-request", "shadow": "try-drop-echo", "packets": 4}
        assert shim.next_event("shadow_diff", shadow="try-drop-echo") is not None
        human = three_node.run("g", sys.executable, "-m", "shim", "stats", "--socket", shim.control_socket)
        assert "with another verdict" in human.stdout, human.stdout
        assert "4  enforced transit-echo-request, shadow try-drop-echo" in human.stdout

    def test_shadow_needs_the_netfilterqueue_engine(self, config_dir: Callable[..., Path]) -> None:
        """Shadow with the batched engine is a config error naming the key."""
        from shim.config.loader import load_config
        from shim.core.errors import ConfigError

        cfg = config_dir('[engine]\nkind = "batched"\n[shadow]\nrules = "c.toml"\n')
        (cfg / "c.toml").write_text("")
        with pytest.raises(ConfigError, match=r"\[shadow\] rules.*netfilterqueue"):
            load_config(cfg)
