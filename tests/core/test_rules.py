# SPDX-License-Identifier: MIT
"""Precedence of the rule table: priority, user over default, ties, replacement, lint."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from shim.core.defaults import DEFAULT_RULES
from shim.core.errors import ConfigError
from shim.core.explain import describe_match, explain, format_table
from shim.core.lint import lint
from shim.core.model import (
    NO_IFINDEX,
    Action,
    Hook,
    MarkName,
    Match,
    Origin,
    PacketView,
    Rule,
    Settings,
    Verdict,
)
from shim.core.rules import USER_DEFAULT_PRIORITY, build_table

DROP = Verdict(action=Action.DROP)
ACCEPT = Verdict(action=Action.ACCEPT)
BYPASS = Verdict(action=Action.MARK, mark=1, mask=0xFF, mark_name="bypass")
PROTECT = Verdict(action=Action.MARK, mark=2, mask=0xFF, mark_name="protect")


def view(**fields: Any) -> PacketView:
    """A well-formed global-unicast Echo Request, with fields overridden."""
    base: dict[str, Any] = dict(
        version=6, payload_length=16, hop_limit=64, src="2001:db8::1", dst="2001:db8::2",
        src_class="global_unicast", dst_class="global_unicast", src_mcast_scope=None,
        dst_mcast_scope=None, ext_headers=(), upper_layer=58, upper_layer_offset=40,
        chain_complete=True, frag_status="none", frag_offset=None, frag_more=None,
        frag_id=None, icmpv6_type=128, icmpv6_code=0, icmpv6_length=16, nd_valid=None,
        nd_failed=(), mtu=None, malformed=())
    base.update(fields)
    return PacketView(**base)


NS = dict(icmpv6_type=135, hop_limit=255, src="fe80::1", src_class="link_local",
          dst="ff02::1:ff00:2", dst_class="solicited_node", nd_valid=True)
UDP = dict(upper_layer=17, icmpv6_type=None, icmpv6_code=None)
# No rule of the defaults matches this (no ICMPv6 header, yet neither malformed, incomplete,
# a fragment nor another protocol): the parser never reports it, the matcher does not care.
NOTHING = dict(upper_layer=None, upper_layer_offset=None, icmpv6_type=None, icmpv6_code=None)


def user(name: str, verdict: Verdict = DROP, priority: int | None = None, file: str = "a.toml",
         order: int = 0, index: int = 0, **match: Any) -> Rule:
    """A user rule as shim.config would load it."""
    return Rule(name=name, priority=priority, origin=Origin.USER, match=Match(**match),
                verdict=verdict, file=file, file_order=order, index=index)


class TestPrecedence:
    """One total order: priority, then user before default, then file, then index."""

    def test_user_rule_overrides_default(self) -> None:
        """A user rule without priority (0) sits above the band and wins."""
        table = build_table(Settings(), [user("no-ping", types=frozenset({128}))])
        d = table.decide_py(view(), Hook.INPUT)
        assert (d.rule, d.origin, d.priority, d.verdict) == ("no-ping", Origin.USER,
                                                              USER_DEFAULT_PRIORITY, DROP)
        assert explain(view(), table, Hook.INPUT)["overridden"] == ["echo-request"]

    def test_fallback_below_defaults(self) -> None:
        """A rule at 5000 decides only what no default matches."""
        table = build_table(Settings(), [user("fallback", priority=5000)])
        assert table.decide_py(view(**NOTHING), Hook.INPUT).rule == "fallback"
        assert table.decide_py(view(), Hook.INPUT).rule == "echo-request"
        assert table.rules[-1].name == "fallback"

    def test_tie_user_before_default(self) -> None:
        """At equal priority a user rule comes before a default."""
        table = build_table(Settings(), [user("same", priority=1131, types=frozenset({128}))])
        names = [r.name for r in table.rules]
        assert names.index("same") == names.index("echo-request") - 1
        assert table.decide_py(view(), Hook.INPUT).rule == "same"

    def test_tie_file_order_then_index(self) -> None:
        """At equal priority earlier files, then earlier [[rule]]s, come first."""
        rules = [user("b2", priority=7, file="b.toml", order=2, index=0),
                 user("a1", priority=7, file="a.toml", order=1, index=1),
                 user("a0", priority=7, file="a.toml", order=1, index=0)]
        table = build_table(Settings(), rules, defaults=())
        assert [r.name for r in table.rules] == ["a0", "a1", "b2"]
        assert table.decide_py(view(), Hook.INPUT).rule == "a0"

    def test_lower_priority_number_first(self) -> None:
        """-10 is evaluated before 0, as in nftables and xfrm."""
        table = build_table(Settings(), [user("zero", ACCEPT), user("neg", priority=-10, index=1)])
        assert table.decide_py(view(), Hook.INPUT).rule == "neg"

    def test_first_match_wins(self) -> None:
        """Of two matching rules the first in order decides; explain lists the other."""
        table = build_table(Settings(), [user("one", ACCEPT, priority=1),
                                         user("two", DROP, priority=2, index=1)], defaults=())
        assert table.decide_py(view(), Hook.INPUT).verdict == ACCEPT
        assert table.matches_py(view(), Hook.INPUT) == [0, 1]
        assert explain(view(), table, Hook.INPUT)["overridden"] == ["two"]

    def test_deterministic(self) -> None:
        """The same inputs in another order give the same table."""
        rules = [user(f"r{i}", priority=i % 3, index=i) for i in range(6)]
        assert build_table(Settings(), rules) == build_table(Settings(), rules[::-1])


class TestNoMatch:
    """A packet no rule matches gets the explicit Settings.no_match decision."""

    def test_no_match_is_last_decision(self) -> None:
        """No-match follows the rules, then non-ICMPv6: the C index maps straight to them."""
        table = build_table(replace(Settings(), no_match=DROP), [], defaults=())
        d = table.decide_py(view(), Hook.INPUT)
        assert (d.rule, d.origin, d.verdict, d.priority) == ("no-match", Origin.SETTINGS,
                                                              DROP, None)
        assert table.decisions[0] is table.no_match and len(table.decisions) == 2
        assert table.decisions[1] is table.non_icmpv6

    def test_no_match_by_mark_name(self) -> None:
        """A [verdicts] no_match naming a mark gets the mark's value."""
        table = build_table(replace(Settings(), no_match=PROTECT), [user("x", hooks=frozenset(
            {Hook.FORWARD}))])
        assert table.decide_py(view(**NOTHING), Hook.INPUT).verdict.mark == 2

    def test_on_error_decision(self) -> None:
        """The on_error verdict is a settings decision too."""
        table = build_table(replace(Settings(), on_error=DROP), [])
        assert (table.error_decision.rule, table.error_decision.verdict) == ("on-error", DROP)


