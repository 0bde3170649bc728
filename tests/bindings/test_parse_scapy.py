# SPDX-License-Identifier: MIT
"""Differential test: the C parser against scapy's dissector.

Hypothesis draws an extension-header chain (HBH, DestOpt, Routing, at most
one Fragment), an ICMPv6 message built by scapy's own classes, hop limit and
addresses; scapy assembles the packet. scapy then dissects the bytes again,
and the C parser must agree with it on the chain, fragment fields, ICMPv6
type/code, hop limit and (for Packet Too Big) the MTU. Address classes are
checked against the stdlib ipaddress module. AH is left out: scapy does not
dissect past it to ICMPv6 (the vectors cover AH).
"""

from __future__ import annotations

import ipaddress
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.layers import inet6 as s6
from scapy.packet import Packet, Raw

from shim.bindings.icmp6 import parse

__all__: list[str] = []

EXT_CLASSES = (s6.IPv6ExtHdrHopByHop, s6.IPv6ExtHdrDestOpt, s6.IPv6ExtHdrRouting,
               s6.IPv6ExtHdrFragment)
ADDRESSES = ["::", "::1", "::ffff:192.0.2.7", "fe80::1", "fe80::abcd:1", "fd12:3456::1",
             "ff02::1", "ff02::2", "ff02::1:ff12:3456", "ff05::1:3", "ff0e::101",
             "2001:db8::1", "2a00:1450::200e", "::2"]
SOLICITED = ipaddress.IPv6Network("ff02::1:ff00:0/104")


def _reference_class(text: str) -> str:
    """Address class by the stdlib, in the order the contract gives."""
    a = ipaddress.IPv6Address(text)
    if a.is_unspecified:
        return "unspecified"
    if a.is_loopback:
        return "loopback"
    if a.ipv4_mapped is not None:
        return "ipv4_mapped"
    if a in ipaddress.IPv6Network("fe80::/10"):
        return "link_local"
    if a in ipaddress.IPv6Network("fc00::/7"):
        return "unique_local"
    if a in SOLICITED:
        return "solicited_node"
    if a.is_multicast:
        return "multicast"
    return "global_unicast"


@st.composite
def ext_header(draw: Any) -> Packet:
    """One HBH, DestOpt or Routing header with random padding/addresses."""
    kind = draw(st.sampled_from(["hbh", "dest", "rt"]))
    if kind == "rt":
        addrs = draw(st.lists(st.sampled_from(ADDRESSES[3:]), max_size=3))
        return s6.IPv6ExtHdrRouting(addresses=addrs, segleft=len(addrs))
    pad = draw(st.integers(0, 30))
    opts = [s6.PadN(optdata=b"\x00" * pad)] if pad else []
    cls = s6.IPv6ExtHdrHopByHop if kind == "hbh" else s6.IPv6ExtHdrDestOpt
    return cls(options=opts)


@st.composite
def icmp_message(draw: Any) -> Packet:
    """An ICMPv6 message from one of scapy's classes, with a random code."""
    code = draw(st.integers(0, 255))
    kind = draw(st.sampled_from(["echo", "reply", "du", "ptb", "te", "pp", "rs", "ra", "ns",
                                 "na", "redirect", "mlq", "mlr", "unknown"]))
    body = draw(st.binary(max_size=24))
    if kind == "unknown":
        t = draw(st.sampled_from([5, 99, 150, 160, 200, 201, 255]))
        return s6.ICMPv6Unknown(type=t, code=code, msgbody=body)
    make: dict[str, Any] = {
        "echo": lambda: s6.ICMPv6EchoRequest(code=code, id=7, seq=1, data=body),
        "reply": lambda: s6.ICMPv6EchoReply(code=code, data=body),
        "du": lambda: s6.ICMPv6DestUnreach(code=code),
        "ptb": lambda: s6.ICMPv6PacketTooBig(code=code, mtu=draw(st.integers(0, 2**32 - 1))),
        "te": lambda: s6.ICMPv6TimeExceeded(code=code),
        "pp": lambda: s6.ICMPv6ParamProblem(code=code, ptr=draw(st.integers(0, 2**32 - 1))),
        "rs": lambda: s6.ICMPv6ND_RS(code=code),
        "ra": lambda: s6.ICMPv6ND_RA(code=code, routerlifetime=1800),
        "ns": lambda: s6.ICMPv6ND_NS(code=code, tgt=draw(st.sampled_from(ADDRESSES))),
        "na": lambda: s6.ICMPv6ND_NA(code=code, tgt=draw(st.sampled_from(ADDRESSES)),
                                     S=draw(st.integers(0, 1))),
        "redirect": lambda: s6.ICMPv6ND_Redirect(code=code, tgt=draw(st.sampled_from(ADDRESSES)),
                                                 dst=draw(st.sampled_from(ADDRESSES))),
        "mlq": lambda: s6.ICMPv6MLQuery(code=code),
        "mlr": lambda: s6.ICMPv6MLReport(code=code),
    }
    msg: Packet = make[kind]()
    if kind in ("rs", "ra", "ns") and draw(st.booleans()):
        msg = msg / s6.ICMPv6NDOptSrcLLAddr(lladdr="02:00:00:00:00:01")
    return msg


