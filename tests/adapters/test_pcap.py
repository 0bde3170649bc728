# SPDX-License-Identifier: MIT
"""The capture reader: link types, padding, and hostile files (PcapError, nothing else)."""

from __future__ import annotations

import io
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shim.lab.packets import icmp6_packet
from shim.adapters.pcap import PcapError, read_packets

PKT = icmp6_packet("2001:db8::1", "2001:db8::2", 128, 0, b"\x00\x01\x00\x01")  # 52 octets


def _pcap(linktype: int, frames: list[bytes]) -> bytes:
    out = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, linktype)
    for f in frames:
        out += struct.pack("<IIII", 1, 2, len(f), len(f)) + f
    return out


class TestPcap:
    def test_ethernet_padding_is_trimmed(self) -> None:
        """A short IPv6 packet padded to 60 octets comes back as NFQUEUE would deliver it."""
        frame = b"\x33\x33\0\0\0\1" + b"\x02" * 6 + b"\x86\xdd" + PKT[:44]
        frame += b"\0" * (60 - len(frame))
        short = PKT[:4] + struct.pack("!H", 4) + PKT[6:44]
        frame = frame[:14] + short + frame[14 + len(short):]
        (rec,) = read_packets(io.BytesIO(_pcap(1, [frame])))
        assert rec.packet == short

    def test_vlan_and_non_ipv6(self) -> None:
        """A VLAN tag is skipped; an IPv4 frame is reported as skipped, not lost silently."""
        vlan = b"\0" * 12 + b"\x81\x00\x00\x05\x86\xdd" + PKT
        ipv4 = b"\0" * 12 + b"\x08\x00" + b"\x45" + b"\0" * 19
        recs = list(read_packets(io.BytesIO(_pcap(1, [vlan, ipv4]))))
        assert recs[0].packet == PKT and recs[1].packet is None and "0x0800" in str(recs[1].skipped)

    @pytest.mark.parametrize("blob", [
        b"\x0a\x0d\x0d\x0a\x08\x00\x00\x00\x4d\x3c\x2b\x1a",            # SHB shorter than 28
        b"\x0a\x0d\x0d\x0a\x1c\x00\x00\x00\x4d\x3c\x2b\x1a" + b"\0" * 16
        + struct.pack("<II", 6, 16) + b"\0" * 8,                         # EPB shorter than its header
        _pcap(229, [PKT])[:-3],                                          # truncated record
    ])
    def test_hostile_files_raise_pcap_error(self, blob: bytes) -> None:
        """Impossible lengths and truncation are PcapError."""
        with pytest.raises(PcapError):
            list(read_packets(io.BytesIO(blob)))

    @settings(max_examples=300, deadline=None)
    @given(st.sampled_from([b"\xd4\xc3\xb2\xa1", b"\x0a\x0d\x0d\x0a"]), st.binary(max_size=300))
    def test_any_bytes_give_records_or_pcap_error(self, magic: bytes, rest: bytes) -> None:
        """Whatever follows a valid magic number, the reader yields records or raises PcapError."""
        try:
            for rec in read_packets(io.BytesIO(magic + rest)):
                assert rec.packet is None or isinstance(rec.packet, bytes)
        except PcapError:
            pass
