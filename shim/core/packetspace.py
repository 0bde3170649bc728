# SPDX-License-Identifier: MIT
"""The space of what a rule can test about a packet, and its realizable part.

A point is one value per dimension of DIMS: the hook, the interfaces (0 none, 1..K the
names rules use, K+1 any other interface), the ICMPv6 type and code (-1: no ICMPv6
header), the fragment status, chain completeness, malformed, the hop limit, the source
and destination addresses as 128-bit numbers (-1: absent, no IPv6 header), the ND
validity (-1: not ND) and the PTB MTU (-1: none). `universe` is the region of the points
the C parser (native/icmp6.c) reports for some bytes and that reach the rule walk; each
of its boxes is a product of values that all occur together, so every point of a box
inside the universe is a packet (`examples.packet` builds it).

Rule 1: one dimension per key the C walk tests (icmp6_rule_matches); address classes
are the RFC 4291 ranges addr_class() gives, so `src_class` and `src` constrain the same
128 bits; `role` and `ike` are functions of the type (the table's type_role/type_ike).
Rule 2: a Match is one box (`match_box`), key by key (`key_boxes`), with the C walk's
meaning of "absent" (a rule naming a type needs one; a /0 prefix tests nothing).
Pure: no I/O.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from shim.core.matchkeys import MATCH_KEYS, Kind
from shim.core.model import ADDR_CLASSES, FRAG_STATUSES, Hook, IkeUse, Match, PacketView, Role
from shim.core.space import Box, IntervalSet, Region, box_and, iv, iv_sub

__all__ = ["ADDR_ANY", "CLASS_RANGES", "DIMS", "D", "PacketSpace", "class_of", "full_box",
           "key_boxes", "match_box", "view_point"]

DIMS = ("hook", "iif", "oif", "type", "code", "frag", "chain_complete", "malformed",
        "hop_limit", "src", "dst", "nd_valid", "mtu")
D = {name: i for i, name in enumerate(DIMS)}
_A = (1 << 128) - 1
ADDR_ANY: IntervalSet = ((0, _A),)
_U32 = 0xFFFFFFFF
ND_TYPES = (133, 137)


def _net(text: str) -> tuple[int, int]:
    n = ipaddress.IPv6Network(text)
    return int(n.network_address), int(n.broadcast_address)


_SOLICITED = _net("ff02::1:ff00:0/104")
_MCAST = _net("ff00::/8")
# addr_class() of native/icmp6.c as ranges (its tests are disjoint, so order does not matter).
CLASS_RANGES: dict[str, IntervalSet] = {
    "unspecified": ((0, 0),), "loopback": ((1, 1),),
    "ipv4_mapped": (_net("::ffff:0:0/96"),), "link_local": (_net("fe80::/10"),),
    "unique_local": (_net("fc00::/7"),), "solicited_node": (_SOLICITED,),
    "multicast": iv_sub((_MCAST,), (_SOLICITED,)), "absent": ((-1, -1),),
}
CLASS_RANGES["global_unicast"] = iv_sub(ADDR_ANY, iv(
    r for c, rs in CLASS_RANGES.items() if c != "absent" for r in rs))


def class_of(addr: int) -> str:
    """The ADDR_CLASSES name of an address number (-1: absent)."""
    for name, ranges in CLASS_RANGES.items():
        if any(lo <= addr <= hi for lo, hi in ranges):
            return name
    raise ValueError(addr)


@dataclass(frozen=True, slots=True)
class PacketSpace:
    """The dimensions' domains for one analysis: which hooks are queued, which names exist."""

    hooks: frozenset[Hook]
    names: tuple[str, ...]  # interface names rules use, sorted; value i+1 is names[i]

    @property
    def other_if(self) -> int:
        """The value of "any other interface"."""
        return len(self.names) + 1

    def if_value(self, name: str) -> int:
        """The dimension value of an interface name (an unknown one is "other")."""
        return self.names.index(name) + 1 if name in self.names else self.other_if

    def if_name(self, value: int) -> str | None:
        """The name of a dimension value; None for none, "(other)" for any other."""
        if value == 0:
            return None
        return self.names[value - 1] if value <= len(self.names) else "(other)"

    def domains(self) -> Box:
        """Every value of each dimension (the box a rule without keys matches)."""
        k = self.other_if
        return (((0, 4),), ((0, k),), ((0, k),), ((-1, 255),), ((-1, 255),), ((0, 3),),
                ((0, 1),), ((0, 1),), ((0, 255),), ((-1, _A),), ((-1, _A),), ((-1, 1),),
                ((-1, _U32),))

    def universe(self) -> Region:
        """The realizable points that reach the rule walk, as disjoint boxes."""
        out: list[Box] = []
        for hook_part in self._interfaces():
            out += [hook_part + p for p in _packets()]
        return tuple(out)

    def _interfaces(self) -> list[Box]:
        """(hook, iif, oif) as the kernel reports them to NFQUEUE at each hook."""
        k = self.other_if
        real, none, maybe = ((1, k),), ((0, 0),), ((0, k),)
        per_hook = {Hook.PREROUTING: (real, none), Hook.INPUT: (real, none),
                    Hook.FORWARD: (real, real), Hook.OUTPUT: (none, real),
                    Hook.POSTROUTING: (maybe, real)}
        return [(((int(h), int(h)),), i, o) for h, (i, o) in sorted(per_hook.items())
                if h in self.hooks]


