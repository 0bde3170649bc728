# SPDX-License-Identifier: MIT
"""The built-in defaults: the draft's twelve rows, RFC 4890's other types, hardening."""

from __future__ import annotations

from pathlib import Path

import pytest

import shim.bindings.icmp6 as native  # noqa: E402 - a missing extension must fail, never skip

from scapy.layers.inet6 import (  # noqa: E402
    ICMPv6DestUnreach,
    ICMPv6EchoReply,
    ICMPv6EchoRequest,
    ICMPv6MLQuery,
    ICMPv6MLReport,
    ICMPv6ND_NA,
    ICMPv6ND_NS,
    ICMPv6ND_RA,
    ICMPv6ND_Redirect,
    ICMPv6ND_RS,
    ICMPv6PacketTooBig,
    ICMPv6ParamProblem,
    ICMPv6TimeExceeded,
    ICMPv6Unknown,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
)

from shim.core.defaults import DEFAULT_BAND, DEFAULT_RULES, DRAFT_ROWS, TYPE_IKE, TYPE_ROLE  # noqa: E402
from shim.core.model import Action, Decision, Hook, IkeUse, Role, Settings  # noqa: E402
from shim.core.rules import build_table  # noqa: E402

TABLE = build_table(Settings(), [])
NATIVE = native.NativeTable(TABLE.native_rules(), TABLE.type_role, TABLE.type_ike, 16)
GLOBAL = IPv6(src="2001:db8::1", dst="2001:db8::2", hlim=64)
INNER = IPv6(src="2001:db8::2", dst="2001:db8:9::9") / ICMPv6EchoRequest()
LINK = dict(src="fe80::1", hlim=255)


def decide(data: bytes, hook: Hook) -> Decision:
    """The decision for a packet, checked to be the same in C and in Python."""
    index = NATIVE.classify(data, int(hook), 0, 0)
    assert TABLE.decide_py(native.parse(data), hook) == TABLE.decisions[index]
    return TABLE.decisions[index]


def summary(d: Decision) -> tuple[str, str | None, str]:
    """(action, mark name, rule name): what the tables below state."""
    return d.verdict.action.value, d.verdict.mark_name, d.rule


BYPASS, PROTECT, DROP = "bypass", "protect", "drop"

# message -> (packet, input, output, forward) with (verdict-or-mark, rule).
ROWS: dict[str, tuple[bytes, tuple[str, str], tuple[str, str], tuple[str, str]]] = {
    "Dest Unreachable": (bytes(GLOBAL / ICMPv6DestUnreach(code=4) / INNER),
                         (BYPASS, "destination-unreachable-in"),
                         (PROTECT, "destination-unreachable-out"),
                         (PROTECT, "transit-destination-unreachable")),
    "Packet Too Big": (bytes(GLOBAL / ICMPv6PacketTooBig(mtu=1400) / INNER),
                       (BYPASS, "packet-too-big-in"), (PROTECT, "packet-too-big-out"),
                       (PROTECT, "transit-packet-too-big")),
    "Time Exceeded": (bytes(GLOBAL / ICMPv6TimeExceeded() / INNER),
                      (BYPASS, "time-exceeded-in"), (PROTECT, "time-exceeded-out"),
                      (PROTECT, "transit-time-exceeded")),
    "Parameter Problem": (bytes(GLOBAL / ICMPv6ParamProblem(code=1) / INNER),
                          (PROTECT, "parameter-problem"), (PROTECT, "parameter-problem"),
                          (PROTECT, "transit-parameter-problem")),
    "Echo Request": (bytes(GLOBAL / ICMPv6EchoRequest()),
                     (PROTECT, "echo-request"), (PROTECT, "echo-request"),
                     (PROTECT, "transit-echo-request")),
    "Echo Reply": (bytes(GLOBAL / ICMPv6EchoReply()),
                   (PROTECT, "echo-reply"), (PROTECT, "echo-reply"),
                   (PROTECT, "transit-echo-reply")),
    "Redirect": (bytes(IPv6(dst="fe80::2", **LINK)
                       / ICMPv6ND_Redirect(tgt="fe80::3", dst="2001:db8:5::1")),
                 (BYPASS, "nd-redirect"), (BYPASS, "nd-redirect"), (DROP, "transit-nd")),
    "Router Solicit": (bytes(IPv6(dst="ff02::2", **LINK) / ICMPv6ND_RS()),
                       (BYPASS, "nd-router-solicit"), (BYPASS, "nd-router-solicit"),
                       (DROP, "transit-nd")),
    "Router Advert": (bytes(IPv6(dst="ff02::1", **LINK) / ICMPv6ND_RA()),
                      (BYPASS, "nd-router-advert"), (BYPASS, "nd-router-advert"),
                      (DROP, "transit-nd")),
    "Neighbour Solicit": (bytes(IPv6(dst="ff02::1:ff00:2", **LINK) / ICMPv6ND_NS(tgt="fe80::2")),
                          (BYPASS, "nd-neighbor-solicit"), (BYPASS, "nd-neighbor-solicit"),
                          (DROP, "transit-nd")),
    "Neighbour Advert": (bytes(IPv6(dst="fe80::2", **LINK) / ICMPv6ND_NA(tgt="fe80::1", S=1)),
                         (BYPASS, "nd-neighbor-advert"), (BYPASS, "nd-neighbor-advert"),
                         (DROP, "transit-nd")),
    "Router Renumbering": (bytes(IPv6(src="2001:db8::1", dst="ff05::2", hlim=64)
                                 / ICMPv6Unknown(type=138, code=0, msgbody=b"\0" * 12)),
                           (PROTECT, "router-renumbering"), (PROTECT, "router-renumbering"),
                           (DROP, "transit-router-renumbering")),
}


