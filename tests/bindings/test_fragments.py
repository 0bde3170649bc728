# SPDX-License-Identifier: MIT
"""Non-ICMPv6 traffic meets no rule; non-first fragments follow their datagram.

Unit level, through the C table (NativeTable), the Python reference (RuleTable)
and the CLI's explain / replay / stats text.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from scapy.layers.inet import TCP, UDP
from scapy.layers.inet6 import (
    ICMPv6EchoRequest,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    fragment6,
)
from scapy.layers.ipsec import AH
from scapy.utils import wrpcap

from shim.cli.daemon import _stats_text
from shim.core.defaults import TYPE_IKE, TYPE_ROLE
from shim.daemon.compile import compile_config
from shim.config.loader import load_config
from shim.core.model import Hook, NativeRule, Settings
from shim.bindings.icmp6 import NativeTable, is_non_icmpv6, parse
from shim.lab.packets import ext_header, fragment_header, icmp6_packet, ipv6_packet
from shim.core.rules import build_table

A, B = "2001:db8:1::a", "2001:db8:2::b"
FWD = int(Hook.FORWARD)
AH_FIELDS = dict(spi=1, seq=1, icv=b"\0" * 12, payloadlen=4)


def _frags(pkt: IPv6) -> list[bytes]:
    return [bytes(f) for f in fragment6(pkt, 1280)]


def udp_fragments(ident: int = 9) -> list[bytes]:
    return _frags(IPv6(src=A, dst=B) / IPv6ExtHdrFragment(id=ident) / UDP(dport=53) / (b"u" * 2000))


def echo_fragments(ident: int = 7, src: str = A) -> list[bytes]:
    return _frags(IPv6(src=src, dst=B) / IPv6ExtHdrFragment(id=ident)
                  / ICMPv6EchoRequest(data=b"e" * 2000))


OTHER = {
    "udp": bytes(IPv6(src=A, dst=B) / UDP(dport=53) / b"q"),
    "tcp-behind-ah": bytes(IPv6(src=A, dst=B) / AH(nh=6, **AH_FIELDS) / TCP()),
    "udp-behind-destopt": bytes(IPv6(src=A, dst=B) / IPv6ExtHdrDestOpt() / UDP()),
    "no-next-header": bytes(IPv6(src=A, dst=B, nh=59)),
    "first-fragment-udp": udp_fragments()[0],
    "non-first-fragment-udp": udp_fragments()[1],
}
ICMP = {
    "echo": bytes(IPv6(src=A, dst=B) / ICMPv6EchoRequest()),
    "echo-behind-ah": bytes(IPv6(src=A, dst=B) / AH(nh=58, **AH_FIELDS) / ICMPv6EchoRequest()),
    "first-fragment-echo": echo_fragments()[0],
    # Not known to be other traffic: a non-first fragment naming ICMPv6 or an extension header,
    # a first fragment whose chain continues in the next fragment, a truncated UDP header.
    "non-first-fragment-echo": echo_fragments()[1],
    "non-first-fragment-destopt": bytes(IPv6(src=A, dst=B) / IPv6ExtHdrFragment(
        nh=60, offset=100, id=3) / (b"\0" * 16)),
    "first-fragment-short-udp": bytes(IPv6(src=A, dst=B) / IPv6ExtHdrFragment(nh=17, m=1, id=4)
                                      / b"\0\0\0"),
}


def table(*rules: NativeRule, fate_slots: int = 64) -> NativeTable:
    return NativeTable(list(rules), TYPE_ROLE, TYPE_IKE, 16, fate_slots=fate_slots)


class TestNonIcmpv6:
    @pytest.mark.parametrize("name", sorted(OTHER))
    def test_other_traffic_meets_no_rule(self, name: str) -> None:
        """A rule matching every packet never sees complete non-ICMPv6 traffic: the
        index is n_rules + 1, counted in its own slot, in C and in the reference."""
        t = table(NativeRule())
        assert t.classify(OTHER[name], FWD, 0, 0) == 2
        assert t.hits() == [0, 0, 1]
        assert is_non_icmpv6(OTHER[name])
        ref = build_table(Settings(), [])
        assert ref.decide_py(parse(OTHER[name]), Hook.FORWARD).rule == "non-icmpv6"
        assert ref.index_py(parse(OTHER[name]), Hook.FORWARD) == len(ref.rules) + 1

    @pytest.mark.parametrize("name", sorted(ICMP))
    def test_icmpv6_and_the_unknown_still_walk_the_rules(self, name: str) -> None:
        """ICMPv6 (behind AH, in a first fragment) and whatever is not known to be other
        traffic meet the rules."""
        t = table(NativeRule(), fate_slots=0)
        assert t.classify(ICMP[name], FWD, 0, 0) == 0
        assert not is_non_icmpv6(ICMP[name])

    def test_source_rule_does_not_drop_fragmented_udp(self) -> None:
        """A user rule naming only a source decides no UDP fragment."""
        from shim.core.model import Action, Match, Origin, Rule, Verdict
        rule = Rule(name="from-a", priority=None, origin=Origin.USER,
                    match=Match(src=f"{A}/128"), verdict=Verdict(action=Action.DROP))
        ref = build_table(Settings(), [rule])
        t = NativeTable(ref.native_rules(), ref.type_role, ref.type_ike, 16, fate_slots=64)
        for frag in udp_fragments():
            assert ref.decisions[t.classify(frag, FWD, 0, 0)].rule == "non-icmpv6"
        assert ref.decisions[t.classify(echo_fragments()[0], FWD, 0, 0)].rule == "from-a"


class TestFate:
    def test_non_first_fragments_get_the_first_fragments_decision(self) -> None:
        """A first fragment's index is remembered; the datagram's other fragments get
        it without a walk, counted as followed and as hits of that rule."""
        t = table(NativeRule(types=frozenset({128})), NativeRule(frag=0b1000))
        first, second = echo_fragments(ident=0x77)
        assert t.classify(first, FWD, 0, 0) == 0
        assert t.last_fate() == "stored"
        assert t.classify(second, FWD, 0, 0) == 0  # not rule 1, the non-first rule
        assert t.last_fate() == "followed"
        assert t.fate_counters() == {"stored": 1, "followed": 1, "unknown": 0}
        assert t.hits()[0] == 2

    def test_reordered_or_other_datagram_falls_back_to_the_rules(self) -> None:
        """A non-first fragment before its first one, or of another id or source, is
        walked like any packet (here: the non-first rule)."""
        t = table(NativeRule(types=frozenset({128})), NativeRule(frag=0b1000))
        first, second = echo_fragments(ident=0x78)
        assert t.classify(second, FWD, 0, 0) == 1
        assert t.last_fate() == "unknown"
        t.classify(first, FWD, 0, 0)
        assert t.classify(echo_fragments(ident=0x79)[1], FWD, 0, 0) == 1
        assert t.classify(echo_fragments(ident=0x78, src="2001:db8:1::99")[1], FWD, 0, 0) == 1
        assert t.classify(second, FWD, 0, 0) == 0
        assert t.fate_counters() == {"stored": 1, "followed": 1, "unknown": 3}

    def test_each_hook_has_its_own_fate(self) -> None:
        """A datagram judged at prerouting and at forward follows each hook's decision."""
        pre = NativeRule(types=frozenset({128}), hooks=1 << int(Hook.PREROUTING))
        t = table(pre, NativeRule(frag=0b1000), NativeRule())
        first, second = echo_fragments(ident=0x7C)
        pr = int(Hook.PREROUTING)
        assert [t.classify(first, pr, 0, 0), t.classify(first, FWD, 0, 0)] == [0, 2]
        assert [t.classify(second, pr, 0, 0), t.classify(second, FWD, 0, 0)] == [0, 2]
        assert t.classify(second, int(Hook.INPUT), 0, 0) == 1  # never judged at input

    def test_a_fragment_that_comes_another_way_is_not_followed(self) -> None:
        """The fate is the datagram's as it came: a non-first fragment of the same addresses
        and id through another interface (a spoofer elsewhere) meets the rules instead."""
        t = table(NativeRule(types=frozenset({128})), NativeRule(frag=0b1000))
        first, second = echo_fragments(ident=0x7D)
        assert t.classify(first, FWD, 2, 3) == 0
        assert t.classify(second, FWD, 4, 3) == 1 and t.last_fate() == "unknown"
        assert t.classify(second, FWD, 2, 5) == 1 and t.last_fate() == "unknown"
        assert t.classify(second, FWD, 2, 3) == 0 and t.last_fate() == "followed"

    def test_udp_datagram_followers_are_non_icmpv6(self) -> None:
        """The first fragment of UDP is non-ICMPv6; its followers are too (followed)."""
        t = table(NativeRule())
        assert [t.classify(f, FWD, 0, 0) for f in udp_fragments(ident=5)] == [2, 2]
        assert t.fate_counters()["followed"] == 1

    def test_no_fate_table_walks_every_fragment(self) -> None:
        """fate_slots = 0 (as the reference matcher): every fragment is walked."""
        t = table(NativeRule(types=frozenset({128})), NativeRule(frag=0b1000), fate_slots=0)
        first, second = echo_fragments(ident=0x7A)
        assert [t.classify(first, FWD, 0, 0), t.classify(second, FWD, 0, 0)] == [0, 1]
        assert t.last_fate() == "none"

    def test_an_entry_expires_after_its_ttl(self) -> None:
        """Past the ttl a datagram is forgotten (a reused id is not given an old fate).
        The table's clock counts whole seconds, so waiting 1.1 s moves it by >= 1."""
        t = NativeTable([NativeRule(types=frozenset({128})), NativeRule(frag=0b1000)],
                        TYPE_ROLE, TYPE_IKE, 16, fate_slots=8, fate_ttl=0)
        first, second = echo_fragments(ident=0x7B)
        t.classify(first, FWD, 0, 0)
        time.sleep(1.1)
        assert t.classify(second, FWD, 0, 0) == 1 and t.last_fate() == "unknown"

    def test_the_table_is_bounded(self) -> None:
        """More datagrams than slots: newer ones overwrite older ones, nothing grows,
        and a forgotten datagram's fragment is walked (never a wrong index)."""
        t = table(NativeRule(types=frozenset({128})), NativeRule(frag=0b1000), fate_slots=2)
        pairs = [echo_fragments(ident=0x1000 + i) for i in range(50)]
        for first, _ in pairs:
            t.classify(first, FWD, 0, 0)
        results = {t.classify(second, FWD, 0, 0) for _, second in pairs}
        assert results <= {0, 1} and 1 in results
        c = t.fate_counters()
        assert c["stored"] == 50 and c["followed"] <= 2 and c["followed"] + c["unknown"] == 50

    def test_bad_sizes_are_refused(self) -> None:
        with pytest.raises(ValueError, match="fate_slots"):
            table(fate_slots=-1)
        with pytest.raises(ValueError, match="fate_ttl"):
            NativeTable([], TYPE_ROLE, TYPE_IKE, 16, fate_ttl=-1)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "shim", *args], capture_output=True, text=True,
                          timeout=60)


