# SPDX-License-Identifier: MIT
"""Values shared by every layer: frozen, slotted dataclasses and enums.

Nothing here does I/O or holds state. Enum values equal the constants of
native/icmp6.h, so a value crosses the C boundary unchanged.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, fields

from shim.core.matchkeys import MATCH_KEYS, Kind

__all__ = [
    "ADDR_CLASSES",
    "Action",
    "ENGINE_KINDS",
    "PlanKind",
    "plan_entry",
    "Backend",
    "MarkName",
    "Settings",
    "restart_only_fields",
    "Decision",
    "FRAG_STATUSES",
    "Hook",
    "IkeUse",
    "MALFORMED_FLAGS",
    "ND_CHECKS",
    "NativeRule",
    "Origin",
    "PacketView",
    "Role",
    "Verdict",
    "Match",
    "Rule",
    "NO_IFINDEX",
    "PRIORITY_MIN",
    "PRIORITY_MAX",
]

# Index = enum icmp6_addr_class value.
ADDR_CLASSES: tuple[str, ...] = (
    "unspecified",
    "loopback",
    "ipv4_mapped",
    "link_local",
    "unique_local",
    "multicast",
    "solicited_node",
    "global_unicast",
    "absent",
)
# Index = enum icmp6_frag_status value.
FRAG_STATUSES: tuple[str, ...] = ("none", "atomic", "first", "non_first")
# (bit, name) = enum icmp6_malformed.
MALFORMED_FLAGS: tuple[tuple[int, str], ...] = (
    (1, "bad_version"),
    (2, "truncated_ipv6_header"),
    (4, "payload_length_mismatch"),
    (8, "ext_header_overrun"),
    (16, "icmpv6_header_truncated"),
    (32, "too_many_ext_headers"),
)
# (bit, name) = enum icmp6_nd_check.
ND_CHECKS: tuple[tuple[int, str], ...] = (
    (1, "hop_limit"),
    (2, "code"),
    (4, "length"),
    (8, "target_multicast"),
    (16, "source_not_link_local"),
    (32, "dad_destination"),
    (64, "dad_slla"),
    (128, "option_length"),
    (256, "na_solicited_multicast"),
    (512, "redirect_target"),
)


def mark_after(current: int, value: int, mask: int) -> int:
    """The packet mark after a mark verdict: the bits under `mask` become `value`'s."""
    return (current & ~mask & 0xFFFFFFFF) | (value & mask)


class Hook(enum.IntEnum):
    """Netfilter hook a packet was queued from (NF_INET_* numbering)."""

    PREROUTING = 0
    INPUT = 1
    FORWARD = 2
    OUTPUT = 3
    POSTROUTING = 4


class Role(enum.IntFlag):
    """The draft's section 6 ROLE column (bits of enum icmp6_role)."""

    LINK_LOCAL = 1
    END_TO_END = 2
    ANY_TO_END = 4
    UNCLASSIFIED = 8


class IkeUse(enum.IntFlag):
    """The draft's section 6 USE IKE? column (bits of enum icmp6_ike)."""

    MUST_NOT = 1
    SHOULD_NOT = 2
    MAY = 4
    UNCLASSIFIED = 8


class Action(enum.Enum):
    """What a verdict does to the packet."""

    ACCEPT = "accept"
    DROP = "drop"
    MARK = "mark"  # accept with (mark & ~mask) | value


# The values of `[engine] kind`; shim.adapters.engines.ENGINES has one Reader class each.
ENGINE_KINDS = ("netfilterqueue", "batched")


class PlanKind(enum.IntEnum):
    """A verdict plan entry's kind: the values of enum engine_kind in native/engine.h.

    Both engines read (kind, value, mask) per decision; this is the one spelling
    of the kinds (the binding test checks the C constants against it).
    """

    ACCEPT = 0
    DROP = 1
    MARK = 2

    @classmethod
    def of(cls, action: Action) -> PlanKind:
        """The plan kind of an action."""
        return cls[action.name]


