# SPDX-License-Identifier: MIT
"""CLI commands over the exact analysis: the warnings of `check`, `diff A B`, `search`.

Every example packet an answer shows is first run through the compiled C table; if the
C walk does not give exactly the rule the analysis predicts, the command refuses to
answer (exit 2), as `explain` refuses when the two matchers disagree.
"""

from __future__ import annotations

import argparse
import json
import tomllib
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from shim.cli.common import AddCommand, config_dir
from shim.core.errors import ConfigError, ShimError

from shim.bindings.icmp6 import NativeTable
from shim.core.analysis import (
    DEFAULT_BUDGET,
    Partition,
    atoms_for,
    partition,
    space_for,
    verdict_key,
)
from shim.core.examples import Example, example
from shim.core.explain import describe_verdict
from shim.core.defaults import DRAFT
from shim.core.findings import Dead, Leak, dead_rules, hardening_leaks, must_not_takers
from shim.core.lint import lint
from shim.core.model import Origin, Rule
from shim.core.packetspace import D, PacketSpace, match_box
from shim.core.regiontext import describe_region
from shim.core.rules import RuleTable, build_table
from shim.core.space import Box, Meter, Region, box_and, region_and_box

__all__ = ["Refused", "add_commands", "check_warnings"]

_MAX_NAMED = 6


class Refused(ShimError):
    """The C walk disagrees with the analysis on an example: no answer is given."""

    exit_code = 2


def _native(table: RuleTable, space: PacketSpace) -> NativeTable:
    """The table compiled for C with the analysis' interface numbering (name k -> k)."""
    return NativeTable(table.native_rules(space.if_value), table.type_role, table.type_ike,
                       table.settings.ext_limit)


def confirm(native: NativeTable, table: RuleTable, ex: Example, expected: int) -> None:
    """Raise Refused unless the C walk gives the example decision `expected`."""
    got = native.classify(ex.data, int(ex.hook), ex.indev, ex.outdev)
    if got != expected:
        raise Refused(f"internal error: the analysis predicts "
                      f"{table.decisions[expected].rule!r} for packet {ex.data.hex()} at "
                      f"hook {ex.hook.name.lower()}, the C walk chose "
                      f"{table.decisions[got].rule!r}; no answer given")


def _label(r: Rule) -> str:
    if r.origin is Origin.USER:
        return f"user rule {r.name!r} ({r.file} [[rule]] #{r.index + 1}, priority {r.priority})"
    return f"default rule {r.name!r} (priority {r.priority})"


def _names(rules: Sequence[Rule]) -> str:
    shown = ", ".join(repr(r.name) for r in rules[:_MAX_NAMED])
    return shown + (f" and {len(rules) - _MAX_NAMED} more" if len(rules) > _MAX_NAMED else "")


def _dead_text(d: Dead) -> str:
    if d.conflict:
        keys = " and ".join(repr(k) for k in d.conflict)
        return (f"{_label(d.rule)} can never match: key{'s' if len(d.conflict) > 1 else ''} "
                f"{keys} cannot hold together ({d.why})" if len(d.conflict) > 1 else
                f"{_label(d.rule)} can never match: key {keys} ({d.why})")
    return (f"{_label(d.rule)} can never match: {_names(d.covered_by)} come"
            f"{'s' if len(d.covered_by) == 1 else ''} first and take every packet it matches")


def _leak_text(leak: Leak, part: Partition) -> str:
    where = describe_region(leak.region, part.space, part.space.universe(), limit=1)[0]
    ex = leak.example
    return (f"{_label(leak.rule)} is in the hardening band and gives "
            f"{describe_verdict(leak.rule.verdict)} to packets the hardening default "
            f"{leak.hardening.name!r} drops ({where}; {len(leak.region)} box(es)), e.g. "
            f"{ex.data.hex()} at hook {ex.hook.name.lower()}")


