# SPDX-License-Identifier: MIT
"""The region algebra is exact: every operation agrees with the same operation on point sets."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from shim.core.space import (
    Box,
    Meter,
    Region,
    box_and,
    box_sub,
    iv,
    iv_and,
    iv_sub,
    iv_subset,
    iv_union,
    region_and,
    region_contains,
    region_sub,
    region_union,
)

LO, HI = -2, 9
DIMS = 3
POINTS = list(itertools.product(range(LO, HI + 1), repeat=DIMS))

numbers = st.frozensets(st.integers(LO, HI), max_size=8)
sets = numbers.map(iv)
boxes = st.tuples(*[numbers.filter(bool).map(iv)] * DIMS)


def _disjoint_union(bs: list[Box]) -> Region:
    out: Region = ()
    for b in bs:
        out = region_union(out, (b,))
    return out


regions = st.lists(boxes, max_size=4).map(_disjoint_union)


def _points(s: tuple[tuple[int, int], ...]) -> set[int]:
    return {v for lo, hi in s for v in range(lo, hi + 1)}


def _region_points(r: Region) -> set[tuple[int, ...]]:
    return {p for p in POINTS if region_contains(r, p)}


def _box_points(b: Box) -> set[tuple[int, ...]]:
    return set(itertools.product(*[sorted(_points(d)) for d in b]))


def _disjoint(r: Region) -> bool:
    return all(box_and(a, b) is None for a, b in itertools.combinations(r, 2))


class TestIntervalSets:
    """Interval sets behave as the sets of numbers they hold."""

    @given(a=numbers)
    def test_canonical(self, a: frozenset[int]) -> None:
        """iv() holds exactly the given numbers, sorted, with no two intervals touching."""
        s = iv(a)
        assert _points(s) == set(a)
        assert all(x[1] + 1 < y[0] for x, y in zip(s, s[1:]))

    @given(a=sets, b=sets)
    def test_operations(self, a: tuple[tuple[int, int], ...], b: tuple[tuple[int, int], ...]) -> None:
        """and, sub, union and subset equal the set operations."""
        pa, pb = _points(a), _points(b)
        assert _points(iv_and(a, b)) == pa & pb
        assert _points(iv_sub(a, b)) == pa - pb
        assert _points(iv_union(a, b)) == pa | pb
        assert iv_subset(a, b) == (pa <= pb)
        assert iv_sub(a, b) == iv(pa - pb)  # results are canonical too

    @given(a=st.frozensets(st.integers(0, 400), max_size=300).map(iv),
           b=st.frozensets(st.integers(0, 400), max_size=6).map(iv))
    def test_long_and_short(self, a: tuple[tuple[int, int], ...],
                            b: tuple[tuple[int, int], ...]) -> None:
        """The binary-search paths (one set much longer than the other) are exact too."""
        pa, pb = _points(a), _points(b)
        assert iv_and(a, b) == iv(pa & pb) == iv_and(b, a)
        assert iv_sub(a, b) == iv(pa - pb)


class TestRegions:
    """Boxes and regions behave as the sets of points they hold, and stay disjoint."""

    @settings(max_examples=150, deadline=None)
    @given(a=boxes, b=boxes)
    def test_box_sub(self, a: Box, b: Box) -> None:
        """box_sub gives disjoint pieces that hold exactly a minus b."""
        pieces = tuple(box_sub(a, b))
        assert _disjoint(pieces)
        assert _region_points(pieces) == _box_points(a) - _box_points(b)

    @settings(max_examples=150, deadline=None)
    @given(r=regions, s=regions)
    def test_region_operations(self, r: Region, s: Region) -> None:
        """Intersection, subtraction and union are exact and keep regions disjoint."""
        pr, ps = _region_points(r), _region_points(s)
        for result, expected in ((region_and(r, s), pr & ps), (region_sub(r, s), pr - ps),
                                 (region_union(r, s), pr | ps)):
            assert _disjoint(result)
            assert _region_points(result) == expected
            assert (not result) == (not expected)  # empty exactly when no box is left

    def test_meter_counts(self) -> None:
        """A Meter counts the boxes each operation visits and says when the budget is spent."""
        meter = Meter(budget=2)
        region: Region = (((0, 5),),), (((7, 9),),)
        region_sub(region, ((((1, 1),),),), meter)
        assert meter.used == 2 and meter.exhausted
