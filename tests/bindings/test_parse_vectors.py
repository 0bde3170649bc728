# SPDX-License-Identifier: MIT
"""Known-answer tests for shim.bindings.icmp6.parse.

The vectors in tests/data/vectors.json carry hand-written expectations
(tests/data/make_vectors.py builds them without calling the parser). The
truncation test cuts one packet at every length and derives the expected
outcome from the contract in native/icmp6.h, not from the parser.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import pytest

from shim.core.model import PacketView
from shim.bindings.icmp6 import parse

__all__: list[str] = []

VECTORS: list[dict[str, Any]] = json.loads(
    (Path(__file__).resolve().parents[1] / "data" / "vectors.json").read_text()
)["vectors"]


def _field(view: PacketView, name: str) -> Any:
    """A PacketView field in the JSON spelling (tuples as lists)."""
    value = getattr(view, name)
    return list(value) if isinstance(value, tuple) else value


class TestVectors:
    """Every known-answer vector parses to its expected fields."""

    @pytest.mark.parametrize("vector", VECTORS, ids=[v["id"] for v in VECTORS])
    def test_vector(self, vector: dict[str, Any]) -> None:
        """The listed fields equal the hand-written expectation."""
        view = parse(bytes.fromhex(vector["hex"]), vector.get("ext_limit", 16))
        got = {name: _field(view, name) for name in vector["expect"]}
        assert got == vector["expect"]

    def test_nd_valid_agrees_with_failures(self) -> None:
        """nd_valid is True exactly when no ND check failed, across all vectors."""
        for vector in VECTORS:
            view = parse(bytes.fromhex(vector["hex"]), vector.get("ext_limit", 16))
            if view.nd_valid is not None:
                assert view.nd_valid == (view.nd_failed == ()), vector["id"]
            else:
                assert view.nd_failed == (), vector["id"]

    def test_every_check_has_a_vector(self) -> None:
        """Each ND check and each malformed flag is exercised by some vector."""
        from shim.core.model import MALFORMED_FLAGS, ND_CHECKS
        nd = {n for v in VECTORS for n in v["expect"].get("nd_failed", [])}
        mal = {n for v in VECTORS for n in v["expect"].get("malformed", [])}
        assert nd == {name for _, name in ND_CHECKS}
        assert mal == {name for _, name in MALFORMED_FLAGS}


ECHO = bytes([128, 0, 0, 0, 0, 1, 0, 1]) + bytes(8)   # 16-octet echo request
HBH = bytes([44, 0, 1, 4, 0, 0, 0, 0])                # PadN, next: Fragment
FULL_LEN = 40 + 8 + 8 + len(ECHO)                     # 72


def _packet(more: int, length: int, consistent: bool) -> bytes:
    """IPv6 + HBH + Fragment(offset 0, M=more) + ICMPv6 echo, cut to length.

    consistent=True rewrites Payload Length to what is left (a short but
    honest packet); False keeps 32 (a packet cut by the NFQUEUE copy range).
    """
    frag = struct.pack("!BBHI", 58, 0, more, 0xABCD)
    header = struct.pack("!IHBB", 6 << 28, 32, 0, 255) + bytes(15) + b"\x01" + bytes(15) + b"\x02"
    packet = (header + HBH + frag + ECHO)[:length]
    if consistent and length >= 40:
        packet = packet[:4] + struct.pack("!H", length - 40) + packet[6:]
    return packet


def _expected(length: int, more: int, consistent: bool) -> dict[str, Any]:
    """The contract's answer for _packet(more, length, consistent)."""
    if length < 40:
        return {"version": 6 if length else None, "malformed": ("truncated_ipv6_header",),
                "ext_headers": (), "upper_layer": None, "chain_complete": False,
                "icmpv6_type": None, "frag_status": "none"}
    malformed = [] if consistent or length == FULL_LEN else ["payload_length_mismatch"]
    if length < 56:
        # HBH (40..48) or Fragment (48..56) header incomplete: no fragment seen yet.
        return {"version": 6, "malformed": tuple(malformed + ["ext_header_overrun"]),
                "ext_headers": () if length < 48 else (0,), "upper_layer": None,
                "chain_complete": False, "icmpv6_type": None, "frag_status": "none"}
    icmp_len = length - 56
    status = "first" if more else "atomic"
    if icmp_len < 4 and not more:
        malformed.append("icmpv6_header_truncated")  # a first fragment is only incomplete
    return {"version": 6, "malformed": tuple(malformed), "ext_headers": (0, 44),
            "upper_layer": 58, "chain_complete": icmp_len >= 4,
            "icmpv6_type": 128 if icmp_len >= 4 else None, "frag_status": status}


class TestTruncation:
    """A HBH + Fragment + ICMPv6 packet cut at every length."""

    @pytest.mark.parametrize("consistent", [False, True], ids=["cut", "honest"])
    @pytest.mark.parametrize("more", [1, 0], ids=["first-fragment", "atomic"])
    @pytest.mark.parametrize("length", range(FULL_LEN + 1))
    def test_truncated(self, length: int, more: int, consistent: bool) -> None:
        """Flags, chain and ICMPv6 fields follow the contract at each cut."""
        view = parse(_packet(more, length, consistent))
        expected = _expected(length, more, consistent)
        assert {k: getattr(view, k) for k in expected} == expected
        if view.upper_layer is not None:
            assert view.upper_layer_offset == 56
            assert view.icmpv6_length == length - 56
