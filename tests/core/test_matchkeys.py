# SPDX-License-Identifier: MIT
"""Every consumer of the match-key registry handles every key in it, and nothing else.

Each test is parametrized over shim.core.matchkeys.MATCH_KEYS and one or more sample
values per kind of key, so a new key is checked by every test here without a line
added: the config reader takes it, the compiled C rule (plain walk and compiled
classifier) and the reference matcher match exactly the packets the analysis says its
box holds (one packet per box inside and outside, built by shim.core.examples),
`describe_match` writes it so that `search` reads it back, lint's coverage tells it
from "any", and `export xfrm` never allows out what the rule does not bypass. The
converse checks keep the registry complete: every Match and NativeRule field and every
analysis dimension belongs to a key.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import pytest

import shim.bindings.icmp6 as native
from shim.cli.analysis import _query
from shim.config.loader import load_config, parse_match
from shim.core import coverage, findings
from shim.core.analysis import partition, space_for
from shim.core.examples import example
from shim.core.explain import describe_match
from shim.core.matchkeys import MATCH_KEYS, Kind, MatchKey
from shim.core.model import Action, Hook, Match, NativeRule, Origin, Rule, Settings, Verdict
from shim.core.packetspace import DIMS, PacketSpace, key_boxes, match_box
from shim.core.rules import RuleTable, build_table
from shim.core.space import Box, region_and_box, region_sub_box
from shim.core.xfrm import derive_policies
from tests.bindings.test_matchers_agree import FIELDS

REPO = Path(__file__).resolve().parents[2]
BYPASS = Verdict(action=Action.MARK, mark=0x1, mask=0xFF, mark_name="bypass")
DROP = Verdict(action=Action.DROP)

# TOML values of each kind, each one constraining (neither nothing nor everything). A new
# kind needs its samples here; a new key of a known kind is tested with no change.
SAMPLES: dict[Kind, Callable[[MatchKey], tuple[object, ...]]] = {
    Kind.TYPES: lambda k: ("echo-request", ["packet-too-big", "nd-neighbor-solicit"]),
    Kind.CODES: lambda k: (1, [0, 3]),
    Kind.ROLES: lambda k: ("link-local", ["end-to-end", "unclassified"]),
    Kind.IKE: lambda k: ("must-not", "may"),
    Kind.CLASSES: lambda k: ("link-local", ["global-unicast", "absent"]),
    Kind.PREFIX: lambda k: ("2001:db8::/32", "fe80::1"),
    Kind.HOOKS: lambda k: ("input", ["output", "forward"]),
    Kind.FRAG: lambda k: ("none", ["first", "non-first"]),
    Kind.IFNAME: lambda k: ("eth0",),
    Kind.FLAG: lambda k: (True, False),
    Kind.RANGE: lambda k: (f"1-{k.top // 2}", k.top),
}
CASES = [(k, v) for k in MATCH_KEYS for v in SAMPLES[k.kind](k)]
IDS = [f"{k.name}={v}" for k, v in CASES]


def _match(key: MatchKey, value: object) -> Match:
    """The Match of a rule with this one key, as the config reader gives it."""
    return parse_match({key.name: value}, "test")


def _table(m: Match, verdict: Verdict, hooks: tuple[Hook, ...] = (Hook.INPUT, Hook.OUTPUT,
                                                                  Hook.FORWARD)) -> RuleTable:
    rule = Rule(name="only", priority=0, origin=Origin.USER, match=m, verdict=verdict,
                file="t.toml")
    return build_table(Settings(hooks=hooks), [rule], defaults=())


class TestRegistry:
    """The registry names each Match field, NativeRule field and analysis dimension once."""

    def test_every_match_field_is_a_key(self) -> None:
        """Match has exactly the registry's fields: no key without a field, no field unread."""
        assert sorted(f.name for f in dataclasses.fields(Match)) == sorted(
            k.field for k in MATCH_KEYS)

    def test_every_native_field_is_a_keys(self) -> None:
        """NativeRule's fields are the union of the keys' native fields, each owned once."""
        owned = [n for k in MATCH_KEYS for n in k.native]
        assert len(owned) == len(set(owned))
        assert sorted(f.name for f in dataclasses.fields(NativeRule)) == sorted(owned)

    def test_every_dimension_is_a_keys(self) -> None:
        """Each key constrains a dimension of the analysis, and each dimension has a key."""
        assert {k.dim for k in MATCH_KEYS} == set(DIMS)

    def test_names_are_unique(self) -> None:
        """A TOML key names one registry entry."""
        assert len({k.name for k in MATCH_KEYS}) == len(MATCH_KEYS)

    def test_only_ranges_have_a_top(self) -> None:
        """`top` is read for ranges only, so elsewhere it stays unset."""
        assert all((k.top > 0) == (k.kind is Kind.RANGE) for k in MATCH_KEYS)

    def test_check_hints_name_keys(self) -> None:
        """`check`'s conflict hints are about keys that exist."""
        named = {n for pair in findings._HINTS for n in pair}
        assert named <= {k.name for k in MATCH_KEYS}

    def test_the_property_test_draws_every_key(self) -> None:
        """The C-versus-reference property test has a strategy for every Match field."""
        assert sorted(FIELDS) == sorted(k.field for k in MATCH_KEYS)

    def test_docs_list_every_key(self) -> None:
        """docs/rules.md's TOML table has a row naming each key."""
        text = (REPO / "docs" / "rules.md").read_text()
        table = text[text.index("## TOML syntax"):text.index("## Exact analysis")]
        rows = [line for line in table.splitlines() if line.startswith("| `")]
        cells = {name for row in rows for name in row.split("|")[1].replace("`", "").split(", ")}
        assert {k.name.strip() for k in MATCH_KEYS} <= {c.strip() for c in cells}


