# SPDX-License-Identifier: MIT
"""shim.bindings.icmp6: the binding (cdef drift), NativeTable matching, and the
never-raises property over arbitrary bytes.
"""

from __future__ import annotations

import ipaddress
import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shim.core import model
from shim.core.model import NativeRule
from shim.bindings.icmp6 import EXT_MAX, NativeTable, parse

__all__: list[str] = []

LL1, LL2 = "fe80::1", "fe80::2"
GUA1, GUA2 = "2001:db8::1", "2001:db8::2"
ROLE = bytes([model.Role.END_TO_END] * 256)
IKE = bytes([model.IkeUse.MAY] * 256)
INPUT = model.Hook.INPUT


def pkt(payload: bytes, *, nh: int = 58, src: str = GUA1, dst: str = GUA2, hlim: int = 64) -> bytes:
    """An IPv6 packet with a consistent payload length."""
    return (struct.pack("!IHBB", 6 << 28, len(payload), nh, hlim)
            + ipaddress.IPv6Address(src).packed + ipaddress.IPv6Address(dst).packed + payload)


ECHO = pkt(bytes([128, 0, 0, 0, 0, 1, 0, 1]))
PTB = pkt(bytes([2, 0, 0, 0]) + struct.pack("!I", 1400))
RS = pkt(bytes([133, 0, 0, 0, 0, 0, 0, 0]), src=LL1, dst="ff02::2", hlim=255)
BAD_RS = pkt(bytes([133, 0, 0, 0, 0, 0, 0, 0]), src=LL1, dst="ff02::2", hlim=64)
FRAG_NON_FIRST = pkt(struct.pack("!BBHI", 58, 0, 8, 1) + bytes(8), nh=44)


def table(*rules: NativeRule, role: bytes = ROLE, ike: bytes = IKE) -> NativeTable:
    """A NativeTable over the given rules with uniform role/IKE tables."""
    return NativeTable(rules, role, ike, 16)


class TestBinding:
    """The compiled module agrees with icmp6.h and shim.core.model."""

    def test_import_and_sizes(self) -> None:
        """The extension imports and the structs have their LP64 sizes."""
        from shim._icmp6 import ffi, lib
        assert lib.ICMP6_EXT_MAX == EXT_MAX == 64
        if ffi.sizeof("void *") == 8:
            assert ffi.sizeof("struct icmp6_view") == 160
            assert ffi.sizeof("struct icmp6_rule") == 144
            assert ffi.sizeof("struct icmp6_table") == 592  # + the classifier pointer
        assert ffi.sizeof(dict(ffi.typeof("struct icmp6_view").fields)["ext"].type) == EXT_MAX

    @pytest.mark.parametrize(("prefix", "names"), [
        ("ICMP6_ADDR_", list(enumerate(model.ADDR_CLASSES))),
        ("ICMP6_FRAG_", list(enumerate(model.FRAG_STATUSES))),
        ("ICMP6_MAL_", list(model.MALFORMED_FLAGS)),
        ("ICMP6_ND_", list(model.ND_CHECKS)),
        ("ICMP6_HOOK_", [(h.value, h.name) for h in model.Hook]),
        ("ICMP6_ROLE_", [(r.value, r.name) for r in model.Role]),
        ("ICMP6_IKE_", [(i.value, i.name) for i in model.IkeUse]),
    ], ids=["addr", "frag", "malformed", "nd", "hook", "role", "ike"])
    def test_enums_equal_model(self, prefix: str, names: list[tuple[int, str]]) -> None:
        """Every name table in shim.core.model has the values of the C enum, and no more."""
        from shim._icmp6 import lib
        for value, name in names:
            assert getattr(lib, prefix + str(name).upper()) == value, name
        in_c = {n for n in dir(lib) if n.startswith(prefix)}
        assert in_c == {prefix + str(n).upper() for _, n in names}

    def test_the_any_rule_is_the_one_of_icmp6_h(self) -> None:
        """NativeRule() filled for C is byte for byte icmp6_rule_any(), and matches any packet."""
        from shim._icmp6 import ffi, lib
        from shim.bindings.icmp6 import _fill_rule
        c_any = ffi.new("struct icmp6_rule[1]")
        lib.icmp6_rule_any(c_any)
        py_any = ffi.new("struct icmp6_rule[1]")
        _fill_rule(py_any[0], NativeRule())
        assert bytes(ffi.buffer(py_any)) == bytes(ffi.buffer(c_any))
        t = ffi.new("struct icmp6_table *")
        t.n_rules, t.rules = 1, c_any
        t.type_role, t.type_ike = list(ROLE), list(IKE)  # a zeroed table would give no role
        for packet in (ECHO, PTB, RS, BAD_RS, FRAG_NON_FIRST, ECHO[:30]):
            assert lib.icmp6_classify(t, packet, len(packet), INPUT, 7, 9, ffi.NULL) == 0

    def test_parse_none_out(self) -> None:
        """icmp6_parse refuses a NULL view and classify survives a NULL scratch."""
        from shim._icmp6 import ffi, lib
        assert lib.icmp6_parse(ECHO, len(ECHO), 16, ffi.NULL) == -1
        t = ffi.new("struct icmp6_table *")
        assert lib.icmp6_classify(t, ECHO, len(ECHO), 1, 0, 0, ffi.NULL) == 0
        assert lib.icmp6_classify(ffi.NULL, ECHO, len(ECHO), 1, 0, 0, ffi.NULL) == 0


