# SPDX-License-Identifier: MIT
"""What `check` reports from the exact analysis: dead rules, and what overrides hardening lets by.

A rule that decides no packet is either self-contradictory (no realizable packet has
all its keys: the smallest set of keys that cannot hold together is named) or covered
(the earlier rules that take its packets, in table order, are named). A user rule in the
hardening band (`override_hardening`, or a replacement of a hardening default) is checked
against every hardening default: the packets it decides that the default would have
dropped are a `Leak`, with one example.
Pure: no I/O.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from shim.core.analysis import Partition, verdict_key
from shim.core.defaults import DEFAULT_RULES
from shim.core.examples import Example, example
from shim.core.model import IkeUse, Origin, Rule
from shim.core.packetspace import full_box, key_boxes, match_box
from shim.core.space import Region, box_and, region_and_box, region_sub_box

__all__ = ["Dead", "Leak", "dead_rules", "hardening_leaks", "must_not_takers"]

_MAX_KEYS = 3  # conflicts are searched among up to this many keys together
_HINTS: dict[frozenset[str], str] = {
    frozenset({"type", "mtu"}): "only Packet Too Big (type 2) carries an MTU",
    frozenset({"role", "mtu"}): "only Packet Too Big (type 2) carries an MTU",
    frozenset({"ike", "mtu"}): "only Packet Too Big (type 2) carries an MTU",
    frozenset({"type", "nd_valid"}): "only ND (types 133-137) has an ND validity",
    frozenset({"hook", "iif"}): "a packet at output has no input interface",
    frozenset({"hook", "oif"}): "a packet at prerouting or input has no output interface",
    frozenset({"type", "frag"}): "a non-first fragment carries no ICMPv6 header",
    frozenset({"frag", "chain_complete"}): "a non-first fragment never has the whole chain",
    frozenset({"type", "chain_complete"}): "an ICMPv6 type is read only from a complete chain",
    frozenset({"nd_valid", "hop_limit"}): "valid ND has hop limit 255",
    frozenset({"nd_valid", "code"}): "valid ND has code 0",
    frozenset({"type", "role"}): "the role column gives none of these types that role",
    frozenset({"type", "ike"}): "the USE IKE? column gives none of these types that value",
    frozenset({"src", "src_class"}): "the prefix lies outside those address classes",
    frozenset({"dst", "dst_class"}): "the prefix lies outside those address classes",
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Dead:
    """A rule that decides no packet, and why."""

    index: int
    rule: Rule
    conflict: tuple[str, ...] = ()       # keys that no packet satisfies together
    why: str = ""
    covered_by: tuple[Rule, ...] = ()    # earlier rules that take all its packets


@dataclass(frozen=True, slots=True, kw_only=True)
class Leak:
    """Packets a user rule decides that a hardening default would have dropped."""

    rule: Rule
    index: int
    hardening: Rule
    region: Region
    example: Example


def _conflict(part: Partition, i: int) -> tuple[tuple[str, ...], str]:
    """The smallest set of the rule's keys that no realizable packet satisfies together."""
    table, space = part.table, part.space
    keys = key_boxes(table.rules[i].match, space, table.type_role, table.type_ike)
    universe = space.universe()
    for size in range(1, min(len(keys), _MAX_KEYS) + 1):
        for combo in itertools.combinations(keys, size):
            box = full_box(space, combo)
            if box is None or not any(box_and(box, u) is not None for u in universe):
                names = tuple(dict.fromkeys(k for k, _d, _v in combo))
                return names, _why(names, part)
    return tuple(dict.fromkeys(k for k, _d, _v in keys)), "no packet has all of them"


def _why(names: tuple[str, ...], part: Partition) -> str:
    if names == ("hook",):
        hooks = ",".join(h.name.lower() for h in sorted(part.space.hooks))
        return f"[diversion] hooks queues only {hooks}"
    if len(names) == 1:
        return "no packet the parser reports has that value"
    return _HINTS.get(frozenset(names), "no packet the parser reports has all of them")


def _blockers(part: Partition, i: int) -> tuple[Rule, ...]:
    """The earlier rules that take some of rule i's packets, in order, until none is left."""
    box = part.boxes[i]
    assert box is not None
    left = region_and_box(part.space.universe(), box, part.meter)
    out: list[Rule] = []
    for j in part.candidates(i):
        other = part.boxes[j]
        assert other is not None
        if region_and_box(left, other, part.meter):
            out.append(part.table.rules[j])
            left = region_sub_box(left, other, part.meter)
            if not left:
                break
    return tuple(out)


def dead_rules(part: Partition) -> list[Dead]:
    """Every analysed rule that decides no packet, in table order."""
    out: list[Dead] = []
    end = part.stopped_at if part.stopped_at is not None else len(part.table.rules)
    universe = part.space.universe()
    for i in range(end):
        if part.region(i):
            continue
        rule, box = part.table.rules[i], part.boxes[i]
        if box is None or not any(box_and(box, u) is not None for u in universe):
            conflict, why = _conflict(part, i)
            out.append(Dead(index=i, rule=rule, conflict=conflict, why=why))
        else:
            out.append(Dead(index=i, rule=rule, covered_by=_blockers(part, i)))
    return out


def hardening_leaks(part: Partition) -> list[Leak]:
    """What each user rule of the hardening band decides that a hardening default drops."""
    table, space = part.table, part.space
    hardening = [d for d in DEFAULT_RULES if d.hardening]
    out: list[Leak] = []
    for i, rule in enumerate(table.rules):
        if rule.origin is not Origin.USER or not rule.hardening:
            continue
        mine = part.region(i)
        for h in hardening:
            hbox = match_box(h.match, space, table.type_role, table.type_ike)
            if hbox is None or verdict_key(h.verdict) == verdict_key(rule.verdict):
                continue
            region = region_and_box(mine, hbox, part.meter)
            if region:
                out.append(Leak(rule=rule, index=i, hardening=h, region=region,
                                example=example(region[0], space)))
    return out




def must_not_takers(part: Partition) -> list[tuple[Rule, Rule]]:
    """(user rule, MUST NOT default after it) where the user rule really decides some of
    the default's packets with another verdict (draft §6 fn 6)."""
    table = part.table
    out: list[tuple[Rule, Rule]] = []
    for j, b in enumerate(table.rules):
        ts = b.match.types
        if b.origin is not Origin.DEFAULT or not ts or not all(
                table.type_ike[t] == IkeUse.MUST_NOT for t in ts):
            continue
        bbox = part.boxes[j]
        if bbox is None:
            continue
        for i in part.candidates(j):
            u = table.rules[i]
            if u.origin is Origin.USER and verdict_key(u.verdict) != verdict_key(b.verdict) \
                    and region_and_box(part.region(i), bbox, part.meter):
                out.append((u, b))
    return out
