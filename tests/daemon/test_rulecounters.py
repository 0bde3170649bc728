# SPDX-License-Identifier: MIT
"""CachedCounters: the diversion's counters are read in a thread, never in the caller."""

from __future__ import annotations

import threading

from shim.daemon.rulecounters import CachedCounters


class TestCachedCounters:
    def test_the_caller_never_waits_for_a_read(self) -> None:
        """get() returns at once while a read blocks; the value appears once it ends."""
        release = threading.Event()
        reads: list[int] = []

        def slow_read() -> int:
            release.wait(10)
            reads.append(1)
            return len(reads)

        cache = CachedCounters(slow_read, max_age=0.0)
        assert cache.get() is None  # the read is running; the loop is not held
        assert cache.get() is None  # and a second get starts no second read
        release.set()
        assert cache.wait(5) == 1
        assert cache.get() in (1, 2) and cache.wait(5) == 2  # stale at max_age 0: one more read

    def test_reads_at_most_once_per_period(self) -> None:
        """Within max_age the last value is reused: a scrape loop costs one read a period."""
        calls: list[int] = []
        cache = CachedCounters(lambda: calls.append(1) or len(calls), max_age=60.0)
        cache.get()
        cache.wait(5)
        for _ in range(100):
            assert cache.get() == 1
        assert len(calls) == 1

    def test_a_failing_read_is_unknown_not_an_exception(self) -> None:
        """A tool that fails or times out leaves None: stats says 'unknown', the loop lives."""
        def broken() -> int:
            raise RuntimeError("nft did not answer")

        cache = CachedCounters(broken, max_age=0.0)
        cache.get()
        assert cache.wait(5) is None
