# SPDX-License-Identifier: MIT
"""Write tests/data/vectors.json: known-answer packets for the C parser.

Run once by hand (`.venv/bin/python tests/data/make_vectors.py`) and review
the diff. Invariant: every expected value below is written by hand from the
RFCs and the contract in native/icmp6.h; nothing here calls the parser under
test. The packets are assembled octet by octet so that each vector says
exactly what is on the wire.
"""

from __future__ import annotations

import ipaddress
import json
import struct
from pathlib import Path
from typing import Any

__all__ = ["VECTORS", "main"]

OUT = Path(__file__).with_name("vectors.json")

LL1, LL2, LL3 = "fe80::1", "fe80::2", "fe80::3"
ALL_NODES, ALL_ROUTERS = "ff02::1", "ff02::2"
SOL2 = "ff02::1:ff00:2"
GUA1, GUA2 = "2001:db8::1", "2001:db8::2"
UNSPEC = "::"


def a(text: str) -> bytes:
    """16 octets of an IPv6 address."""
    return ipaddress.IPv6Address(text).packed


def ipv6(nh: int, payload: bytes, *, src: str = GUA1, dst: str = GUA2, hlim: int = 64,
         plen: int | None = None, version: int = 6) -> bytes:
    """IPv6 header + payload; plen defaults to the true payload length."""
    plen = len(payload) if plen is None else plen
    first = struct.pack("!IHBB", (version << 28), plen, nh, hlim)
    return first + a(src) + a(dst) + payload


def generic_ext(nh: int, hdrlen: int, fill: int = 0) -> bytes:
    """A (hdrlen+1)*8-octet extension header (HBH, DestOpt, Mobility, ...)."""
    size = (hdrlen + 1) * 8
    return bytes([nh, hdrlen]) + bytes([fill]) * (size - 2)


def padn_ext(nh: int, hdrlen: int = 0) -> bytes:
    """HBH/DestOpt body: one PadN option filling the header."""
    size = (hdrlen + 1) * 8
    return bytes([nh, hdrlen, 1, size - 4]) + bytes(size - 4)


def routing0(nh: int, addrs: list[str]) -> bytes:
    """Type 0 routing header with the given addresses."""
    return bytes([nh, 2 * len(addrs), 0, len(addrs)]) + bytes(4) + b"".join(a(x) for x in addrs)


def ah(nh: int, payloadlen: int) -> bytes:
    """AH: (payloadlen + 2) * 4 octets."""
    size = (payloadlen + 2) * 4
    return bytes([nh, payloadlen]) + bytes(2) + struct.pack("!II", 0x100, 1) + bytes(size - 12)


def frag(nh: int, offset_octets: int, more: int, ident: int) -> bytes:
    """Fragment header; offset_octets must be a multiple of 8."""
    return struct.pack("!BBHI", nh, 0, offset_octets | more, ident)


def icmp(t: int, c: int = 0, body: bytes = bytes(4)) -> bytes:
    """ICMPv6 message with a zero checksum (the parser does not check it)."""
    return bytes([t, c, 0, 0]) + body


def opt(t: int, n8: int, fill: int = 0) -> bytes:
    """ND option of n8 * 8 octets (n8 = 0 gives the 2 header octets only + 6 pad)."""
    size = max(n8 * 8, 8)
    return bytes([t, n8]) + bytes([fill]) * (size - 2)


SLLA = opt(1, 1, 0xAA)
ECHO = icmp(128, 0, struct.pack("!HH", 1, 1))


def rs(code: int = 0, options: bytes = SLLA) -> bytes:
    return icmp(133, code, bytes(4)) + options


def ra(options: bytes = b"") -> bytes:
    return icmp(134, 0, struct.pack("!BBH", 64, 0, 1800) + bytes(8)) + options


def ns(target: str, options: bytes = b"") -> bytes:
    return icmp(135, 0, bytes(4) + a(target)) + options


