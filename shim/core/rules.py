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

from shim.core.defaults import DEFAULT_BAND, DEFAULT_RULES, TYPE_IKE, TYPE_ROLE
from shim.core.errors import ConfigError
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


def _addr_ok(classes: frozenset[str] | None, prefix: str | None,
             cls: str, addr: str | None) -> bool:
    if classes is not None and cls not in classes:
        return False
    if prefix is None or _network(prefix).prefixlen == 0:
        return True
    return cls != "absent" and addr is not None and ipaddress.IPv6Address(addr) in _network(prefix)


def _icmp_ok(m: Match, v: PacketView, type_role: bytes, type_ike: bytes) -> bool:
    t, c = v.icmpv6_type, v.icmpv6_code
    if m.types is not None and (t is None or t not in m.types):
        return False
    if m.codes is not None and (c is None or c not in m.codes):
        return False
    role = type_role[t] if t is not None else int(Role.UNCLASSIFIED)
    ike = type_ike[t] if t is not None else int(IkeUse.UNCLASSIFIED)
    if (m.roles is not None and not role & m.roles) or (m.ike is not None and not ike & m.ike):
        return False
    if m.nd_valid is not None and (v.nd_valid is None or bool(v.nd_valid) != m.nd_valid):
        return False
    if m.mtu is not None and (v.mtu is None or not m.mtu[0] <= v.mtu <= m.mtu[1]):
        return False
    return True


def match_py(m: Match, v: PacketView, hook: Hook, indev: int, outdev: int, *,
             ifindex: IfIndex = _no_interfaces, type_role: bytes = TYPE_ROLE,
             type_ike: bytes = TYPE_IKE) -> bool:
    """The reference semantics of one Match (the C icmp6_rule_matches in Python)."""
    if (m.hooks is not None and hook not in m.hooks) or (
            m.frag is not None and v.frag_status not in m.frag):
        return False
    if not (_addr_ok(m.src_classes, m.src, v.src_class, v.src)
            and _addr_ok(m.dst_classes, m.dst, v.dst_class, v.dst)):
        return False
    hop = v.hop_limit or 0  # no IPv6 header: compared as 0, as in C
    if m.hop_limit is not None and not m.hop_limit[0] <= hop <= m.hop_limit[1]:
        return False
    if m.chain_complete is not None and bool(v.chain_complete) != m.chain_complete:
        return False
    if m.malformed is not None and bool(v.malformed) != m.malformed:
        return False
    if m.iif is not None and resolve_ifindex(ifindex, m.iif) != indev:
        return False
    if m.oif is not None and resolve_ifindex(ifindex, m.oif) != outdev:
        return False
    return _icmp_ok(m, v, type_role, type_ike)


def _bits(names: Iterable[str] | None, universe: Sequence[str], full: int) -> int:
    if names is None:
        return full
    return sum(1 << universe.index(n) for n in set(names))


def _prefix(prefix: str | None) -> tuple[bytes, int]:
    if prefix is None:
        return bytes(16), 0
    net = _network(prefix)
    return net.network_address.packed, net.prefixlen


def compile_match(m: Match, ifindex: IfIndex) -> NativeRule:
    """Compile a Match to the NativeRule the C walk evaluates."""
    src, src_plen = _prefix(m.src)
    dst, dst_plen = _prefix(m.dst)
    return NativeRule(
        types=m.types, codes=m.codes,
        hooks=0x1F if m.hooks is None else sum(1 << int(h) for h in m.hooks),
        roles=0xF if m.roles is None else int(m.roles),
        ike=0xF if m.ike is None else int(m.ike),
        frag=_bits(m.frag, FRAG_STATUSES, 0xF),
        src_classes=_bits(m.src_classes, ADDR_CLASSES, 0x1FF),
        dst_classes=_bits(m.dst_classes, ADDR_CLASSES, 0x1FF),
        src_prefix=src, src_plen=src_plen, dst_prefix=dst, dst_plen=dst_plen,
        hop_min=m.hop_limit[0] if m.hop_limit else 0,
        hop_max=m.hop_limit[1] if m.hop_limit else 255,
        chain_complete=-1 if m.chain_complete is None else int(m.chain_complete),
        malformed=-1 if m.malformed is None else int(m.malformed),
        nd_valid=None if m.nd_valid is None else int(m.nd_valid),
        indev=resolve_ifindex(ifindex, m.iif), outdev=resolve_ifindex(ifindex, m.oif),
        mtu_min=m.mtu[0] if m.mtu else None, mtu_max=m.mtu[1] if m.mtu else None,
    )


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
        return [i for i, r in enumerate(self.rules)
                if match_py(r.match, view, hook, indev, outdev, ifindex=ifindex,
                            type_role=self.type_role, type_ike=self.type_ike)]

    def index_py(self, view: PacketView, hook: Hook, indev: int = 0, outdev: int = 0,
                 ifindex: IfIndex = _no_interfaces) -> int:
        """Index of the first matching rule, len(rules) if none, len(rules) + 1 for
        non-ICMPv6 traffic (as icmp6_classify without a fate table)."""
        if is_non_icmpv6(view):
            return len(self.rules) + 1
        for i, r in enumerate(self.rules):
            if match_py(r.match, view, hook, indev, outdev, ifindex=ifindex,
                        type_role=self.type_role, type_ike=self.type_ike):
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
