# SPDX-License-Identifier: MIT
"""The match keys of the rule language: one entry per key, read by every consumer.

The config reader (shim.config.loader), Match's validation, the compiler to the C rule
(rules.compile_match), the reference matcher (rules.match_py), the rendering
(explain.describe_match), lint's coverage (coverage.shape), `export xfrm`
(xfrm._INEXPRESSIBLE) and the analysis (packetspace.key_boxes) iterate MATCH_KEYS; each
maps every `Kind` to its own code, so a new key of a known kind needs no code there, and a
new kind fails (at import, or in the test) where it is missing.
tests/core/test_matchkeys.py fails if any consumer misses a key.

Rule 1: MATCH_KEYS is in the order rules are written out (`describe_match`); names,
fields and the union of the NativeRule fields are unique and cover Match and NativeRule.
Rule 2: `xfrm` is False unless shim.core.xfrm spells the key in an allow policy (the type
it iterates, the code, the src/dst selector, the direction) or narrows it itself: a key
it cannot spell makes every policy of a rule with it inexact, never broader.
Pure data: no I/O, nothing else of shim imported.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = ["KEYS_BY_NAME", "MATCH_KEYS", "Kind", "MatchKey"]


class Kind(enum.Enum):
    """What a key's value is: each consumer has one reader, test, box, ... per kind."""

    TYPES = "types"      # ICMPv6 type numbers (names in a file)
    CODES = "codes"      # ICMPv6 codes; names are looked up in the rule's types
    ROLES = "roles"      # Role flags: a function of the type (table.type_role)
    IKE = "ike"          # IkeUse flags: a function of the type (table.type_ike)
    CLASSES = "classes"  # ADDR_CLASSES names
    PREFIX = "prefix"    # an IPv6 prefix, canonical "addr/len"
    HOOKS = "hooks"      # Hook values
    FRAG = "frag"        # FRAG_STATUSES names
    IFNAME = "ifname"    # an interface name, resolved to an ifindex when compiled
    FLAG = "flag"        # true or false
    RANGE = "range"      # an inclusive (low, high) within 0..MatchKey.top


@dataclass(frozen=True, slots=True, kw_only=True)
class MatchKey:
    """One match key: its spelling, its Match field and what each consumer needs of it."""

    name: str                 # the TOML key (and `search` / describe_match spelling)
    field: str                # the shim.core.model.Match field holding the value
    kind: Kind
    dim: str                  # the shim.core.packetspace dimension it constrains
    native: tuple[str, ...]   # the NativeRule fields it compiles to, in the kind's order
    xfrm: bool                # Rule 2: export xfrm spells (or narrows) it itself
    needs: bool = False       # a packet without the value fails the key (C `need` bits)
    top: int = 0              # RANGE: the highest value


MATCH_KEYS: tuple[MatchKey, ...] = (
    MatchKey(name="type", field="types", kind=Kind.TYPES, dim="type", native=("types",),
             xfrm=True, needs=True),
    MatchKey(name="code", field="codes", kind=Kind.CODES, dim="code", native=("codes",),
             xfrm=True, needs=True),
    MatchKey(name="role", field="roles", kind=Kind.ROLES, dim="type", native=("roles",),
             xfrm=True),
    MatchKey(name="ike", field="ike", kind=Kind.IKE, dim="type", native=("ike",), xfrm=True),
    MatchKey(name="hook", field="hooks", kind=Kind.HOOKS, dim="hook", native=("hooks",),
             xfrm=True),
    MatchKey(name="src_class", field="src_classes", kind=Kind.CLASSES, dim="src",
             native=("src_classes",), xfrm=True),
    MatchKey(name="dst_class", field="dst_classes", kind=Kind.CLASSES, dim="dst",
             native=("dst_classes",), xfrm=True),
    MatchKey(name="frag", field="frag", kind=Kind.FRAG, dim="frag", native=("frag",),
             xfrm=False),
    MatchKey(name="src", field="src", kind=Kind.PREFIX, dim="src",
             native=("src_prefix", "src_plen"), xfrm=True),
    MatchKey(name="dst", field="dst", kind=Kind.PREFIX, dim="dst",
             native=("dst_prefix", "dst_plen"), xfrm=True),
    MatchKey(name="iif", field="iif", kind=Kind.IFNAME, dim="iif", native=("indev",),
             xfrm=True),
    MatchKey(name="oif", field="oif", kind=Kind.IFNAME, dim="oif", native=("outdev",),
             xfrm=False),
    MatchKey(name="hop_limit", field="hop_limit", kind=Kind.RANGE, dim="hop_limit",
             native=("hop_min", "hop_max"), xfrm=False, top=255),
    MatchKey(name="mtu", field="mtu", kind=Kind.RANGE, dim="mtu", native=("mtu_min", "mtu_max"),
             xfrm=False, needs=True, top=0xFFFFFFFF),
    MatchKey(name="chain_complete", field="chain_complete", kind=Kind.FLAG, dim="chain_complete",
             native=("chain_complete",), xfrm=False),
    MatchKey(name="malformed", field="malformed", kind=Kind.FLAG, dim="malformed",
             native=("malformed",), xfrm=False),
    MatchKey(name="nd_valid", field="nd_valid", kind=Kind.FLAG, dim="nd_valid",
             native=("nd_valid",), xfrm=False, needs=True),
)
KEYS_BY_NAME: dict[str, MatchKey] = {k.name: k for k in MATCH_KEYS}

assert len(KEYS_BY_NAME) == len({k.field for k in MATCH_KEYS}) == len(MATCH_KEYS)
