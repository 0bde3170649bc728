# SPDX-License-Identifier: MIT
"""Regions in the words of the rule language: one box as `key=value` pairs.

A dimension is left out when it holds every value it can hold there (the universe box
the piece came from tells: an ICMPv6 type implies a complete chain, no type implies no
code, ...). Addresses are written as the fewest prefixes, at most a few, then "+N more".
Pure: no I/O.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from shim.core.icmp6_types import type_name
from shim.core.model import FRAG_STATUSES, Hook
from shim.core.packetspace import CLASS_RANGES, D, PacketSpace
from shim.core.space import Box, IntervalSet, Region, iv, iv_subset

__all__ = ["describe_box", "describe_region", "prefixes"]

_MAX_PARTS = 4


def prefixes(s: IntervalSet) -> list[str]:
    """The fewest CIDR prefixes covering exactly the addresses of s (absent: "absent")."""
    out: list[str] = []
    for lo, hi in s:
        if lo < 0:
            out.append("absent")
            lo = 0
            if hi < 0:
                continue
        first = ipaddress.IPv6Address(lo)
        last = ipaddress.IPv6Address(hi)
        out += [str(n) for n in ipaddress.summarize_address_range(first, last)]
    return out


def _classes(s: IntervalSet) -> list[str] | None:
    """The class names whose ranges make up s exactly, or None."""
    names = [c for c, rs in CLASS_RANGES.items() if iv_subset(rs, s)]
    return names if iv(r for c in names for r in CLASS_RANGES[c]) == s else None


def _numbers(s: IntervalSet, names: bool) -> str:
    parts = []
    for lo, hi in s:
        if lo == hi:
            parts.append("absent" if lo < 0 else type_name(lo) if names else str(lo))
        elif lo < 0:
            parts.append("absent" if hi < 0 else f"absent,0-{hi}" if hi > 0 else "absent,0")
        else:
            parts.append(f"{lo}-{hi}")
    return ",".join(parts)


def _addr(key: str, s: IntervalSet) -> str:
    classes = _classes(s)
    if classes is not None and len(classes) <= 3:
        return f"{key}_class={','.join(classes)}"
    ps = prefixes(s)
    more = f" (+{len(ps) - _MAX_PARTS} more)" if len(ps) > _MAX_PARTS else ""
    return f"{key}={','.join(ps[:_MAX_PARTS])}{more}"


def _iface(s: IntervalSet, space: PacketSpace) -> str:
    values = [v for lo, hi in s for v in range(lo, hi + 1)]
    return ",".join("none" if v == 0 else str(space.if_name(v)) for v in values)


def describe_box(box: Box, space: PacketSpace, context: Box | None = None) -> str:
    """`key=value` pairs for the dimensions where box is narrower than `context`."""
    ctx = context if context is not None else space.domains()
    parts: list[str] = []
    for name, dim in D.items():
        s = box[dim]
        if iv_subset(ctx[dim], s):
            continue
        if name == "hook":
            parts.append("hook=" + ",".join(Hook(v).name.lower() for lo, hi in s
                                            for v in range(lo, hi + 1)))
        elif name in ("iif", "oif"):
            parts.append(f"{name}={_iface(s, space)}")
        elif name in ("type", "code"):
            parts.append(f"{name}={_numbers(s, name == 'type')}")
        elif name == "frag":
            parts.append("frag=" + ",".join(FRAG_STATUSES[v] for lo, hi in s
                                            for v in range(lo, hi + 1)))
        elif name in ("chain_complete", "malformed", "nd_valid"):
            parts.append(f"{name}=" + ",".join({-1: "absent", 0: "false", 1: "true"}[v]
                                               for lo, hi in s for v in range(lo, hi + 1)))
        elif name in ("src", "dst"):
            parts.append(_addr(name, s))
        else:
            parts.append(f"{name}={_numbers(s, False)}")
    return " ".join(parts) or "any"


def describe_region(region: Region, space: PacketSpace, contexts: Sequence[Box],
                    limit: int = _MAX_PARTS) -> list[str]:
    """One line per box (the first `limit`), each against the universe box holding it."""
    out = []
    hooks = space.domains()[D["hook"]] if not space.hooks else iv(int(h) for h in space.hooks)
    for box in region[:limit]:
        ctx = next((c for c in contexts if all(iv_subset(b, cc) for b, cc in zip(box, c))), None)
        if ctx is not None:  # a hook is worth saying unless every queued hook is in the box
            ctx = (hooks,) + ctx[1:]
        out.append(describe_box(box, space, ctx))
    if len(region) > limit:
        out.append(f"(+{len(region) - limit} more boxes)")
    return out
