# SPDX-License-Identifier: MIT
"""Build raw IPv6/ICMPv6 packets (with checksum) for the demo, testbed and tests.

Pure functions over bytes; scapy is not needed on the packet path or here.
"""

from __future__ import annotations

import ipaddress
import struct

__all__ = ["checksum", "ext_header", "fragment_header", "icmp6_packet", "ipv6_packet"]

ICMPV6 = 58


def checksum(src: bytes, dst: bytes, next_header: int, upper: bytes) -> int:
    """RFC 8200 §8.1 upper-layer checksum over the pseudo-header."""
    data = src + dst + struct.pack("!I3xB", len(upper), next_header) + upper
    if len(data) % 2:
        data += b"\0"
    total = int(sum(struct.unpack(f"!{len(data) // 2}H", data)))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def ext_header(next_header: int, body: bytes = b"\x01\x04\x00\x00\x00\x00") -> bytes:
    """A generic extension header (Hop-by-Hop, Destination Options...): padded to 8n octets."""
    raw = bytes([next_header, 0]) + body
    raw += b"\0" * (-len(raw) % 8)
    return bytes([next_header, len(raw) // 8 - 1]) + raw[2:]


def fragment_header(next_header: int, offset: int = 0, more: bool = False, ident: int = 1) -> bytes:
    """An 8-octet Fragment header; offset in octets (multiple of 8)."""
    return struct.pack("!BBHI", next_header, 0, (offset & 0xFFF8) | int(more), ident)


def ipv6_packet(src: str, dst: str, next_header: int, payload: bytes, hop_limit: int = 64) -> bytes:
    """An IPv6 header in front of `payload` (which starts with the first Next Header's data)."""
    s, d = ipaddress.IPv6Address(src).packed, ipaddress.IPv6Address(dst).packed
    return struct.pack("!IHBB", 6 << 28, len(payload), next_header, hop_limit) + s + d + payload


def icmp6_packet(src: str, dst: str, icmp_type: int, code: int = 0, body: bytes = b"",
                 hop_limit: int = 64, ext: tuple[tuple[int, bytes], ...] = ()) -> bytes:
    """IPv6 + optional extension headers + ICMPv6 message with a valid checksum.

    `ext` lists (header protocol number, header bytes as built by ext_header or
    fragment_header with any next_header; it is rewritten to chain correctly).
    """
    s, d = ipaddress.IPv6Address(src).packed, ipaddress.IPv6Address(dst).packed
    msg = bytes([icmp_type, code, 0, 0]) + body
    msg = msg[:2] + struct.pack("!H", checksum(s, d, ICMPV6, msg)) + msg[4:]
    chain = b""
    protos = [p for p, _ in ext] + [ICMPV6]
    for (_, raw), nxt in zip(ext, protos[1:]):
        chain += bytes([nxt]) + raw[1:]
    return ipv6_packet(src, dst, protos[0], chain + msg, hop_limit)