def _packets() -> list[Box]:
    """(type .. mtu) of every packet the parser reports that meets the rules.

    No IPv6 header: all absent, malformed. A header but no ICMPv6 type: a non-first
    fragment, a short or overrun chain, or another upper layer that is malformed or
    incomplete (complete well-formed other traffic is `non-icmpv6`, decided before the
    rules). An ICMPv6 type: the chain is complete and not a non-first fragment; MTU only
    in a Packet Too Big, ND validity only in ND; valid ND has hop limit 255, code 0, a
    link-local source for RA and Redirect, a solicited-node destination for DAD.
    """
    none1, a, all8, bit = ((-1, -1),), ADDR_ANY, ((0, 255),), ((0, 1),)
    head = ((0, 2),)  # none, atomic, first
    ll = CLASS_RANGES["link_local"]
    out: list[Box] = [
        (none1, none1, ((0, 0),), ((0, 0),), ((1, 1),), ((0, 0),), none1, none1, none1, none1),
        (none1, none1, head, ((0, 0),), bit, all8, a, a, none1, none1),
        (none1, none1, head, ((1, 1),), ((1, 1),), all8, a, a, none1, none1),
        (none1, none1, ((3, 3),), ((0, 0),), bit, all8, a, a, none1, none1),
        (((0, 1), (3, 132), (138, 255)), all8, head, ((1, 1),), bit, all8, a, a, none1, none1),
        (((2, 2),), all8, head, ((1, 1),), bit, all8, a, a, none1, ((-1, _U32),)),
        ((ND_TYPES,), all8, head, ((1, 1),), bit, all8, a, a, ((0, 0),), none1),
    ]
    valid = (((0, 0),), head, ((1, 1),), bit, ((255, 255),))
    out += [
        (((133, 133), (136, 136)),) + valid + (a, a, ((1, 1),), none1),
        (((134, 134), (137, 137)),) + valid + (ll, a, ((1, 1),), none1),
        (((135, 135),),) + valid + (((1, _A),), a, ((1, 1),), none1),
        (((135, 135),),) + valid + (((0, 0),), (_SOLICITED,), ((1, 1),), none1),
    ]
    return out


