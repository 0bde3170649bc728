# SPDX-License-Identifier: MIT
"""The demo's table text."""

from __future__ import annotations

from shim.lab.demo import verdict_text


class TestVerdictText:
    def test_mark_is_named_once(self) -> None:
        """A mark verdict reads `mark:0x1 [rule]`, not `mark mark=0x1 [rule]`."""
        text = verdict_text({"verdict": "mark", "mark": 1, "rule": "nd-neighbor-solicit"})
        assert text == "mark:0x1 [nd-neighbor-solicit]"

    def test_drop_has_no_mark(self) -> None:
        """A drop (mark null in the log) shows no mark and no None."""
        assert verdict_text({"verdict": "drop", "mark": None, "rule": "x"}) == "drop [x]"
