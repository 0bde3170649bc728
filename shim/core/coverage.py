# SPDX-License-Identifier: MIT
"""Which earlier rule matches every packet a rule matches: the index behind `lint`.

A Match becomes a Shape once (types after the role/ike filter, ranges, prefixes as
integers), and `covers` / `overlaps` compare Shapes. CoverIndex answers "the first
earlier rule that covers this one" without comparing against every earlier rule:
a covering rule's prefixes must be None or supernets of the rule's, its interface
and flag keys None or equal, and its types must include every type of the rule,
so only the earlier rules filed under those keys are compared.

Rule 1: the answers are those of comparing with every earlier rule in order
(tests/test_coverage.py checks this against the former quadratic loop).
Rule 2: exact duplicates are filed once; the first of them stands for all.
Rule 3: one search compares with at most `budget` earlier rules. Rules that differ only
in codes, hooks, classes or ranges share a leaf, and a config of thousands of them would
make `check` quadratic again; past the budget the search gives up (no cover reported) and
counts it in `incomplete`, so `lint` can say the analysis was cut short, never guess.
Pure: no I/O, no logging.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from shim.core.matchkeys import MATCH_KEYS, Kind
from shim.core.model import ADDR_CLASSES, FRAG_STATUSES, Hook, IkeUse, Match, Role

__all__ = ["CoverIndex", "Shape", "covers", "overlaps", "shape"]

_ALL_TYPES: frozenset[int | None] = frozenset([None, *range(256)])
_Prefix = tuple[int, int]  # (network address as an integer, prefix length)
# How coverage compares each kind of key (shim.core.matchkeys): a new kind must be placed here.
_GROUP: dict[Kind, str] = {
    Kind.TYPES: "types", Kind.ROLES: "types", Kind.IKE: "types",  # one set of types
    Kind.CODES: "codes",        # a set a packet may have no value for
    Kind.HOOKS: "sets", Kind.FRAG: "sets", Kind.CLASSES: "sets",  # every packet has one value
    Kind.IFNAME: "scalars", Kind.FLAG: "scalars",                  # equal or unset
    Kind.PREFIX: "prefixes", Kind.RANGE: "ranges",
}
_UNIVERSE: dict[Kind, frozenset[object]] = {
    Kind.HOOKS: frozenset(Hook), Kind.FRAG: frozenset(FRAG_STATUSES),
    Kind.CLASSES: frozenset(ADDR_CLASSES)}
_UNCLASSIFIED = {Kind.ROLES: int(Role.UNCLASSIFIED), Kind.IKE: int(IkeUse.UNCLASSIFIED)}
_KEYS = {group: tuple(k for k in MATCH_KEYS if _GROUP[k.kind] == group)
         for group in dict.fromkeys(_GROUP.values())}


@dataclass(frozen=True, slots=True)
class Shape:
    """A Match as the sets, ranges and integers coverage compares (hashable).

    Each tuple holds one entry per key of its group, in MATCH_KEYS order.
    """

    types: frozenset[int | None]
    codes: tuple[frozenset[int] | None, ...]
    sets: tuple[frozenset[object], ...]  # the key's values; all of them when unset
    scalars: tuple[object, ...]          # interfaces and flags
    prefixes: tuple[_Prefix | None, ...]
    ranges: tuple[tuple[int, int] | None, ...]


def _prefix(text: str | None) -> _Prefix | None:
    if text is None:
        return None
    net = ipaddress.IPv6Network(text, strict=False)
    return int(net.network_address), net.prefixlen


def _types(m: Match, type_role: bytes, type_ike: bytes) -> frozenset[int | None]:
    base = _ALL_TYPES
    tests: list[tuple[bytes, int, int]] = []  # (type table, wanted bits, bits of no type)
    for k in _KEYS["types"]:
        value = getattr(m, k.field)
        if value is None:
            continue
        if k.kind is Kind.TYPES:
            base = base & frozenset(value)
        else:
            tests.append((type_role if k.kind is Kind.ROLES else type_ike, int(value),
                          _UNCLASSIFIED[k.kind]))
    if not tests:
        return base
    return frozenset(t for t in base if all(
        (table[t] if t is not None else none) & bits for table, bits, none in tests))


def shape(m: Match, type_role: bytes, type_ike: bytes) -> Shape:
    """The Shape of a Match under a table's type-to-role and type-to-IKE maps."""
    def values(group: str) -> list[Any]:
        return [getattr(m, k.field) for k in _KEYS[group]]
    return Shape(
        types=_types(m, type_role, type_ike), codes=tuple(values("codes")),
        sets=tuple(frozenset(_UNIVERSE[k.kind] if v is None else v)
                   for k, v in zip(_KEYS["sets"], values("sets"))),
        scalars=tuple(values("scalars")), prefixes=tuple(_prefix(v) for v in values("prefixes")),
        ranges=tuple(values("ranges")))


# Per range key: what a rule without it spans (None: a packet may lack the value).
_FULL: tuple[tuple[int, int] | None, ...] = tuple(
    None if k.needs else (0, k.top) for k in _KEYS["ranges"])


def _prefix_in(inner: _Prefix | None, outer: _Prefix | None) -> bool:
    if outer is None:
        return True
    if inner is None or inner[1] < outer[1]:
        return False
    shift = 128 - outer[1]
    return inner[0] >> shift == outer[0] >> shift