def view_point(v: PacketView, hook: Hook, iif: int, oif: int) -> tuple[int, ...]:
    """The point of a parsed packet seen at `hook` with interface values iif and oif."""
    def addr(text: str | None) -> int:
        return -1 if text is None else int(ipaddress.IPv6Address(text))
    return (int(hook), iif, oif, -1 if v.icmpv6_type is None else v.icmpv6_type,
            -1 if v.icmpv6_code is None else v.icmpv6_code, FRAG_STATUSES.index(v.frag_status),
            int(v.chain_complete), int(bool(v.malformed)), v.hop_limit or 0, addr(v.src),
            addr(v.dst), -1 if v.nd_valid is None else int(v.nd_valid),
            -1 if v.mtu is None else v.mtu)


def _types_of(role: bytes, ike: bytes, roles: int | None, ikes: int | None) -> IntervalSet:
    """The types (-1 for none) whose role and IKE use pass the given masks."""
    def ok(t: int) -> bool:
        r = role[t] if t >= 0 else int(Role.UNCLASSIFIED)
        k = ike[t] if t >= 0 else int(IkeUse.UNCLASSIFIED)
        return bool((roles is None or r & roles) and (ikes is None or k & ikes))
    return iv(t for t in range(-1, 256) if ok(t))


def _bits(names: Iterable[str], order: Sequence[str]) -> IntervalSet:
    return iv(order.index(n) for n in names)


def _prefix(prefix: str) -> IntervalSet | None:
    net = ipaddress.IPv6Network(prefix, strict=False)
    if not net.prefixlen:
        return None  # a /0 prefix tests nothing (absent included), as in C
    return ((int(net.network_address), int(net.broadcast_address)),)


@dataclass(frozen=True, slots=True)
class _Tables:
    space: PacketSpace
    type_role: bytes
    type_ike: bytes


# The values of its dimension each kind of key allows (None: it tests nothing).
_ALLOWED: dict[Kind, Callable[[Any, _Tables], IntervalSet | None]] = {
    Kind.TYPES: lambda v, t: iv(v),
    Kind.CODES: lambda v, t: iv(v),
    Kind.ROLES: lambda v, t: _types_of(t.type_role, t.type_ike, int(v), None),
    Kind.IKE: lambda v, t: _types_of(t.type_role, t.type_ike, None, int(v)),
    Kind.CLASSES: lambda v, t: iv(r for c in v for r in CLASS_RANGES[c]),
    Kind.PREFIX: lambda v, t: _prefix(v),
    Kind.HOOKS: lambda v, t: iv(int(h) for h in v),
    Kind.FRAG: lambda v, t: _bits(v, FRAG_STATUSES),
    Kind.IFNAME: lambda v, t: iv([t.space.if_value(v)]),
    Kind.FLAG: lambda v, t: iv([int(v)]),
    Kind.RANGE: lambda v, t: (v,),
}


def key_boxes(m: Match, space: PacketSpace, type_role: bytes,
              type_ike: bytes) -> list[tuple[str, int, IntervalSet]]:
    """(TOML key, dimension, allowed values) for each key the match sets (Rule 2)."""
    tables = _Tables(space, type_role, type_ike)
    out: list[tuple[str, int, IntervalSet]] = []
    for k in MATCH_KEYS:
        value = getattr(m, k.field)
        if value is not None and (allowed := _ALLOWED[k.kind](value, tables)) is not None:
            out.append((k.name, D[k.dim], allowed))
    return out


def full_box(space: PacketSpace, keys: Iterable[tuple[str, int, IntervalSet]]) -> Box | None:
    """The domains box narrowed by the given keys; None when some dimension is empty."""
    box: Box | None = space.domains()
    for _key, dim, values in keys:
        if box is None:
            return None
        narrowed = list(box)
        narrowed[dim] = values
        box = box_and(box, tuple(narrowed))
    return box


def match_box(m: Match, space: PacketSpace, type_role: bytes, type_ike: bytes) -> Box | None:
    """The box of points a Match matches (None: none at all)."""
    return full_box(space, key_boxes(m, space, type_role, type_ike))


assert len(ADDR_CLASSES) == len(CLASS_RANGES)  # one range set per parser class
