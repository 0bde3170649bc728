# SPDX-License-Identifier: MIT
"""One concrete packet for a region: a point of a box, and the bytes the parser reads as it.

Rule 1: `point` picks, per dimension, a readable value the box holds (documentation
addresses, hop limit 64, code 0, ...); any point of a box inside the universe
(shim.core.packetspace) is realizable, so `packet` always has bytes for it.
Rule 2: `packet` builds the bytes so that native/icmp6.c reports exactly the point:
the callers run them through the C table and refuse an answer the C walk does not give.
Pure: no I/O.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Sequence
from dataclasses import dataclass

from shim.core.model import Hook
from shim.core.packetspace import D, PacketSpace
from shim.core.space import Box, IntervalSet, iv_contains

__all__ = ["Example", "example", "packet", "point"]

_NICE_ADDRS = tuple(int(ipaddress.IPv6Address(a)) for a in (
    "2001:db8::1", "fe80::1", "ff02::1", "ff02::1:ff00:1", "fd00::1", "::", "::1",
    "::ffff:192.0.2.1", "ff05::2", "2001:db8::2", "fe80::2"))
_PREFER = {"hop_limit": (64, 255, 1), "code": (0,), "mtu": (1280, 1500), "frag": (0,),
           "chain_complete": (), "malformed": (0,), "nd_valid": (), "hook": (
               int(Hook.INPUT), int(Hook.OUTPUT), int(Hook.FORWARD))}
_ICMPV6, _TCP, _FRAG = 58, 6, 44
_TARGET = ipaddress.IPv6Address("fe80::1").packed
_REDIRECT_DEST = ipaddress.IPv6Address("2001:db8::1").packed
_ND_FIXED = {133: 8, 134: 16, 135: 24, 136: 24, 137: 40}


@dataclass(frozen=True, slots=True, kw_only=True)
class Example:
    """A concrete packet and where it is seen."""

    data: bytes
    hook: Hook
    iif: str | None   # None: no input interface; "(other)": one no rule names
    oif: str | None
    indev: int        # the ifindex the interface values stand for (see `ifindex`)
    outdev: int


def _lowest(s: IntervalSet, nonnegative_first: bool) -> int:
    if nonnegative_first:
        for lo, hi in s:
            if hi >= 0:
                return max(lo, 0)
    return s[0][0]


def point(box: Box) -> tuple[int, ...]:
    """A readable point of a (non-empty) box."""
    out: list[int] = []
    for name, dim in D.items():
        s = box[dim]
        choice: int | None = None
        candidates: Sequence[int] = _NICE_ADDRS if name in ("src", "dst") else _PREFER.get(name, ())
        for c in candidates:
            if iv_contains(s, c):
                choice = c
                break
        if choice is None:
            choice = _lowest(s, name in ("type", "code", "src", "dst", "mtu"))
        out.append(choice)
    return tuple(out)


def _checksum(src: bytes, dst: bytes, nh: int, upper: bytes) -> int:
    data = src + dst + struct.pack("!I3xB", len(upper), nh) + upper
    data += b"\0" * (len(data) % 2)
    total = int(sum(struct.unpack(f"!{len(data) // 2}H", data)))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _icmp(p: Sequence[int], src: bytes, dst: bytes) -> bytes:
    t, code, nd, mtu = p[D["type"]], p[D["code"]], p[D["nd_valid"]], p[D["mtu"]]
    body = bytes(4)
    if t == 2:
        body = struct.pack("!I", mtu) if mtu >= 0 else b""
    elif t in _ND_FIXED:
        if nd == 0:
            body = b""  # shorter than the fixed part: RFC 4861 length check fails
        else:
            body = bytes(_ND_FIXED[t] - 4)
            if t in (135, 136):
                body = bytes(4) + _TARGET
            elif t == 137:
                body = bytes(4) + _TARGET + _REDIRECT_DEST
    msg = bytes([t, code, 0, 0]) + body
    return msg[:2] + struct.pack("!H", _checksum(src, dst, _ICMPV6, msg)) + msg[4:]


def _frag(status: int, nh: int) -> bytes:
    """The Fragment header of a status (none: no header), naming nh."""
    if status == 0:
        return b""
    offset, more = {1: (0, 0), 2: (0, 1), 3: (8, 0)}[status]
    return struct.pack("!BBHI", nh, 0, offset | more, 0x1C6)


def packet(p: Sequence[int]) -> bytes:
    """The bytes the C parser reports as point p (which must be in the universe)."""
    if p[D["src"]] < 0:
        return bytes([0x60]) + bytes(19)  # no IPv6 header: everything absent, malformed
    src, dst = (int(p[D[k]]).to_bytes(16, "big") for k in ("src", "dst"))
    frag, t = p[D["frag"]], p[D["type"]]
    if t >= 0:
        upper_nh, upper = _ICMPV6, _icmp(p, src, dst)
    elif frag == 3:
        upper_nh, upper = _ICMPV6, bytes(8)  # names ICMPv6: not decided as other traffic
    elif p[D["chain_complete"]]:
        upper_nh, upper = _TCP, bytes(20)    # a whole TCP header, but malformed: judged
    else:
        upper_nh, upper = _TCP, b""          # a short TCP header: incomplete, not malformed
    payload = _frag(frag, upper_nh) + upper
    first_nh = _FRAG if frag else upper_nh
    length = len(payload) + (8 if p[D["malformed"]] else 0)  # a wrong length: malformed
    return struct.pack("!IHBB", 6 << 28, length, first_nh, p[D["hop_limit"]]) + src + dst + payload


def example(box: Box, space: PacketSpace) -> Example:
    """The Example of a box's readable point; interface values map to ifindex = value."""
    p = point(box)
    return Example(data=packet(p), hook=Hook(p[D["hook"]]), iif=space.if_name(p[D["iif"]]),
                   oif=space.if_name(p[D["oif"]]), indev=p[D["iif"]], outdev=p[D["oif"]])