@pytest.mark.parametrize(("key", "value"), CASES, ids=IDS)
class TestEveryConsumer:
    """One key set to one sample value, through every consumer."""

    def test_the_reader_sets_only_its_field(self, key: MatchKey, value: object,
                                            tmp_path: Path) -> None:
        """A [[rule]] in a file with the key gives a Match with that field set and no other."""
        (tmp_path / "icmp6-shim.toml").write_text(
            f'[[rule]]\nname = "k"\nverdict = "drop"\n{key.name} = {_toml(value)}\n')
        m = load_config(tmp_path).rules[0].match
        assert m == _match(key, value)
        assert [f.name for f in dataclasses.fields(Match)
                if getattr(m, f.name) is not None] == [key.field]

    def test_c_and_reference_match_what_the_analysis_says(self, key: MatchKey,
                                                          value: object) -> None:
        """Inside the key's box both C walks and the reference match; outside, none does.

        Both sides are non-empty, so the key constrains strictly (it is compiled, walked and
        modelled); one packet per box of each side is built and judged.
        """
        table = _table(_match(key, value), DROP)
        space = space_for([table], hooks=frozenset(Hook))
        box = match_box(table.rules[0].match, space, table.type_role, table.type_ike)
        assert box is not None
        universe = space.universe()
        inside, outside = region_and_box(universe, box), region_sub_box(universe, box)
        assert inside and outside
        tables = [native.NativeTable(table.native_rules(space.if_value), table.type_role,
                                     table.type_ike, table.settings.ext_limit, compiled=c)
                  for c in (True, False)]
        for want, region in ((0, inside), (1, outside)):
            for b in region:
                _judged_as(want, b, table, tables, space)

    def test_the_analysis_names_the_key(self, key: MatchKey, value: object) -> None:
        """key_boxes reports the key, in its dimension, and nothing else."""
        space = PacketSpace(hooks=frozenset(Hook), names=("eth0",))
        table = _table(_match(key, value), DROP)
        found = key_boxes(table.rules[0].match, space, table.type_role, table.type_ike)
        assert [(name, DIMS[dim]) for name, dim, _ in found] == [(key.name, key.dim)]

    def test_the_space_names_its_interfaces(self, key: MatchKey, value: object) -> None:
        """An interface a rule names is a value of its own in the space, not "any other"."""
        table = _table(_match(key, value), DROP)
        space = space_for([table])
        if key.kind is Kind.IFNAME:
            assert space.names == (value,)
        else:
            assert space.names == ()

    def test_describe_match_writes_what_search_reads(self, key: MatchKey, value: object) -> None:
        """describe_match spells the key so that `search KEY=VALUE` gives the same Match."""
        m = _match(key, value)
        text = describe_match(m)
        assert text != describe_match(Match())
        assert parse_match(_query(text.split(" ")), "search") == m

    def test_coverage_tells_it_from_any(self, key: MatchKey, value: object) -> None:
        """lint's coverage: "any" covers the rule, the rule does not cover "any"."""
        table = _table(_match(key, value), DROP)
        a = coverage.shape(Match(), table.type_role, table.type_ike)
        b = coverage.shape(table.rules[0].match, table.type_role, table.type_ike)
        assert coverage.covers(a, b) and not coverage.covers(b, a)
        assert coverage.overlaps(a, b)

    @pytest.mark.parametrize("hooks", [(Hook.INPUT, Hook.OUTPUT),
                                       (Hook.INPUT, Hook.OUTPUT, Hook.FORWARD)],
                             ids=["local", "gateway"])
    def test_xfrm_allows_nothing_the_rule_does_not_bypass(self, key: MatchKey, value: object,
                                                          hooks: tuple[Hook, ...]) -> None:
        """No out allow selects a packet the table judges at output or forward with other
        than bypass or drop (here: the no-match accept of what the rule does not match)."""
        table = _table(_match(key, value), BYPASS, hooks)
        policies, _notes = derive_policies(table)
        space = space_for([table], hooks=frozenset({Hook.OUTPUT, Hook.FORWARD} & set(hooks)))
        part = partition(table, space)
        assert part.stopped_at is None
        others = [i for i, d in enumerate(table.decisions[:len(table.rules) + 1])
                  if d.verdict.action is not Action.DROP and d.verdict != BYPASS]
        for p in (p for p in policies if p.direction == "out"):
            assert p.icmp_type is not None
            selector = Match(types=frozenset({p.icmp_type}), src=p.src, dst=p.dst,
                             codes=None if p.code is None else frozenset({p.code}))
            sel = match_box(selector, space, table.type_role, table.type_ike)
            assert sel is not None
            leaks = [table.decisions[i].rule for i in others
                     if region_and_box(part.region(i), sel)]
            assert leaks == [], f"{' '.join(p.add_argv())} also lets out what {leaks} decide"


def _judged_as(want: int, box: Box, table: RuleTable, tables: list[native.NativeTable],
               space: PacketSpace) -> None:
    """One packet of `box`: every C walk and the reference give decision `want`."""
    ex = example(box, space)
    view = native.parse(ex.data)
    got = [t.classify(ex.data, int(ex.hook), ex.indev, ex.outdev) for t in tables]
    got.append(table.index_py(view, ex.hook, ex.indev, ex.outdev, space.if_value))
    assert got == [want] * len(got), (box, ex.data.hex())


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return f'"{value}"' if isinstance(value, str) else str(value)
