# SPDX-License-Identifier: MIT
"""Interface names for log events: NFQUEUE reports interfaces as ifindex numbers.

Rule 1: index 0 (no interface: a packet the host sends has no input device, one
at input no output device) is None, so a log reads `"indev": null`, never 0.
Rule 2: a name is looked up once (SIOCGIFNAME through socket.if_indextoname) and
cached for `ttl` seconds: indexes are reused and interfaces renamed, so a cached
name goes stale after at most `ttl`. The cache holds at most `max_entries`.
Rule 3: an index the kernel no longer knows is `ifindex:N` (the interface left
between the verdict and the log); looking names up never raises.
Only the rate-limited verdict log calls it: no packet waits for a name.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

__all__ = ["IfNames"]


class IfNames:
    """ifindex → interface name for log events, cached (see the module docstring)."""

    __slots__ = ("_cache", "_clock", "_lookup", "max_entries", "ttl")

    def __init__(self, *, ttl: float = 10.0, max_entries: int = 1024,
                 lookup: Callable[[int], str] = socket.if_indextoname,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl, self.max_entries = ttl, max_entries
        self._lookup, self._clock = lookup, clock
        self._cache: dict[int, tuple[float, str]] = {}

    def name(self, index: int) -> str | None:
        """The name of interface `index`, None for 0, `ifindex:N` if the kernel has none.

        Returns:
            The name; never raises.
        """
        if index <= 0:
            return None
        now = self._clock()
        hit = self._cache.get(index)
        if hit is not None and now - hit[0] < self.ttl:
            return hit[1]
        try:
            name = self._lookup(index)
        except (OSError, OverflowError, ValueError):
            name = f"ifindex:{index}"
        if len(self._cache) >= self.max_entries:
            self._cache.clear()  # simplest bound: a rare refill costs one syscall per name
        self._cache[index] = (now, name)
        return name
