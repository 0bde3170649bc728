# SPDX-License-Identifier: MIT
"""Parsers of single config values: a TOML value in, a typed value out, or BadValue.

Pure functions; shim.config adds the file, rule and key to a BadValue's message.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Any

from shim.core.model import ADDR_CLASSES, Action, Hook, MarkName, Verdict

__all__ = [
    "HOOK_NAMES", "BadValue", "boolean", "choice", "classes", "flags", "hooks", "ifname", "integer",
    "loopback_endpoint", "many", "mark_value", "number", "parse_verdict", "prefix", "rate", "seconds", "string",
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
    try:
        net = ipaddress.IPv6Network(string(v), strict=False)
    except ValueError as exc:
        raise BadValue(f"not an IPv6 prefix: {exc}") from None
    return None if net.prefixlen == 0 else str(net)


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
