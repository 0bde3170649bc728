# SPDX-License-Identifier: MIT
"""The diversion guard: checks when due, restores what is missing, never raises."""

from __future__ import annotations

from structlog.testing import capture_logs

from shim.daemon.guard import DiversionGuard
from shim.daemon.logs import get_logger


class FakeDiversion:
    """A backend whose verify() answers from a list, recording restores."""

    name = "fake"
    owned = True

    def __init__(self, answers: list[object]) -> None:
        self.answers = answers
        self.checks = 0
        self.restores = 0

    def verify(self) -> str | None:
        self.checks += 1
        answer = self.answers.pop(0) if self.answers else None
        if isinstance(answer, Exception):
            raise answer
        return answer  # type: ignore[return-value]

    def restore(self) -> None:
        self.restores += 1


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class TestDiversionGuard:
    def test_checks_once_per_interval(self) -> None:
        """Ticks before the interval has passed do not check."""
        clock, div = Clock(), FakeDiversion([])
        guard = DiversionGuard(div, get_logger(), interval=0.5, clock=clock)  # type: ignore[arg-type]
        guard.tick()
        clock.now += 0.6
        guard.tick()
        guard.tick()
        assert div.checks == 1

    def test_restores_and_says_what_it_found(self) -> None:
        """A missing diversion is restored, logged with what was found, counted and in STATUS."""
        clock, div = Clock(), FakeDiversion(["table inet icmp6_shim_q0 is missing"])
        guard = DiversionGuard(div, get_logger(), interval=0.5, clock=clock)  # type: ignore[arg-type]
        clock.now += 1
        with capture_logs() as logs:
            guard.tick()
        assert div.restores == 1
        assert [e for e in logs if e["event"] == "diversion_restored"] == [
            {"event": "diversion_restored", "log_level": "warning", "backend": "fake",
             "found": "table inet icmp6_shim_q0 is missing", "restored": 1}]
        assert guard.snapshot()["restored"] == 1 and guard.snapshot()["owned"] is True
        assert "diversion restored 1x" in guard.status()

    def test_a_failing_check_is_logged_not_raised(self) -> None:
        """verify() raising: logged and counted; the next good check clears the error."""
        clock, div = Clock(), FakeDiversion([OSError(5, "boom"), None])
        guard = DiversionGuard(div, get_logger(), interval=0.5, clock=clock)  # type: ignore[arg-type]
        clock.now += 1
        with capture_logs() as logs:
            guard.tick()
        assert [e["event"] for e in logs] == ["diversion_restore_failed"]
        assert guard.snapshot()["restore_failures"] == 1 and "failing" in guard.status()
        clock.now += 1
        guard.tick()
        assert guard.status() == "" and div.restores == 0
