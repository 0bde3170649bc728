# SPDX-License-Identifier: MIT
"""The compiled classifier (native/classify.c) is the plain walk's function.

Random rule sets are drawn over small pools of prefixes, devices and ranges,
so that many rules share an anchor and buckets grow past the list size into
bit vectors; every packet is judged by a compiled and a walking NativeTable.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import shim.bindings.icmp6 as native
from shim.core.model import NativeRule, Settings
from shim.core.rules import build_table
from tests.bindings.test_matchers_agree import packets

__all__: list[str] = []

_DEFAULTS = build_table(Settings(), [])
ROLE, IKE = _DEFAULTS.type_role, _DEFAULTS.type_ike
_PREFIXES = [("2001:db8::", 32), ("2001:db8:1::", 48), ("2001:db8:1::", 64),
             ("2001:db8:1::5", 128), ("fe80::", 10), ("ff00::", 8), ("ff02::1:ff00:0", 104),
             ("::", 1), ("8000::", 1), ("::", 128), ("2001:db8::1", 127), ("fd00::", 8),
             ("::ffff:0:0", 96), ("2001:db8::", 33), ("ffff:ffff::", 16)]
_ADDRS = ["fe80::1", "::", "::1", "ff02::1", "ff02::1:ff00:2", "2001:db8::1", "2001:db8:1::5",
          "2001:db8:1::4", "fd00::1", "::ffff:192.0.2.1", "ffff:ffff::1", "8000::1",
          "2001:db8:8000::1", "2001:db9::1"]


def _prefix(draw: st.DrawFn) -> tuple[bytes, int]:
    addr, plen = draw(st.sampled_from(_PREFIXES))
    raw = ipaddress.IPv6Address(addr).packed
    if draw(st.booleans()):  # host bits set: the C ignores them
        raw = bytes(b | 0x01 for b in raw)
    return raw, draw(st.sampled_from([plen, plen, min(plen + 100, 255) if plen > 100 else plen]))


def _rng(draw: st.DrawFn, top: int) -> tuple[int, int]:
    a, b = draw(st.integers(0, top)), draw(st.integers(0, top))
    return min(a, b), max(a, b)


@st.composite
def rules(draw: st.DrawFn) -> NativeRule:
    """A NativeRule constraining a random subset of its fields."""
    f: dict[str, Any] = {}
    names = draw(st.lists(st.sampled_from(
        ["types", "codes", "hooks", "roles", "ike", "frag", "src_classes", "dst_classes", "src",
         "dst", "hop", "chain_complete", "malformed", "nd_valid", "indev", "outdev", "mtu"]),
        max_size=5, unique=True))
    for name in names:
        if name == "types":
            f["types"] = draw(st.frozensets(st.sampled_from([1, 2, 3, 128, 129, 133, 135, 136, 255])
                                            | st.integers(0, 255), min_size=1, max_size=3))
        elif name == "codes":
            f["codes"] = draw(st.frozensets(st.integers(0, 4), min_size=1, max_size=2))
        elif name in ("hooks", "frag", "roles", "ike"):
            f[name] = draw(st.integers(1, {"hooks": 0x1F, "frag": 0xF}.get(name, 0xF)))
        elif name.endswith("_classes"):
            f[name] = draw(st.integers(1, 0x1FF))
        elif name in ("src", "dst"):
            f[f"{name}_prefix"], f[f"{name}_plen"] = _prefix(draw)
        elif name == "hop":
            f["hop_min"], f["hop_max"] = draw(st.sampled_from([(255, 255), (0, 64), (1, 1)])
                                              | st.builds(lambda: _rng(draw, 255)))
        elif name in ("chain_complete", "malformed"):
            f[name] = draw(st.sampled_from([0, 1]))
        elif name == "nd_valid":
            f[name] = draw(st.sampled_from([0, 1]))
        elif name in ("indev", "outdev"):
            f[name] = draw(st.sampled_from([2, 3, 7, 0xFFFFFFFF]))
        else:
            lo, hi = draw(st.sampled_from([(1280, 1500), (0, 1279), (1500, 0xFFFFFFFF)])
                          | st.builds(lambda: _rng(draw, 70000)))
            f["mtu_min"], f["mtu_max"] = lo, hi
    return NativeRule(**f)


def _packet_with(draw: st.DrawFn) -> bytes:
    """A packet from the matcher test, its addresses often from this test's pool."""
    data = bytearray(draw(packets()))
    for off in (8, 24):
        if len(data) >= off + 16 and draw(st.booleans()):
            data[off:off + 16] = ipaddress.IPv6Address(draw(st.sampled_from(_ADDRS))).packed
    return bytes(data)


