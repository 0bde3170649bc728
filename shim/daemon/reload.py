# SPDX-License-Identifier: MIT
"""Reloads off the packet path: parse and compile in a thread, the loop picks up the result.

Rule 1: at most one reload thread runs; a SIGHUP meanwhile is remembered and
served when it ends (one more reload, however many signals came).
Rule 2: a reload that outlives `timeout` is reported as failed at once and its
result, should it ever come, is thrown away; the next reload starts only when
that thread has ended, so a stuck parse can never pile up threads.
Rule 3: every exception in the work becomes an error string: the caller keeps
its old table. Nothing here touches the table; the caller swaps it, between
two pumps, with the finished value poll() hands back.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from shim.core.errors import ShimError

__all__ = ["Outcome", "Reloader", "describe"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True, kw_only=True)
class Outcome(Generic[T]):
    """A finished reload: the new value, or why there is none; how long it ran."""

    value: T | None
    error: str | None
    seconds: float


def describe(exc: BaseException) -> str:
    """One line for any exception: the message of a ShimError, the type otherwise."""
    if isinstance(exc, ShimError):
        return str(exc)
    if isinstance(exc, RecursionError):
        return "internal error: RecursionError (nested too deep)"
    return f"internal error: {type(exc).__name__}: {exc}"


class _Job(Generic[T]):
    def __init__(self, work: Callable[[], T]) -> None:
        self.started = time.monotonic()
        self.outcome: Outcome[T] | None = None
        self.abandoned = False
        self.thread = threading.Thread(target=self._run, args=(work,), daemon=True,
                                       name="icmp6-shim-reload")
        self.thread.start()

    def _run(self, work: Callable[[], T]) -> None:
        try:
            value, error = work(), None
        except Exception as exc:  # noqa: BLE001 - Rule 3: whatever it is, the old table stays
            value, error = None, describe(exc)
        # One assignment: the loop reads either None or the whole outcome.
        self.outcome = Outcome(value=value, error=error, seconds=time.monotonic() - self.started)


class Reloader(Generic[T]):
    """Runs `work` in the background on request; poll() from the loop returns what finished."""

    def __init__(self, work: Callable[[], T], *, timeout: float,
                 on_start: Callable[[], object] = lambda: None) -> None:
        self._work = work
        self.timeout = timeout
        self._on_start = on_start
        self._job: _Job[T] | None = None
        self._pending = False

    @property
    def busy(self) -> bool:
        """Whether a reload thread is running (or a request waits for one to end)."""
        return self._job is not None or self._pending

    def request(self) -> None:
        """Ask for a reload: started now if none runs, else once the running one ends."""
        if self._job is None:
            self._start()
        else:
            self._pending = True

    def _start(self) -> None:
        self._pending = False
        self._on_start()
        self._job = _Job(self._work)

    def poll(self) -> Outcome[T] | None:
        """The outcome of a reload that finished or timed out since the last poll, if any."""
        job = self._job
        if job is None:
            return None
        outcome = job.outcome
        if outcome is not None:
            self._job = None
            if self._pending:
                self._start()
            return None if job.abandoned else outcome
        if not job.abandoned and time.monotonic() - job.started > self.timeout:
            job.abandoned = True  # Rule 2: failed now; the thread's result will be dropped
            return Outcome(value=None, error=f"reload did not finish within {self.timeout:.0f}s",
                           seconds=time.monotonic() - job.started)
        return None

    def wait(self, timeout: float) -> Outcome[T] | None:
        """Poll until an outcome or `timeout` seconds (for tests and the synchronous reload)."""
        deadline = time.monotonic() + timeout
        while True:
            outcome = self.poll()
            if outcome is not None or time.monotonic() >= deadline or not self.busy:
                return outcome
            time.sleep(0.01)