class TestReplacement:
    """A user rule named like a default replaces it wholesale."""

    def test_replaces_and_keeps_place(self) -> None:
        """Without a priority the replacement takes the default's priority."""
        table = build_table(Settings(), [user("echo-request", ACCEPT, types=frozenset({128}))])
        mine = [r for r in table.rules if r.name == "echo-request"]
        assert len(mine) == 1 and mine[0].origin is Origin.USER and mine[0].priority == 1131
        assert table.decide_py(view(), Hook.INPUT).verdict == ACCEPT
        assert any("replaces the default" in w for w in lint(table))

    def test_replacement_with_own_priority(self) -> None:
        """A replacement with its own priority goes there: first after the hardening band."""
        table = build_table(Settings(), [user("echo-request", priority=-1, types=frozenset({1}))])
        first = next(r for r in table.rules if not r.hardening)
        assert first.name == "echo-request"
        assert table.decide_py(view(), Hook.INPUT).rule == "no-match"

    def test_duplicate_user_names(self) -> None:
        """Two user rules of one name are a ConfigError."""
        with pytest.raises(ConfigError, match="'x'.*duplicate"):
            build_table(Settings(), [user("x"), user("x", file="b.toml", index=1)])


class TestMarks:
    """Verdicts name marks; values come from the settings."""

    def test_defaults_follow_redefined_mark(self) -> None:
        """Redefining bypass changes what the ND defaults set."""
        marks = (MarkName(name="bypass", value=0x100, mask=0xF00),
                 MarkName(name="protect", value=0x2, mask=0xFF))
        table = build_table(replace(Settings(), marks=marks), [])
        v = table.decide_py(view(**NS), Hook.INPUT).verdict
        assert (v.mark, v.mask, v.mark_name) == (0x100, 0xF00, "bypass")
        assert v.apply_to_mark(0xFFFF) == 0xF1FF

    def test_undefined_mark(self) -> None:
        """A rule naming an undefined mark is a ConfigError."""
        bad = Verdict(action=Action.MARK, mark=1, mark_name="nope")
        with pytest.raises(ConfigError, match="'nope' is not defined"):
            build_table(Settings(), [user("x", bad)])


class TestNative:
    """Compilation to NativeRule."""

    def test_unknown_interface_never_matches(self) -> None:
        """An unknown iif compiles to NO_IFINDEX and the Python matcher agrees."""
        table = build_table(Settings(), [user("lan", iif="nosuch0")], defaults=())
        assert table.native_rules(lambda n: {"eth0": 2}[n])[0].indev == NO_IFINDEX
        assert table.decide_py(view(), Hook.INPUT, indev=NO_IFINDEX - 1).rule == "no-match"

    def test_known_interface(self) -> None:
        """A known iif matches only its index."""
        table = build_table(Settings(), [user("lan", iif="eth0")], defaults=())
        known = {"eth0": 2}.__getitem__
        assert table.native_rules(known)[0].indev == 2
        assert table.decide_py(view(), Hook.INPUT, 2, 0, known).rule == "lan"
        assert table.decide_py(view(), Hook.INPUT, 3, 0, known).rule == "no-match"

    def test_one_decision_per_rule(self) -> None:
        """decisions = one per rule, no-match, non-ICMPv6; native_rules is as long as rules."""
        table = build_table(Settings(), [user("x")])
        assert len(table.decisions) == len(table.rules) + 2 == len(table.native_rules()) + 2


