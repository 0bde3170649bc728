# SPDX-License-Identifier: MIT
"""The supervisor's sums over its workers' reports (no worker is started here)."""

from __future__ import annotations

from shim.daemon.supervisor import _shadow_total


class TestShadowTotal:
    """Each worker judges its share of the flows; `stats` shows the shadow results summed."""

    def test_pairs_and_counts_add_up(self) -> None:
        """Equal pairs add, the larger count first; a worker without a report adds nothing."""
        a = {"file": "c.toml", "evaluated": 10, "differences": 3,
             "pairs": [{"enforced": "e1", "shadow": "s1", "packets": 3}]}
        b = {"file": "c.toml", "evaluated": 5, "differences": 5,
             "pairs": [{"enforced": "e2", "shadow": "s2", "packets": 1},
                       {"enforced": "e1", "shadow": "s1", "packets": 4}]}
        assert _shadow_total([a, None, b]) == {
            "file": "c.toml", "evaluated": 15, "differences": 8,
            "pairs": [{"enforced": "e1", "shadow": "s1", "packets": 7},
                      {"enforced": "e2", "shadow": "s2", "packets": 1}]}

    def test_no_shadow_anywhere_is_none(self) -> None:
        """Without [shadow] the snapshot says None, as a single Service's does."""
        assert _shadow_total([None, None]) is None
