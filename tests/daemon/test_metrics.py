# SPDX-License-Identifier: MIT
"""The metrics endpoint is bounded (connections, deadline, request size), renders
valid Prometheus text, and its unix socket admits root and [metrics] group only."""

from __future__ import annotations

import grp
import os
import select
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from shim.core.errors import EnvironmentProblem
from shim.daemon.metrics import MetricsServer, MetricsSettings, render, scrape_unix

SNAP: dict[str, object] = {
    "verdicts": {"accept": 5, "drop": 2},
    "errors": 1, "reloads": 3, "reload_failures": 0,
    "rules": [{"rule": "drop-echo", "origin": "user", "verdict": "drop", "hits": 2},
              {"rule": "odd\\name\"x", "origin": "default", "verdict": "accept", "hits": 5}],
    "types": {"128": 7},
    "kernel": [{"queue": 0, "queue_total": 0, "queue_dropped": 4, "user_dropped": 0}],
}


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _turn(server: MetricsServer, wait_ms: int = 20) -> None:
    """One turn of the daemon's loop: poll what the server asks for, then serve."""
    poller = select.poll()
    for fd, ev in server.interest().items():
        poller.register(fd, ev)
    poller.poll(wait_ms)
    server.serve_pending()


def _serve_while(server: MetricsServer, busy: Callable[[], bool], limit_s: float = 10.0) -> None:
    deadline = time.monotonic() + limit_s
    while busy() and time.monotonic() < deadline:
        _turn(server, 50)


def _scrape_in_thread(path: str) -> tuple[threading.Thread, list[object]]:
    out: list[object] = []

    def run() -> None:
        try:
            out.append(scrape_unix(path, timeout=5.0))
        except Exception as exc:  # noqa: BLE001 - the test inspects it
            out.append(exc)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, out


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A directory every user may traverse (pytest's tmp_path is 0700: nobody could not even try)."""
    d = Path(tempfile.mkdtemp(prefix="i6metrics-"))
    d.chmod(0o755)
    try:
        yield d
    finally:
        for p in d.iterdir():
            p.unlink()
        d.rmdir()


class TestRender:
    def test_prometheus_parses_every_sample_with_its_value(self) -> None:
        """The text format is valid to prometheus_client's own parser; labels escaped, values exact."""
        parser = pytest.importorskip("prometheus_client.parser")
        samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
                   for fam in parser.text_string_to_metric_families(render(SNAP)) for s in fam.samples}
        assert samples[("icmp6_shim_packets_total", (("verdict", "accept"),))] == 5
        assert samples[("icmp6_shim_errors_total", ())] == 1
        assert samples[("icmp6_shim_rule_hits_total", (("origin", "default"), ("rule", 'odd\\name"x'),
                                                       ("verdict", "accept")))] == 5
        assert samples[("icmp6_shim_kernel_queue", (("counter", "queue_dropped"), ("queue", "0")))] == 4
        assert samples[("icmp6_shim_type_packets_total", (("type", "128"),))] == 7

    def test_overload_fragments_and_log_counters_are_exported(self) -> None:
        """What stats shows of overload (by cause), other traffic, fragment fates and log
        failures is in the metrics too; an unknown fail-open count is left out, not 0."""
        parser = pytest.importorskip("prometheus_client.parser")
        snap = dict(SNAP, non_icmpv6=11, fragments={"stored": 2, "followed": 3, "unknown": 1},
                    log={"sink": "stderr", "failures": 4, "dropped": 0},
                    overload={"budget": {"nd_in": 6, "headers_in": 9}, "queue_full_drops": 7,
                              "socket_full_drops": 0, "fail_open_accepts": None})
        samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
                   for fam in parser.text_string_to_metric_families(render(snap)) for s in fam.samples}
        o = "icmp6_shim_overload_packets_total"
        assert samples[(o, (("cause", "budget"), ("class", "nd_in")))] == 6
        assert samples[(o, (("cause", "budget"), ("class", "headers_in")))] == 9
        assert samples[(o, (("cause", "queue_full"),))] == 7
        assert (o, (("cause", "fail_open"),)) not in samples
        assert samples[("icmp6_shim_non_icmpv6_packets_total", ())] == 11
        assert samples[("icmp6_shim_fragments_total", (("fate", "followed"),))] == 3
        assert samples[("icmp6_shim_log_failures_total", (("what", "failures"),))] == 4