@st.composite
def packets(draw: Any) -> bytes:
    """A whole IPv6 packet assembled by scapy."""
    chain = draw(st.lists(ext_header(), max_size=5))
    if draw(st.booleans()):
        where = draw(st.integers(0, len(chain)))
        offset = draw(st.sampled_from([0, 0, 1, 185, 8191]))
        chain.insert(where, s6.IPv6ExtHdrFragment(offset=offset, m=draw(st.integers(0, 1)),
                                                  id=draw(st.integers(0, 2**32 - 1))))
    pkt: Packet = s6.IPv6(src=draw(st.sampled_from(ADDRESSES)),
                          dst=draw(st.sampled_from(ADDRESSES)),
                          hlim=draw(st.integers(0, 255)))
    for header in chain:
        pkt = pkt / header
    return bytes(pkt / draw(icmp_message()))


def _scapy_view(raw: bytes) -> dict[str, Any]:
    """What scapy's dissector says about the packet, in PacketView terms."""
    pkt = s6.IPv6(raw)
    chain: list[int] = []
    frag: dict[str, Any] = {"frag_status": "none", "frag_offset": None, "frag_more": None,
                            "frag_id": None}
    previous: Any = pkt
    layer: Any = pkt.payload
    while isinstance(layer, EXT_CLASSES):
        chain.append(previous.nh)
        if isinstance(layer, s6.IPv6ExtHdrFragment):
            status = "non_first" if layer.offset else ("first" if layer.m else "atomic")
            frag = {"frag_status": status, "frag_offset": layer.offset * 8,
                    "frag_more": bool(layer.m), "frag_id": layer.id}
        previous, layer = layer, layer.payload
    icmp = None if frag["frag_status"] == "non_first" else layer
    type_code: tuple[int | None, int | None] = (None, None)
    if isinstance(icmp, Raw):
        # scapy has no class for unassigned types; its Raw holds the message.
        type_code = (icmp.load[0], icmp.load[1]) if len(icmp.load) >= 4 else (None, None)
    elif icmp is not None:
        type_code = (icmp.type, icmp.code)
    return {
        "hop_limit": pkt.hlim,
        "ext_headers": tuple(chain),
        "upper_layer": None if icmp is None else previous.nh,
        "icmpv6_type": type_code[0],
        "icmpv6_code": type_code[1],
        "mtu": icmp.mtu if isinstance(icmp, s6.ICMPv6PacketTooBig) else None,
        "chain_complete": icmp is not None,
        "malformed": (),
        "src_class": _reference_class(pkt.src),
        "dst_class": _reference_class(pkt.dst),
        **frag,
    }


class TestAgainstScapy:
    """The C parser and scapy read scapy-built packets the same way."""

    @settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(raw=packets())
    def test_same_fields(self, raw: bytes) -> None:
        """Chain, fragment, ICMPv6 type/code, hop limit, MTU and classes agree."""
        expected = _scapy_view(raw)
        view = parse(raw)
        assert {k: getattr(view, k) for k in expected} == expected
        if view.icmpv6_type is not None:
            assert view.icmpv6_length == len(raw) - (view.upper_layer_offset or 0)