def _expect(pair: tuple[str, str]) -> tuple[str, str | None, str]:
    verdict, rule = pair
    if verdict in (BYPASS, PROTECT):
        return "mark", verdict, rule
    return verdict, None, rule


class TestDraftRows:
    """Each of the draft's §6 rows gets its documented decision at each hook."""

    def test_rows_are_the_drafts_twelve(self) -> None:
        """The test table walks exactly the draft's twelve messages."""
        assert [row[0] for row in DRAFT_ROWS] == list(ROWS)
        assert len(ROWS) == 12

    @pytest.mark.parametrize("message", list(ROWS))
    def test_packet_is_the_rows_type(self, message: str) -> None:
        """The scapy packet parses to the row's ICMPv6 type and is well formed."""
        view = native.parse(ROWS[message][0])
        assert view.icmpv6_type == next(r[1] for r in DRAFT_ROWS if r[0] == message)
        assert view.malformed == () and view.chain_complete
        assert view.nd_valid in (None, True)

    @pytest.mark.parametrize("message", list(ROWS))
    def test_host_input(self, message: str) -> None:
        """A host receiving the message (hook input)."""
        data, inp, _out, _fwd = ROWS[message]
        assert summary(decide(data, Hook.INPUT)) == _expect(inp)
        assert summary(decide(data, Hook.PREROUTING)) == _expect(inp)

    @pytest.mark.parametrize("message", list(ROWS))
    def test_host_output(self, message: str) -> None:
        """A host sending the message (hook output)."""
        data, _inp, out, _fwd = ROWS[message]
        assert summary(decide(data, Hook.OUTPUT)) == _expect(out)
        assert summary(decide(data, Hook.POSTROUTING)) == _expect(out)

    @pytest.mark.parametrize("message", list(ROWS))
    def test_gateway_forward(self, message: str) -> None:
        """A security gateway forwarding the message (hook forward)."""
        data, _inp, _out, fwd = ROWS[message]
        assert summary(decide(data, Hook.FORWARD)) == _expect(fwd)

    def test_marks_carry_default_values(self) -> None:
        """bypass is 0x1/0xff and protect 0x2/0xff unless the config says otherwise."""
        ns = decide(ROWS["Neighbour Solicit"][0], Hook.INPUT).verdict
        echo = decide(ROWS["Echo Request"][0], Hook.INPUT).verdict
        assert (ns.mark, ns.mask, echo.mark, echo.mask) == (0x1, 0xFF, 0x2, 0xFF)

    def test_type_columns(self) -> None:
        """TYPE_ROLE/TYPE_IKE hold the draft's columns; other types are unclassified."""
        for _msg, t, role, ike, _fn in DRAFT_ROWS:
            assert (TYPE_ROLE[t], TYPE_IKE[t]) == (role, ike)
        rows = {r[1] for r in DRAFT_ROWS}
        assert all(TYPE_ROLE[t] == Role.UNCLASSIFIED for t in range(256) if t not in rows)
        assert all(TYPE_IKE[t] == IkeUse.UNCLASSIFIED for t in range(256) if t not in rows)