class TestParse:
    """parse() turns the C view into a PacketView."""

    def test_echo(self) -> None:
        """A plain echo request has the obvious fields."""
        v = parse(ECHO)
        assert (v.version, v.hop_limit, v.src, v.dst, v.icmpv6_type, v.icmpv6_code) == (
            6, 64, GUA1, GUA2, 128, 0)
        assert v.frag_offset is v.frag_more is v.frag_id is None
        assert v.malformed == () and v.chain_complete

    def test_memoryview_and_bytearray(self) -> None:
        """Bytes-like objects parse the same as bytes."""
        assert parse(bytearray(ECHO)) == parse(memoryview(ECHO)) == parse(ECHO)


class TestTable:
    """NativeTable: one rule field at a time, first match, counters."""

    @pytest.mark.parametrize(("rule", "packet", "hook", "indev", "outdev", "hit"), [
        (NativeRule(types=frozenset({128})), ECHO, INPUT, 0, 0, True),
        (NativeRule(types=frozenset({129})), ECHO, INPUT, 0, 0, False),
        (NativeRule(types=frozenset({128})), FRAG_NON_FIRST, INPUT, 0, 0, False),
        (NativeRule(), FRAG_NON_FIRST, INPUT, 0, 0, True),
        (NativeRule(types=frozenset()), ECHO, INPUT, 0, 0, False),
        (NativeRule(codes=frozenset({0})), ECHO, INPUT, 0, 0, True),
        (NativeRule(codes=frozenset({1})), ECHO, INPUT, 0, 0, False),
        (NativeRule(codes=frozenset({0})), FRAG_NON_FIRST, INPUT, 0, 0, False),
        (NativeRule(hooks=1 << model.Hook.OUTPUT), ECHO, INPUT, 0, 0, False),
        (NativeRule(hooks=1 << model.Hook.OUTPUT), ECHO, model.Hook.OUTPUT, 0, 0, True),
        (NativeRule(), ECHO, 8, 0, 0, False),
        (NativeRule(roles=model.Role.LINK_LOCAL), ECHO, INPUT, 0, 0, False),
        (NativeRule(roles=model.Role.UNCLASSIFIED), FRAG_NON_FIRST, INPUT, 0, 0, True),
        (NativeRule(roles=model.Role.END_TO_END), FRAG_NON_FIRST, INPUT, 0, 0, False),
        (NativeRule(ike=model.IkeUse.MUST_NOT), ECHO, INPUT, 0, 0, False),
        (NativeRule(ike=model.IkeUse.UNCLASSIFIED), FRAG_NON_FIRST, INPUT, 0, 0, True),
        (NativeRule(frag=1 << 3), FRAG_NON_FIRST, INPUT, 0, 0, True),
        (NativeRule(frag=1 << 3), ECHO, INPUT, 0, 0, False),
        (NativeRule(src_classes=1 << 7), ECHO, INPUT, 0, 0, True),
        (NativeRule(src_classes=1 << 3), ECHO, INPUT, 0, 0, False),
        (NativeRule(dst_classes=1 << 8), b"", INPUT, 0, 0, True),
        (NativeRule(src_prefix=ipaddress.IPv6Address("2001:db8::").packed, src_plen=32),
         ECHO, INPUT, 0, 0, True),
        (NativeRule(src_prefix=ipaddress.IPv6Address("2001:db9::").packed, src_plen=32),
         ECHO, INPUT, 0, 0, False),
        (NativeRule(dst_prefix=ipaddress.IPv6Address(GUA2).packed, dst_plen=128),
         ECHO, INPUT, 0, 0, True),
        (NativeRule(dst_prefix=ipaddress.IPv6Address(GUA1).packed, dst_plen=127),
         ECHO, INPUT, 0, 0, False),
        (NativeRule(dst_prefix=ipaddress.IPv6Address("2001:db8::3").packed, dst_plen=127),
         ECHO, INPUT, 0, 0, True),
        (NativeRule(dst_prefix=bytes(16), dst_plen=1), b"", INPUT, 0, 0, False),
        (NativeRule(hop_min=255), ECHO, INPUT, 0, 0, False),
        (NativeRule(hop_min=64, hop_max=64), ECHO, INPUT, 0, 0, True),
        (NativeRule(hop_max=63), ECHO, INPUT, 0, 0, False),
        (NativeRule(hop_max=0), b"", INPUT, 0, 0, True),
        (NativeRule(chain_complete=1), ECHO, INPUT, 0, 0, True),
        (NativeRule(chain_complete=1), FRAG_NON_FIRST, INPUT, 0, 0, False),
        (NativeRule(chain_complete=0), FRAG_NON_FIRST, INPUT, 0, 0, True),
        (NativeRule(malformed=1), ECHO, INPUT, 0, 0, False),
        (NativeRule(malformed=1), ECHO[:30], INPUT, 0, 0, True),
        (NativeRule(malformed=0), ECHO, INPUT, 0, 0, True),
        (NativeRule(nd_valid=1), RS, INPUT, 0, 0, True),
        (NativeRule(nd_valid=0), RS, INPUT, 0, 0, False),
        (NativeRule(nd_valid=0), BAD_RS, INPUT, 0, 0, True),
        (NativeRule(nd_valid=0), ECHO, INPUT, 0, 0, False),
        (NativeRule(indev=3), ECHO, INPUT, 3, 0, True),
        (NativeRule(indev=3), ECHO, INPUT, 4, 0, False),
        (NativeRule(outdev=5), ECHO, model.Hook.OUTPUT, 0, 5, True),
        (NativeRule(outdev=5), ECHO, model.Hook.OUTPUT, 0, 6, False),
        (NativeRule(mtu_max=1279), PTB, INPUT, 0, 0, False),
        (NativeRule(mtu_min=1280), PTB, INPUT, 0, 0, True),
        (NativeRule(mtu_min=1401, mtu_max=9000), PTB, INPUT, 0, 0, False),
        (NativeRule(mtu_min=0), ECHO, INPUT, 0, 0, False),
    ])
    def test_one_field(self, rule: NativeRule, packet: bytes, hook: int, indev: int,
                       outdev: int, hit: bool) -> None:
        """A single-rule table matches exactly when the constrained field does."""
        t = table(rule)
        assert t.classify(packet, hook, indev, outdev) == (0 if hit else 1)
        assert t.matches(0, packet, hook, indev, outdev) is hit
        assert t.all_matches(packet, hook, indev, outdev) == ([0] if hit else [])

    def test_type_role_table(self) -> None:
        """The role of a type comes from the type_role table."""
        role = bytearray(ROLE)
        role[133] = model.Role.LINK_LOCAL
        t = table(NativeRule(roles=model.Role.LINK_LOCAL), role=bytes(role))
        assert t.classify(RS, INPUT, 0, 0) == 0
        assert t.classify(ECHO, INPUT, 0, 0) == 1

    def test_first_match_and_hits(self) -> None:
        """The first matching rule wins, each call counts once, no-match is n_rules."""
        t = table(NativeRule(types=frozenset({129})), NativeRule(types=frozenset({128})),
                  NativeRule())
        assert t.n_rules == 3
        assert [t.classify(p, INPUT, 0, 0) for p in (ECHO, ECHO, FRAG_NON_FIRST)] == [1, 1, 2]
        assert t.all_matches(ECHO, INPUT, 0, 0) == [1, 2]
        assert t.hits() == [0, 2, 1, 0, 0]
        assert [(i, n) for i, n in enumerate(t.type_hits()) if n] == [(128, 2)]
        t.reset_hits()
        assert t.hits() == [0, 0, 0, 0, 0]
        assert t.type_hits() == [0] * 256

    def test_no_match_counted(self) -> None:
        """An empty table returns 0 (= n_rules) and counts it in the no-match slot."""
        t = table()
        assert t.n_rules == 0
        assert t.classify(ECHO, INPUT, 0, 0) == 0
        assert t.hits() == [1, 0]
        assert t.all_matches(ECHO, INPUT, 0, 0) == []

    def test_ext_limit_applies(self) -> None:
        """The table's ext_limit reaches the parser."""
        two = pkt(bytes([60, 0, 1, 4, 0, 0, 0, 0]) + bytes([58, 0, 1, 4, 0, 0, 0, 0])
                  + bytes([128, 0, 0, 0, 0, 0, 0, 0]), nh=0)
        t = NativeTable([NativeRule(malformed=1)], ROLE, IKE, 1)
        assert t.classify(two, INPUT, 0, 0) == 0
        assert t.view(two).malformed == ("too_many_ext_headers",)

    @pytest.mark.parametrize(("kwargs", "exc"), [
        ({"rules": [], "type_role": b"", "type_ike": IKE, "ext_limit": 16}, ValueError),
        ({"rules": [NativeRule(types=frozenset({256}))], "type_role": ROLE, "type_ike": IKE,
          "ext_limit": 16}, ValueError),
        ({"rules": [NativeRule(src_prefix=b"\x20")], "type_role": ROLE, "type_ike": IKE,
          "ext_limit": 16}, ValueError),
        ({"rules": [NativeRule(hop_max=256)], "type_role": ROLE, "type_ike": IKE,
          "ext_limit": 16}, OverflowError),
        ({"rules": [], "type_role": ROLE, "type_ike": IKE, "ext_limit": -1}, ValueError),
        ({"rules": [NativeRule(nd_valid=2)], "type_role": ROLE, "type_ike": IKE,
          "ext_limit": 16}, ValueError),
        ({"rules": [NativeRule(malformed=-2)], "type_role": ROLE, "type_ike": IKE,
          "ext_limit": 16}, ValueError),
    ])
    def test_bad_input(self, kwargs: dict[str, Any], exc: type[Exception]) -> None:
        """Out-of-range rule data is refused at build time."""
        with pytest.raises(exc):
            NativeTable(**kwargs)

    def test_matches_bad_index(self) -> None:
        """matches() refuses an index that is not a rule."""
        with pytest.raises(IndexError):
            table(NativeRule()).matches(1, ECHO, INPUT, 0, 0)


