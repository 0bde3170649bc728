# SPDX-License-Identifier: MIT
"""Parsers of single config values: a TOML value in, a typed value out, or BadValue.

Pure functions; shim.config adds the file, rule and key to a BadValue's message.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
from collections.abc import Callable, Iterable
from typing import Any

from shim.core.icmp6_types import CODE_NAMES, TYPE_NAMES, norm_name, type_name
from shim.core.model import ADDR_CLASSES, Action, Hook, MarkName, Verdict

__all__ = [
    "HOOK_NAMES", "BadValue", "boolean", "choice", "classes", "flags", "hooks", "ifname", "integer",
    "loopback_endpoint", "many", "mark_value", "number", "parse_codes", "parse_range", "parse_types",
    "parse_verdict", "prefix", "rate", "seconds", "string",
]

HOOK_NAMES = {h.name.lower(): h for h in Hook}


class BadValue(ValueError):
    """A value is wrong; the caller adds file, rule and key."""


def integer(lo: int, hi: int) -> Callable[[object], int]:
    def parse(v: object) -> int:
        if not isinstance(v, int) or isinstance(v, bool):
            raise BadValue(f"expected an integer {lo}..{hi}, got {v!r}")
        if not lo <= v <= hi:
            raise BadValue(f"{v} is not within {lo}..{hi}")
        return v
    return parse


def boolean(v: object) -> bool:
    if not isinstance(v, bool):
        raise BadValue(f"expected true or false, got {v!r}")
    return v


def string(v: object) -> str:
    if not isinstance(v, str) or not v:
        raise BadValue(f"expected a non-empty string, got {v!r}")
    return v


def choice(options: dict[str, Any]) -> Callable[[object], Any]:
    def parse(v: object) -> Any:
        key = string(v).strip().lower().replace("_", "-")
        if key not in options:
            raise BadValue(f"{v!r} is not one of {', '.join(sorted(options))}")
        return options[key]
    return parse


def many(one: Callable[[object], Any]) -> Callable[[object], frozenset[Any]]:
    def parse(v: object) -> frozenset[Any]:
        items = v if isinstance(v, list) else [v]
        if not items:
            raise BadValue("expected at least one value, got an empty list")
        return frozenset(one(i) for i in items)
    return parse


def rate(v: object) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
        raise BadValue(f"expected a number >= 0, got {v!r}")
    return float(v)


def seconds(lo: float, hi: float) -> Callable[[object], float]:
    def parse(v: object) -> float:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not lo <= v <= hi:
            raise BadValue(f"expected seconds {lo:g}..{hi:g}, got {v!r}")
        return float(v)
    return parse


def hooks(v: object) -> tuple[Hook, ...]:
    if not isinstance(v, list) or not v:
        raise BadValue(f"expected a non-empty list of hook names, got {v!r}")
    hooks = [choice(HOOK_NAMES)(h) for h in v]
    if len(set(hooks)) != len(hooks):
        raise BadValue("a hook is listed twice")
    return tuple(hooks)


def parse_verdict(value: object, marks: tuple[MarkName, ...]) -> Verdict:
    """Parse "accept", "drop", "mark:NAME", "mark:VALUE" or "mark:VALUE/MASK".

    Raises:
        ValueError: an unknown word, an undefined mark name or a bad number.
    """
    text = string(value).strip()
    if text.lower() in ("accept", "drop"):
        return Verdict(action=Action(text.lower()))
    head, sep, arg = text.partition(":")
    if head.lower() != "mark" or not sep or not arg.strip():
        raise BadValue(f"{text!r} is not accept, drop, mark:NAME or mark:VALUE[/MASK]")
    arg = arg.strip()
    if arg[0].isdigit():
        return mark_value(arg)
    for m in marks:
        if m.name == arg:
            return Verdict(action=Action.MARK, mark=m.value, mask=m.mask, mark_name=m.name)
    known = ", ".join(m.name for m in marks)
    raise BadValue(f"mark {arg!r} is not defined in [marks] (defined: {known})")


def number(text: str) -> int:
    try:
        n = int(text, 0)
    except ValueError:
        raise BadValue(f"{text!r} is not a number") from None
    if not 0 <= n <= 0xFFFFFFFF:
        raise BadValue(f"{text} does not fit in 32 bits")
    return n


def mark_value(arg: str) -> Verdict:
    value, _, mask = arg.partition("/")
    v, m = number(value.strip()), number(mask.strip()) if mask else 0xFFFFFFFF
    if v & ~m:
        raise BadValue(f"mark {v:#x} has bits outside mask {m:#x}")
    return Verdict(action=Action.MARK, mark=v, mask=m)


def loopback_endpoint(text: str) -> str:
    """HOST:PORT on a loopback address: counters are not for the network at large."""
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    try:
        ok = bool(sep) and ipaddress.ip_address(host).is_loopback and 0 < int(port) < 65536
    except ValueError:
        ok = False
    if not ok:
        raise BadValue(f"{text!r} is not a loopback HOST:PORT such as 127.0.0.1:9477 or [::1]:9477")
    return text


def prefix(v: object) -> str | None:
    # Our own wording: ipaddress's messages ("At least 3 parts expected") name none of
    # the user's choices, and an IPv4 prefix is a common slip worth naming as such.
    text = string(v)
    try:
        ipaddress.IPv4Network(text, strict=False)
    except ValueError:
        pass
    else:
        raise BadValue(f"{text!r} is an IPv4 prefix: rules match IPv6 addresses only "
                       "(IPv4-mapped addresses are ::ffff:0:0/96)")
    address, _, length = text.partition("/")
    try:
        net = ipaddress.IPv6Network(text, strict=False)
    except ValueError:
        if length and "%" not in address and _is_ipv6(address):
            raise BadValue(f"{text!r}: the prefix length {length!r} is not a number "
                           "within 0..128") from None
        raise BadValue(f"{text!r} is not an IPv6 prefix such as 2001:db8::/32") from None
    return None if net.prefixlen == 0 else str(net)


def _is_ipv6(text: str) -> bool:
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


def ifname(v: object) -> str:
    name = string(v)
    if len(name) > 15 or "/" in name or any(c.isspace() for c in name):
        raise BadValue(f"{name!r} is not an interface name")
    return name


def classes(v: object) -> frozenset[str]:
    return many(choice({c.replace("_", "-"): c for c in ADDR_CLASSES}))(v)


def flags(options: dict[str, Any]) -> Callable[[object], Any]:
    def parse(v: object) -> Any:
        result = None
        for flag in many(choice(options))(v):
            result = flag if result is None else result | flag
        return result
    return parse


# --- ICMPv6 types, codes and ranges (names from shim.core.icmp6_types) ---------------

_RANGE = re.compile(r"^\s*(\d+)\s*-\s*(\d+)\s*$")


def parse_range(value: object, low: int, high: int) -> tuple[int, int]:
    """Parse an int or "a-b" string into an inclusive range within low..high.

    Raises:
        BadValue: wrong type, malformed text, reversed or out-of-bounds range.
    """
    if isinstance(value, int) and not isinstance(value, bool):
        lo = hi = value
    elif isinstance(value, str) and (m := _RANGE.match(value)):
        lo, hi = int(m.group(1)), int(m.group(2))
    elif isinstance(value, str) and value.strip().isdigit():
        lo = hi = int(value)
    else:
        raise BadValue(f"expected a number or a range 'a-b', got {value!r}")
    if lo > hi:
        raise BadValue(f"range {lo}-{hi} is reversed")
    if lo < low or hi > high:
        raise BadValue(f"{lo}-{hi} is not within {low}-{high}")
    return lo, hi


def _items(value: object) -> list[object]:
    if isinstance(value, list):
        if not value:
            raise BadValue("empty list")
        return list(value)
    return [value]


def _lookup(table: dict[str, int], item: str, what: str) -> int:
    key = norm_name(item)
    if key in table:
        return table[key]
    close = difflib.get_close_matches(key, table, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise BadValue(f"unknown {what} {item!r}{hint}")


def parse_types(value: object) -> frozenset[int]:
    """Parse a type value: name, number, "a-b" range, or a list of those.

    Raises:
        BadValue: naming the offending item.
    """
    out: set[int] = set()
    for item in _items(value):
        if isinstance(item, str) and not _RANGE.match(item) and not item.strip().isdigit():
            out.add(_lookup(TYPE_NAMES, item, "ICMPv6 type"))
        else:
            lo, hi = parse_range(item, 0, 255)
            out.update(range(lo, hi + 1))
    return frozenset(out)


def parse_codes(value: object, types: Iterable[int] | None) -> frozenset[int]:
    """Parse a code value; names are looked up in the codes of `types`.

    Raises:
        BadValue: a name without a type, a name no given type defines, or
            one name meaning different numbers for different types.
    """
    type_list = sorted(types) if types is not None else []
    out: set[int] = set()
    for item in _items(value):
        if isinstance(item, str) and not _RANGE.match(item) and not item.strip().isdigit():
            out.add(_code_by_name(item, type_list))
        else:
            lo, hi = parse_range(item, 0, 255)
            out.update(range(lo, hi + 1))
    return frozenset(out)


def _code_by_name(item: str, types: list[int]) -> int:
    if not types:
        raise BadValue(f"code name {item!r} needs a 'type' to be looked up in")
    merged: dict[str, int] = {}
    for t in types:
        merged.update(CODE_NAMES.get(t, {}))
    found = {CODE_NAMES[t][norm_name(item)] for t in types if norm_name(item) in CODE_NAMES.get(t, {})}
    if len(found) > 1:
        raise BadValue(f"code name {item!r} means different codes for types {types}")
    if found:
        return found.pop()
    names = ", ".join(type_name(t) for t in types)
    return _lookup(merged, item, f"code for {names}")
