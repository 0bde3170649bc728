# SPDX-License-Identifier: MIT
"""The IPsec (xfrm) policies that give the shim's marks their meaning.

A mark only matters if the Security Policy Database looks at it:
- inbound (dir in), the xfrm check runs when ICMPv6 is delivered, after the
  input hook, so one allow policy selecting ICMPv6 with the "bypass" mark,
  at a low priority value (xfrm: lower wins), lets through what the shim
  decided to bypass;
- forwarded (dir fwd), ip6_forward checks the fwd policy *before* the
  FORWARD hook, so only a mark set at prerouting reaches it. The gateway
  recipe (docs/rules.md "On a gateway") judges transit once, at forward,
  with the transit rules: no shim mark reaches the fwd check, the
  operator's fwd policies decide forwarded ICMPv6, and the fwd mark allow
  is exported only when prerouting is diverted (then with a note on what
  that costs);
- outbound (dir out), the kernel looks up xfrm before netfilter sees a
  locally sent packet, so no mark can help: allow policies selecting the
  ICMPv6 types the effective table bypasses at output are derived here.

`derive_policies` is pure (a RuleTable in, policies out); applying them with
`ip xfrm` is shim.adapters.xfrm's job. Safety rule of the
derivation: an outbound allow never lets out in the clear a packet the table
gives another verdict than bypass or drop (the shim still drops after xfrm).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from shim.core.errors import ShimError
from shim.core.icmp6_types import type_name
from shim.core.matchkeys import MATCH_KEYS
from shim.core.model import Action, Hook, Match, Verdict
from shim.core.rules import RuleTable

__all__ = ["DEFAULT_PRIORITY", "XfrmPolicy", "derive_policies", "render"]

DEFAULT_PRIORITY = 1  # as Libreswan's own ND allows; lower than any operator policy
OUT_HOOKS = frozenset({Hook.OUTPUT, Hook.POSTROUTING})
FWD_PATH = frozenset({Hook.PREROUTING, Hook.FORWARD, Hook.POSTROUTING})  # hooks a forwarded packet crosses
_CLASS_PREFIX = {"link_local": "fe80::/10", "unspecified": "::/128", "loopback": "::1/128",
                 "multicast": "ff00::/8", "solicited_node": "ff02::1:ff00:0/104"}
# The Match fields no policy can spell (shim.core.matchkeys, MatchKey.xfrm): a rule setting
# one gets no exact allow. Derived, so a new key is inexpressible unless declared otherwise.
_INEXPRESSIBLE = tuple(k.field for k in MATCH_KEYS if not k.xfrm)


@dataclass(frozen=True, slots=True, kw_only=True, order=True)
class XfrmPolicy:
    """One `ip xfrm policy` allow rule for ICMPv6."""

    direction: str                 # in | fwd | out
    icmp_type: int | None = None
    code: int | None = None
    src: str = "::/0"
    dst: str = "::/0"
    mark: int | None = None
    mask: int = 0xFFFFFFFF
    priority: int = DEFAULT_PRIORITY
    why: str = ""

    def selector(self) -> list[str]:
        """`dir ... src ... dst ... proto ... [type/code] [mark]`: the policy's key."""
        args = ["dir", self.direction, "src", self.src, "dst", self.dst, "proto", "ipv6-icmp"]
        if self.icmp_type is not None:
            args += ["type", str(self.icmp_type)]
            if self.code is not None:
                args += ["code", str(self.code)]
        if self.mark is not None:
            args += ["mark", f"{self.mark:#x}", "mask", f"{self.mask:#x}"]
        return args

    def add_argv(self) -> list[str]:
        return ["xfrm", "policy", "add", *self.selector(), "priority", str(self.priority),
                "action", "allow"]

    def delete_argv(self) -> list[str]:
        return ["xfrm", "policy", "delete", *self.selector()]


def _is_mark(v: Verdict, mark: tuple[int, int]) -> bool:
    return v.action is Action.MARK and v.mark is not None and (v.mark & v.mask, v.mask) == mark


def _hits_out(m: Match) -> bool:
    return (m.hooks is None or bool(m.hooks & OUT_HOOKS)) and m.iif is None


def _for_type(m: Match, t: int, table: RuleTable) -> bool:
    """Can the rule match some packet of ICMPv6 type t?"""
    if m.types is not None and t not in m.types:
        return False
    if m.frag is not None and m.frag <= {"non_first"}:
        return False  # a non-first fragment carries no ICMPv6 type
    if m.roles is not None and not table.type_role[t] & m.roles:
        return False
    return m.ike is None or bool(table.type_ike[t] & m.ike)