def na(target: str, flags: int = 0x40, options: bytes = b"") -> bytes:
    return icmp(136, 0, bytes([flags, 0, 0, 0]) + a(target)) + options


def redirect(target: str, dest: str, options: bytes = b"") -> bytes:
    return icmp(137, 0, bytes(4) + a(target) + a(dest)) + options


VECTORS: list[dict[str, Any]] = []


def vec(name: str, packet: bytes, ext_limit: int | None = None, **expect: Any) -> None:
    """Record one vector."""
    entry: dict[str, Any] = {"id": name, "hex": packet.hex(), "expect": expect}
    if ext_limit is not None:
        entry["ext_limit"] = ext_limit
    VECTORS.append(entry)


OK_ICMP: dict[str, Any] = {"upper_layer": 58, "upper_layer_offset": 40, "chain_complete": True,
           "malformed": [], "ext_headers": []}


def types() -> None:
    """One vector per ICMPv6 type that matters (code 0, 8-octet message)."""
    plain = [1, 3, 4, 128, 129, 130, 131, 132, 138, 139, 140, 141, 142, 143, 144, 145, 146,
             147, 148, 149, 151, 152, 153, 200, 201, 255, 5, 160]
    for t in plain:
        vec(f"type-{t}", ipv6(58, icmp(t, 0), src=LL1, dst=ALL_NODES, hlim=255),
            icmpv6_type=t, icmpv6_code=0, icmpv6_length=8, mtu=None, nd_valid=None,
            nd_failed=[], **OK_ICMP)
    vec("type-1-code-4", ipv6(58, icmp(1, 4, bytes(4)) + bytes(40)),
        icmpv6_type=1, icmpv6_code=4, icmpv6_length=48, mtu=None, **OK_ICMP)
    vec("type-2-ptb", ipv6(58, icmp(2, 0, struct.pack("!I", 1280)) + bytes(48)),
        icmpv6_type=2, icmpv6_code=0, icmpv6_length=56, mtu=1280, **OK_ICMP)
    vec("type-2-ptb-max-mtu", ipv6(58, icmp(2, 0, struct.pack("!I", 0xFFFFFFFF))),
        icmpv6_type=2, mtu=4294967295, **OK_ICMP)
    vec("type-2-ptb-no-mtu", ipv6(58, bytes([2, 0, 0, 0])),
        icmpv6_type=2, icmpv6_length=4, mtu=None, **OK_ICMP)
    vec("type-128-code-255", ipv6(58, icmp(128, 255)), icmpv6_type=128, icmpv6_code=255,
        **OK_ICMP)
    nd: dict[str, Any] = {"nd_valid": True, "nd_failed": [], **OK_ICMP}
    vec("type-133-rs", ipv6(58, rs(), src=LL1, dst=ALL_ROUTERS, hlim=255),
        icmpv6_type=133, icmpv6_length=16, **nd)
    vec("type-134-ra", ipv6(58, ra(SLLA), src=LL1, dst=ALL_NODES, hlim=255),
        icmpv6_type=134, icmpv6_length=24, **nd)
    vec("type-135-ns", ipv6(58, ns(LL2, SLLA), src=LL1, dst=SOL2, hlim=255),
        icmpv6_type=135, icmpv6_length=32, **nd)
    vec("type-135-ns-dad", ipv6(58, ns(LL2), src=UNSPEC, dst=SOL2, hlim=255),
        icmpv6_type=135, src_class="unspecified", dst_class="solicited_node", **nd)
    vec("type-136-na", ipv6(58, na(LL2, 0x60), src=LL2, dst=LL1, hlim=255),
        icmpv6_type=136, icmpv6_length=24, **nd)
    vec("type-136-na-unsolicited-mcast", ipv6(58, na(LL2, 0x20), src=LL2, dst=ALL_NODES,
                                                hlim=255), icmpv6_type=136, **nd)
    vec("type-137-redirect", ipv6(58, redirect(LL3, "2001:db8::99"), src=LL1, dst=GUA1,
                                  hlim=255), icmpv6_type=137, icmpv6_length=40, **nd)
    vec("type-137-redirect-target-is-dest",
        ipv6(58, redirect("2001:db8::99", "2001:db8::99"), src=LL1, dst=GUA1, hlim=255),
        icmpv6_type=137, **nd)


