# SPDX-License-Identifier: MIT
"""The rule table: defaults and user rules in one total order; first match wins.

Rule 1: one order, written once in `order_key`: (band, priority, origin rank
user=0 default=1, file order, index in file). The band puts the hardening rules
(Rule.hardening) before every other rule; lower priority numbers are evaluated
first within a band, as in nftables and xfrm.
Rule 2: a user rule named like a default replaces that default wholesale;
without its own priority it takes the default's place (a hardening default's
replacement stays in the hardening band).
Rule 3: every packet gets exactly one Decision: the first matching rule's,
the explicit Settings.no_match one (index len(rules)), or, for complete
traffic that is not ICMPv6 (`is_non_icmpv6`), the fixed non-ICMPv6 accept
(index len(rules) + 1, never a rule: rules are written for ICMPv6), so the
index the C walk returns maps straight to a Decision.
Pure: no I/O, no logging; same inputs give the same table.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from shim.core.defaults import DEFAULT_BAND, DEFAULT_RULES, TYPE_IKE, TYPE_ROLE
from shim.core.errors import ConfigError
from shim.core.matchkeys import MATCH_KEYS, Kind
from shim.core.model import (
    ADDR_CLASSES,
    FRAG_STATUSES,
    NO_IFINDEX,
    Action,
    Decision,
    Hook,
    IkeUse,
    Match,
    NativeRule,
    Origin,
    PacketView,
    Role,
    Rule,
    Settings,
    Verdict,
)

__all__ = [
    "DEFAULT_BAND",
    "USER_DEFAULT_PRIORITY",
    "IfIndex",
    "Match",
    "Rule",
    "RuleTable",
    "build_table",
    "NON_ICMPV6",
    "compile_match",
    "is_non_icmpv6",
    "match_py",
    "order_key",
    "resolve_ifindex",
    "resolve_verdict",
]

USER_DEFAULT_PRIORITY = 0  # a user rule without a priority: above the default band
IfIndex = Callable[[str], int]
_ICMPV6 = 58
# Next Header values the parser steps over (native/icmp6.c is_ext_header).
_EXT_HEADERS = frozenset({0, 43, 44, 51, 60, 135, 139, 140, 253, 254})

# What reaches the queue only because the diversion takes every fragment, AH packet and
# failed header walk: accepted without a rule walk, counted apart (hits[len(rules) + 1]).
NON_ICMPV6 = Decision(
    verdict=Verdict(action=Action.ACCEPT), rule="non-icmpv6", origin=Origin.SETTINGS,
    priority=None, citation="RFC 8200 §4, §4.5 (the upper layer is not ICMPv6)",
    description="complete traffic of another protocol (e.g. fragmented UDP, TCP behind AH): "
                "the rules judge ICMPv6 only")


def is_non_icmpv6(v: PacketView) -> bool:
    """The reference of C icmp6_is_non_icmpv6: complete, well-formed, not ICMPv6.

    A non-first fragment counts when its Fragment header names a protocol (not an
    extension header) other than ICMPv6: that is the datagram's upper layer.
    """
    if v.malformed:
        return False
    if v.frag_status == "non_first":
        nh = v.frag_next_header
        return nh is not None and nh != _ICMPV6 and nh not in _EXT_HEADERS
    return v.chain_complete and v.upper_layer is not None and v.upper_layer != _ICMPV6


def _no_interfaces(name: str) -> int:
    return 0


def order_key(rule: Rule) -> tuple[int, int, int, int, int]:
    """The one total order: (hardening band first, priority, user before builtin, file, index)."""
    rank = 0 if rule.origin is Origin.USER else 1
    return (0 if rule.hardening else 1,
            rule.priority if rule.priority is not None else USER_DEFAULT_PRIORITY,
            rank, rule.file_order, rule.index)


def resolve_verdict(verdict: Verdict, settings: Settings) -> Verdict:
    """Give a verdict that names a mark the value and mask the settings define.

    Raises:
        KeyError: the settings define no mark of that name.
    """
    if verdict.mark_name is None:
        return verdict
    mark = settings.mark(verdict.mark_name)
    return Verdict(action=Action.MARK, mark=mark.value, mask=mark.mask, mark_name=mark.name)


@functools.lru_cache(maxsize=1024)
def _network(prefix: str) -> ipaddress.IPv6Network:
    return ipaddress.IPv6Network(prefix, strict=False)


def resolve_ifindex(ifindex: IfIndex, name: str | None) -> int:
    """Return the index of an interface name; 0 for None (any).

    An unknown name gives NO_IFINDEX (0xFFFFFFFF), which no packet has, so
    the rule never matches instead of matching every interface.
    """
    if name is None:
        return 0
    try:
        index = ifindex(name)
    except (KeyError, OSError, ValueError):
        return NO_IFINDEX
    return index if 0 < index < NO_IFINDEX else NO_IFINDEX


@dataclass(frozen=True, slots=True)
class _Walk:
    """What the reference matcher knows beside the packet: the type tables, the interfaces."""

    type_role: bytes
    type_ike: bytes
    ifindex: IfIndex


def _seen(v: PacketView, hook: Hook, indev: int, outdev: int) -> dict[str, Any]:
    """What the C walk reads of a packet, by shim.core.packetspace dimension."""
    return {"hook": hook, "iif": indev, "oif": outdev, "type": v.icmpv6_type,
            "code": v.icmpv6_code, "frag": v.frag_status, "chain_complete": bool(v.chain_complete),
            "malformed": bool(v.malformed), "hop_limit": v.hop_limit or 0,  # no header: 0, as in C
            "src": (v.src_class, v.src), "dst": (v.dst_class, v.dst), "nd_valid": v.nd_valid,
            "mtu": v.mtu}


def _in_prefix(prefix: str, seen: tuple[str, str | None]) -> bool:
    if _network(prefix).prefixlen == 0:
        return True  # a /0 prefix tests nothing, not even that there is an address
    cls, addr = seen
    return cls != "absent" and addr is not None and ipaddress.IPv6Address(addr) in _network(prefix)


def _role_of(t: int | None, w: _Walk) -> int:
    return w.type_role[t] if t is not None else int(Role.UNCLASSIFIED)


def _ike_of(t: int | None, w: _Walk) -> int:
    return w.type_ike[t] if t is not None else int(IkeUse.UNCLASSIFIED)


# The reference test of each kind of key (the C icmp6_rule_matches, key by key):
# (the Match value, what the packet has in the key's dimension, the context) -> matches.
_TESTS: dict[Kind, Callable[[Any, Any, _Walk], bool]] = {
    Kind.TYPES: lambda want, got, w: got is not None and got in want,
    Kind.CODES: lambda want, got, w: got is not None and got in want,
    Kind.ROLES: lambda want, got, w: bool(_role_of(got, w) & want),
    Kind.IKE: lambda want, got, w: bool(_ike_of(got, w) & want),
    Kind.CLASSES: lambda want, got, w: got[0] in want,
    Kind.PREFIX: lambda want, got, w: _in_prefix(want, got),
    Kind.HOOKS: lambda want, got, w: got in want,
    Kind.FRAG: lambda want, got, w: got in want,
    Kind.IFNAME: lambda want, got, w: resolve_ifindex(w.ifindex, want) == got,
    Kind.FLAG: lambda want, got, w: got is not None and bool(got) == want,
    Kind.RANGE: lambda want, got, w: got is not None and want[0] <= got <= want[1],
}


def match_py(m: Match, v: PacketView, hook: Hook, indev: int, outdev: int, *,
             ifindex: IfIndex = _no_interfaces, type_role: bytes = TYPE_ROLE,
             type_ike: bytes = TYPE_IKE) -> bool:
    """The reference semantics of one Match (the C icmp6_rule_matches in Python)."""
    return _match_seen(m, _seen(v, hook, indev, outdev), _Walk(type_role, type_ike, ifindex))


def _match_seen(m: Match, seen: dict[str, Any], w: _Walk) -> bool:
    for k in MATCH_KEYS:
        want = getattr(m, k.field)
        if want is not None and not _TESTS[k.kind](want, seen[k.dim], w):
            return False
    return True


def _bits(names: Iterable[str], universe: Sequence[str]) -> int:
    return sum(1 << universe.index(n) for n in set(names))


def _prefix(prefix: str) -> tuple[bytes, int]:
    net = _network(prefix)
    return net.network_address.packed, net.prefixlen


# The NativeRule values of each kind of key, one per MatchKey.native field; an unset key
# leaves NativeRule's defaults, its full range (see native/icmp6.h).
_COMPILE: dict[Kind, Callable[[Any, IfIndex], tuple[object, ...]]] = {
    Kind.TYPES: lambda v, ifx: (v,),
    Kind.CODES: lambda v, ifx: (v,),
    Kind.ROLES: lambda v, ifx: (int(v),),
    Kind.IKE: lambda v, ifx: (int(v),),
    Kind.CLASSES: lambda v, ifx: (_bits(v, ADDR_CLASSES),),
    Kind.PREFIX: lambda v, ifx: _prefix(v),
    Kind.HOOKS: lambda v, ifx: (sum(1 << int(h) for h in v),),
    Kind.FRAG: lambda v, ifx: (_bits(v, FRAG_STATUSES),),
    Kind.IFNAME: lambda v, ifx: (resolve_ifindex(ifx, v),),
    Kind.FLAG: lambda v, ifx: (int(v),),
    Kind.RANGE: lambda v, ifx: (v[0], v[1]),
}


def compile_match(m: Match, ifindex: IfIndex) -> NativeRule:
    """Compile a Match to the NativeRule the C walk evaluates."""
    out: dict[str, Any] = {}
    for k in MATCH_KEYS:
        value = getattr(m, k.field)
        if value is not None:
            out.update(zip(k.native, _COMPILE[k.kind](value, ifindex), strict=True))
    return NativeRule(**out)


@dataclass(frozen=True, slots=True, kw_only=True)
class RuleTable:
    """The effective, ordered table and one Decision per rule plus no-match."""

    rules: tuple[Rule, ...]
    decisions: tuple[Decision, ...]
    error_decision: Decision
    replaced: tuple[tuple[Rule, Rule], ...]  # (user rule, the default it replaced)
    settings: Settings
    type_role: bytes = TYPE_ROLE
    type_ike: bytes = TYPE_IKE

    @property
    def no_match(self) -> Decision:
        """The decision for a packet no rule matches (index len(rules))."""
        return self.decisions[len(self.rules)]

    @property
    def non_icmpv6(self) -> Decision:
        """The decision for complete non-ICMPv6 traffic (index len(rules) + 1, last)."""
        return self.decisions[len(self.rules) + 1]

    def native_rules(self, ifindex: IfIndex = _no_interfaces) -> list[NativeRule]:
        """Compile every rule, in order, for shim.bindings.icmp6.NativeTable.

        Args:
            ifindex: interface name -> index; an unknown name (KeyError,
                OSError, ValueError or a result <= 0) compiles to NO_IFINDEX,
                so the rule never matches. Recompile when interfaces change.
        """
        return [compile_match(r.match, ifindex) for r in self.rules]

    def matches_py(self, view: PacketView, hook: Hook, indev: int = 0, outdev: int = 0,
                   ifindex: IfIndex = _no_interfaces) -> list[int]:
        """Indexes of every rule that matches, in order (winner first)."""
        seen, w = _seen(view, hook, indev, outdev), _Walk(self.type_role, self.type_ike, ifindex)
        return [i for i, r in enumerate(self.rules) if _match_seen(r.match, seen, w)]

    def index_py(self, view: PacketView, hook: Hook, indev: int = 0, outdev: int = 0,
                 ifindex: IfIndex = _no_interfaces) -> int:
        """Index of the first matching rule, len(rules) if none, len(rules) + 1 for
        non-ICMPv6 traffic (as icmp6_classify without a fate table)."""
        if is_non_icmpv6(view):
            return len(self.rules) + 1
        seen, w = _seen(view, hook, indev, outdev), _Walk(self.type_role, self.type_ike, ifindex)
        for i, r in enumerate(self.rules):
            if _match_seen(r.match, seen, w):
                return i
        return len(self.rules)

    def decide_py(self, view: PacketView, hook: Hook, indev: int = 0, outdev: int = 0,
                  ifindex: IfIndex = _no_interfaces) -> Decision:
        """The reference decision: first match wins, else the no-match decision."""
        return self.decisions[self.index_py(view, hook, indev, outdev, ifindex)]


def _decision(rule: Rule) -> Decision:
    return Decision(verdict=rule.verdict, rule=rule.name, origin=rule.origin,
                    priority=rule.priority, citation=rule.citation,
                    description=rule.description, log=rule.log)


def _settings_decision(verdict: Verdict, settings: Settings, name: str, what: str) -> Decision:
    try:
        resolved = resolve_verdict(verdict, settings)
    except KeyError:
        raise ConfigError(f"[verdicts] {name.replace('-', '_')}: mark {verdict.mark_name!r} "
                          "is not defined in [marks]") from None
    return Decision(verdict=resolved, rule=name, origin=Origin.SETTINGS, priority=None,
                    citation=f"[verdicts] {name.replace('-', '_')}", description=what)


def _settle(rule: Rule, settings: Settings, replaced: Rule | None) -> Rule:
    priority = rule.priority
    if priority is None:
        priority = replaced.priority if replaced is not None else USER_DEFAULT_PRIORITY
    try:
        verdict = resolve_verdict(rule.verdict, settings)
    except KeyError:
        where = f"{rule.file}: " if rule.file else ""
        raise ConfigError(f"{where}rule {rule.name!r}: key 'verdict': mark "
                          f"{rule.verdict.mark_name!r} is not defined in [marks]") from None
    hardening = rule.hardening or (replaced is not None and replaced.hardening)
    return replace(rule, priority=priority, verdict=verdict, hardening=hardening)


def build_table(settings: Settings, user_rules: Sequence[Rule],
                defaults: Sequence[Rule] = DEFAULT_RULES) -> RuleTable:
    """Merge defaults and user rules into one ordered RuleTable.

    Args:
        settings: gives the mark values and the no_match/on_error verdicts.
        user_rules: as shim.config loaded them (origin USER, priority None
            when the file gave none).
        defaults: the built-in rules (shim.core.defaults.DEFAULT_RULES).

    Returns:
        The table; deterministic for the same inputs.

    Raises:
        ConfigError: two user rules share a name, or a verdict names a mark
            the settings do not define.
    """
    by_name = {d.name: d for d in defaults}
    seen: dict[str, Rule] = {}
    for u in user_rules:
        if u.name in seen:
            raise ConfigError(f"{u.file}: rule {u.name!r}: key 'name': duplicate, first "
                              f"defined in {seen[u.name].file} [[rule]] #{seen[u.name].index + 1}")
        seen[u.name] = u
    merged = [_settle(u, settings, by_name.get(u.name)) for u in user_rules]
    replaced = tuple((u, by_name[u.name]) for u in merged if u.name in by_name)
    merged += [_settle(d, settings, None) for d in defaults if d.name not in seen]
    rules = tuple(sorted(merged, key=order_key))
    no_match = _settings_decision(settings.no_match, settings, "no-match", "no rule matched")
    on_error = _settings_decision(settings.on_error, settings, "on-error",
                                  "the packet could not be judged (internal error)")
    return RuleTable(rules=rules,
                     decisions=tuple(_decision(r) for r in rules) + (no_match, NON_ICMPV6),
                     error_decision=on_error, replaced=replaced, settings=settings)
