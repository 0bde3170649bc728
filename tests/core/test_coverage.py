# SPDX-License-Identifier: MIT
"""The indexed lint gives exactly the findings of the former pairwise loop, and scales.

`reference_lint` below is the former pairwise lint (quadratic in the rules), kept
verbatim (with its covers/overlaps helpers) as the oracle: random tables drawn
from a small universe of keys, so that covering, duplicate and overlapping
rules are frequent, must give the same warnings in the same order.
"""

from __future__ import annotations

import ipaddress
import random

import pytest

from shim.core import coverage
from shim.core.defaults import DRAFT
from shim.core.explain import describe_match, describe_verdict
from shim.core.lint import lint
from shim.core.model import (
    ADDR_CLASSES,
    FRAG_STATUSES,
    Action,
    Hook,
    IkeUse,
    Match,
    Origin,
    Role,
    Rule,
    Settings,
    Verdict,
)
from shim.core.rules import RuleTable, build_table

# --- the former algorithm (shim/explain.py at 866aaac), the oracle -----------------------
_ALL_HOOKS = frozenset(Hook)
_ALL_TYPES: frozenset[int | None] = frozenset([None, *range(256)])


def _types(m: Match, table: RuleTable) -> frozenset[int | None]:
    base: frozenset[int | None] = _ALL_TYPES if m.types is None else frozenset(m.types)
    out = set()
    for t in base:
        role = table.type_role[t] if t is not None else int(Role.UNCLASSIFIED)
        ike = table.type_ike[t] if t is not None else int(IkeUse.UNCLASSIFIED)
        if (m.roles is None or role & m.roles) and (m.ike is None or ike & m.ike):
            out.add(t)
    return frozenset(out)


def _sets(m: Match) -> tuple[frozenset[object], ...]:
    return (frozenset(_ALL_HOOKS if m.hooks is None else m.hooks),
            frozenset(FRAG_STATUSES if m.frag is None else m.frag),
            frozenset(ADDR_CLASSES if m.src_classes is None else m.src_classes),
            frozenset(ADDR_CLASSES if m.dst_classes is None else m.dst_classes))


def _scalars(m: Match) -> tuple[object, ...]:
    return (m.iif, m.oif, m.chain_complete, m.malformed, m.nd_valid)


def _prefix_in(inner: str | None, outer: str | None) -> bool:
    if outer is None:
        return True
    return inner is not None and ipaddress.IPv6Network(inner).subnet_of(ipaddress.IPv6Network(outer))


def _range_in(inner: tuple[int, int] | None, outer: tuple[int, int] | None,
              full: tuple[int, int] | None) -> bool:
    if outer is None:
        return True
    i = inner if inner is not None else full
    return i is not None and outer[0] <= i[0] and i[1] <= outer[1]


def ref_covers(a: Match, b: Match, table: RuleTable) -> bool:
    return (_types(b, table) <= _types(a, table)
            and (a.codes is None or (b.codes is not None and b.codes <= a.codes))
            and all(sb <= sa for sa, sb in zip(_sets(a), _sets(b)))
            and all(x is None or x == y for x, y in zip(_scalars(a), _scalars(b)))
            and _prefix_in(b.src, a.src) and _prefix_in(b.dst, a.dst)
            and _range_in(b.hop_limit, a.hop_limit, (0, 255))
            and _range_in(b.mtu, a.mtu, None))


def _overlap_prefix(a: str | None, b: str | None) -> bool:
    return a is None or b is None or _prefix_in(a, b) or _prefix_in(b, a)


def _overlap_range(a: tuple[int, int] | None, b: tuple[int, int] | None) -> bool:
    return a is None or b is None or (a[0] <= b[1] and b[0] <= a[1])


def ref_overlaps(a: Match, b: Match, table: RuleTable) -> bool:
    return (bool(_types(a, table) & _types(b, table))
            and (a.codes is None or b.codes is None or bool(a.codes & b.codes))
            and all(sa & sb for sa, sb in zip(_sets(a), _sets(b)))
            and all(x is None or y is None or x == y for x, y in zip(_scalars(a), _scalars(b)))
            and _overlap_prefix(a.src, b.src) and _overlap_prefix(a.dst, b.dst)
            and _overlap_range(a.hop_limit, b.hop_limit) and _overlap_range(a.mtu, b.mtu))