class TestBounds:
    def test_half_sent_requests_are_bounded_and_expire_then_a_scrape_is_answered(
        self, tmp_path: Path,
    ) -> None:
        """40 clients that never finish their request: at most max_connections are held at once,
        each is closed at its deadline, the listener is not polled while full, and afterwards a
        real scrape gets the page."""
        clock = FakeClock()
        path = str(tmp_path / "m.sock")
        server = MetricsServer(MetricsSettings(socket=path, max_connections=4, timeout=2.0),
                               lambda: SNAP, clock=clock)
        attackers: list[socket.socket] = []
        try:
            for _ in range(40):
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.setblocking(False)
                try:
                    s.connect(path)
                    s.send(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")  # never the blank line
                except BlockingIOError:  # the backlog is full: the kernel holds the rest
                    pass
                attackers.append(s)
            listener = server.server.listeners[0].fileno()
            held_max = 0
            for _ in range(30):  # bounded: 40 clients / 4 slots = 10 deadlines
                _turn(server, 0)
                held_max = max(held_max, len(server.server.conns))
                if len(server.server.conns) >= 4:
                    assert listener not in server.interest()
                clock.now += 2.5  # every held connection is past its deadline next turn
            assert held_max == 4
            assert server.server.counters["timed_out"] >= 16
            assert server.server.counters["answered"] == 0
        finally:
            for s in attackers:
                s.close()
        try:
            t, out = _scrape_in_thread(path)
            _serve_while(server, t.is_alive)
            assert isinstance(out[0], str) and "icmp6_shim_rule_hits_total" in out[0]
        finally:
            server.close()

    def test_an_overlong_request_is_closed_unanswered(self, tmp_path: Path) -> None:
        """A request beyond 4096 bytes without its end: closed, counted, never buffered further."""
        path = str(tmp_path / "m.sock")
        server = MetricsServer(MetricsSettings(socket=path), lambda: SNAP)
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as c:
                c.connect(path)
                c.sendall(b"GET /metrics HTTP/1.1\r\nX: " + b"a" * 6000)
                c.settimeout(5)
                for _ in range(20):
                    _turn(server, 50)
                    if server.server.counters["too_large"]:
                        break
                assert server.server.counters["too_large"] == 1
                try:
                    answer = c.recv(100)
                except ConnectionResetError:  # closed with our unread bytes pending: a reset
                    answer = b""
                assert answer == b""  # closed, no answer
        finally:
            server.close()

    def test_rendering_is_reused_within_a_second(self, tmp_path: Path) -> None:
        """N scrapes in one second render the snapshot once: scrapes cannot add up to a stall."""
        calls: list[int] = []

        def snap() -> dict[str, object]:
            calls.append(1)
            return SNAP

        clock = FakeClock()
        path = str(tmp_path / "m.sock")
        server = MetricsServer(MetricsSettings(socket=path), snap, clock=clock)
        try:
            for _ in range(3):
                t, out = _scrape_in_thread(path)
                _serve_while(server, t.is_alive)
                assert isinstance(out[0], str)
            assert len(calls) == 1
            clock.now += 1.5
            t, out = _scrape_in_thread(path)
            _serve_while(server, t.is_alive)
            assert len(calls) == 2
        finally:
            server.close()


def _as_nobody(path: str, group: str | None) -> subprocess.CompletedProcess[str]:
    code = ("import socket,sys\ns=socket.socket(socket.AF_UNIX)\n"
            "try:\n s.connect(sys.argv[1]); print('connected')\n"
            "except PermissionError: print('denied')\n")
    groups = ["--groups", group] if group else ["--clear-groups"]
    return subprocess.run(["setpriv", "--reuid", "nobody", "--regid", "nogroup", *groups,
                           sys.executable, "-I", "-c", code, path],
                          capture_output=True, text=True, timeout=30)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another user")
class TestAccess:
    def test_unix_socket_admits_root_and_the_group_only(self, open_dir: Path) -> None:
        """Mode 0660: user nobody is refused; with [metrics] group, a member of it connects."""
        path = str(open_dir / "m.sock")
        server = MetricsServer(MetricsSettings(socket=path), lambda: SNAP)
        try:
            assert stat.S_IMODE(os.stat(path).st_mode) == 0o660
            out = _as_nobody(path, None)
            assert out.stdout.strip() == "denied", out.stderr
        finally:
            server.close()
        server = MetricsServer(MetricsSettings(socket=path, group="nogroup"), lambda: SNAP)
        try:
            assert os.stat(path).st_gid == grp.getgrnam("nogroup").gr_gid
            out = _as_nobody(path, "nogroup")
            assert out.stdout.strip() == "connected", out.stderr
        finally:
            server.close()

    def test_unknown_group_is_an_environment_error(self, tmp_path: Path) -> None:
        """A group that does not exist: exit-3 error naming it, and no socket is left behind."""
        path = tmp_path / "m.sock"
        with pytest.raises(EnvironmentProblem, match="no-such-group-x"):
            MetricsServer(MetricsSettings(socket=str(path), group="no-such-group-x"), lambda: SNAP)
        assert not path.exists()


class TestConfig:
    def test_metrics_keys_are_read_and_checked(self, tmp_path: Path) -> None:
        """[metrics] socket/group/max_connections/timeout reach Settings; bad values name the key."""
        from shim.config.loader import load_config
        from shim.core.errors import ConfigError

        main = tmp_path / "icmp6-shim.toml"
        main.write_text('[metrics]\nsocket = "/run/x/m.sock"\ngroup = "adm"\nmax_connections = 3\n'
                        "timeout = 0.5\n")
        m = MetricsSettings.of(load_config(tmp_path).settings)
        assert m == MetricsSettings(socket="/run/x/m.sock", group="adm", max_connections=3, timeout=0.5)
        for bad, key in (("max_connections = 0", "max_connections"), ("timeout = 0", "timeout"),
                         ('timeout = "2"', "timeout")):
            main.write_text(f"[metrics]\n{bad}\n")
            with pytest.raises(ConfigError, match=rf"\[metrics\] key '{key}'"):
                load_config(tmp_path)
