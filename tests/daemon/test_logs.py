# SPDX-License-Identifier: MIT
"""Log sinks that fail: a full disk, a closed pipe. The line moves on; nothing raises.

Why: ENOSPC on stdout once killed the daemon and a closed stdout pipe made it
exit 0; per-packet log failures were counted as packet errors.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from shim.daemon import logs
from shim.daemon.logs import JOURNAL_SOCKET, RateLimiter, Sink

REPO = Path(__file__).resolve().parents[2]


def read_all(fd: int) -> str:
    os.set_blocking(fd, False)
    try:
        return os.read(fd, 1 << 16).decode()
    except BlockingIOError:
        return ""


class TestSink:
    """The Sink's fallbacks, with real file descriptors."""

    def test_full_disk_moves_to_stderr(self) -> None:
        """/dev/full (ENOSPC): one write error, the note and the line go to the fallback."""
        r, w = os.pipe()
        with open("/dev/full", "w") as full, os.fdopen(w, "w") as err:
            sink = Sink(full, journal="/nonexistent/journal.socket", fallback=err)
            sink.msg('{"event": "one"}')
            sink.msg('{"event": "two"}')
        lines = [json.loads(x) for x in read_all(r).splitlines()]
        os.close(r)
        assert [x["event"] for x in lines] == ["log_sink_failed", "one", "two"]
        assert lines[0]["sink"] == "stdout" and lines[0]["fallback"] == "stderr"
        assert lines[0]["error"] == os.strerror(28)
        assert sink.counters() == {"sink": "stderr", "failures": 1, "dropped": 0}

    def test_closed_pipe_goes_to_the_journal(self, tmp_path: Path) -> None:
        """EPIPE with a journal socket present: entries arrive there in the native protocol."""
        journal = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        journal.bind(str(tmp_path / "journal.socket"))
        journal.settimeout(2)
        r, w = os.pipe()
        os.close(r)
        with os.fdopen(w, "w") as out:
            sink = Sink(out, journal=str(tmp_path / "journal.socket"))
            sink.msg('{"event": "hello", "level": "info"}')
        first, second = journal.recv(4096), journal.recv(4096)
        journal.close()
        assert b"SYSLOG_IDENTIFIER=icmp6-shim\n" in first and b"log_sink_failed" in first
        assert b"PRIORITY=3\n" in first and b"PRIORITY=6\n" in second
        assert second.endswith(b'{"event": "hello", "level": "info"}\n')
        assert sink.counters() == {"sink": "journal", "failures": 1, "dropped": 0}

    def test_nothing_left_counts_drops(self) -> None:
        """Every sink failing: lines are counted as dropped, nothing raises."""
        r, w = os.pipe()
        os.close(r)
        with open("/dev/full", "w") as full, os.fdopen(w, "w") as err:
            sink = Sink(full, journal="/nonexistent/journal.socket", fallback=err)
            for i in range(3):
                sink.msg(f'{{"event": "e{i}"}}')
        assert sink.counters() == {"sink": "none", "failures": 2, "dropped": 3}


class TestProcess:
    """A whole process whose stdout fails keeps logging elsewhere and exits as it would."""

    def test_cli_logging_with_stdout_on_dev_full(self) -> None:
        """configure() + log lines with stdout on /dev/full: exit 0, lines on stderr, no traceback."""
        code = ("import sys\nfrom shim.daemon.logs import configure, get_logger\n"
                "configure('json', 'info', stream=sys.stdout)\n"
                "for i in range(3): get_logger().info('tick', i=i)\n")
        with open("/dev/full", "w") as full:
            out = subprocess.run([sys.executable, "-c", code], stdout=full, stderr=subprocess.PIPE,
                                 text=True, cwd=REPO, timeout=60)
        assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr
        if os.path.exists(JOURNAL_SOCKET):
            return  # this host has a journal: the lines went there, not to stderr
        events = [json.loads(x)["event"] for x in out.stderr.splitlines()]
        assert events[-3:] == ["tick", "tick", "tick"] and "log_sink_failed" in events


class FakeClock:
    """time.monotonic under the test's control: the limiter sees only the time it is given."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class TestRateLimiter:
    """A token bucket on a fake clock: bursts, refill, the cap, the suppressed count."""

    @pytest.fixture
    def clock(self, monkeypatch: pytest.MonkeyPatch) -> FakeClock:
        fake = FakeClock()
        monkeypatch.setattr(logs.time, "monotonic", fake)
        return fake

    def test_a_burst_then_one_per_refill(self, clock: FakeClock) -> None:
        """rate 2: two at once, then one per half second; refused events are counted."""
        limit = RateLimiter(2.0)
        assert [limit.allow() for _ in range(3)] == [True, True, False]
        clock.now += 0.5
        assert [limit.allow() for _ in range(2)] == [True, False]
        assert limit.suppressed == 2

    def test_an_idle_bucket_fills_only_to_the_burst(self, clock: FakeClock) -> None:
        """After a long quiet spell the bucket holds `burst` tokens, not rate x seconds."""
        limit = RateLimiter(1.0, burst=5)
        assert sum(limit.allow() for _ in range(10)) == 5
        clock.now += 3600.0
        assert sum(limit.allow() for _ in range(10)) == 5
        assert limit.suppressed == 10

    def test_a_rate_below_one_still_allows_one(self, clock: FakeClock) -> None:
        """rate 0.5: burst 1 (never 0, which would refuse everything), then one per 2 s."""
        limit = RateLimiter(0.5)
        assert [limit.allow(), limit.allow()] == [True, False]
        clock.now += 1.0
        assert limit.allow() is False
        clock.now += 1.0
        assert limit.allow() is True

    def test_a_raised_rate_applies_at_once(self, clock: FakeClock) -> None:
        """A reload sets `rate` in place (the --trace floor); the refill follows it."""
        limit = RateLimiter(1.0)
        assert [limit.allow(), limit.allow()] == [True, False]
        limit.rate = 1000.0
        clock.now += 0.01  # 10 tokens at the new rate (the burst caps them at 1); 0.01 at the old
        assert [limit.allow(), limit.allow()] == [True, False]

