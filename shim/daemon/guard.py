# SPDX-License-Identifier: MIT
"""The diversion guard: finds a missing or altered diversion and lays it again.

Called from the owner's loop (Service or Supervisor) every turn; acts at most once
per INTERVAL. Invariants:
- the check is the backend's verify(): cheap while the ruleset generation is unchanged,
  so a second's check costs one netlink round trip, not a fork;
- whatever verify() or restore() raises is logged and counted, never raised into the
  loop: packets keep their verdicts while the host's firewall misbehaves;
- every restore is one `diversion_restored` event saying what was found, counted in
  snapshot() (stats, metrics) and named in the STATUS line.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from shim.adapters.diversion import Diversion
from shim.daemon.logs import RateLimiter
from shim.daemon.reload import describe

__all__ = ["INTERVAL", "DiversionGuard"]

INTERVAL = 0.5  # seconds between checks; with the loop's 0.5 s idle tick a gap is found within ~1 s


class DiversionGuard:
    """Checks one installed diversion about once a second and restores it."""

    def __init__(self, diversion: Diversion, log: Any, *, interval: float = INTERVAL,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.diversion = diversion
        self.log = log
        self.interval = interval
        self.clock = clock
        self.restored = 0
        self.failures = 0
        self.last_found: str | None = None
        self.last_error: str | None = None
        self._next = clock() + interval
        self._fail_log = RateLimiter(0.1, burst=3)  # a persistent failure: once per 10 s

    def tick(self, now: float | None = None) -> None:
        """Check if due; restore what is missing. Never raises."""
        now = self.clock() if now is None else now
        if now < self._next:
            return
        try:
            found = self.diversion.verify()
            self.last_error = None
            if found is not None:
                self.diversion.restore()
                self.restored += 1
                self.last_found, self.last_error = found[:400], None
                self.log.warning("diversion_restored", backend=self.diversion.name,
                                 found=self.last_found, restored=self.restored)
        except Exception as exc:  # noqa: BLE001 - the loop must go on judging packets
            self.failures += 1
            self.last_error = describe(exc)
            if self._fail_log.allow():
                self.log.error("diversion_restore_failed", backend=self.diversion.name,
                               error=self.last_error, failures=self.failures,
                               suppressed=self._fail_log.suppressed)
        # From the end of the check: a slow restore never makes the next one due at once.
        self._next = self.clock() + self.interval

    def snapshot(self) -> dict[str, object]:
        """The guard's counters for `stats` and metrics."""
        return {"restored": self.restored, "restore_failures": self.failures,
                "last_found": self.last_found, "last_error": self.last_error,
                "owned": bool(getattr(self.diversion, "owned", False))}

    def status(self) -> str:
        """What STATUS adds: nothing while the diversion was never disturbed."""
        if self.last_error is not None:
            return f"; diversion check/restore failing: {self.last_error}"
        if self.restored:
            return f"; diversion restored {self.restored}x (last found: {self.last_found})"
        return ""