def nd_failures() -> None:
    """One ND vector per RFC 4861 check, each failing that check alone."""
    def bad(name: str, packet: bytes, *failed: str) -> None:
        vec(f"nd-{name}", packet, nd_valid=False, nd_failed=list(failed), malformed=[])

    bad("hop-limit", ipv6(58, rs(), src=LL1, dst=ALL_ROUTERS, hlim=64), "hop_limit")
    bad("code", ipv6(58, rs(code=1), src=LL1, dst=ALL_ROUTERS, hlim=255), "code")
    bad("length-ns", ipv6(58, ns(LL2)[:20], src=LL1, dst=SOL2, hlim=255), "length")
    bad("length-redirect", ipv6(58, redirect(LL3, GUA2)[:39], src=LL1, dst=GUA1, hlim=255),
        "length")
    bad("target-multicast-ns", ipv6(58, ns("ff02::1"), src=LL1, dst=SOL2, hlim=255),
        "target_multicast")
    bad("target-multicast-na", ipv6(58, na("ff02::1", 0), src=LL2, dst=LL1, hlim=255),
        "target_multicast")
    bad("destination-multicast-redirect",
        ipv6(58, redirect(LL3, "ff05::2"), src=LL1, dst=GUA1, hlim=255), "target_multicast")
    bad("source-not-link-local-ra", ipv6(58, ra(), src=GUA1, dst=ALL_NODES, hlim=255),
        "source_not_link_local")
    bad("source-not-link-local-redirect",
        ipv6(58, redirect(LL3, GUA2), src=GUA1, dst=GUA2, hlim=255), "source_not_link_local")
    bad("dad-destination", ipv6(58, ns(LL2), src=UNSPEC, dst=ALL_NODES, hlim=255),
        "dad_destination")
    bad("dad-slla-ns", ipv6(58, ns(LL2, SLLA), src=UNSPEC, dst=SOL2, hlim=255), "dad_slla")
    bad("dad-slla-rs", ipv6(58, rs(), src=UNSPEC, dst=ALL_ROUTERS, hlim=255), "dad_slla")
    bad("option-length-zero", ipv6(58, rs(options=opt(1, 0)), src=LL1, dst=ALL_ROUTERS,
                                   hlim=255), "option_length")
    bad("option-overrun", ipv6(58, na(LL2, 0x60, opt(2, 2)[:8]), src=LL2, dst=LL1, hlim=255),
        "option_length")
    bad("option-odd-tail", ipv6(58, ra(SLLA + b"\x01"), src=LL1, dst=ALL_NODES, hlim=255),
        "option_length")
    bad("na-solicited-multicast", ipv6(58, na(LL2, 0x40), src=LL2, dst=ALL_NODES, hlim=255),
        "na_solicited_multicast")
    bad("redirect-target", ipv6(58, redirect(GUA2, "2001:db8::99"), src=LL1, dst=GUA1,
                                hlim=255), "redirect_target")
    bad("several", ipv6(58, rs(code=3, options=opt(1, 0)), src=UNSPEC, dst=ALL_ROUTERS,
                        hlim=1), "hop_limit", "code", "dad_slla", "option_length")