def check_warnings(table: RuleTable, budget: int = DEFAULT_BUDGET) -> list[str]:
    """Every warning of `check`: lint's replacements and MUST NOT overrides, then the
    exact analysis: rules that can never match and what hardening overrides let through.

    Raises:
        Refused: an example packet does not get, from the C walk, the predicted rule.
    """
    out = lint(table, unreachable=False, overlaps=False)
    space = space_for([table])
    part = partition(table, space, meter=Meter(budget=budget))
    out += [f"{_label(u)} comes before {_label(b)} and takes some of its packets "
            f"({describe_verdict(u.verdict)} instead of {describe_verdict(b.verdict)}): "
            f"{DRAFT} §6 fn 6, these messages MUST NOT use dynamic SAs"
            for u, b in must_not_takers(part)]
    dead = dead_rules(part)
    by_hooks = [d for d in dead if d.rule.origin is Origin.DEFAULT and d.conflict == ("hook",)]
    # Defaults that user rules leave nothing to: one line per set of user rules.
    by_users: dict[tuple[str, ...], list[Dead]] = defaultdict(list)
    for d in dead:
        users = tuple(r.name for r in d.covered_by if r.origin is Origin.USER)
        if d.rule.origin is Origin.DEFAULT and users:
            by_users[users].append(d)
    grouped = {id(d) for ds in by_users.values() for d in ds if len(ds) > 1}
    out += [_dead_text(d) for d in dead if d not in by_hooks and id(d) not in grouped]
    for users, ds in by_users.items():
        if len(ds) > 1:
            out.append(f"{len(ds)} default rules can never match: user rule"
                       f"{'s' if len(users) > 1 else ''} {', '.join(map(repr, users))} take"
                       f"{'' if len(users) > 1 else 's'} every packet they would decide "
                       f"({_names([d.rule for d in ds])})")
    if by_hooks:
        out.append(f"{len(by_hooks)} default rules see no packet: {by_hooks[0].why} "
                   f"({_names([d.rule for d in by_hooks])})")
    leaks = hardening_leaks(part)
    native = _native(table, space) if leaks else None
    for leak in leaks:
        assert native is not None
        confirm(native, table, leak.example, leak.index)
        out.append(_leak_text(leak, part))
    if part.stopped_at is not None or part.meter.exhausted:
        at = part.stopped_at if part.stopped_at is not None else len(table.rules)
        out.append(f"the exact analysis stopped at rule #{at} of {len(table.rules)}: its budget "
                   f"of {budget} box operations is spent; rules from there on were not checked "
                   "for never matching")
    return out


# --- diff --------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class _Group:
    a: int
    b: int
    boxes: tuple[Box, ...]


def _pieces(part: Partition, k: int) -> list[tuple[int, Box]]:
    return [(i, box) for i in range(len(part.reach)) for box in part.reach[i][k]]


def diff_groups(pa: Partition, pb: Partition) -> list[_Group]:
    """Regions whose verdict differs, grouped by (decision in A, decision in B)."""
    va = [verdict_key(d.verdict) for d in pa.table.decisions]
    vb = [verdict_key(d.verdict) for d in pb.table.decisions]
    found: dict[tuple[int, int], list[Box]] = defaultdict(list)
    for k in range(len(pa.atoms)):
        right = _pieces(pb, k)
        for i, ba in _pieces(pa, k):
            for j, bb in right:
                if va[i] != vb[j]:
                    x = box_and(ba, bb)
                    if x is not None:
                        found[(i, j)].append(x)
    return [_Group(a=i, b=j, boxes=tuple(bs)) for (i, j), bs in sorted(found.items())]


def _side(table: RuleTable, i: int) -> dict[str, object]:
    d = table.decisions[i]
    return {"rule": d.rule, "origin": d.origin.value, "priority": d.priority,
            "verdict": describe_verdict(d.verdict)}


def _example_json(ex: Example) -> dict[str, object]:
    return {"hex": ex.data.hex(), "hook": ex.hook.name.lower(), "iif": ex.iif, "oif": ex.oif}


def _load_table(arg: str) -> RuleTable:
    from shim.config.loader import load_config

    config = load_config(config_dir(arg))
    return build_table(config.settings, config.rules)


def cmd_diff(args: argparse.Namespace) -> int:
    ta, tb = _load_table(args.a), _load_table(args.b)
    space = space_for([ta, tb])
    meter = Meter(budget=args.budget)
    universe = space.universe()
    boxes = [match_box(r.match, space, t.type_role, t.type_ike) for t in (ta, tb) for r in t.rules]
    atoms = atoms_for([b[D["type"]] for b in boxes if b is not None], universe)
    pa = partition(ta, space, atoms=atoms, meter=meter)
    pb = partition(tb, space, atoms=atoms, meter=meter)
    incomplete = pa.stopped_at is not None or pb.stopped_at is not None
    groups = [] if incomplete else diff_groups(pa, pb)
    na, nb = _native(ta, space), _native(tb, space)
    shown = []
    for g in groups:
        ex = example(g.boxes[0], space)
        confirm(na, ta, ex, g.a)
        confirm(nb, tb, ex, g.b)
        shown.append({"a": _side(ta, g.a), "b": _side(tb, g.b), "boxes": len(g.boxes),
                      "regions": describe_region(g.boxes, space, universe),
                      "example": _example_json(ex)})
    if args.json:
        print(json.dumps({"a": args.a, "b": args.b, "differ": bool(groups),
                          "complete": not incomplete, "groups": shown}, indent=2))
    else:
        for s in shown:
            _print_group(s)
        print(f"{len(shown)} region group(s) differ between {args.a} and {args.b}" if shown
              else f"no packet gets a different verdict from {args.a} and {args.b}")
    if incomplete:
        raise ShimError(f"diff: the analysis budget of {args.budget} box operations is spent "
                        "before the answer was complete (raise --budget)") from None
    return 1 if groups else 0