class TestLint:
    """lint() warns about unreachable rules and MUST NOT overrides."""

    def test_defaults_are_clean(self) -> None:
        """The defaults alone give no warnings."""
        assert lint(build_table(Settings(), [])) == []

    def test_shadowed_user_rule(self) -> None:
        """A rule covered by an earlier one can never match."""
        table = build_table(Settings(), [user("all-echo", types=frozenset({128, 129})),
                                         user("echo", priority=1, types=frozenset({128}),
                                              index=1)], defaults=())
        assert any("'echo'" in w and "can never match" in w for w in lint(table))

    def test_default_shadowed_by_user(self) -> None:
        """A user rule hiding a whole default is reported."""
        table = build_table(Settings(), [user("no-echo", types=frozenset({128}))])
        assert any("'echo-request'" in w and "never match" in w for w in lint(table))

    def test_must_not_override(self) -> None:
        """A user rule taking NS away from the bypass default cites fn 6."""
        table = build_table(Settings(), [user("protect-all", PROTECT)])
        warnings = [w for w in lint(table) if "MUST NOT" in w]
        assert warnings and all("§6 fn 6" in w for w in warnings)
        assert any("'nd-neighbor-solicit'" in w for w in warnings)

    def test_must_not_replacement(self) -> None:
        """Replacing a MUST NOT default with another verdict is a warning."""
        table = build_table(Settings(), [user("nd-router-advert", PROTECT,
                                              types=frozenset({134}))])
        assert any("overrides a MUST NOT default" in w for w in lint(table))

    def test_same_verdict_is_no_override(self) -> None:
        """A user rule giving MUST NOT types the same bypass is not flagged."""
        table = build_table(Settings(), [user("ns-lan", BYPASS, types=frozenset({135}),
                                              src_classes=frozenset({"link_local"}))])
        assert not [w for w in lint(table) if "MUST NOT" in w]


class TestFormat:
    """format_table() lists the effective table in order."""

    def test_lists_every_rule_and_no_match(self) -> None:
        """Every rule name, its citation and the no-match line appear, in order."""
        table = build_table(Settings(), [user("mine", types=frozenset({128}))])
        text = format_table(table)
        positions = [text.index(f" {r.name} ") for r in table.rules]
        assert positions == sorted(positions)
        assert "no-match" in text and "RFC 6980 §5" in text and "a.toml [[rule]] #1" in text

    def test_describe_match(self) -> None:
        """Matches print in the TOML key spelling."""
        m = Match(types=frozenset({135}), hop_limit=(255, 255), frag=frozenset({"first"}))
        assert describe_match(m) == "type=nd-neighbor-solicit frag=first hop_limit=255"
        assert describe_match(DEFAULT_RULES[0].match) == "malformed=true"


class TestExplain:
    """explain() gives the decision JSON keys, the reason and the overridden rules."""

    def test_shape(self) -> None:
        """decision holds the JSON keys; overridden_rules describe the losers."""
        table = build_table(Settings(), [user("no-ping", types=frozenset({128}))])
        out = explain(view(), table, Hook.INPUT)
        decision = out["decision"]
        assert isinstance(decision, dict)
        assert {"verdict", "mark", "mark_name", "rule", "origin", "priority",
                "citation"} <= decision.keys()
        assert (decision["rule"], decision["origin"], decision["verdict"]) == (
            "no-ping", "user", "drop")
        assert "first match" in str(out["why"]) and out["match"] == "type=echo-request"
        losers = out["overridden_rules"]
        assert isinstance(losers, list) and losers[0]["rule"] == "echo-request"
        assert losers[0]["mark_name"] == "protect"

    def test_no_match(self) -> None:
        """Without a match the no-match decision is explained."""
        out = explain(view(), build_table(Settings(), [], defaults=()), Hook.INPUT)
        assert out["decision"]["rule"] == "no-match"  # type: ignore[index]
        assert out["match"] is None and "no_match" in str(out["why"])

    def test_given_matches(self) -> None:
        """Indexes from the C matcher can be passed in instead of recomputed."""
        table = build_table(Settings(), [user("a", priority=1), user("b", priority=2, index=1)],
                            defaults=())
        out = explain(view(), table, Hook.INPUT, matches=[1])
        assert out["decision"]["rule"] == "b" and out["overridden"] == []  # type: ignore[index]
