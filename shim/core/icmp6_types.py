# SPDX-License-Identifier: MIT
"""Names and numbers of ICMPv6 types and codes, and the parsers of rule values.

Names are nft's (`nft describe icmpv6 type`) plus IANA's and the draft's
spellings; lookups ignore case and treat ' ', '_' and '-' alike, and accept
"neighbour" for "neighbor". Pure: values in, values or ValueError out.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable

__all__ = [
    "CODE_NAMES",
    "TYPE_NAMES",
    "code_name",
    "parse_codes",
    "parse_range",
    "parse_types",
    "type_name",
]

# Canonical name first for each number; aliases after.
_TYPES: tuple[tuple[int, tuple[str, ...]], ...] = (
    (1, ("destination-unreachable", "dest-unreachable")),
    (2, ("packet-too-big",)),
    (3, ("time-exceeded",)),
    (4, ("parameter-problem", "param-problem")),
    (100, ("private-experimentation-100",)),
    (101, ("private-experimentation-101",)),
    (127, ("reserved-error-expansion",)),
    (128, ("echo-request",)),
    (129, ("echo-reply",)),
    (130, ("mld-listener-query",)),
    (131, ("mld-listener-report",)),
    (132, ("mld-listener-done", "mld-listener-reduction")),
    (133, ("nd-router-solicit", "router-solicit", "router-solicitation")),
    (134, ("nd-router-advert", "router-advert", "router-advertisement")),
    (135, ("nd-neighbor-solicit", "neighbor-solicit", "neighbor-solicitation")),
    (136, ("nd-neighbor-advert", "neighbor-advert", "neighbor-advertisement")),
    (137, ("nd-redirect", "redirect")),
    (138, ("router-renumbering",)),
    (139, ("node-information-query", "ni-query")),
    (140, ("node-information-response", "ni-response")),
    (141, ("ind-neighbor-solicit", "inverse-neighbor-solicit")),
    (142, ("ind-neighbor-advert", "inverse-neighbor-advert")),
    (143, ("mld2-listener-report", "mldv2-listener-report")),
    (144, ("home-agent-address-discovery-request", "haad-request")),
    (145, ("home-agent-address-discovery-reply", "haad-reply")),
    (146, ("mobile-prefix-solicitation",)),
    (147, ("mobile-prefix-advertisement",)),
    (148, ("certification-path-solicitation", "send-cps")),
    (149, ("certification-path-advertisement", "send-cpa")),
    (150, ("seamoby-experimental", "seamoby")),
    (151, ("multicast-router-advertisement", "mrd-advert")),
    (152, ("multicast-router-solicitation", "mrd-solicit")),
    (153, ("multicast-router-termination", "mrd-terminate")),
    (200, ("private-experimentation-200",)),
    (201, ("private-experimentation-201",)),
    (255, ("reserved-informational-expansion",)),
)
# (type, code, names): RFC 4443 §3, RFC 7112, RFC 8883, RFC 2894.
_CODES: tuple[tuple[int, int, tuple[str, ...]], ...] = (
    (1, 0, ("no-route",)),
    (1, 1, ("admin-prohibited",)),
    (1, 2, ("beyond-scope",)),
    (1, 3, ("addr-unreachable", "address-unreachable")),
    (1, 4, ("port-unreachable",)),
    (1, 5, ("policy-fail",)),
    (1, 6, ("reject-route",)),
    (1, 7, ("source-routing-header-error",)),
    (1, 8, ("headers-too-long",)),
    (3, 0, ("hop-limit-exceeded",)),
    (3, 1, ("fragment-reassembly-time-exceeded", "reassembly-time-exceeded")),
    (4, 0, ("erroneous-header-field",)),
    (4, 1, ("unrecognized-next-header",)),
    (4, 2, ("unrecognized-ipv6-option",)),
    (4, 3, ("incomplete-header-chain", "first-fragment-incomplete-chain")),
    (138, 0, ("router-renumbering-command",)),
    (138, 1, ("router-renumbering-result",)),
    (138, 255, ("sequence-number-reset",)),
)


def _norm(name: str) -> str:
    return re.sub(r"[\s_]+", "-", name.strip().lower()).replace("neighbour", "neighbor")


TYPE_NAMES: dict[str, int] = {_norm(n): t for t, names in _TYPES for n in names}
CODE_NAMES: dict[int, dict[str, int]] = {}
for _t, _c, _names in _CODES:
    CODE_NAMES.setdefault(_t, {}).update({_norm(n): _c for n in _names})
_CANONICAL = {t: names[0] for t, names in _TYPES}
_RANGE = re.compile(r"^\s*(\d+)\s*-\s*(\d+)\s*$")


def type_name(number: int) -> str:
    """Return the canonical name of an ICMPv6 type, or its number as text."""
    return _CANONICAL.get(number, str(number))


def code_name(icmp_type: int, code: int) -> str:
    """Return the canonical name of a code of a type, or the number as text."""
    for name, value in CODE_NAMES.get(icmp_type, {}).items():
        if value == code:
            return name
    return str(code)


def parse_range(value: object, low: int, high: int) -> tuple[int, int]:
    """Parse an int or "a-b" string into an inclusive range within low..high.

    Raises:
        ValueError: wrong type, malformed text, reversed or out-of-bounds range.
    """
    if isinstance(value, int) and not isinstance(value, bool):
        lo = hi = value
    elif isinstance(value, str) and (m := _RANGE.match(value)):
        lo, hi = int(m.group(1)), int(m.group(2))
    elif isinstance(value, str) and value.strip().isdigit():
        lo = hi = int(value)
    else:
        raise ValueError(f"expected a number or a range 'a-b', got {value!r}")
    if lo > hi:
        raise ValueError(f"range {lo}-{hi} is reversed")
    if lo < low or hi > high:
        raise ValueError(f"{lo}-{hi} is not within {low}-{high}")
    return lo, hi


def _items(value: object) -> list[object]:
    if isinstance(value, list):
        if not value:
            raise ValueError("empty list")
        return list(value)
    return [value]


def _lookup(table: dict[str, int], item: str, what: str) -> int:
    key = _norm(item)
    if key in table:
        return table[key]
    close = difflib.get_close_matches(key, table, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ValueError(f"unknown {what} {item!r}{hint}")


def parse_types(value: object) -> frozenset[int]:
    """Parse a type value: name, number, "a-b" range, or a list of those.

    Raises:
        ValueError: naming the offending item.
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
        ValueError: a name without a type, a name no given type defines, or
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
        raise ValueError(f"code name {item!r} needs a 'type' to be looked up in")
    merged: dict[str, int] = {}
    for t in types:
        merged.update(CODE_NAMES.get(t, {}))
    found = {CODE_NAMES[t][_norm(item)] for t in types if _norm(item) in CODE_NAMES.get(t, {})}
    if len(found) > 1:
        raise ValueError(f"code name {item!r} means different codes for types {types}")
    if found:
        return found.pop()
    names = ", ".join(type_name(t) for t in types)
    return _lookup(merged, item, f"code for {names}")