def _selectors(m: Match) -> list[tuple[str, str]] | None:
    """The (src, dst) prefixes an allow needs to match exactly what `m` does, or None."""
    if any(getattr(m, f) is not None for f in _INEXPRESSIBLE):
        return None
    sides: list[list[str]] = []
    for prefix, classes in ((m.src, m.src_classes), (m.dst, m.dst_classes)):
        if classes is None:
            sides.append([prefix or "::/0"])
        elif prefix is None and all(c in _CLASS_PREFIX for c in classes):
            sides.append(sorted(_CLASS_PREFIX[c] for c in classes))
        else:
            return None
    return [(s, d) for s in sides[0] for d in sides[1]]


def _unconditional(m: Match) -> bool:
    return _selectors(m) == [("::/0", "::/0")] and m.codes is None


def _nets(a: str, b: str) -> tuple[ipaddress.IPv6Network, ipaddress.IPv6Network]:
    return ipaddress.IPv6Network(a), ipaddress.IPv6Network(b)


def _forward_keeper(t: int, table: RuleTable, mark: tuple[int, int], src: str, dst: str) -> str | None:
    """The rule that keeps some forwarded type-t packets from src to dst under IPsec, if any.

    The kernel checks `dir out` policies for forwarded packets too, before the
    FORWARD hook, so an out allow also lets forwarded packets in its selector out
    in the clear. That is safe only if the table bypasses or drops every such
    forwarded packet it judges.
    """
    diverted = FWD_PATH & set(table.settings.hooks)
    if not diverted:
        return None  # forwarded packets are never judged: the table says nothing about them
    rules = [(r.name, r.match, r.verdict) for r in table.rules]
    rules.append((table.no_match.rule, Match(), table.no_match.verdict))
    for name, m, verdict in rules:
        hooks = set(m.hooks) if m.hooks is not None else set(Hook)
        if not hooks & diverted or not _for_type(m, t, table):
            continue
        sel = _selectors(m)
        if sel is not None and not any(a.overlaps(x) and b.overlaps(y)
                                       for (a, b), (x, y) in ((_nets(s_, d_), _nets(src, dst))
                                                              for s_, d_ in sel)):
            continue  # no forwarded packet in the allow's selector reaches this rule's verdict
        if verdict.action is not Action.DROP and not _is_mark(verdict, mark):
            return name
        if (sel is not None and m.codes is None and diverted <= hooks
                and any(x.subnet_of(a) and y.subnet_of(b)
                        for (a, b), (x, y) in ((_nets(s_, d_), _nets(src, dst)) for s_, d_ in sel))):
            return None  # every forwarded packet in the selector is bypassed or dropped here
    return None


def _out_for_type(t: int, table: RuleTable, mark: tuple[int, int],
                  priority: int) -> tuple[list[XfrmPolicy], list[str]]:
    """Allow policies for type t (and notes on what could not be exported)."""
    found: list[tuple[XfrmPolicy, bool]] = []  # (policy, exact selector)
    notes: list[str] = []
    tainted = ""
    rules: list[tuple[str, int | None, Match, Verdict]] = [
        (r.name, r.priority, r.match, r.verdict) for r in table.rules]
    rules.append((table.no_match.rule, None, Match(), table.no_match.verdict))
    for name, prio, m, verdict in rules:
        if not (_hits_out(m) and _for_type(m, t, table)):
            continue
        whole = _unconditional(m)
        if verdict.action is Action.DROP:
            if whole:
                break
            continue  # the shim drops these itself, after the xfrm lookup
        if not _is_mark(verdict, mark):
            # Protect/accept/another mark: xfrm must decide these; nothing inexact may stay.
            dropped = [p for p, exact in found if not exact]
            found = [(p, exact) for p, exact in found if exact]
            notes += [f"type {t}: {p.why} not exported: its condition is not an xfrm selector "
                      f"and rule {name} protects the rest" for p in dropped]
            if whole:
                break
            tainted = tainted or name
            continue
        if tainted:
            notes.append(f"type {t}: rule {name} not exported: earlier rule {tainted} "
                         "keeps some of these packets under IPsec")
            continue
        sel = _selectors(m)
        cond = "" if sel is not None else " (condition checked by the shim)"
        codes = sorted(m.codes) if m.codes is not None else [None]
        for src, dst in sel or [("::/0", "::/0")]:
            for code in codes:
                found.append((XfrmPolicy(direction="out", icmp_type=t, code=code, src=src, dst=dst,
                                         priority=priority,
                                         why=f"rule {name} (priority {prio}){cond}"), sel is not None))
        if whole:
            break
    kept = []
    for p, _ in found:
        keeper = _forward_keeper(t, table, mark, p.src, p.dst)
        if keeper is None:
            kept.append(p)
        else:
            notes.append(f"type {t}: {p.why} not exported: out policies also see forwarded "
                         f"packets, and rule {keeper} keeps forwarded ones under IPsec")
    return kept, notes


