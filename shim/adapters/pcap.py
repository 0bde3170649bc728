# SPDX-License-Identifier: MIT
"""Read IPv6 packets from pcap and pcapng files (no dependency).

Yields the IPv6 packet of each record (octet 0 = IPv6 header), as NFQUEUE
would deliver it. Link types: raw IPv6 (101, 229), Ethernet (1, with VLAN
tags), Linux cooked (113, 276). Records of other link types or non-IPv6
frames are reported as skipped, not silently lost.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from shim.core.errors import ShimError

__all__ = ["PcapError", "Record", "read_packets"]

ETH_IPV6, ETH_VLAN, ETH_QINQ = 0x86DD, 0x8100, 0x88A8


class PcapError(ShimError):
    """The capture file cannot be read."""


@dataclass(frozen=True, slots=True)
class Record:
    index: int           # 1-based record number in the file
    timestamp: float
    packet: bytes | None  # the IPv6 packet, or None if the record is not one
    skipped: str | None = None


def _trim(pkt: bytes) -> bytes:
    """Drop link-layer padding after the IPv6 packet (Ethernet pads frames to 60 octets),
    so a replayed packet is the one NFQUEUE would have delivered."""
    if len(pkt) >= 40 and pkt[0] >> 4 == 6:
        length = 40 + struct.unpack_from("!H", pkt, 4)[0]
        if 40 < length < len(pkt):
            return pkt[:length]
    return pkt


def _ipv6_from(linktype: int, frame: bytes) -> tuple[bytes | None, str | None]:
    pkt, why = _frame_payload(linktype, frame)
    return (None if pkt is None else (pkt if linktype in (101, 229) else _trim(pkt))), why


def _frame_payload(linktype: int, frame: bytes) -> tuple[bytes | None, str | None]:
    if linktype in (101, 229):
        return frame, None
    if linktype == 1:
        off, etype = 12, None
        while off + 2 <= len(frame):
            etype = struct.unpack_from("!H", frame, off)[0]
            if etype in (ETH_VLAN, ETH_QINQ):
                off += 4
                continue
            off += 2
            break
        return (frame[off:], None) if etype == ETH_IPV6 else (None, f"ethertype {etype:#06x}" if etype else "short frame")
    if linktype == 113 and len(frame) >= 16:
        etype = struct.unpack_from("!H", frame, 14)[0]
        return (frame[16:], None) if etype == ETH_IPV6 else (None, f"protocol {etype:#06x}")
    if linktype == 276 and len(frame) >= 20:
        etype = struct.unpack_from("!H", frame, 0)[0]
        return (frame[20:], None) if etype == ETH_IPV6 else (None, f"protocol {etype:#06x}")
    return None, f"link type {linktype} not supported"


def _pcap(f: BinaryIO, head: bytes) -> Iterator[Record]:
    magic = head[:4]
    endian = {b"\xd4\xc3\xb2\xa1": "<", b"\xa1\xb2\xc3\xd4": ">", b"\x4d\x3c\xb2\xa1": "<",
              b"\xa1\xb2\x3c\x4d": ">"}[magic]
    nano = magic in (b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d")
    rest = f.read(20)
    if len(rest) < 20:
        raise PcapError("truncated pcap file header")
    linktype = struct.unpack(endian + "IHHiIII", head[:4] + rest)[6] & 0xFFFF
    index = 0
    while True:
        rh = f.read(16)
        if not rh:
            return
        if len(rh) < 16:
            raise PcapError(f"record {index + 1}: truncated record header")
        sec, frac, incl, _orig = struct.unpack(endian + "IIII", rh)
        data = f.read(incl)
        index += 1
        if len(data) < incl:
            raise PcapError(f"record {index}: truncated record data")
        pkt, why = _ipv6_from(linktype, data)
        yield Record(index, sec + frac / (1e9 if nano else 1e6), pkt, why)


def _pcapng(f: BinaryIO, head: bytes) -> Iterator[Record]:
    endian = "<"
    linktypes: list[int] = []
    index = 0
    block = head
    while True:
        if len(block) < 8:
            if block:
                raise PcapError("truncated pcapng block header")
            return
        btype = struct.unpack(endian + "I", block[:4])[0]
        if btype == 0x0A0D0D0A:
            bom = f.read(4)
            endian = "<" if bom == b"\x4d\x3c\x2b\x1a" else ">"
            blen = struct.unpack(endian + "I", block[4:8])[0]
            if blen < 28 or blen % 4:
                raise PcapError(f"pcapng section header of impossible length {blen}")
            body = bom + f.read(blen - 12)
            linktypes = []
        else:
            blen = struct.unpack(endian + "I", block[4:8])[0]
            if blen < 12 or blen % 4:
                raise PcapError(f"pcapng block of impossible length {blen}")
            body = f.read(blen - 8)
            if len(body) < blen - 8:
                raise PcapError("truncated pcapng block")
            minimum = {1: 8, 6: 20, 3: 4}.get(btype, 0)
            if len(body) - 4 < minimum:
                raise PcapError(f"pcapng block type {btype} of impossible length {blen}")
            if btype == 1:
                linktypes.append(struct.unpack_from(endian + "H", body, 0)[0])
            elif btype in (6, 3):
                index += 1
                if btype == 6:
                    iface, hi, lo, cap = struct.unpack_from(endian + "IIII", body, 0)
                    data, ts = body[20:20 + cap], ((hi << 32) | lo) / 1e6
                else:
                    iface, ts = 0, 0.0
                    orig = struct.unpack_from(endian + "I", body, 0)[0]
                    data = body[4:4 + orig]
                if iface >= len(linktypes):
                    yield Record(index, ts, None, f"unknown interface {iface}")
                else:
                    pkt, why = _ipv6_from(linktypes[iface], data)
                    yield Record(index, ts, pkt, why)
        block = f.read(8)


def read_packets(f: BinaryIO) -> Iterator[Record]:
    """Iterate over the records of a pcap or pcapng stream.

    Raises:
        PcapError: not a capture file, or truncated.
    """
    head = f.read(4)
    if head in (b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\xc3\xd4", b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d"):
        return _pcap(f, head)
    if head == b"\x0a\x0d\x0d\x0a":
        return _pcapng(f, head + f.read(4))
    raise PcapError("not a pcap or pcapng file (unknown magic number)")
