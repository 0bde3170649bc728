# SPDX-License-Identifier: MIT
"""Warnings about a rule table: unreachable rules, MUST NOT overrides, replaced defaults.

Pure: a RuleTable in, sentences out. Conservative: a rule is reported as
unreachable only when an earlier rule provably matches every packet it matches.
"""

from __future__ import annotations

from shim.core import coverage
from shim.core.defaults import DRAFT
from shim.core.explain import describe_match, describe_verdict
from shim.core.model import IkeUse, Match, Origin, Rule
from shim.core.rules import RuleTable

__all__ = ["covers", "lint", "overlaps"]


def _shape(m: Match, table: RuleTable) -> coverage.Shape:
    return coverage.shape(m, table.type_role, table.type_ike)


def covers(a: Match, b: Match, table: RuleTable) -> bool:
    """Whether every packet b matches is matched by a (sound, not complete)."""
    return coverage.covers(_shape(a, table), _shape(b, table))


def overlaps(a: Match, b: Match, table: RuleTable) -> bool:
    """Whether some packet might match both (errs towards yes)."""
    return coverage.overlaps(_shape(a, table), _shape(b, table))


def _label(r: Rule) -> str:
    if r.origin is Origin.USER:
        return f"user rule {r.name!r} ({r.file} [[rule]] #{r.index + 1}, priority {r.priority})"
    return f"default rule {r.name!r} (priority {r.priority})"


def _must_not(r: Rule, table: RuleTable) -> bool:
    ts = r.match.types
    return (r.origin is Origin.DEFAULT and ts is not None and bool(ts)
            and all(table.type_ike[t] == IkeUse.MUST_NOT for t in ts))


def lint(table: RuleTable, *, unreachable: bool = True, overlaps: bool = True) -> list[str]:
    """Warnings about a table: unreachable rules, MUST NOT overrides, replacements.

    Args:
        table: the effective table.
        unreachable: also report rules one earlier rule covers (the quick, single-rule
            test); `check` turns it off and reports the exact analysis instead
            (shim.core.findings).
        overlaps: also report user rules that may take a MUST NOT default's packets
            (errs towards yes); `check` reports the exact ones instead.

    Returns:
        One sentence per finding, in table order; empty for the defaults alone.
    """
    out = [f"{_label(u)} replaces the default of that name (was priority {d.priority}: "
           f"{describe_verdict(d.verdict)} for {describe_match(d.match)})"
           for u, d in table.replaced]
    out += [f"{_label(u)} overrides a MUST NOT default ({describe_verdict(d.verdict)}): "
            f"{DRAFT} §6 fn 6, these messages MUST NOT use dynamic SAs"
            for u, d in table.replaced if _must_not(d, table) and u.verdict != d.verdict]
    rules = table.rules
    # Each Match is turned into a Shape once; the index finds the first earlier rule
    # covering each rule without comparing it to every earlier one (a pairwise
    # loop took 146 s for 2,000 rules).
    shapes = [_shape(r.match, table) for r in rules]
    index = coverage.CoverIndex()
    users: list[int] = []  # user rules so far, for the MUST NOT overlaps (few such defaults)
    for j, b in enumerate(rules):
        first = index.add(shapes[j]) if unreachable else None
        a = rules[first] if first is not None else None
        if unreachable and a is not None and Origin.USER in (a.origin, b.origin):
            out.append(f"{_label(b)} can never match: {_label(a)} comes first and matches "
                       "every packet it does")
        if overlaps and _must_not(b, table):
            out += [f"{_label(u)} comes before {_label(b)} and can take its packets "
                    f"({describe_verdict(u.verdict)} instead of {describe_verdict(b.verdict)}): "
                    f"{DRAFT} §6 fn 6, these messages MUST NOT use dynamic SAs"
                    for i, u in ((i, rules[i]) for i in users)
                    if u.verdict != b.verdict and coverage.overlaps(shapes[i], shapes[j])]
        if b.origin is Origin.USER:
            users.append(j)
    if unreachable and index.incomplete:
        out.append(f"{index.incomplete} rules were not fully checked for being unreachable: each "
                   f"has more than {index.budget} earlier rules with the same addresses, "
                   "interfaces and flags (only codes, hooks, classes or ranges differ); some "
                   "that can never match may be unreported")
    return out