def derive_policies(table: RuleTable, *, priority: int = DEFAULT_PRIORITY,
                    mark_name: str = "bypass") -> tuple[tuple[XfrmPolicy, ...], tuple[str, ...]]:
    """The allow policies (and notes) that implement `mark_name` for this table.

    Raises:
        ShimError: the settings define no mark of that name.
    """
    try:
        named = table.settings.mark(mark_name)
    except KeyError:
        raise ShimError(f"the configuration defines no mark {mark_name!r}") from None
    mark = (named.value & named.mask, named.mask)
    hooks = set(table.settings.hooks)
    # dir fwd: only a mark set at prerouting reaches the check (it precedes FORWARD).
    directions = ("in", "fwd") if Hook.PREROUTING in hooks else ("in",)
    policies = [XfrmPolicy(direction=d, mark=mark[0], mask=mark[1], priority=priority,
                           why=f"mark {mark_name!r}") for d in directions]
    notes: list[str] = []
    for t in range(256):
        found, why = _out_for_type(t, table, mark, priority)
        policies += found
        notes += why
    if not {Hook.PREROUTING, Hook.INPUT} & hooks:
        notes.append("the diversion hooks include neither prerouting nor input: "
                     "no inbound packet is marked")
    return tuple(policies), tuple(notes + _gateway_notes(table, mark, mark_name))


def _gateway_notes(table: RuleTable, mark: tuple[int, int], mark_name: str) -> list[str]:
    """What the fwd check sees with these hooks, and which transit bypass cannot work."""
    hooks = set(table.settings.hooks)
    if Hook.PREROUTING in hooks and Hook.FORWARD in hooks:
        return ["prerouting and forward are both diverted: a forwarded packet is judged "
                "twice, first by the host rules at prerouting (their mark is what the fwd "
                "policy sees), then by the transit rules at forward; the gateway recipe "
                "diverts input, forward and output (docs/rules.md, \"On a gateway\")"]
    if Hook.PREROUTING in hooks:
        return ["prerouting is diverted: forwarded packets are judged there by the host "
                "rules, whose marks the fwd policy sees; the transit rules (hook forward) "
                "never apply"]
    if Hook.FORWARD not in hooks:
        return []
    notes = ["no dir fwd allow: transit is judged at forward, after the kernel's fwd policy "
             "check (ip6_forward checks it before the FORWARD hook), so no mark of the shim "
             "reaches it; your fwd policies decide forwarded ICMPv6 and the shim's transit "
             "drops apply after them"]
    for r in table.rules:
        if (r.match.hooks is None or Hook.FORWARD in r.match.hooks) and _is_mark(r.verdict, mark):
            notes.append(f"rule {r.name} gives {mark_name} at forward: too late for the fwd "
                         "check, it exempts no forwarded packet from your fwd policies")
    return notes


def render(policies: tuple[XfrmPolicy, ...], notes: tuple[str, ...], *, source: str,
           mark_text: str) -> str:
    """Stable, commented `ip xfrm policy add` lines."""
    lines = ["# icmp6-shim export xfrm: allow policies that give the shim's mark its meaning",
             f"# config: {source}; bypass mark {mark_text}; xfrm prefers the LOWER priority value",
             "# in: the input hook runs before the xfrm check, so the mark selects the policy."]
    if any(p.direction == "fwd" for p in policies):
        lines.append("# fwd: the fwd check runs before the forward hook: only a mark set at "
                     "prerouting selects it.")
    out_header = ["# out: xfrm is consulted before netfilter sees a locally sent packet,",
                  "# so each ICMPv6 type the table bypasses at output gets its own allow."]
    for p in policies:
        if p.direction == "out" and out_header:
            lines += out_header
            out_header = []
        label = f"type {p.icmp_type} {type_name(p.icmp_type)}: " if p.icmp_type is not None else ""
        lines.append(f"# {label}{p.why}")
        lines.append("ip " + " ".join(p.add_argv()))
    lines += [f"# note: {n}" for n in notes]
    return "\n".join(lines) + "\n"