class TestExplainReplayStats:
    def test_explain_names_non_icmpv6_and_both_matchers_agree(self) -> None:
        """explain of fragmented UDP: the non-icmpv6 decision, no rule, no error."""
        out = _cli("explain", "--json", "--hook", "forward", "--hex", udp_fragments()[1].hex())
        assert out.returncode == 0, out.stderr
        result = json.loads(out.stdout)
        assert result["decision"]["rule"] == "non-icmpv6" and result["match"] is None
        assert "not ICMPv6 (upper layer 17)" in result["why"]

    def test_replay_shows_fragments_following_their_first(self, tmp_path: Path) -> None:
        """replay judges a capture as the packet path does: the split-chain ping's first
        fragment is dropped (RFC 7112), its second follows, said as such."""
        msg = icmp6_packet(A, B, 128, 0, b"\0\7\0\1")[40:]
        first = ipv6_packet(A, B, 44, fragment_header(60, 0, True, 0x42) + ext_header(60))
        second = ipv6_packet(A, B, 44, fragment_header(60, 8, False, 0x42) + ext_header(58) + msg)
        wrpcap(str(tmp_path / "x.pcap"), [IPv6(first), IPv6(second)], linktype=229)
        out = _cli("replay", "--hook", "forward", str(tmp_path / "x.pcap"))
        assert out.returncode == 0, out.stderr
        lines = out.stdout.splitlines()
        assert "drop [hardening-incomplete-chain]" in lines[0] and "first fragment" not in lines[0]
        assert lines[1].endswith("drop [hardening-incomplete-chain] (as its first fragment)")
        assert "non-first fragment id 0x42" in lines[1]

    def test_stats_text_shows_non_icmpv6_and_fragments(self) -> None:
        """The stats text carries both new counters when the daemon reports them."""
        compiled = compile_config(load_config(None))
        snap = {"pid": 1, "packets": 9, "verdicts": {}, "non_icmpv6": 4,
                "fragments": {"stored": 2, "followed": 3, "unknown": 1},
                "rules": [{"rule": compiled.table.non_icmpv6.rule, "hits": 4,
                           "origin": "settings", "verdict": "accept"}]}
        text = _stats_text(snap)
        assert "not ICMPv6 (accepted unjudged): 4" in text
        assert "3 followed their first fragment, 1 of no remembered datagram" in text
        assert "4  non-icmpv6 (settings, accept)" in text


def test_non_icmpv6_is_a_reserved_rule_name(tmp_path: Path) -> None:
    """A user rule cannot take the name of the non-ICMPv6 decision (stats count by name)."""
    from shim.core.errors import ConfigError
    (tmp_path / "icmp6-shim.toml").write_text('[[rule]]\nname = "non-icmpv6"\nverdict = "drop"\n')
    with pytest.raises(ConfigError, match="'non-icmpv6' is reserved"):
        load_config(tmp_path)
