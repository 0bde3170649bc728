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

from shim.core.model import ADDR_CLASSES, FRAG_STATUSES, Hook, IkeUse, Match, Role

__all__ = ["CoverIndex", "Shape", "covers", "overlaps", "shape"]

_ALL_HOOKS: frozenset[object] = frozenset(Hook)
_ALL_TYPES: frozenset[int | None] = frozenset([None, *range(256)])
_Prefix = tuple[int, int]  # (network address as an integer, prefix length)


@dataclass(frozen=True, slots=True)
class Shape:
    """A Match as the sets, ranges and integers coverage compares (hashable)."""

    types: frozenset[int | None]
    codes: frozenset[int] | None
    sets: tuple[frozenset[object], ...]  # hooks, frag, src classes, dst classes
    scalars: tuple[object, ...]  # iif, oif, chain_complete, malformed, nd_valid
    src: _Prefix | None
    dst: _Prefix | None
    hop_limit: tuple[int, int] | None
    mtu: tuple[int, int] | None


def _prefix(text: str | None) -> _Prefix | None:
    if text is None:
        return None
    net = ipaddress.IPv6Network(text, strict=False)
    return int(net.network_address), net.prefixlen


def _types(m: Match, type_role: bytes, type_ike: bytes) -> frozenset[int | None]:
    base: frozenset[int | None] = _ALL_TYPES if m.types is None else frozenset(m.types)
    if m.roles is None and m.ike is None:
        return base
    out = set()
    for t in base:
        role = type_role[t] if t is not None else int(Role.UNCLASSIFIED)
        ike = type_ike[t] if t is not None else int(IkeUse.UNCLASSIFIED)
        if (m.roles is None or role & m.roles) and (m.ike is None or ike & m.ike):
            out.add(t)
    return frozenset(out)


def shape(m: Match, type_role: bytes, type_ike: bytes) -> Shape:
    """The Shape of a Match under a table's type-to-role and type-to-IKE maps."""
    return Shape(
        types=_types(m, type_role, type_ike), codes=m.codes,
        sets=(frozenset(_ALL_HOOKS if m.hooks is None else m.hooks),
              frozenset(FRAG_STATUSES if m.frag is None else m.frag),
              frozenset(ADDR_CLASSES if m.src_classes is None else m.src_classes),
              frozenset(ADDR_CLASSES if m.dst_classes is None else m.dst_classes)),
        scalars=(m.iif, m.oif, m.chain_complete, m.malformed, m.nd_valid),
        src=_prefix(m.src), dst=_prefix(m.dst), hop_limit=m.hop_limit, mtu=m.mtu)


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
    return (b.types <= a.types
            and (a.codes is None or (b.codes is not None and b.codes <= a.codes))
            and all(sb <= sa for sa, sb in zip(a.sets, b.sets))
            and all(x is None or x == y for x, y in zip(a.scalars, b.scalars))
            and _prefix_in(b.src, a.src) and _prefix_in(b.dst, a.dst)
            and _range_in(b.hop_limit, a.hop_limit, (0, 255))
            and _range_in(b.mtu, a.mtu, None))


def _overlap_range(a: tuple[int, int] | None, b: tuple[int, int] | None) -> bool:
    return a is None or b is None or (a[0] <= b[1] and b[0] <= a[1])


def overlaps(a: Shape, b: Shape) -> bool:
    """Whether some packet might match both (errs towards yes)."""
    return (bool(a.types & b.types)
            and (a.codes is None or b.codes is None or bool(a.codes & b.codes))
            and all(sa & sb for sa, sb in zip(a.sets, b.sets))
            and all(x is None or y is None or x == y for x, y in zip(a.scalars, b.scalars))
            and (_prefix_in(a.src, b.src) or _prefix_in(b.src, a.src))
            and (_prefix_in(a.dst, b.dst) or _prefix_in(b.dst, a.dst))
            and _overlap_range(a.hop_limit, b.hop_limit) and _overlap_range(a.mtu, b.mtu))


@dataclass(slots=True)
class _Leaf:
    """Rules with one (src, dst, scalars) key: by type they include, in insertion order."""

    by_type: dict[int | None, list[int]] = field(default_factory=dict)
    untyped: list[int] = field(default_factory=list)  # every rule, for a b with no types


def _key(s: Shape) -> tuple[object, ...]:
    return (s.src, s.dst, *s.scalars)


@dataclass(slots=True)
class CoverIndex:
    """Shapes added in table order; `first_cover` finds the first added one covering a Shape."""

    _shapes: list[Shape] = field(default_factory=list)
    _first: dict[Shape, tuple[int, int | None]] = field(default_factory=dict)
    _leaves: dict[tuple[object, ...], _Leaf] = field(default_factory=dict)
    _plens: tuple[set[int], set[int]] = field(default_factory=lambda: (set(), set()))
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
        for plens, prefix in zip(self._plens, (s.src, s.dst)):
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
        srcs, dsts = (self._supernets(p, plens) for p, plens in zip((b.src, b.dst), self._plens))
        scalars = [[None] if x is None else [None, x] for x in b.scalars]
        keys: list[tuple[object, ...]] = [(s, d) for s in srcs for d in dsts]
        for options in scalars:
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