@st.composite
def cases(draw: st.DrawFn) -> tuple[list[NativeRule], list[tuple[bytes, int, int, int]]]:
    """A rule list (sometimes long enough for bit-vector buckets) and packets to judge."""
    base = draw(st.lists(rules(), min_size=0, max_size=12))
    copies = draw(st.integers(1, 8))  # repeated with small variations: shared anchors
    out: list[NativeRule] = []
    for _ in range(copies):
        out.extend(base if draw(st.booleans()) else draw(st.permutations(base)))
        out.extend(draw(st.lists(rules(), max_size=4)))
    pkts = [(_packet_with(draw), draw(st.integers(0, 9)), draw(st.sampled_from([0, 2, 3, 7])),
             draw(st.sampled_from([0, 2, 3, 0xFFFFFFFF]))) for _ in range(draw(st.integers(1, 6)))]
    return out, pkts


class TestCompiledEqualsWalk:
    """classify() with the compiled classifier equals classify() with the plain walk."""

    @settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                      HealthCheck.data_too_large])
    @given(case=cases(), defaults=st.booleans())
    def test_same_first_match(self, case: tuple[list[NativeRule], list[tuple[bytes, int, int, int]]],
                              defaults: bool) -> None:
        """Every packet gets the same rule index from both tables."""
        user, pkts = case
        rs = user + (list(_DEFAULTS.native_rules(lambda name: 2)) if defaults else [])
        compiled = native.NativeTable(rs, ROLE, IKE, 16)
        walk = native.NativeTable(rs, ROLE, IKE, 16, compiled=False)
        assert compiled.compiled and not walk.compiled
        for data, hook, indev, outdev in pkts:
            assert compiled.classify(data, hook, indev, outdev) == walk.classify(
                data, hook, indev, outdev)

    def test_bitvector_buckets_built(self) -> None:
        """Many rules on one prefix make a bit-vector bucket, and it still agrees."""
        src = ipaddress.IPv6Address("2001:db8:1::").packed
        rs = [NativeRule(types=frozenset({128}), src_prefix=src, src_plen=48,
                         hop_min=i, hop_max=i) for i in range(100)]
        compiled = native.NativeTable(rs, ROLE, IKE, 16)
        stats = compiled.classifier_stats()
        assert stats["bitvec_buckets"] == 1 and stats["largest_bucket"] == 100
        assert stats["bytes"] > 0 and stats["n_rules"] == 100
        walk = native.NativeTable(rs, ROLE, IKE, 16, compiled=False)
        for hlim in (0, 7, 99, 100, 255):
            pkt = bytes(_echo("2001:db8:1::9", hlim))
            assert compiled.classify(pkt, 1, 0, 0) == walk.classify(pkt, 1, 0, 0)
        assert compiled.classify(bytes(_echo("2001:db8:1::9", 42)), 1, 0, 0) == 42

    def test_too_large_is_refused(self) -> None:
        """A classifier over its memory limit raises TableTooLarge instead of being built."""
        rs = [NativeRule(types=frozenset({128}), hop_min=i % 256, hop_max=i % 256)
              for i in range(200)]
        try:
            native.NativeTable(rs, ROLE, IKE, 16, max_bytes=4096)
        except native.TableTooLarge as exc:
            assert "200 rules" in str(exc)
        else:
            raise AssertionError("a 4 KiB limit accepted 200 bit-vector rules")

    def test_build_cpu_leaves_the_table_as_it_was(self) -> None:
        """classifier_build_cpu builds and frees `repeat` classifiers of the table's rules
        (non-negative CPU seconds each) and leaves the table's own classifier and its
        answers alone; a walk-only table can be timed too; repeat < 1 is refused."""
        src = ipaddress.IPv6Address("2001:db8:1::").packed
        rs = [NativeRule(types=frozenset({128}), src_prefix=src, src_plen=48,
                         hop_min=i, hop_max=i) for i in range(100)]
        compiled = native.NativeTable(rs, ROLE, IKE, 16)
        before = compiled.classifier_stats()
        pkt = bytes(_echo("2001:db8:1::9", 42))
        times = compiled.classifier_build_cpu(3)
        assert len(times) == 3 and all(t >= 0.0 for t in times)
        assert compiled.classifier_stats() == before and compiled.classify(pkt, 1, 0, 0) == 42
        walk = native.NativeTable(rs, ROLE, IKE, 16, compiled=False)
        assert len(walk.classifier_build_cpu(1)) == 1 and not walk.compiled
        try:
            compiled.classifier_build_cpu(0)
        except ValueError:
            pass
        else:
            raise AssertionError("repeat=0 was accepted")


def _echo(src: str, hlim: int) -> bytes:
    from scapy.layers.inet6 import ICMPv6EchoRequest, IPv6
    return bytes(IPv6(src=src, dst="2001:db8:2::1", hlim=hlim) / ICMPv6EchoRequest())