def _icmp(t: int, src: str = "2001:db8::1", dst: str = "2001:db8::2", hlim: int = 64,
          code: int = 0) -> bytes:
    return bytes(IPv6(src=src, dst=dst, hlim=hlim) / ICMPv6Unknown(type=t, code=code,
                                                                   msgbody=b"\0" * 20))


OTHERS: list[tuple[str, bytes, Hook, str, str | None, str]] = [
    ("mld query", bytes(IPv6(src="fe80::1", dst="ff02::1", hlim=1) / ICMPv6MLQuery()),
     Hook.INPUT, "mark", "bypass", "mld"),
    ("mld from global", bytes(IPv6(src="2001:db8::1", dst="ff02::1", hlim=1) / ICMPv6MLReport()),
     Hook.INPUT, "drop", None, "link-scope-invalid"),
    ("mld forwarded", bytes(IPv6(src="fe80::1", dst="ff02::1", hlim=1) / ICMPv6MLQuery()),
     Hook.FORWARD, "drop", None, "transit-link-scope"),
    ("mld2 report from ::", _icmp(143, src="::", dst="ff02::16", hlim=1),
     Hook.OUTPUT, "mark", "bypass", "mld2-report"),
    ("inverse nd", _icmp(141, src="fe80::1", dst="ff02::1", hlim=255),
     Hook.INPUT, "mark", "bypass", "inverse-nd"),
    ("inverse nd hl 64", _icmp(142, src="fe80::1", dst="ff02::1"),
     Hook.INPUT, "drop", None, "link-scope-invalid"),
    ("send cpa", _icmp(149, src="fe80::1", dst="ff02::1", hlim=255),
     Hook.INPUT, "mark", "bypass", "send-certification-path"),
    ("mrd", _icmp(151, src="fe80::1", dst="ff02::6a", hlim=1),
     Hook.INPUT, "mark", "bypass", "multicast-router-discovery"),
    ("node information", _icmp(139), Hook.INPUT, "mark", "protect", "node-information"),
    ("node information forwarded", _icmp(139), Hook.FORWARD, "drop", None,
     "transit-node-information"),
    ("mobile ipv6", _icmp(146), Hook.INPUT, "mark", "protect", "mobile-ipv6"),
    ("mobile ipv6 forwarded", _icmp(147), Hook.FORWARD, "mark", "protect", "transit-mobile-ipv6"),
    ("unassigned error", _icmp(50), Hook.INPUT, "mark", "protect", "unassigned-errors"),
    ("unassigned error forwarded", _icmp(102), Hook.FORWARD, "mark", "protect",
     "transit-unassigned-errors"),
    ("unassigned info", _icmp(160), Hook.INPUT, "drop", None, "unassigned-informational"),
    ("unassigned info forwarded", _icmp(254), Hook.FORWARD, "drop", None,
     "transit-unassigned-informational"),
    ("experimental", _icmp(200), Hook.OUTPUT, "drop", None, "experimental"),
    ("experimental forwarded", _icmp(101), Hook.FORWARD, "drop", None, "transit-experimental"),
    ("reserved 0", _icmp(0), Hook.INPUT, "drop", None, "reserved"),
    ("extension 255 forwarded", _icmp(255), Hook.FORWARD, "drop", None, "transit-reserved"),
    ("seamoby", _icmp(150), Hook.INPUT, "drop", None, "seamoby"),
    ("seamoby forwarded", _icmp(150), Hook.FORWARD, "drop", None, "transit-seamoby"),
]

