# SPDX-License-Identifier: MIT
"""structlog configuration: JSON lines under systemd or with format=json, console on a tty.

configure() is called once, from the CLI. Event names are stable and listed in
docs/design.md; per-packet events go through RateLimiter so a flood cannot
flood the journal.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import TextIO

import structlog

__all__ = ["RateLimiter", "configure", "get_logger"]


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
        logger_factory=structlog.PrintLoggerFactory(file=out),
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
