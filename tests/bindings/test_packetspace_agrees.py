# SPDX-License-Identifier: MIT
"""The packet-space model is exact against the C parser and the C rule walk.

Three properties make the analysis exact: every packet the parser reports that meets the
rules is a point of the universe (nothing real is left out); every point of the universe
is a packet (`examples.packet` builds bytes the parser reports as exactly that point, so
nothing unreal is put in); and a rule's box holds a point exactly when the C walk
matches the packet (so regions are what the product does).
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import shim.bindings.icmp6 as native
from shim.core.examples import packet
from shim.core.model import Hook, Match, Origin, Rule, Settings, Verdict, Action
from shim.core.packetspace import PacketSpace, match_box, view_point
from shim.core.rules import build_table
from shim.core.space import Box, region_contains
from tests.bindings.test_matchers_agree import _ANY_PACKET, matches

NAMES = ("eth0", "eth1", "nosuch0")
SPACE = PacketSpace(hooks=frozenset(Hook), names=NAMES)
UNIVERSE = SPACE.universe()
_SETTINGS = settings(max_examples=300, deadline=None,
                     suppress_health_check=[HealthCheck.too_slow])


def ifindex(name: str) -> int:
    """Interface names as the analysis numbers them (1..K), so C and the model agree."""
    return SPACE.if_value(name)


@st.composite
def universe_points(draw: st.DrawFn) -> tuple[int, ...]:
    """A point of a random universe box, each value drawn near the ends of its intervals."""
    box: Box = draw(st.sampled_from(UNIVERSE))
    out = []
    for dim in box:
        lo, hi = draw(st.sampled_from(dim))
        out.append(draw(st.sampled_from([lo, hi, (lo + hi) // 2]) | st.integers(lo, hi)))
    return tuple(out)


def _hook_ifaces(draw: st.DrawFn) -> tuple[Hook, int, int]:
    hook = draw(st.sampled_from(list(Hook)))
    real = st.integers(1, SPACE.other_if)
    iif = 0 if hook is Hook.OUTPUT else draw(real) if hook is not Hook.POSTROUTING else draw(
        st.integers(0, SPACE.other_if))
    oif = 0 if hook in (Hook.PREROUTING, Hook.INPUT) else draw(real)
    return hook, iif, oif


class TestUniverse:
    """The universe holds exactly the packets that meet the rules."""

    @_SETTINGS
    @given(data=_ANY_PACKET, where=st.data())
    def test_every_packet_is_in_it(self, data: bytes, where: Any) -> None:
        """A packet that is not decided as other traffic is a point of the universe."""
        if native.is_non_icmpv6(data):
            return
        hook, iif, oif = _hook_ifaces(where.draw)
        point = view_point(native.parse(data), hook, iif, oif)
        assert region_contains(UNIVERSE, point), point

    @_SETTINGS
    @given(point=universe_points())
    def test_every_point_is_a_packet(self, point: tuple[int, ...]) -> None:
        """The bytes built for a point parse back to exactly that point, and reach the rules."""
        data = packet(point)
        assert not native.is_non_icmpv6(data)
        view = native.parse(data)
        assert view_point(view, Hook(point[0]), point[1], point[2]) == point


class TestMatchBoxes:
    """A rule's box holds a point exactly when the C walk matches its packet."""

    @_SETTINGS
    @given(m=matches(), point=universe_points())
    def test_box_equals_c_walk(self, m: Match, point: tuple[int, ...]) -> None:
        """match_box(m) contains the point iff NativeTable.matches() says the rule matches."""
        table = build_table(Settings(), [Rule(name="r", priority=0, origin=Origin.USER, match=m,
                                              verdict=Verdict(action=Action.DROP))], ())
        nt = native.NativeTable(table.native_rules(ifindex), table.type_role, table.type_ike, 16)
        box = match_box(m, SPACE, table.type_role, table.type_ike)
        inside = box is not None and region_contains((box,), point)
        assert nt.matches(0, packet(point), point[0], point[1], point[2]) == inside
