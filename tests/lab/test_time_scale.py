# SPDX-License-Identifier: MIT
"""ICMP6_SHIM_TIME_SCALE: one factor stretches the lab's bounded waits (the VM lane's TCG guest)."""

from __future__ import annotations

import threading

import pytest

from shim.core.errors import ShimError
from shim.lab.runner import TIME_SCALE_ENV, ShimProcess, time_scale


class TestTimeScale:
    def test_unset_or_empty_is_one(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.delenv(TIME_SCALE_ENV, raising=False)
        assert time_scale() == 1.0
        monkeypatch.setenv(TIME_SCALE_ENV, " ")
        assert time_scale() == 1.0

    def test_value_is_read(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv(TIME_SCALE_ENV, "6")
        assert time_scale() == 6.0
        monkeypatch.setenv(TIME_SCALE_ENV, "2.5")
        assert time_scale() == 2.5

    @pytest.mark.parametrize(("raw", "why"), [("fast", "not a number"), ("0.5", "between 1 and 100"),
                                              ("1000", "between 1 and 100"), ("nan", "between 1 and 100")])
    def test_bad_value_is_one_line(self, monkeypatch: pytest.MonkeyPatch, raw: str, why: str) -> None:
        monkeypatch.setenv(TIME_SCALE_ENV, raw)
        with pytest.raises(ShimError) as err:
            time_scale()
        assert why in str(err.value) and TIME_SCALE_ENV in str(err.value)
        assert "\n" not in str(err.value)

    def test_event_wait_is_stretched(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """An event 0.3 s late is missed by a 0.1 s wait, caught when the scale stretches it."""
        monkeypatch.setenv(TIME_SCALE_ENV, "100")
        proc = ShimProcess(None)
        try:
            late = threading.Timer(0.3, proc._events_q.put, args=({"event": "late"},))
            late.start()
            ev = proc.next_event("late", timeout=0.1)  # the queue was empty: only the late one
            late.join()
            assert ev == {"event": "late"}
        finally:
            proc.close()