def plan_entry(verdict: Verdict) -> tuple[int, int, int]:
    """(kind, mark value, mask) of a verdict; value and mask are 0 unless it marks."""
    if verdict.action is Action.MARK and verdict.mark is not None:
        return (PlanKind.MARK, verdict.mark, verdict.mask)
    return (PlanKind.of(verdict.action), 0, 0)


class Origin(enum.Enum):
    """Where a rule came from."""

    DEFAULT = "default"
    USER = "user"
    SETTINGS = "settings"  # the no-match and on_error verdicts


@dataclass(frozen=True, slots=True, kw_only=True)
class Verdict:
    """An action plus, for MARK, the mark value, mask and name."""

    action: Action
    mark: int | None = None
    mask: int = 0xFFFFFFFF
    mark_name: str | None = None

    def __post_init__(self) -> None:
        if (self.action is Action.MARK) != (self.mark is not None):
            raise ValueError("a mark value goes with the mark action, and only with it")
        if self.mark is not None and not 0 <= self.mark <= 0xFFFFFFFF:
            raise ValueError(f"mark {self.mark:#x} does not fit in 32 bits")
        if not 0 <= self.mask <= 0xFFFFFFFF:
            raise ValueError(f"mask {self.mask:#x} does not fit in 32 bits")

    def apply_to_mark(self, current: int) -> int:
        """Return the packet mark after this verdict, given the mark it had."""
        return current if self.mark is None else mark_after(current, self.mark, self.mask)