def _label(r: Rule) -> str:
    if r.origin is Origin.USER:
        return f"user rule {r.name!r} ({r.file} [[rule]] #{r.index + 1}, priority {r.priority})"
    return f"default rule {r.name!r} (priority {r.priority})"


def _must_not(r: Rule, table: RuleTable) -> bool:
    ts = r.match.types
    return (r.origin is Origin.DEFAULT and ts is not None and bool(ts)
            and all(table.type_ike[t] == IkeUse.MUST_NOT for t in ts))


def reference_lint(table: RuleTable) -> list[str]:
    out = [f"{_label(u)} replaces the default of that name (was priority {d.priority}: "
           f"{describe_verdict(d.verdict)} for {describe_match(d.match)})"
           for u, d in table.replaced]
    out += [f"{_label(u)} overrides a MUST NOT default ({describe_verdict(d.verdict)}): "
            f"{DRAFT} §6 fn 6, these messages MUST NOT use dynamic SAs"
            for u, d in table.replaced if _must_not(d, table) and u.verdict != d.verdict]
    rules = table.rules
    for j, b in enumerate(rules):
        a = next((a for a in rules[:j] if ref_covers(a.match, b.match, table)), None)
        if a is not None and Origin.USER in (a.origin, b.origin):
            out.append(f"{_label(b)} can never match: {_label(a)} comes first and matches "
                       "every packet it does")
        if _must_not(b, table):
            out += [f"{_label(u)} comes before {_label(b)} and can take its packets "
                    f"({describe_verdict(u.verdict)} instead of {describe_verdict(b.verdict)}): "
                    f"{DRAFT} §6 fn 6, these messages MUST NOT use dynamic SAs"
                    for u in rules[:j] if u.origin is Origin.USER
                    and u.verdict != b.verdict and ref_overlaps(u.match, b.match, table)]
    return out


# --- random tables -------------------------------------------------------------------
TYPES = [None, frozenset({128}), frozenset({128, 129}), frozenset({135}), frozenset({133, 134, 135, 136}),
         frozenset({1}), frozenset({1, 2, 3, 4})]
PREFIXES = [None, None, "2001:db8::/32", "2001:db8:1::/48", "2001:db8:1:2::/64", "2001:db8:2::/48",
            "fe80::/10"]
NAMES = ["echo-request", "echo-reply", "nd-neighbor-solicit", "nd-router-advert"]  # defaults


def random_match(rng: random.Random) -> Match:
    types = rng.choice(TYPES)
    return Match(
        types=types,
        codes=rng.choice([None, None, frozenset({0}), frozenset({0, 1})]) if types else None,
        roles=rng.choice([None, None, Role.LINK_LOCAL, Role.END_TO_END | Role.ANY_TO_END]),
        ike=rng.choice([None, None, IkeUse.MUST_NOT, IkeUse.MAY]),
        src=rng.choice(PREFIXES), dst=rng.choice(PREFIXES),
        src_classes=rng.choice([None, None, frozenset({"link_local"})]),
        iif=rng.choice([None, None, "eth0", "eth1"]), oif=rng.choice([None, None, "eth0"]),
        hooks=rng.choice([None, None, frozenset({Hook.INPUT}), frozenset({Hook.INPUT, Hook.FORWARD})]),
        frag=rng.choice([None, None, frozenset({"none"}), frozenset({"none", "first", "atomic"})]),
        hop_limit=rng.choice([None, None, (255, 255), (0, 255), (1, 64)]),
        mtu=rng.choice([None, None, None, (1280, 1500), (0, 65535)]),
        chain_complete=rng.choice([None, None, True, False]),
        malformed=rng.choice([None, None, False]),
        nd_valid=rng.choice([None, None, True]))


def random_table(seed: int, n: int) -> RuleTable:
    rng = random.Random(seed)
    rules: list[Rule] = []
    for i in range(n):
        # Repeats of earlier matches make duplicates; default names make replacements.
        m = rules[rng.randrange(len(rules))].match if rules and rng.random() < 0.2 else random_match(rng)
        name = NAMES[i] if i < len(NAMES) and rng.random() < 0.3 else f"u{i}"
        rules.append(Rule(name=name, priority=rng.choice([None, -5, 0, 0, 3, 1500, 2500]),
                          origin=Origin.USER,
                          verdict=Verdict(action=rng.choice([Action.ACCEPT, Action.DROP])),
                          match=m, file="t.toml", file_order=0, index=i))
    return build_table(Settings(), rules)


