# SPDX-License-Identifier: MIT
"""Exact region algebra: interval sets, boxes and regions (unions of disjoint boxes).

An interval set is a tuple of inclusive (low, high) integer pairs, sorted, disjoint and
never adjacent (so each set has one spelling and equality is ==). A box is one interval
set per dimension; it is empty when any of them is. A region is a tuple of pairwise
disjoint, non-empty boxes; the empty region is ().

Rule 1: every operation is exact: no approximation, no sampling.
Rule 2: subtraction and intersection keep regions disjoint, so a region is empty
exactly when it has no box and its boxes can be counted and sampled one by one.
Rule 3: `Meter` counts box operations; callers bound the work by its budget
(`exhausted`), never by time, so a result is the same on every machine.
Pure: no I/O, no state outside the values and the caller's Meter.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = [
    "Box",
    "Interval",
    "IntervalSet",
    "Meter",
    "Region",
    "box_and",
    "box_sub",
    "iv",
    "iv_and",
    "iv_contains",
    "iv_sub",
    "iv_subset",
    "iv_union",
    "region_and",
    "region_and_box",
    "region_contains",
    "region_sub",
    "region_sub_box",
    "region_union",
]

Interval = tuple[int, int]
IntervalSet = tuple[Interval, ...]
Box = tuple[IntervalSet, ...]
Region = tuple[Box, ...]


@dataclass(slots=True)
class Meter:
    """Box operations done so far against a budget (Rule 3)."""

    budget: int
    used: int = 0

    @property
    def exhausted(self) -> bool:
        """Whether the work done has reached the budget."""
        return self.used >= self.budget


def iv(values: Iterable[int | Interval]) -> IntervalSet:
    """The interval set of numbers and (low, high) pairs, in any order, overlapping or not."""
    pairs = sorted((v, v) if isinstance(v, int) else (v[0], v[1]) for v in values)
    out: list[Interval] = []
    for lo, hi in pairs:
        if lo > hi:
            continue
        if out and lo <= out[-1][1] + 1:
            if hi > out[-1][1]:
                out[-1] = (out[-1][0], hi)
        else:
            out.append((lo, hi))
    return tuple(out)


def _hi(x: Interval) -> int:
    return x[1]


def _and_short(a: IntervalSet, b: IntervalSet) -> IntervalSet:
    """a ∩ b for a long a and a short b: binary search in a per interval of b."""
    out: list[Interval] = []
    for lo, hi in b:
        i = bisect.bisect_left(a, lo, key=_hi)
        while i < len(a) and a[i][0] <= hi:
            out.append((max(lo, a[i][0]), min(hi, a[i][1])))
            i += 1
    return tuple(out)


def iv_and(a: IntervalSet, b: IntervalSet) -> IntervalSet:
    """The intersection of two interval sets."""
    if a == b:
        return a
    if len(a) > 8 * len(b):
        return _and_short(a, b)
    if len(b) > 8 * len(a):
        return _and_short(b, a)
    out: list[Interval] = []
    i = j = 0
    while i < len(a) and j < len(b):
        lo = max(a[i][0], b[j][0])
        hi = min(a[i][1], b[j][1])
        if lo <= hi:
            out.append((lo, hi))
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return tuple(out)


def _sub_short(a: IntervalSet, b: IntervalSet) -> IntervalSet:
    """a − b for a long a and a short b: each interval of b cuts one run of a (slices)."""
    res = a
    for lo, hi in b:
        i = bisect.bisect_left(res, lo, key=_hi)
        j = i
        while j < len(res) and res[j][0] <= hi:
            j += 1
        if i == j:
            continue
        mid: list[Interval] = []
        if res[i][0] < lo:
            mid.append((res[i][0], lo - 1))
        if res[j - 1][1] > hi:
            mid.append((hi + 1, res[j - 1][1]))
        res = res[:i] + tuple(mid) + res[j:]
    return res


def iv_sub(a: IntervalSet, b: IntervalSet) -> IntervalSet:
    """The numbers of a that are not in b."""
    if len(a) > 8 * len(b):
        return _sub_short(a, b)
    out: list[Interval] = []
    j = 0
    for lo, hi in a:
        while j < len(b) and b[j][1] < lo:
            j += 1
        k = j
        cur = lo
        while k < len(b) and b[k][0] <= hi:
            if b[k][0] > cur:
                out.append((cur, b[k][0] - 1))
            cur = max(cur, b[k][1] + 1)
            k += 1
        if cur <= hi:
            out.append((cur, hi))
    return tuple(out)


def iv_union(a: IntervalSet, b: IntervalSet) -> IntervalSet:
    """The union of two interval sets."""
    return iv(a + b)


def iv_subset(a: IntervalSet, b: IntervalSet) -> bool:
    """Whether every number of a is in b."""
    return a == b or not iv_sub(a, b)


def iv_contains(a: IntervalSet, value: int) -> bool:
    """Whether value is in a."""
    return any(lo <= value <= hi for lo, hi in a)


def box_and(a: Box, b: Box) -> Box | None:
    """The intersection of two boxes, or None when it is empty."""
    # Bounds first, last dimension first (the analysis puts addresses there): most pairs
    # of boxes are apart in some dimension, and this finds it without building anything.
    for d in range(len(a) - 1, -1, -1):
        x, y = a[d], b[d]
        if x[0][0] > y[-1][1] or y[0][0] > x[-1][1]:
            return None
    out = []
    for x, y in zip(a, b):
        z = iv_and(x, y)
        if not z:
            return None
        out.append(z)
    return tuple(out)


def box_sub(a: Box, b: Box) -> list[Box]:
    """a minus b as disjoint boxes: one piece per dimension where b does not cover a.

    Dimensions are cut last first: piece d keeps a∩b in the dimensions after d, a−b in d
    and a before it, so the pieces are disjoint and their union is exactly a − b. The
    first piece is the big one (a−b in its dimension, the rest whole); the later ones lie
    inside b in the dimensions already cut, so where the last dimensions are the most
    selective (addresses), a run of cuts leaves one big box and small slivers.
    """
    inter = box_and(a, b)
    if inter is None:
        return [a]
    out: list[Box] = []
    for d in range(len(a) - 1, -1, -1):
        rest = iv_sub(a[d], b[d])
        if rest:
            out.append(a[:d] + (rest,) + inter[d + 1:])
    return out


def _tick(meter: Meter | None, n: int = 1) -> None:
    if meter is not None:
        meter.used += n


def region_sub_box(r: Sequence[Box], b: Box, meter: Meter | None = None) -> Region:
    """r minus one box."""
    _tick(meter, len(r))
    out: list[Box] = []
    for a in r:
        out.extend(box_sub(a, b))
    return tuple(out)


def region_sub(r: Sequence[Box], s: Sequence[Box], meter: Meter | None = None) -> Region:
    """r minus s."""
    out: Region = tuple(r)
    for b in s:
        if not out:
            break
        out = region_sub_box(out, b, meter)
    return out


def region_and_box(r: Sequence[Box], b: Box, meter: Meter | None = None) -> Region:
    """r intersected with one box."""
    _tick(meter, len(r))
    return tuple(x for x in (box_and(a, b) for a in r) if x is not None)


def region_and(r: Sequence[Box], s: Sequence[Box], meter: Meter | None = None) -> Region:
    """r intersected with s (disjoint, as both are)."""
    out: list[Box] = []
    for b in s:
        out.extend(region_and_box(r, b, meter))
    return tuple(out)


def region_union(r: Sequence[Box], s: Sequence[Box], meter: Meter | None = None) -> Region:
    """r united with s, kept disjoint: r plus what of s is not in r."""
    return tuple(r) + region_sub(s, r, meter)


def region_contains(r: Sequence[Box], point: Sequence[int]) -> bool:
    """Whether the point (one number per dimension) lies in r."""
    return any(all(iv_contains(d, v) for d, v in zip(b, point)) for b in r)