FUZZ_TABLE = table(NativeRule(types=frozenset({128}), hop_min=1),
                   NativeRule(nd_valid=1), NativeRule(mtu_min=1280),
                   NativeRule(malformed=1, chain_complete=0), NativeRule(frag=0b1100))


class TestAnyBytes:
    """Properties over arbitrary input."""

    @settings(max_examples=500, deadline=None)
    @given(data=st.binary(max_size=200), ext_limit=st.integers(0, 200))
    def test_parse_never_raises(self, data: bytes, ext_limit: int) -> None:
        """Any bytes give a PacketView whose fields are self-consistent."""
        v = parse(data, ext_limit)
        assert len(v.ext_headers) <= min(max(ext_limit, 1), EXT_MAX)
        assert v.icmpv6_length <= max(0, len(data) - 40)
        assert (v.icmpv6_type is None) == (v.icmpv6_code is None)
        assert v.nd_valid is None or v.nd_valid == (v.nd_failed == ())
        assert v.upper_layer_offset is None or v.upper_layer_offset <= len(data)
        if v.chain_complete and v.malformed:
            assert v.malformed == ("payload_length_mismatch",)

    @settings(max_examples=500, deadline=None)
    @given(prefix=st.sampled_from([ECHO[:40], RS[:40], pkt(b"", nh=0)[:40], b""]),
           data=st.binary(max_size=120), hook=st.integers(0, 10))
    def test_classify_in_range(self, prefix: bytes, data: bytes, hook: int) -> None:
        """classify on random bytes returns an index in 0..n_rules."""
        assert 0 <= FUZZ_TABLE.classify(prefix + data, hook, 1, 2) <= FUZZ_TABLE.n_rules
