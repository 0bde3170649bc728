# SPDX-License-Identifier: MIT
"""What the CLI shows about a rule table: the listing and one explained decision.

Pure: takes a RuleTable (and a PacketView) and returns text or dicts. The
warnings about a table are shim.core.lint.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from typing import Any

from shim.core.icmp6_types import type_name
from shim.core.matchkeys import MATCH_KEYS, Kind
from shim.core.model import (
    ADDR_CLASSES,
    FRAG_STATUSES,
    Decision,
    Hook,
    Match,
    Origin,
    PacketView,
    Rule,
    Verdict,
)
from shim.core.rules import IfIndex, RuleTable, is_non_icmpv6

__all__ = [
    "describe_match",
    "describe_verdict",
    "explain",
    "format_table",
]



def _no_interfaces(name: str) -> int:
    return 0


def _ranges(values: frozenset[int], names: bool) -> str:
    nums, out, i = sorted(values), [], 0
    while i < len(nums):
        j = i
        while j + 1 < len(nums) and nums[j + 1] == nums[j] + 1:
            j += 1
        if i == j:
            out.append(f"{type_name(nums[i])}" if names else str(nums[i]))
        else:
            out.append(f"{nums[i]}-{nums[j]}")
        i = j + 1
    return ",".join(out)


def _flags(flags: enum.Flag) -> str:
    return ",".join(str(f.name).lower().replace("_", "-") for f in type(flags) if f in flags)


def _range(rng: tuple[int, int]) -> str:
    return str(rng[0]) if rng[0] == rng[1] else f"{rng[0]}-{rng[1]}"


# How each kind of key is written back in the rule language (what `search` reads).
_RENDER: dict[Kind, Callable[[Any], str]] = {
    Kind.TYPES: lambda v: _ranges(v, names=True),
    Kind.CODES: lambda v: _ranges(v, names=False),
    Kind.ROLES: _flags,
    Kind.IKE: _flags,
    Kind.CLASSES: lambda v: ",".join(n for n in ADDR_CLASSES if n in v),
    Kind.PREFIX: str,
    Kind.HOOKS: lambda v: ",".join(h.name.lower() for h in sorted(v)),
    Kind.FRAG: lambda v: ",".join(n for n in FRAG_STATUSES if n in v),
    Kind.IFNAME: str,
    Kind.FLAG: lambda v: str(v).lower(),
    Kind.RANGE: _range,
}


def describe_match(m: Match) -> str:
    """One line in the TOML key spelling, e.g. 'type=nd-neighbor-solicit hook=input'."""
    parts = [f"{k.name}={_RENDER[k.kind](value)}" for k in MATCH_KEYS
             if (value := getattr(m, k.field)) is not None]
    return " ".join(parts) or "any"


def describe_verdict(v: Verdict) -> str:
    """The TOML spelling of a verdict plus its value: 'mark:bypass (0x1/0xff)'."""
    if v.mark is None:
        return v.action.value
    if v.mark_name is not None:
        return f"mark:{v.mark_name} ({v.mark:#x}/{v.mask:#x})"
    return f"mark:{v.mark:#x}/{v.mask:#x}"


def format_table(table: RuleTable) -> str:
    """The effective table in evaluation order, for `icmp6-shim rules`."""
    lines = [f"{'#':>3} {'PRIO':>6} {'ORIGIN':8} {'NAME':34} {'VERDICT':26} MATCH"]
    for i, r in enumerate(table.rules):
        origin = r.origin.value
        lines.append(f"{i:>3} {r.priority!s:>6} {origin:8} {r.name:34} "
                     f"{describe_verdict(r.verdict):26} {describe_match(r.match)}")
        source = r.citation if r.origin is Origin.DEFAULT else f"{r.file} [[rule]] #{r.index + 1}"
        if r.origin is Origin.USER and any(u is r for u, _ in table.replaced):
            source += " (replaces the default of this name)"
        lines.append(f"{'':>20}{source}")
    nm = table.no_match
    lines.append(f"{len(table.rules):>3} {'-':>6} {'settings':8} {nm.rule:34} "
                 f"{describe_verdict(nm.verdict):26} (no rule matched)")
    lines.append(f"{'':>20}{nm.citation}")
    ni = table.non_icmpv6
    lines.append(f"{len(table.rules) + 1:>3} {'-':>6} {'settings':8} {ni.rule:34} "
                 f"{describe_verdict(ni.verdict):26} (not ICMPv6: decided before any rule)")
    lines.append(f"{'':>20}{ni.citation}")
    return "\n".join(lines)


def _rule_json(r: Rule) -> dict[str, object]:
    return {"rule": r.name, "origin": r.origin.value, "priority": r.priority,
            "verdict": r.verdict.action.value, "mark": r.verdict.mark,
            "mark_name": r.verdict.mark_name, "citation": r.citation,
            "match": describe_match(r.match)}


def _upper(view: PacketView) -> int | None:
    return view.frag_next_header if view.frag_status == "non_first" else view.upper_layer


def explain(view: PacketView, table: RuleTable, hook: Hook, indev: int = 0, outdev: int = 0,
            ifindex: IfIndex = _no_interfaces, matches: Sequence[int] | None = None
            ) -> dict[str, object]:
    """Explain one decision: the winner, why, and the lower rules it overrode.

    Args:
        view: the parsed packet.
        table: the effective table.
        hook, indev, outdev: where the packet was seen.
        ifindex: resolves iif/oif names (unknown names never match).
        matches: matching rule indexes if already known (e.g. from
            NativeTable.all_matches); otherwise the Python matcher finds them.

    Returns:
        {"decision": Decision.as_json() (its "overridden" filled in),
         "why": one sentence, "match": the winner's match or None,
         "hook": the hook name, "overridden": names of the later matching
         rules, "overridden_rules": one object per such rule}.
    """
    if is_non_icmpv6(view):  # no rule is consulted: rules are written for ICMPv6
        d = table.non_icmpv6
        return {"decision": d.as_json(), "hook": hook.name.lower(), "match": None,
                "why": f"not ICMPv6 (upper layer {_upper(view)}): accepted without a rule "
                       "walk, counted as non-icmpv6",
                "overridden": [], "overridden_rules": []}
    found = list(matches) if matches is not None else table.matches_py(
        view, hook, indev, outdev, ifindex)
    index = found[0] if found else len(table.rules)
    lower = [table.rules[i] for i in found[1:]]
    d = table.decisions[index]
    decision = Decision(verdict=d.verdict, rule=d.rule, origin=d.origin, priority=d.priority,
                        citation=d.citation, description=d.description, log=d.log,
                        overridden=tuple(r.name for r in lower))
    if found:
        r = table.rules[index]
        why = (f"first match in table order (#{index}): {r.origin.value} rule {r.name!r} at "
               f"priority {r.priority} matches {describe_match(r.match)}")
        if lower:
            why += f"; it overrides {len(lower)} later matching rule(s)"
    else:
        why = "no rule matched; the [verdicts] no_match verdict applies"
    return {"decision": decision.as_json(), "why": why,
            "match": describe_match(table.rules[index].match) if found else None,
            "hook": hook.name.lower(), "overridden": list(decision.overridden),
            "overridden_rules": [_rule_json(r) for r in lower]}