NS = IPv6(dst="ff02::1:ff00:2", **LINK) / ICMPv6ND_NS(tgt="fe80::2")
HARDENING: list[tuple[str, bytes, Hook, str]] = [
    ("truncated header", bytes(NS)[:30], Hook.INPUT, "hardening-malformed"),
    ("truncated icmpv6", bytes(NS)[:42], Hook.INPUT, "hardening-malformed"),
    ("first fragment without icmpv6", bytes(
        IPv6(src="2001:db8::1", dst="2001:db8::2") / IPv6ExtHdrFragment(m=1, nh=60)
        / IPv6ExtHdrDestOpt(nh=58, len=0))[:56], Hook.INPUT, "hardening-incomplete-chain"),
    ("fragmented ns", bytes(IPv6(dst="ff02::1:ff00:2", **LINK) / IPv6ExtHdrFragment()
                            / ICMPv6ND_NS(tgt="fe80::2")), Hook.INPUT, "hardening-nd-fragmented"),
    ("ns from off-link", bytes(IPv6(src="fe80::1", dst="ff02::1:ff00:2", hlim=64)
                               / ICMPv6ND_NS(tgt="fe80::2")), Hook.INPUT, "hardening-nd-invalid"),
    ("ra from global", bytes(IPv6(src="2001:db8::1", dst="ff02::1", hlim=255) / ICMPv6ND_RA()),
     Hook.OUTPUT, "hardening-nd-invalid"),
    ("ptb below 1280", bytes(GLOBAL / ICMPv6PacketTooBig(mtu=1000) / INNER), Hook.FORWARD,
     "hardening-ptb-below-minimum-mtu"),
]


class TestOtherTypes:
    """Types the draft does not name follow RFC 4890 §4.3 (transit) and §4.4 (local)."""

    @pytest.mark.parametrize("case", OTHERS, ids=[c[0] for c in OTHERS])
    def test_decision(self, case: tuple[str, bytes, Hook, str, str | None, str]) -> None:
        """The packet gets the documented verdict from the documented rule."""
        _id, data, hook, action, mark, rule = case
        assert summary(decide(data, hook)) == (action, mark, rule)

    @pytest.mark.parametrize("hook", list(Hook))
    def test_every_type_has_a_rule(self, hook: Hook) -> None:
        """No well-formed ICMPv6 type reaches the no-match verdict, at any hook."""
        for t in range(256):
            src = "fe80::1" if t in (130, 131, 132, 143, 151, 152, 153) else "2001:db8::1"
            assert decide(_icmp(t, src=src, hlim=1), hook).rule != "no-match", t

    def test_non_first_fragment_is_accepted(self) -> None:
        """A non-first fragment carries no ICMPv6 header and is accepted by a named rule."""
        data = bytes(IPv6(src="2001:db8::1", dst="2001:db8::2")
                     / IPv6ExtHdrFragment(offset=10, nh=58) / (b"\0" * 16))
        assert summary(decide(data, Hook.INPUT)) == ("accept", None, "non-first-fragment")


class TestHardening:
    """The hardening layer sits first in the band and drops what cannot be trusted."""

    @pytest.mark.parametrize("case", HARDENING, ids=[c[0] for c in HARDENING])
    def test_dropped(self, case: tuple[str, bytes, Hook, str]) -> None:
        """The packet is dropped by the named hardening rule."""
        _id, data, hook, rule = case
        assert summary(decide(data, hook)) == ("drop", None, rule)

    def test_hardening_comes_first(self) -> None:
        """Hardening rules have the lowest default priorities."""
        order = [r.name for r in TABLE.rules]
        assert [n for n in order if n.startswith("hardening-")] == order[:5]


class TestDefaultValues:
    """Every default is a complete, cited value inside the band."""

    def test_names_unique_and_cited(self) -> None:
        """Names are unique; each rule has a description and a citation."""
        assert len({r.name for r in DEFAULT_RULES}) == len(DEFAULT_RULES)
        assert all(r.description and r.citation for r in DEFAULT_RULES)

    def test_priorities_in_band(self) -> None:
        """Every default priority lies in DEFAULT_BAND."""
        assert all(DEFAULT_BAND[0] <= (r.priority or 0) <= DEFAULT_BAND[1] for r in DEFAULT_RULES)

    def test_must_not_rows_never_need_an_sa(self) -> None:
        """Every MUST NOT type bypasses SA lookup at every local hook (fn 6)."""
        for _m, t, _r, ike, _f in DRAFT_ROWS:
            if ike is IkeUse.MUST_NOT:
                rule = next(r for r in DEFAULT_RULES if r.match.types == frozenset({t}))
                assert rule.verdict.mark_name == "bypass" and rule.verdict.action is Action.MARK

    def test_documented(self) -> None:
        """docs/rules.md lists every default with its priority, name and citation."""
        doc = (Path(__file__).resolve().parents[2] / "docs" / "rules.md").read_text()
        for r in DEFAULT_RULES:
            assert f"| {r.priority} | `{r.name}` |" in doc, r.name
            assert r.citation in doc, r.name