def _print_group(s: dict[str, object]) -> None:
    a, b = s["a"], s["b"]
    assert isinstance(a, dict) and isinstance(b, dict)
    _print_answer(f"{a['verdict']} [{a['rule']}] -> {b['verdict']} [{b['rule']}]",
                  s["regions"], s["example"])


def _print_answer(title: str, regions: object, ex: object) -> None:
    assert isinstance(regions, list) and isinstance(ex, dict)
    print(title)
    for line in regions:
        print(f"  where {line}")
    ifs = "".join(f" {k} {ex[k]}" for k in ("iif", "oif") if ex[k] is not None)
    print(f"  e.g. hook {ex['hook']}{ifs}: {ex['hex']}")


# --- search ------------------------------------------------------------------------------

def _query(words: Sequence[str]) -> dict[str, object]:
    item: dict[str, object] = {}
    for w in words:
        key, sep, value = w.partition("=")
        if not sep:
            raise ConfigError(f"search: {w!r}: write match keys as key=value")
        try:
            item[key.strip()] = tomllib.loads(f"v = {value}")["v"]
        except tomllib.TOMLDecodeError:
            item[key.strip()] = [v.strip() for v in value.split(",")] if "," in value else value
    return item


def cmd_search(args: argparse.Namespace) -> int:
    from shim.config.loader import load_config, parse_match
    from shim.config.values import parse_verdict

    config = load_config(config_dir(args.config))
    table = build_table(config.settings, config.rules)
    query = parse_match(_query(args.keys), "search")
    try:
        wanted = verdict_key(parse_verdict(args.verdict, config.settings.marks))
    except ValueError as exc:
        raise ConfigError(f"search: --verdict: {exc}") from None
    space = space_for([table])
    part = partition(table, space, meter=Meter(budget=args.budget))
    if part.stopped_at is not None:
        raise ShimError(f"search: the analysis budget of {args.budget} box operations is spent "
                        "(raise --budget)")
    qbox = match_box(query, space, table.type_role, table.type_ike)
    native = _native(table, space)
    universe = space.universe()
    found = []
    for i, d in enumerate(table.decisions[:len(part.reach)]):
        if verdict_key(d.verdict) != wanted or (args.rule and d.rule != args.rule):
            continue
        region: Region = () if qbox is None else region_and_box(part.region(i), qbox)
        if region:
            ex = example(region[0], space)
            confirm(native, table, ex, i)
            found.append({"decision": _side(table, i), "boxes": len(region),
                          "regions": describe_region(region, space, universe),
                          "example": _example_json(ex)})
    if args.json:
        print(json.dumps({"verdict": args.verdict, "groups": found}, indent=2))
    else:
        for f in found:
            dec = f["decision"]
            assert isinstance(dec, dict)
            _print_answer(f"{dec['verdict']} [{dec['rule']}] ({dec['origin']}, priority "
                          f"{dec['priority']})", f["regions"], f["example"])
        print(f"{len(found)} decision(s) give {args.verdict}" if found
              else f"no packet gets {args.verdict}")
    return 0


def add_commands(add: AddCommand) -> None:
    """Register `diff` and `search`."""
    sp = add("diff", cmd_diff, "every region of packets whose verdict differs between two "
             "config directories, each with an example packet (exit 0 same, 1 differ, 2 error)")
    sp.add_argument("a", metavar="A")
    sp.add_argument("b", metavar="B")
    sp.add_argument("--json", action="store_true")
    sp.add_argument("--budget", type=int, default=DEFAULT_BUDGET,
                    help="box operations the analysis may spend")
    sp = add("search", cmd_search, "the regions of packets that get a verdict, with examples")
    sp.add_argument("--verdict", required=True, help="accept, drop, mark:NAME or mark:VALUE[/MASK]")
    sp.add_argument("--config")
    sp.add_argument("--rule", help="only the packets this rule decides")
    sp.add_argument("keys", nargs="*", metavar="KEY=VALUE",
                    help="match keys narrowing the search, as in a rule: type=echo-request")
    sp.add_argument("--json", action="store_true")
    sp.add_argument("--budget", type=int, default=DEFAULT_BUDGET,
                    help="box operations the analysis may spend")
