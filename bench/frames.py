# SPDX-License-Identifier: MIT
"""Ethernet frames the generator floods: small ICMPv6 packets, pure functions.

Profiles (each a list of frames the generator cycles through):
- "echo": Echo Request a -> b (forwarded by the gateway);
- "ns":   Neighbor Solicitation to the gateway's solicited-node group, for a
          target the gateway does not own (judged at input, then ignored);
- "mix":  echo, echo behind a Destination Options header, echo behind an
          atomic Fragment header, and NS, in turn.
Checksums are correct, so the receivers count them as ordinary traffic.
"""

from __future__ import annotations

import ipaddress
import struct

__all__ = ["PROFILES", "frames", "frames_file", "icmp6_packet"]

PROFILES = ("echo", "ns", "mix")


def _a(text: str) -> bytes:
    return ipaddress.IPv6Address(text).packed


def _checksum(src: bytes, dst: bytes, upper: bytes) -> int:
    data = src + dst + struct.pack("!IxxxB", len(upper), 58) + upper
    data += b"\0" * (len(data) % 2)
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def icmp6_packet(src: str, dst: str, icmp_type: int, code: int, body: bytes, *,
                 hop_limit: int = 64, ext: bytes = b"", ext_first: int = 58) -> bytes:
    """An IPv6 packet carrying one ICMPv6 message, optionally behind extension headers.

    `ext` is the raw extension-header chain (its last Next Header must be 58) and
    `ext_first` the Next Header value of its first header.
    """
    s, d = _a(src), _a(dst)
    msg = struct.pack("!BBH", icmp_type, code, 0) + body
    msg = msg[:2] + struct.pack("!H", _checksum(s, d, msg)) + msg[4:]
    nh = ext_first if ext else 58
    return struct.pack("!IHBB", 6 << 28, len(ext) + len(msg), nh, hop_limit) + s + d + ext + msg


def _eth(dst_mac: bytes, src_mac: bytes, packet: bytes) -> bytes:
    return dst_mac + src_mac + b"\x86\xdd" + packet


def _solicited(addr: str) -> tuple[str, bytes]:
    low = _a(addr)[13:]
    group = ipaddress.IPv6Address(b"\xff\x02" + b"\0" * 9 + b"\x01\xff" + low)
    return str(group), b"\x33\x33\xff" + low


def frames(profile: str, *, src_mac: bytes, gw_mac: bytes, src: str, src_ll: str,
           dst: str, gw: str) -> list[bytes]:
    """The frames of one profile (see the module docstring).

    Raises:
        ValueError: unknown profile.
    """
    echo = icmp6_packet(src, dst, 128, 0, struct.pack("!HH", 0x6236, 1) + b"bench-icmp6-shim")
    dstopts = bytes([58, 0, 1, 4, 0, 0, 0, 0])  # PadN to 8 octets
    echo_opt = icmp6_packet(src, dst, 128, 0, struct.pack("!HH", 0x6236, 2) + b"x" * 8,
                            ext=dstopts, ext_first=60)
    atomic = struct.pack("!BBHI", 58, 0, 0, 0x1234)  # RFC 6946 atomic fragment
    echo_frag = icmp6_packet(src, dst, 128, 0, struct.pack("!HH", 0x6236, 3) + b"y" * 8,
                             ext=atomic, ext_first=44)
    group, group_mac = _solicited(gw)
    target = bytearray(_a(gw))
    target[12] ^= 0xFF  # same solicited-node group, an address the gateway does not own
    ns = icmp6_packet(src_ll, group, 135, 0, b"\0" * 4 + bytes(target) + b"\x01\x01" + src_mac,
                      hop_limit=255)
    by_profile = {
        "echo": [_eth(gw_mac, src_mac, echo)],
        "ns": [_eth(group_mac, src_mac, ns)],
        "mix": [_eth(gw_mac, src_mac, echo), _eth(gw_mac, src_mac, echo_opt),
                _eth(gw_mac, src_mac, echo_frag), _eth(group_mac, src_mac, ns)],
    }
    if profile not in by_profile:
        raise ValueError(f"unknown profile {profile!r}; choose one of {PROFILES}")
    return by_profile[profile]


def frames_file(frame_list: list[bytes]) -> bytes:
    """The generator's input: each frame as a 2-octet little-endian length, then the frame."""
    return b"".join(struct.pack("<H", len(f)) + f for f in frame_list)