class TestSameFindings:
    """The index changes the cost of lint, never its findings."""

    @pytest.mark.parametrize("seed", range(60))
    def test_random_tables(self, seed: int) -> None:
        """Random tables with the defaults: the same warnings, in the same order."""
        table = random_table(seed, 40)
        assert lint(table) == reference_lint(table)

    def test_the_random_tables_have_findings(self) -> None:
        """The draw exercises every kind of finding (so the comparison above is not vacuous)."""
        text = "\n".join(w for seed in range(60) for w in lint(random_table(seed, 40)))
        for kind in ("can never match", "MUST NOT use dynamic SAs", "replaces the default"):
            assert kind in text

    @pytest.mark.parametrize("seed", range(20))
    def test_covers_and_overlaps_agree(self, seed: int) -> None:
        """covers/overlaps on Shapes equal the former functions on Matches, pair by pair."""
        rng = random.Random(1000 + seed)
        table = build_table(Settings(), [])
        matches = [random_match(rng) for _ in range(25)]
        shapes = [coverage.shape(m, table.type_role, table.type_ike) for m in matches]
        for a, sa in zip(matches, shapes):
            for b, sb in zip(matches, shapes):
                assert coverage.covers(sa, sb) == ref_covers(a, b, table)
                assert coverage.overlaps(sa, sb) == ref_overlaps(a, b, table)


class TestScales:
    """The index compares a rule with few earlier rules, not all of them."""

    def test_prefix_table_is_not_quadratic(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """2,000 echo rules over distinct /64s: covers() runs a few times per rule, not ~n/2."""
        calls = 0
        real = coverage.covers

        def counting(a: coverage.Shape, b: coverage.Shape) -> bool:
            nonlocal calls
            calls += 1
            return real(a, b)

        monkeypatch.setattr(coverage, "covers", counting)
        n = 2000
        rules = [Rule(name=f"r{i}", priority=None, origin=Origin.USER,
                      verdict=Verdict(action=Action.DROP),
                      match=Match(types=frozenset({128}), src=f"2001:db8:{i // 256:x}:{i % 256:x}::/64"),
                      file="t.toml", file_order=0, index=i) for i in range(n)]
        table = build_table(Settings(), rules)
        assert lint(table) == []
        assert calls < 10 * len(table.rules)

    def test_similar_rules_are_bounded_and_say_so(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Rules that differ only in a range share a leaf: each search stops after `budget`
        comparisons, and lint says how many rules it could not fully check (Rule 3)."""
        calls = 0
        real = coverage.covers

        def counting(a: coverage.Shape, b: coverage.Shape) -> bool:
            nonlocal calls
            calls += 1
            return real(a, b)

        monkeypatch.setattr(coverage, "covers", counting)
        n = 2000
        rules = [Rule(name=f"r{i}", priority=None, origin=Origin.USER,
                      verdict=Verdict(action=Action.DROP),
                      match=Match(types=frozenset({2}), mtu=(1280 + 2 * i, 1280 + 2 * i)),
                      file="t.toml", file_order=0, index=i) for i in range(n)]
        table = build_table(Settings(), rules)
        warnings = lint(table)
        budget = coverage.CoverIndex().budget
        assert calls <= (budget + 1) * len(table.rules)
        cut = [w for w in warnings if "not fully checked" in w]
        # Every user rule past the first `budget` (+ the defaults of type 2 in its leaf) hits it.
        assert len(cut) == 1 and n - budget - 1 <= int(cut[0].split()[0]) <= n

    def test_a_cover_within_the_budget_is_still_found(self) -> None:
        """The budget only cuts long searches: a covering rule among the first earlier ones
        is reported as before."""
        wide = Rule(name="wide", priority=None, origin=Origin.USER, verdict=Verdict(action=Action.DROP),
                    match=Match(types=frozenset({2}), mtu=(0, 2000)), file="t.toml", file_order=0,
                    index=0)
        narrow = Rule(name="narrow", priority=None, origin=Origin.USER,
                      verdict=Verdict(action=Action.ACCEPT),
                      match=Match(types=frozenset({2}), mtu=(1300, 1400)), file="t.toml",
                      file_order=0, index=1)
        warnings = lint(build_table(Settings(), [wide, narrow]))
        assert any("'narrow'" in w and "can never match" in w for w in warnings)
        assert not any("not fully checked" in w for w in warnings)