def _range_in(inner: tuple[int, int] | None, outer: tuple[int, int] | None,
              full: tuple[int, int] | None) -> bool:
    if outer is None:
        return True
    i = inner if inner is not None else full
    return i is not None and outer[0] <= i[0] and i[1] <= outer[1]


def covers(a: Shape, b: Shape) -> bool:
    """Whether every packet b matches is matched by a (sound, not complete)."""
    # Plain loops, the ranges and sets first: CoverIndex hands over only candidates whose
    # types, prefixes and scalars can cover, and this runs up to `budget` times per rule.
    if not b.types <= a.types:
        return False
    for ra, rb, full in zip(a.ranges, b.ranges, _FULL):
        if not _range_in(rb, ra, full):
            return False
    for ca, cb in zip(a.codes, b.codes):
        if ca is not None and (cb is None or not cb <= ca):
            return False
    for sa, sb in zip(a.sets, b.sets):
        if not sb <= sa:
            return False
    for x, y in zip(a.scalars, b.scalars):
        if x is not None and x != y:
            return False
    for pa, pb in zip(a.prefixes, b.prefixes):
        if not _prefix_in(pb, pa):
            return False
    return True


def _overlap_range(a: tuple[int, int] | None, b: tuple[int, int] | None) -> bool:
    return a is None or b is None or (a[0] <= b[1] and b[0] <= a[1])


def overlaps(a: Shape, b: Shape) -> bool:
    """Whether some packet might match both (errs towards yes)."""
    return (bool(a.types & b.types)
            and all(ca is None or cb is None or bool(ca & cb) for ca, cb in zip(a.codes, b.codes))
            and all(sa & sb for sa, sb in zip(a.sets, b.sets))
            and all(x is None or y is None or x == y for x, y in zip(a.scalars, b.scalars))
            and all(_prefix_in(pa, pb) or _prefix_in(pb, pa) for pa, pb in zip(a.prefixes, b.prefixes))
            and all(_overlap_range(ra, rb) for ra, rb in zip(a.ranges, b.ranges)))


@dataclass(slots=True)
class _Leaf:
    """Rules with one (src, dst, scalars) key: by type they include, in insertion order."""

    by_type: dict[int | None, list[int]] = field(default_factory=dict)
    untyped: list[int] = field(default_factory=list)  # every rule, for a b with no types


def _key(s: Shape) -> tuple[object, ...]:
    return (*s.prefixes, *s.scalars)


@dataclass(slots=True)
class CoverIndex:
    """Shapes added in table order; `first_cover` finds the first added one covering a Shape."""

    _shapes: list[Shape] = field(default_factory=list)
    _first: dict[Shape, tuple[int, int | None]] = field(default_factory=dict)
    _leaves: dict[tuple[object, ...], _Leaf] = field(default_factory=dict)
    # per prefix key: the prefix lengths filed so far
    _plens: tuple[set[int], ...] = field(
        default_factory=lambda: tuple(set() for _ in _KEYS["prefixes"]))
    budget: int = 128     # Rule 3: comparisons one search may make
    incomplete: int = 0   # searches that hit the budget

    def add(self, s: Shape) -> int | None:
        """Add the next rule's Shape; return the index of the first earlier one covering it."""
        index = len(self._shapes)
        self._shapes.append(s)
        if s in self._first:  # a duplicate: the first copy covers it, or what covers that
            first, cover = self._first[s]
            return cover if cover is not None else first
        cover = self._search(s)
        self._first[s] = (index, cover)
        leaf = self._leaves.setdefault(_key(s), _Leaf())
        leaf.untyped.append(index)
        for t in s.types:
            leaf.by_type.setdefault(t, []).append(index)
        for plens, prefix in zip(self._plens, s.prefixes):
            if prefix is not None:
                plens.add(prefix[1])
        return cover

    def _search(self, b: Shape) -> int | None:
        best: int | None = None
        left = self.budget
        for key in self._candidate_keys(b):
            leaf = self._leaves.get(key)
            if leaf is None:
                continue
            for i in self._candidates(leaf, b):
                if best is not None and i >= best:
                    break
                if left == 0:
                    self.incomplete += 1
                    return None
                left -= 1
                if covers(self._shapes[i], b):
                    best = i
                    break
        return best

    @staticmethod
    def _candidates(leaf: _Leaf, b: Shape) -> list[int]:
        """The leaf's rules that include every type of b: the shortest of their lists."""
        if not b.types:
            return leaf.untyped
        shortest: list[int] | None = None
        for t in b.types:
            found = leaf.by_type.get(t)
            if found is None:
                return []
            if shortest is None or len(found) < len(shortest):
                shortest = found
        return shortest or []

    def _candidate_keys(self, b: Shape) -> Iterator[tuple[object, ...]]:
        """Every key a covering rule can have: None or a supernet per prefix, None or equal."""
        options_per_key: list[list[object]] = [
            list(self._supernets(p, plens)) for p, plens in zip(b.prefixes, self._plens)]
        options_per_key += [[None] if x is None else [None, x] for x in b.scalars]
        keys: list[tuple[object, ...]] = [()]
        for options in options_per_key:
            keys = [(*k, x) for k in keys for x in options]
        return iter(keys)

    @staticmethod
    def _supernets(p: _Prefix | None, plens: set[int]) -> list[_Prefix | None]:
        out: list[_Prefix | None] = [None]
        if p is not None:
            for plen in plens:
                if plen <= p[1]:
                    shift = 128 - plen
                    out.append((p[0] >> shift << shift, plen))
        return out
