# SPDX-License-Identifier: MIT
"""The C matcher (NativeTable) and the Python reference (RuleTable.decide_py) agree."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import shim.bindings.icmp6 as native  # noqa: E402 - a missing extension must fail, never skip

from scapy.layers.inet6 import (  # noqa: E402
    ICMPv6ND_NA,
    ICMPv6ND_NS,
    ICMPv6ND_RA,
    ICMPv6PacketTooBig,
    ICMPv6Unknown,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
)

from scapy.layers.inet import TCP, UDP  # noqa: E402
from scapy.layers.ipsec import AH  # noqa: E402

from shim.core.defaults import DEFAULT_RULES  # noqa: E402
from shim.core.model import (  # noqa: E402
    ADDR_CLASSES,
    FRAG_STATUSES,
    Action,
    Hook,
    IkeUse,
    Match,
    Origin,
    Role,
    Rule,
    Settings,
    Verdict,
)
from shim.core.rules import RuleTable, build_table  # noqa: E402

IFINDEX = {"eth0": 2, "eth1": 3}
ADDRS = ["fe80::1", "fe80::2", "::", "::1", "ff02::1", "ff02::1:ff00:2", "2001:db8::1",
         "2001:db8:1::5", "fd00::1", "::ffff:192.0.2.1", "ff05::2"]
PREFIXES = [None, "fe80::/10", "ff00::/8", "2001:db8::/32", "2001:db8::1/128", "fd00::/8",
            "::/128", "::/1"]


def ifindex(name: str) -> int:
    """Interface lookup for the tests: two known names, the rest unknown."""
    return IFINDEX[name]


def _opt(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.none() | strategy


def _range(top: int) -> st.SearchStrategy[tuple[int, int]]:
    return st.tuples(st.integers(0, top), st.integers(0, top)).map(lambda p: (min(p), max(p)))


_TYPES = st.frozensets(st.sampled_from([1, 2, 3, 4, 128, 129, 133, 134, 135, 136, 137, 143,
                                        200, 255]) | st.integers(0, 255), min_size=1, max_size=4)
FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "types": _TYPES,
    "codes": st.frozensets(st.integers(0, 5), min_size=1, max_size=3),
    "roles": st.sampled_from(list(Role)) | st.just(Role.LINK_LOCAL | Role.END_TO_END),
    "ike": st.sampled_from(list(IkeUse)),
    "src_classes": st.frozensets(st.sampled_from(ADDR_CLASSES), min_size=1, max_size=4),
    "dst_classes": st.frozensets(st.sampled_from(ADDR_CLASSES), min_size=1, max_size=4),
    "src": st.sampled_from(PREFIXES), "dst": st.sampled_from(PREFIXES),
    "hop_limit": _range(255) | st.sampled_from([(255, 255), (1, 1), (0, 0), (0, 64)]),
    "iif": st.sampled_from(["eth0", "eth1", "nosuch0"]),
    "oif": st.sampled_from(["eth0", "nosuch0"]),
    "hooks": st.frozensets(st.sampled_from(list(Hook)), min_size=1),
    "frag": st.frozensets(st.sampled_from(FRAG_STATUSES), min_size=1),
    "chain_complete": st.booleans(), "malformed": st.booleans(), "nd_valid": st.booleans(),
    "mtu": _range(70000) | st.just((0, 1279)) | st.just((1280, 1500)),
}


@st.composite
def matches(draw: st.DrawFn) -> Match:
    """A Match constraining a few random fields, so that it often matches something."""
    names = draw(st.lists(st.sampled_from(sorted(FIELDS)), max_size=3, unique=True))
    return Match(**{n: draw(FIELDS[n]) for n in names})


verdicts = st.sampled_from([Verdict(action=Action.ACCEPT), Verdict(action=Action.DROP),
                            Verdict(action=Action.MARK, mark=1, mask=0xFF, mark_name="bypass")])


@st.composite
def tables(draw: st.DrawFn) -> RuleTable:
    """A table of random user rules, with or without the defaults below them."""
    ms = draw(st.lists(matches(), max_size=8))
    user = [Rule(name=f"u{i}", priority=draw(st.integers(-5, 2500)), origin=Origin.USER,
                 match=m, verdict=draw(verdicts), file="t.toml", index=i)
            for i, m in enumerate(ms)]
    return build_table(Settings(), user, DEFAULT_RULES if draw(st.booleans()) else ())


@st.composite
def packets(draw: st.DrawFn) -> bytes:
    """A scapy-built IPv6 packet, sometimes cut short or with extension headers."""
    ip = IPv6(src=draw(st.sampled_from(ADDRS)), dst=draw(st.sampled_from(ADDRS)),
              hlim=draw(st.sampled_from([0, 1, 64, 254, 255])))
    for _ in range(draw(st.integers(0, 2))):
        ip = ip / draw(st.sampled_from([IPv6ExtHdrHopByHop(), IPv6ExtHdrDestOpt()]))
    kind = draw(st.sampled_from(["unknown", "ns", "na", "ra", "ptb", "frag", "other", "ah",
                                 "frag-other"]))
    code = draw(st.integers(0, 3))
    if kind == "ns":
        pkt = ip / ICMPv6ND_NS(code=code, tgt=draw(st.sampled_from(ADDRS)))
    elif kind == "na":
        pkt = ip / ICMPv6ND_NA(code=code, tgt=draw(st.sampled_from(ADDRS)), S=draw(st.booleans()))
    elif kind == "ra":
        pkt = ip / ICMPv6ND_RA(code=code)
    elif kind == "ptb":
        pkt = ip / ICMPv6PacketTooBig(mtu=draw(st.sampled_from([0, 1279, 1280, 1500, 70000])))
    elif kind == "frag":
        pkt = ip / IPv6ExtHdrFragment(offset=draw(st.sampled_from([0, 0, 8])), m=draw(
            st.booleans()), nh=58) / ICMPv6Unknown(type=draw(st.integers(0, 255)), code=code)
    elif kind == "other":  # another upper layer: decided before any rule, in both matchers
        pkt = ip / UDP(sport=5, dport=7) / b"payload"
    elif kind == "ah":  # AH walked over to ICMPv6 or TCP
        nh = draw(st.sampled_from([6, 58]))
        pkt = ip / AH(nh=nh, spi=1, seq=1, icv=b"\0" * 12) / (
            TCP() if nh == 6 else ICMPv6Unknown(type=draw(st.integers(0, 255)), code=code))
    elif kind == "frag-other":  # a fragment of another protocol, or of an extension header
        pkt = ip / IPv6ExtHdrFragment(offset=draw(st.sampled_from([0, 8])), m=True, nh=draw(
            st.sampled_from([17, 6, 60, 59, 50]))) / (b"\0" * 16)
    else:
        pkt = ip / ICMPv6Unknown(type=draw(st.integers(0, 255)), code=code, msgbody=b"x" * 8)
    data = bytes(pkt)
    cut = draw(st.sampled_from([len(data)] * 6 + [0, 7, 39, 40, 41, 44, len(data) - 1]))
    return data[:max(cut, 0)]


_ANY_PACKET = packets() | st.binary(max_size=96)
_SETTINGS = settings(max_examples=200, deadline=None,
                     suppress_health_check=[HealthCheck.too_slow])


class TestMatchersAgree:
    """Both matchers give the same first match and the same set of matches."""

    @_SETTINGS
    @given(table=tables(), data=_ANY_PACKET, hook=st.sampled_from(list(Hook)),
           indev=st.sampled_from([0, 2, 3, 7]), outdev=st.sampled_from([0, 2, 3]))
    def test_first_match_and_all_matches(self, table: RuleTable, data: bytes, hook: Hook,
                                         indev: int, outdev: int) -> None:
        """classify() equals index_py() and all_matches() equals matches_py().

        The table has no fate table (the default): the reference matcher judges each
        packet alone, so only single-packet decisions are comparable.
        """
        nt = native.NativeTable(table.native_rules(ifindex), table.type_role,
                                table.type_ike, table.settings.ext_limit)
        view = native.parse(data, table.settings.ext_limit)
        assert nt.classify(data, int(hook), indev, outdev) == table.index_py(
            view, hook, indev, outdev, ifindex)
        assert nt.all_matches(data, int(hook), indev, outdev) == table.matches_py(
            view, hook, indev, outdev, ifindex)

    def test_defaults_alone(self) -> None:
        """The shipped defaults compile and agree on a plain Neighbor Solicitation."""
        table = build_table(Settings(), [])
        data = bytes(IPv6(src="fe80::1", dst="ff02::1:ff00:2", hlim=255)
                     / ICMPv6ND_NS(tgt="fe80::2"))
        nt = native.NativeTable(table.native_rules(ifindex), table.type_role,
                                table.type_ike, 16)
        index = nt.classify(data, int(Hook.INPUT), 0, 0)
        assert table.decisions[index].rule == "nd-neighbor-solicit"
        assert table.decide_py(native.parse(data), Hook.INPUT).rule == "nd-neighbor-solicit"