ADDRS = [
    ("::", "unspecified", None), ("::1", "loopback", None),
    ("::ffff:192.0.2.1", "ipv4_mapped", None), ("fe80::1", "link_local", None),
    ("febf:ffff::1", "link_local", None), ("fd00::1", "unique_local", None),
    ("fc00::1", "unique_local", None), ("ff02::1:ff00:1", "solicited_node", 2),
    ("ff02::1:ffff:ffff", "solicited_node", 2), ("ff02::1:fe00:1", "multicast", 2),
    ("ff12::1:ff00:1", "multicast", 2), ("ff05::2", "multicast", 5),
    ("ff0e::1", "multicast", 14), ("ff01::1", "multicast", 1),
    ("2001:db8::1", "global_unicast", None),
    ("3fff::1", "global_unicast", None), ("::2", "global_unicast", None),
    ("fec0::1", "global_unicast", None), ("fe00::1", "global_unicast", None),
    ("::ffff:0:1.2.3.4", "global_unicast", None),
]


def addresses() -> None:
    """Every address class, as source and as destination."""
    for text, cls, scope in ADDRS:
        canon = ipaddress.IPv6Address(text).compressed  # how Python spells it
        vec(f"addr-src-{text}", ipv6(58, ECHO, src=text, dst=GUA2), src=canon, src_class=cls,
            src_mcast_scope=scope, dst_class="global_unicast", dst_mcast_scope=None)
        vec(f"addr-dst-{text}", ipv6(58, ECHO, src=GUA1, dst=text), dst=canon, dst_class=cls,
            dst_mcast_scope=scope, src_class="global_unicast")


