# SPDX-License-Identifier: MIT
"""Shadow mode: judge live traffic with a candidate table too, without enforcing it.

The candidate is the enforced configuration plus the rules of one shadow file
(as if it were one more drop-in). For every packet the enforced table has
already judged, the candidate judges it as well; where the two verdicts
differ, the difference is counted by (enforced rule, candidate rule) and
reported through `on_diff` (rate-limited by the caller). Nothing here can
change a verdict: it runs after the verdict is given.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from shim.core.model import Decision

__all__ = ["Shadow"]

OnDiff = Callable[[Decision, Decision, bytes, int], None]


@dataclass(slots=True)
class Shadow:
    """A candidate table evaluated beside the enforced one."""

    classify: Callable[[bytes, int, int, int], int]
    decisions: tuple[Decision, ...]
    source: str
    on_diff: OnDiff | None = None
    evaluated: int = 0
    differences: int = 0
    pairs: Counter[tuple[str, str]] = field(default_factory=Counter)

    def observe(self, payload: bytes, hook: int, indev: int, outdev: int, enforced: Decision) -> None:
        """Judge one already-judged packet with the candidate; count a differing verdict."""
        self.evaluated += 1
        candidate = self.decisions[self.classify(payload, hook, indev, outdev)]
        if candidate.verdict != enforced.verdict:
            self.differences += 1
            self.pairs[(enforced.rule, candidate.rule)] += 1
            if self.on_diff is not None:
                self.on_diff(enforced, candidate, payload, hook)

    def adopt_counts(self, old: Shadow) -> None:
        """Carry the counts of the shadow this one replaces (on reload)."""
        self.evaluated += old.evaluated
        self.differences += old.differences
        self.pairs.update(old.pairs)

    def snapshot(self) -> dict[str, object]:
        return {"file": self.source, "evaluated": self.evaluated, "differences": self.differences,
                "pairs": [{"enforced": e, "shadow": s, "packets": n}
                          for (e, s), n in self.pairs.most_common(50)]}
