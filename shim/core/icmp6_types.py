# SPDX-License-Identifier: MIT
"""Names and numbers of ICMPv6 types and codes.

Names are nft's (`nft describe icmpv6 type`) plus IANA's and the draft's
spellings; TYPE_NAMES and CODE_NAMES are keyed by norm_name(), which ignores
case, treats ' ', '_' and '-' alike and accepts "neighbour" for "neighbor".
The config's parsers of type and code values are in shim.config.values.
"""

from __future__ import annotations

import re

__all__ = [
    "CODE_NAMES",
    "TYPE_NAMES",
    "code_name",
    "norm_name",
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


def norm_name(name: str) -> str:
    """The key of a type or code name in TYPE_NAMES / CODE_NAMES."""
    return re.sub(r"[\s_]+", "-", name.strip().lower()).replace("neighbour", "neighbor")


TYPE_NAMES: dict[str, int] = {norm_name(n): t for t, names in _TYPES for n in names}
CODE_NAMES: dict[int, dict[str, int]] = {}
for _t, _c, _names in _CODES:
    CODE_NAMES.setdefault(_t, {}).update({norm_name(n): _c for n in _names})
_CANONICAL = {t: names[0] for t, names in _TYPES}


def type_name(number: int) -> str:
    """Return the canonical name of an ICMPv6 type, or its number as text."""
    return _CANONICAL.get(number, str(number))


def code_name(icmp_type: int, code: int) -> str:
    """Return the canonical name of a code of a type, or the number as text."""
    for name, value in CODE_NAMES.get(icmp_type, {}).items():
        if value == code:
            return name
    return str(code)
