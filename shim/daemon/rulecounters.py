# SPDX-License-Identifier: MIT
"""The diversion's kernel rule counters, read off the packet loop.

Reading them runs `nft -j list table` or `ip6tables-save -c`: a fork, an exec and a
netlink dump, milliseconds at best and up to the tool's timeout at worst. `stats` and
metrics ask for them from the packet loop, so the loop never reads them itself: get()
returns the last value read (None until the first read ends) and, when that value is
older than `max_age`, starts one background read. At most one read runs at a time; a
failing read leaves None, never an exception in the loop.

The value is at most `max_age` plus one read old. The overload arithmetic that uses it
(shim.daemon.control.overload_stats) only gets smaller with an older queue counter, so
its fail-open figure stays a lower bound.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["CachedCounters"]

T = TypeVar("T")


class CachedCounters(Generic[T]):
    """`read` run in a thread on demand, at most once per `max_age` seconds."""

    def __init__(self, read: Callable[[], T | None], max_age: float = 1.0) -> None:
        self._read = read
        self.max_age = max_age
        self._value: T | None = None
        self._read_at = -math.inf
        self._thread: threading.Thread | None = None

    def get(self) -> T | None:
        """The last value read; starts a fresh read in the background when it is stale."""
        busy = self._thread is not None and self._thread.is_alive()
        if not busy and time.monotonic() - self._read_at >= self.max_age:
            self._read_at = time.monotonic()  # one read per period, even if it fails
            self._thread = threading.Thread(target=self._refresh, daemon=True,
                                            name="icmp6-shim-counters")
            self._thread.start()
        return self._value

    def wait(self, timeout: float) -> T | None:
        """The value once the running read (if any) has ended: for tests and stop."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
        return self._value

    def _refresh(self) -> None:
        try:
            value = self._read()
        except Exception:  # noqa: BLE001 - a tool that fails or times out: counters unknown
            value = None
        self._value = value  # one assignment: the loop sees the old or the new value
