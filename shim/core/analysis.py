# SPDX-License-Identifier: MIT
"""Exact analysis of rule tables over the whole packet space: who decides which packets.

`partition` gives, for each decision of a table (each rule, then no-match), the region
of realizable packets it decides: rule i gets what it matches minus what rules 0..i-1
match (first match wins). The work is split by type atoms (sets of ICMPv6 types no rule
tells apart), so a rule only meets the packets of the types it names.

Rule 1: exact over shim.core.packetspace: a region is empty only if no packet the
parser can report is in it; every answer carries the rules it was computed from.
Rule 2: bounded: one Meter counts box operations across the whole analysis; past its
budget the analysis stops and says at which rule (`Partition.stopped_at`).
Rule 3: non-first fragments are analysed as the rule walk sees them; the packet path
gives a fragment of a remembered datagram its first fragment's decision instead.
Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from shim.core.matchkeys import MATCH_KEYS, Kind
from shim.core.model import Hook, Match, Rule, Verdict
from shim.core.packetspace import D, PacketSpace, match_box
from shim.core.rules import RuleTable
from shim.core.space import (
    Box,
    IntervalSet,
    Meter,
    Region,
    box_and,
    iv_and,
    iv_sub,
    region_and_box,
    region_sub_box,
)

__all__ = ["DEFAULT_BUDGET", "Partition", "atoms_for", "partition", "space_for",
           "verdict_key"]

DEFAULT_BUDGET = 20_000_000  # box operations: a few seconds of work on a slow machine


def verdict_key(v: Verdict) -> tuple[str, int | None, int | None]:
    """What a verdict does to a packet (the mark's name aside)."""
    return (v.action.value, v.mark, v.mask if v.mark is not None else None)


def space_for(tables: Sequence[RuleTable], hooks: frozenset[Hook] | None = None) -> PacketSpace:
    """The space for analysing these tables together: their interface names, and the
    hooks given (default: every hook any of their settings diverts)."""
    names = sorted({n for t in tables for r in t.rules for k in MATCH_KEYS
                    if k.kind is Kind.IFNAME and (n := getattr(r.match, k.field)) is not None})
    if hooks is None:
        hooks = frozenset(h for t in tables for h in t.settings.hooks)
    return PacketSpace(hooks=hooks, names=tuple(names))


def atoms_for(type_sets: Sequence[IntervalSet], universe: Region) -> list[IntervalSet]:
    """The coarsest partition of the type dimension that every given set is a union of."""
    atoms: list[IntervalSet] = [((-1, 255),)]
    for s in {*type_sets, *(b[D["type"]] for b in universe)}:
        nxt: list[IntervalSet] = []
        for a in atoms:
            inside, outside = iv_and(a, s), iv_sub(a, s)
            nxt += [x for x in (inside, outside) if x]
        atoms = nxt
    return atoms


@dataclass(slots=True)
class Partition:
    """The region each decision of a table decides (index len(rules): no-match)."""

    table: RuleTable
    space: PacketSpace
    boxes: list[Box | None]          # each rule's match box, None when it matches nothing
    atoms: list[IntervalSet]
    rule_atoms: list[list[int]]      # per rule: the atoms its types cover
    universe_by_atom: list[Region]
    reach: list[list[Region]]        # reach[i][a]: what decision i decides in atom a
    meter: Meter
    stopped_at: int | None = None    # the first rule not analysed (budget), else None
    earlier: list[list[int]] = field(default_factory=list)  # per rule: earlier rules it meets

    def region(self, i: int) -> Region:
        """Everything decision i decides, all atoms together."""
        return tuple(b for part in self.reach[i] for b in part)

    def candidates(self, i: int) -> list[int]:
        """Rules before i whose boxes meet rule i's, in table order ([] past stopped_at)."""
        return self.earlier[i] if i < len(self.earlier) else []


def _atom_index(atoms: list[IntervalSet], s: IntervalSet) -> list[int]:
    return [k for k, a in enumerate(atoms) if iv_and(a, s)]


def _with_type(box: Box, types: IntervalSet) -> Box | None:
    narrowed = iv_and(box[D["type"]], types)
    return box[:D["type"]] + (narrowed,) + box[D["type"] + 1:] if narrowed else None


def _size(box: Box) -> int:
    """How many dimensions a box leaves whole-ish (wide boxes first cut less)."""
    return -sum(len(d) == 1 and d[0][1] - d[0][0] > 0 for d in box)


def _reach(start: Region, cuts: Sequence[Box], meter: Meter) -> Region:
    """start minus the union of cuts, the widest first (fewer pieces on the way)."""
    left = start
    for cut in sorted(cuts, key=_size):
        if not left:
            break
        left = region_sub_box(left, cut, meter)
    return left


def partition(table: RuleTable, space: PacketSpace, *, atoms: list[IntervalSet] | None = None,
              meter: Meter | None = None) -> Partition:
    """First-match regions of every rule of `table` and of no-match, over `space`.

    Rule i's region is what it matches minus the union of the earlier rules that share a
    packet with it (`Partition.earlier`), so each region costs what its overlaps cost,
    not what the whole table does; no-match is the universe minus every rule.

    Args:
        table: the effective table.
        space: its packet space (space_for).
        atoms: a type partition shared with another table (diff); default: this table's.
        meter: the work budget, shared when several analyses make one answer.

    Returns:
        The Partition; `stopped_at` says if the budget ended it early (the rules from
        there on, and no-match, have empty regions that mean "not analysed").
    """
    meter = meter if meter is not None else Meter(budget=DEFAULT_BUDGET)
    universe = space.universe()
    boxes = [match_box(r.match, space, table.type_role, table.type_ike) for r in table.rules]
    if atoms is None:
        atoms = atoms_for([b[D["type"]] for b in boxes if b is not None], universe)
    by_atom: list[Region] = []
    for a in atoms:
        by_atom.append(tuple(x for x in (_with_type(b, a) for b in universe) if x is not None))
    rule_atoms = [_atom_index(atoms, b[D["type"]]) if b is not None else [] for b in boxes]
    n = len(table.rules)
    part = Partition(table=table, space=space, boxes=boxes, atoms=atoms, rule_atoms=rule_atoms,
                     universe_by_atom=by_atom, reach=[[() for _ in atoms] for _ in range(n + 1)],
                     meter=meter)
    seen: list[list[int]] = [[] for _ in atoms]  # per atom: the rules so far that touch it
    for i, box in enumerate(boxes):
        if meter.exhausted:
            part.stopped_at = i
            return part
        if box is None:
            part.earlier.append([])
            continue
        near = sorted({j for k in rule_atoms[i] for j in seen[k]})
        meter.used += len(near)
        mine = [j for j in near if box_and(box, boxes[j]) is not None]  # type: ignore[arg-type]
        part.earlier.append(mine)
        for k in rule_atoms[i]:
            start = region_and_box(by_atom[k], box, meter)
            cuts = [boxes[j] for j in mine if k in rule_atoms[j]]
            part.reach[i][k] = _reach(start, cuts, meter)  # type: ignore[arg-type]
            seen[k].append(i)
    for k in range(len(atoms)):
        if meter.exhausted:
            part.stopped_at = n
            return part
        part.reach[n][k] = _reach(by_atom[k], [boxes[j] for j in seen[k]], meter)  # type: ignore[misc]
    return part


def rule_match_box(m: Match, part: Partition) -> Box | None:
    """A match's box in the partition's space (for queries such as `search`)."""
    return match_box(m, part.space, part.table.type_role, part.table.type_ike)


def labels(rules: Sequence[Rule]) -> list[str]:
    """Short names of rules for sentences."""
    return [f"{r.origin.value} rule {r.name!r}" for r in rules]