def chains() -> None:
    """Extension-header chains, upper layers other than ICMPv6, limits."""
    def ok(name: str, packet: bytes, ext: list[int], off: int, **more: Any) -> None:
        base: dict[str, Any] = {"ext_headers": ext, "upper_layer": 58, "upper_layer_offset": off,
                "chain_complete": True, "malformed": [], "icmpv6_type": 128,
                "icmpv6_length": 8}
        base.update(more)
        vec(name, packet, **base)

    ok("chain-hbh", ipv6(0, padn_ext(58) + ECHO), [0], 48, frag_status="none")
    ok("chain-hbh-long", ipv6(0, padn_ext(58, 3) + ECHO), [0], 72)
    ok("chain-destopt", ipv6(60, padn_ext(58) + ECHO), [60], 48)
    ok("chain-routing", ipv6(43, routing0(58, [GUA2]) + ECHO), [43], 64)
    ok("chain-ah", ipv6(51, ah(58, 4) + ECHO), [51], 64)
    ok("chain-ah-min", ipv6(51, ah(58, 1) + ECHO), [51], 52)
    ok("chain-mobility", ipv6(135, generic_ext(58, 1) + ECHO), [135], 56)
    ok("chain-hip", ipv6(139, generic_ext(58, 0) + ECHO), [139], 48)
    ok("chain-shim6", ipv6(140, generic_ext(58, 0) + ECHO), [140], 48)
    ok("chain-exp253", ipv6(253, generic_ext(254, 0) + generic_ext(58, 2) + ECHO),
       [253, 254], 72)
    ok("frag-atomic", ipv6(44, frag(58, 0, 0, 0x12345678) + ECHO), [44], 48,
       frag_status="atomic", frag_offset=0, frag_more=False, frag_id=0x12345678)
    ok("frag-first", ipv6(44, frag(58, 0, 1, 7) + ECHO), [44], 48,
       frag_status="first", frag_offset=0, frag_more=True, frag_id=7)
    vec("frag-non-first", ipv6(44, frag(58, 1448, 1, 7) + bytes(16)),
        ext_headers=[44], upper_layer=None, upper_layer_offset=None, chain_complete=False,
        frag_status="non_first", frag_offset=1448, frag_more=True, frag_id=7,
        icmpv6_type=None, icmpv6_code=None, icmpv6_length=0, malformed=[])
    vec("frag-non-first-last", ipv6(44, frag(58, 65528, 0, 0xFFFFFFFF) + bytes(8)),
        ext_headers=[44], frag_status="non_first", frag_offset=65528, frag_more=False,
        frag_id=0xFFFFFFFF, upper_layer=None, malformed=[])
    nested = (padn_ext(60) + padn_ext(43) + routing0(44, [GUA2]) + frag(51, 0, 0, 9)
              + ah(60, 4) + padn_ext(58, 1) + ECHO)
    ok("chain-nested", ipv6(0, nested), [0, 60, 43, 44, 51, 60], 128, frag_status="atomic")
    sixteen = b"".join(padn_ext(60) for _ in range(15)) + padn_ext(58)
    ok("chain-16-destopt", ipv6(60, sixteen + ECHO), [60] * 16, 40 + 16 * 8)
    seventeen = b"".join(padn_ext(60) for _ in range(16)) + padn_ext(58)
    vec("chain-17-too-many", ipv6(60, seventeen + ECHO), ext_headers=[60] * 16,
        upper_layer=None, upper_layer_offset=None, chain_complete=False,
        malformed=["too_many_ext_headers"], icmpv6_type=None)
    ok("chain-17-limit-17", ipv6(60, seventeen + ECHO), [60] * 17, 40 + 17 * 8, ext_limit=17)
    vec("chain-limit-0-clamped-to-1", ipv6(0, padn_ext(60) + padn_ext(58) + ECHO),
        ext_limit=0, ext_headers=[0], malformed=["too_many_ext_headers"], upper_layer=None)
    vec("chain-limit-clamped-to-64", ipv6(60, b"".join(padn_ext(60) for _ in range(64))
                                          + padn_ext(58) + ECHO),
        ext_limit=1000, ext_headers=[60] * 64, malformed=["too_many_ext_headers"])
    vec("upper-esp", ipv6(50, struct.pack("!II", 0x1000, 1) + bytes(24)), ext_headers=[],
        upper_layer=50, upper_layer_offset=40, chain_complete=True, malformed=[],
        icmpv6_type=None, icmpv6_length=0, nd_valid=None, mtu=None)
    vec("upper-esp-after-destopt", ipv6(60, padn_ext(50) + bytes(16)), ext_headers=[60],
        upper_layer=50, upper_layer_offset=48, chain_complete=True, malformed=[])
    vec("upper-no-next-header", ipv6(59, b""), ext_headers=[], upper_layer=59,
        upper_layer_offset=40, chain_complete=True, malformed=[], icmpv6_type=None)
    vec("upper-no-next-header-after-hbh", ipv6(0, padn_ext(59)), ext_headers=[0],
        upper_layer=59, upper_layer_offset=48, chain_complete=True, malformed=[])
    vec("upper-tcp", ipv6(6, bytes(20)), upper_layer=6, chain_complete=True, malformed=[])
    vec("upper-tcp-short", ipv6(6, bytes(19)), upper_layer=6, chain_complete=False,
        malformed=[])
    vec("upper-udp", ipv6(17, bytes(8)), upper_layer=17, chain_complete=True, malformed=[])
    vec("upper-udp-short", ipv6(17, bytes(7)), upper_layer=17, chain_complete=False,
        malformed=[])
    vec("upper-unknown", ipv6(99, b""), upper_layer=99, upper_layer_offset=40,
        chain_complete=True, malformed=[])
    vec("nd-in-first-fragment", ipv6(44, frag(58, 0, 1, 3) + ns(LL2, SLLA), src=LL1, dst=SOL2,
                                     hlim=255),
        frag_status="first", icmpv6_type=135, nd_valid=True, nd_failed=[], chain_complete=True)


