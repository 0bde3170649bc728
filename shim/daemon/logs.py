# SPDX-License-Identifier: MIT
"""structlog configuration: JSON lines under systemd or with format=json, console on a tty.

configure() is called once, from the CLI. Event names are stable and listed in
docs/design.md; per-packet events go through RateLimiter so a flood cannot
flood the journal.

A log line never raises into its caller (otherwise ENOSPC on stdout kills the
daemon, a closed stdout pipe makes it exit 0, and per-packet log failures become
packet errors). The Sink writes each line to stdout; the first write error
switches it, for good, to the journal's native socket when there is one, else
stderr, else nothing; lines that no sink took are counted as dropped.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import struct
import sys
import threading
import time
from typing import Any, TextIO

import structlog

__all__ = ["JOURNAL_SOCKET", "RateLimiter", "Sink", "SinkFactory", "configure", "get_logger",
           "sink_counters"]

JOURNAL_SOCKET = "/run/systemd/journal/socket"


class _NoJournal(OSError):
    """The journal's socket does not exist: skip it, quietly."""


class Sink:
    """structlog's logger interface (msg and the level names) over a writer that never raises."""

    def __init__(self, stream: TextIO, journal: str = JOURNAL_SOCKET,
                 fallback: TextIO | None = None) -> None:
        self._stream, self._fallback, self._journal = stream, fallback, journal
        # Where lines go, best first; the head is the current sink.
        self._order = ["stdout", "journal"] + (["stderr"] if fallback is not None else [])
        self._lock = threading.Lock()  # the reload thread logs too
        self._journal_sock: socket.socket | None = None
        self.failures = 0  # write errors, each of which moved to the next sink
        self.dropped = 0  # lines no sink took

    @property
    def sink(self) -> str:
        return self._order[0] if self._order else "none"

    def msg(self, message: str) -> None:
        """Write one line; on an error move to the next sink and retry there. Never raises."""
        with self._lock:
            moved: dict[str, object] | None = None  # why the sink moved: said first on the new one
            while self._order:
                try:
                    if moved is not None:
                        self._write(json.dumps({**moved, "fallback": self.sink}))
                        moved = None
                    self._write(message)
                    return
                except BlockingIOError:
                    break  # journald is busy: lose this line, keep the journal
                except _NoJournal:
                    self._order.pop(0)  # not a failure: this host has no journal
                except OSError as exc:
                    failed = self._order.pop(0)
                    self.failures += 1
                    moved = {"event": "log_sink_failed", "level": "error", "sink": failed,
                             "error": exc.strerror or repr(exc), "failures": self.failures}
            self.dropped += 1

    debug = info = warning = warn = error = critical = exception = fatal = failure = log = msg

    def counters(self) -> dict[str, object]:
        """For stats: where lines go now, write errors, lines lost."""
        return {"sink": self.sink, "failures": self.failures, "dropped": self.dropped}

    def _write(self, message: str) -> None:
        where = self._order[0]
        if where == "journal":
            if self._journal_sock is None:
                if not os.path.exists(self._journal):
                    raise _NoJournal(2, "no journal socket")
                self._journal_sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM
                                                   | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK)
            self._journal_sock.sendto(_journal_entry(message), self._journal)
            return
        stream = self._stream if where == "stdout" else self._fallback
        assert stream is not None
        try:
            fd = stream.fileno()
        except (OSError, ValueError, AttributeError):
            stream.write(message + "\n")  # a StringIO in tests
            stream.flush()
            return
        # os.write, not the TextIO buffer: a failed line must not stay buffered and fail
        # again at interpreter exit (that turned a closed pipe into exit status 120).
        view = memoryview((message + "\n").encode("utf-8", "replace"))
        while view:
            view = view[os.write(fd, view):]


def _journal_entry(message: str) -> bytes:
    """The native journal protocol: KEY=value lines, binary-safe for MESSAGE."""
    level = "6"
    if '"level": "error"' in message or '"level": "critical"' in message:
        level = "3"
    elif '"level": "warning"' in message:
        level = "4"
    data = message.encode("utf-8", "replace")
    return (b"SYSLOG_IDENTIFIER=icmp6-shim\nPRIORITY=" + level.encode() + b"\nMESSAGE\n"
            + struct.pack("<Q", len(data)) + data + b"\n")


class SinkFactory:
    """structlog logger factory: every logger shares one Sink."""

    def __init__(self, sink: Sink) -> None:
        self.sink = sink

    def __call__(self, *_args: Any) -> Sink:
        return self.sink


def sink_counters() -> dict[str, object]:
    """The configured Sink's counters ({} before configure())."""
    factory = structlog.get_config().get("logger_factory")
    return factory.sink.counters() if isinstance(factory, SinkFactory) else {}


def configure(fmt: str = "auto", level: str = "info", stream: TextIO | None = None) -> None:
    """Set up structlog once for the process.

    Args:
        fmt: "json", "console", or "auto" (JSON when stdout is not a tty or
            when started by systemd, i.e. JOURNAL_STREAM or INVOCATION_ID is set).
        level: minimum level name.
        stream: where lines go (default stderr; the daemon passes stdout).
    """
    out = sys.stderr if stream is None else stream
    if fmt == "auto":
        under_systemd = "JOURNAL_STREAM" in os.environ or "INVOCATION_ID" in os.environ
        fmt = "json" if under_systemd or not out.isatty() else "console"
    renderer: structlog.typing.Processor
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer(sort_keys=False)
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=out.isatty())
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
        ),
        logger_factory=SinkFactory(Sink(out, fallback=sys.stderr if out is not sys.stderr else None)),
        cache_logger_on_first_use=True,
    )


def get_logger() -> structlog.typing.FilteringBoundLogger:
    return structlog.get_logger("icmp6-shim")  # type: ignore[no-any-return]


class RateLimiter:
    """Token bucket: at most `rate` events per second, bursts up to `burst`."""

    def __init__(self, rate: float, burst: float | None = None) -> None:
        self.rate = rate
        self.burst = burst if burst is not None else max(rate, 1.0)
        self._tokens = self.burst
        self._last = time.monotonic()
        self.suppressed = 0

    def allow(self) -> bool:
        now = time.monotonic()
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        self.suppressed += 1
        return False