@dataclass(frozen=True, slots=True, kw_only=True)
class PacketView:
    """Everything the C parser reports about one packet (names as in struct icmp6_view)."""

    version: int | None
    payload_length: int | None
    hop_limit: int | None
    src: str | None
    dst: str | None
    src_class: str
    dst_class: str
    src_mcast_scope: int | None
    dst_mcast_scope: int | None
    ext_headers: tuple[int, ...]
    upper_layer: int | None
    upper_layer_offset: int | None
    chain_complete: bool
    frag_status: str
    frag_offset: int | None
    frag_more: bool | None
    frag_id: int | None
    frag_next_header: int | None = None  # the Fragment header's own Next Header field
    icmpv6_type: int | None
    icmpv6_code: int | None
    icmpv6_length: int
    nd_valid: bool | None
    nd_failed: tuple[str, ...]
    mtu: int | None
    malformed: tuple[str, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class NativeRule:
    """One rule as the C walk sees it (mirror of struct icmp6_rule).

    Unconstrained fields hold their full range; see native/icmp6.h.
    """

    types: frozenset[int] | None = None  # None: any (and no type needed)
    codes: frozenset[int] | None = None
    hooks: int = 0x1F
    roles: int = 0xF
    ike: int = 0xF
    frag: int = 0xF
    src_classes: int = 0x1FF
    dst_classes: int = 0x1FF
    src_prefix: bytes = bytes(16)
    src_plen: int = 0
    dst_prefix: bytes = bytes(16)
    dst_plen: int = 0
    hop_min: int = 0
    hop_max: int = 255
    chain_complete: int = -1
    malformed: int = -1
    nd_valid: int | None = None  # None: any (and no ND verdict needed)
    indev: int = 0
    outdev: int = 0
    mtu_min: int | None = None  # both None: any (and no MTU needed)
    mtu_max: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Decision:
    """The verdict for one packet and the rule that gave it."""

    verdict: Verdict
    rule: str
    origin: Origin
    priority: int | None
    citation: str = ""
    description: str = ""
    log: bool = False
    overridden: tuple[str, ...] = field(default=())

    def as_json(self) -> dict[str, object]:
        """The decision object of `explain --json` and `replay --json`."""
        return {
            "verdict": self.verdict.action.value,
            "mark": self.verdict.mark,
            "mark_name": self.verdict.mark_name,
            "rule": self.rule,
            "origin": self.origin.value,
            "priority": self.priority,
            "citation": self.citation,
            "description": self.description,
            "overridden": list(self.overridden),
        }


class Backend(enum.Enum):
    """How packets are diverted into NFQUEUE."""

    AUTO = "auto"
    NFT = "nft"
    IPTABLES = "iptables"


@dataclass(frozen=True, slots=True, kw_only=True)
class MarkName:
    """A named mark: what `verdict = "mark:bypass"` sets."""

    name: str
    value: int
    mask: int


# Field metadata of a Settings field a reload cannot change in place: it shapes the queue, the
# diversion, the engine or the process (sockets bound once, logging set up once). A reload keeps
# the started value and lists the change in its `not_applied`; the mark lives on the field so a
# new setting says which kind it is where it is declared.
_RESTART = {"restart": True}


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    """Daemon settings from the main config file; every field has a default.

    Fields with `restart` in their metadata take effect only at a restart
    (restart_only_fields()); every other field follows a reload.
    """

    queue_num: int = field(default=0, metadata=_RESTART)
    workers: int = field(default=1, metadata=_RESTART)
    # nft `bypass` / --queue-bypass: traffic flows if no reader
    fail_open: bool = field(default=True, metadata=_RESTART)
    queue_maxlen: int = field(default=4096, metadata=_RESTART)
    # NFQA_CFG_F_FAIL_OPEN: accept what the full queue cannot hold
    queue_fail_open: bool = field(default=False, metadata=_RESTART)
    sock_rcvbuf: int = field(default=4 * 1024 * 1024, metadata=_RESTART)
    # "batched" (the packet loop in C) | "netfilterqueue" (a Python callback each)
    engine: str = field(default="batched", metadata=_RESTART)
    backend: Backend = field(default=Backend.AUTO, metadata=_RESTART)
    hooks: tuple[Hook, ...] = field(default=(Hook.INPUT, Hook.OUTPUT, Hook.FORWARD),
                                    metadata=_RESTART)
    # mangle position: later filter rules and xfrm see the mark
    chain_priority: int = field(default=-150, metadata=_RESTART)
    no_match: Verdict = Verdict(action=Action.ACCEPT)
    on_error: Verdict = Verdict(action=Action.ACCEPT)
    marks: tuple[MarkName, ...] = (
        MarkName(name="bypass", value=0x1, mask=0xFF),
        MarkName(name="protect", value=0x2, mask=0xFF),
    )
    ext_limit: int = 16
    log_level: str = field(default="info", metadata=_RESTART)
    log_format: str = field(default="auto", metadata=_RESTART)  # auto | json | console
    log_rate: float = 10.0          # per-packet log events per second, at most
    # None: /run/icmp6-shim/control-q<queue>-net<netns inode>.sock, one per instance
    control_socket: str | None = field(default=None, metadata=_RESTART)
    # unix socket for /metrics, mode 0660 (the safe transport)
    metrics_socket: str | None = field(default=None, metadata=_RESTART)
    # that socket's group (default: the daemon's own)
    metrics_group: str | None = field(default=None, metadata=_RESTART)
    # loopback HOST:PORT: opt-in TCP, readable by every local user
    prometheus: str | None = field(default=None, metadata=_RESTART)
    # open metrics connections at once, at most
    metrics_max_connections: int = field(default=8, metadata=_RESTART)
    # seconds a metrics connection may live
    metrics_timeout: float = field(default=2.0, metadata=_RESTART)
    shadow: str | None = None       # a rules file judged beside the enforced table, never enforced
    # [overload]: per-interface ICMPv6 budgets laid in the kernel before the queue rule, so a
    # flood on one link cannot fill the one queue every link shares. Packets per
    # second per interface and class; 0 turns a class's budget off.
    budget: bool = field(default=True, metadata=_RESTART)
    budget_nd_rate: int = field(default=500, metadata=_RESTART)  # RS, RA, NS, NA, Redirect
    # Destination Unreachable, Packet Too Big, Time Exceeded, Parameter Problem
    budget_error_rate: int = field(default=500, metadata=_RESTART)
    # every other ICMPv6 message (echo, MLD, node information, ...)
    budget_other_rate: int = field(default=1000, metadata=_RESTART)
    # What is diverted for its header chain, of any protocol: fragments, AH, Mobility/HIP/
    # Shim6/253/254, failed header walks (shim.adapters.diversion.DIVERTED).
    budget_headers_rate: int = field(default=2000, metadata=_RESTART)
    # over budget: "drop", or "accept" (unjudged, counted)
    budget_verdict: str = field(default="drop", metadata=_RESTART)
    # iptables: own buckets (empty: those present at start)
    budget_interfaces: tuple[str, ...] = field(default=(), metadata=_RESTART)

    def mark(self, name: str) -> MarkName:
        """Return the named mark; KeyError if the config does not define it."""
        for m in self.marks:
            if m.name == name:
                return m
        raise KeyError(name)


def restart_only_fields() -> tuple[str, ...]:
    """The Settings fields a reload cannot change in place, in declaration order."""
    return tuple(f.name for f in fields(Settings) if f.metadata.get("restart", False))


# --- Added for the rule table (shim.core.rules, shim.core.defaults, shim.config) -------

# Sentinel ifindex for an interface name that does not resolve: the kernel
# never hands out 0xFFFFFFFF, and 0 would mean "any" to the C walk.
NO_IFINDEX = 0xFFFFFFFF
# Priority bounds of a rule (the int16 range, as nftables chain priorities), checked at load
# time so a bad priority is a ConfigError, never a surprise in the order.
PRIORITY_MIN = -32768
PRIORITY_MAX = 32767


@dataclass(frozen=True, slots=True, kw_only=True)
class Match:
    """What a rule matches; None in a field means "any" (no constraint).

    All set-valued fields are frozensets of numbers or canonical names
    (hooks as Hook, classes as ADDR_CLASSES names, frag as FRAG_STATUSES
    names). Ranges are inclusive (low, high) pairs. Prefixes are
    "addr/len" strings in canonical form.
    """

    types: frozenset[int] | None = None
    codes: frozenset[int] | None = None
    roles: Role | None = None
    ike: IkeUse | None = None
    src_classes: frozenset[str] | None = None
    dst_classes: frozenset[str] | None = None
    src: str | None = None
    dst: str | None = None
    hop_limit: tuple[int, int] | None = None
    iif: str | None = None
    oif: str | None = None
    hooks: frozenset[Hook] | None = None
    frag: frozenset[str] | None = None
    chain_complete: bool | None = None
    malformed: bool | None = None
    nd_valid: bool | None = None
    mtu: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        for key in MATCH_KEYS:  # the kinds whose values have bounds (shim.core.matchkeys)
            name, values = key.field, getattr(self, key.field)
            if values is None:
                continue
            if key.kind in (Kind.TYPES, Kind.CODES) and not all(0 <= v <= 255 for v in values):
                raise ValueError(f"{name} must be numbers 0..255")
            if key.kind is Kind.CLASSES and not values <= frozenset(ADDR_CLASSES):
                raise ValueError(f"{name}: unknown address class in {sorted(values)}")
            if key.kind is Kind.FRAG and not values <= frozenset(FRAG_STATUSES):
                raise ValueError(f"{name}: unknown fragment status in {sorted(values)}")
            if key.kind is Kind.RANGE and not 0 <= values[0] <= values[1] <= key.top:
                raise ValueError(f"{name}: range {values[0]}-{values[1]} is not within "
                                 f"0-{key.top}")


@dataclass(frozen=True, slots=True, kw_only=True)
class Rule:
    """One rule of the table, default or user, with its provenance.

    priority is None only for a user rule as loaded, before build_table
    settles it (see shim.core.rules); every rule in a built table has an int.
    file_order is the position of `file` among the loaded files.
    """

    name: str
    priority: int | None
    origin: Origin
    match: Match
    verdict: Verdict
    description: str = ""
    citation: str = ""
    log: bool = False
    file: str = ""
    file_order: int = 0
    index: int = 0
    # In the hardening band, evaluated before every rule outside it (shim.core.rules
    # order_key): the hardening defaults, a user rule with `override_hardening = true`,
    # and a user rule that replaces a hardening default by name.
    hardening: bool = False

    def __post_init__(self) -> None:
        if self.priority is not None and not PRIORITY_MIN <= self.priority <= PRIORITY_MAX:
            raise ValueError(f"priority {self.priority} is not within {PRIORITY_MIN}..{PRIORITY_MAX}")