def broken() -> None:
    """Malformed packets: one flag each where possible."""
    vec("empty", b"", version=None, payload_length=None, hop_limit=None, src=None, dst=None,
        src_class="absent", dst_class="absent", malformed=["truncated_ipv6_header"],
        upper_layer=None, chain_complete=False, icmpv6_type=None, icmpv6_length=0,
        frag_status="none", ext_headers=[])
    vec("one-octet-v6", b"\x60", version=6, malformed=["truncated_ipv6_header"],
        src_class="absent")
    vec("one-octet-v4", b"\x45", version=4, malformed=["bad_version", "truncated_ipv6_header"])
    vec("39-octets", ipv6(58, ECHO)[:39], version=6, payload_length=None, hop_limit=None,
        malformed=["truncated_ipv6_header"], dst_class="absent")
    vec("bad-version", ipv6(58, ECHO, version=4), version=4, malformed=["bad_version"],
        hop_limit=64, src="2001:db8::1", src_class="global_unicast", upper_layer=None,
        icmpv6_type=None, ext_headers=[])
    vec("plen-short-trailer", ipv6(58, ECHO + bytes(4), plen=8), payload_length=8,
        malformed=["payload_length_mismatch"], icmpv6_type=128, icmpv6_length=8,
        chain_complete=True)
    vec("plen-long-cut", ipv6(58, ECHO, plen=1000), payload_length=1000,
        malformed=["payload_length_mismatch"], icmpv6_type=128, icmpv6_length=8,
        chain_complete=True)
    vec("plen-zero-jumbo", ipv6(0, bytes([58, 0, 0xC2, 4]) + struct.pack("!I", 70000) + ECHO,
                                plen=0),
        payload_length=0, malformed=["payload_length_mismatch", "ext_header_overrun"],
        ext_headers=[], upper_layer=None)
    vec("plen-hides-icmp", ipv6(0, padn_ext(58) + ECHO, plen=8), ext_headers=[0],
        upper_layer=58, upper_layer_offset=48, chain_complete=False, icmpv6_length=0,
        malformed=["payload_length_mismatch", "icmpv6_header_truncated"])
    vec("ext-overrun", ipv6(0, bytes([58, 1]) + bytes(6)),
        malformed=["ext_header_overrun"], ext_headers=[], upper_layer=None,
        chain_complete=False)
    vec("ext-overrun-second", ipv6(0, padn_ext(60) + bytes([58, 3]) + bytes(6)),
        malformed=["ext_header_overrun"], ext_headers=[0], upper_layer=None)
    vec("ext-overrun-1-octet", ipv6(60, b"\x3a"), malformed=["ext_header_overrun"],
        ext_headers=[])
    vec("frag-overrun", ipv6(44, frag(58, 0, 1, 1)[:7]), malformed=["ext_header_overrun"],
        ext_headers=[], frag_status="none")
    vec("ah-overrun", ipv6(51, ah(58, 4)[:20]), malformed=["ext_header_overrun"],
        ext_headers=[])
    vec("icmp-truncated", ipv6(58, b"\x80\x00"), malformed=["icmpv6_header_truncated"],
        upper_layer=58, upper_layer_offset=40, chain_complete=False, icmpv6_type=None,
        icmpv6_code=None, icmpv6_length=2)
    vec("icmp-absent", ipv6(58, b""), malformed=["icmpv6_header_truncated"],
        upper_layer=58, chain_complete=False, icmpv6_length=0)
    vec("first-frag-chain-cut", ipv6(44, frag(60, 0, 1, 5) + bytes([58, 1]) + bytes(6)),
        malformed=[], ext_headers=[44], frag_status="first", upper_layer=None,
        upper_layer_offset=None, chain_complete=False)
    vec("first-frag-icmp-cut", ipv6(44, frag(58, 0, 1, 5) + b"\x80\x00"), malformed=[],
        ext_headers=[44], upper_layer=58, upper_layer_offset=48, chain_complete=False,
        icmpv6_type=None, icmpv6_length=2)
    vec("atomic-frag-icmp-cut", ipv6(44, frag(58, 0, 0, 5) + b"\x80\x00"),
        malformed=["icmpv6_header_truncated"], chain_complete=False)


def main() -> None:
    """Build every vector and write the JSON file."""
    for group in (types, nd_failures, addresses, chains, broken):
        group()
    ids = [v["id"] for v in VECTORS]
    assert len(ids) == len(set(ids)), "vector ids must be unique"
    OUT.write_text(json.dumps({"vectors": VECTORS}, indent=1) + "\n")
    print(f"wrote {len(VECTORS)} vectors to {OUT}")


if __name__ == "__main__":
    main()
