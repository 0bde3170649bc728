# SPDX-License-Identifier: MIT
"""The built-in rules: draft-arkko-icmpv6-ike-effects-02 §6, RFC 4890, hardening.

Every default is a value with its name, priority, match, verdict, description
and citation. They sit in the band DEFAULT_BAND (1000..1999); user rules go
above (lower numbers, default 0) or below as fallbacks. Marks are referenced
by name ("bypass", "protect"); shim.core.rules.build_table puts in the values
the settings give them. Pure data: no I/O.

Hooks: prerouting/input/output/postrouting are "local" (traffic to and from
this host), forward is "transit" (traffic through a gateway).
"""

from __future__ import annotations

from shim.core.model import Action, Hook, IkeUse, Match, Origin, Role, Rule, Verdict

__all__ = [
    "DEFAULT_BAND",
    "DEFAULT_RULES",
    "DRAFT",
    "HARDENING_BAND",
    "DRAFT_ROWS",
    "INBOUND_HOOKS",
    "LOCAL_HOOKS",
    "OUTBOUND_HOOKS",
    "TRANSIT_HOOKS",
    "TYPE_IKE",
    "TYPE_ROLE",
]

DRAFT = "draft-arkko-icmpv6-ike-effects-02"
DEFAULT_BAND = (1000, 1999)
# The hardening defaults: evaluated before every rule that does not ask to go above them
# (`override_hardening = true`), whatever its priority (docs/rules.md "Hardening").
HARDENING_BAND = (1000, 1099)

# The draft's §6 table: (message, type, role, use-IKE, footnotes).
DRAFT_ROWS: tuple[tuple[str, int, Role, IkeUse, str], ...] = (
    ("Dest Unreachable", 1, Role.ANY_TO_END, IkeUse.MAY, "1, 2"),
    ("Packet Too Big", 2, Role.ANY_TO_END, IkeUse.MAY, "1, 3"),
    ("Time Exceeded", 3, Role.ANY_TO_END, IkeUse.MAY, "1, 3"),
    ("Parameter Problem", 4, Role.END_TO_END, IkeUse.MAY, "4"),
    ("Echo Request", 128, Role.END_TO_END, IkeUse.MAY, "4"),
    ("Echo Reply", 129, Role.END_TO_END, IkeUse.MAY, "4"),
    ("Redirect", 137, Role.LINK_LOCAL, IkeUse.SHOULD_NOT, "5"),
    ("Router Solicit", 133, Role.LINK_LOCAL, IkeUse.MUST_NOT, "6"),
    ("Router Advert", 134, Role.LINK_LOCAL, IkeUse.MUST_NOT, "6"),
    ("Neighbour Solicit", 135, Role.LINK_LOCAL, IkeUse.MUST_NOT, "6"),
    ("Neighbour Advert", 136, Role.LINK_LOCAL, IkeUse.MUST_NOT, "6"),
    ("Router Renumbering", 138, Role.END_TO_END, IkeUse.MAY, "4"),
)


def _column(values: dict[int, int], other: int) -> bytes:
    return bytes(values.get(t, other) for t in range(256))


# Role / IKE-use bit of each ICMPv6 type, for struct icmp6_table.
TYPE_ROLE: bytes = _column({t: int(r) for _m, t, r, _i, _f in DRAFT_ROWS}, Role.UNCLASSIFIED)
TYPE_IKE: bytes = _column({t: int(i) for _m, t, _r, i, _f in DRAFT_ROWS}, IkeUse.UNCLASSIFIED)

LOCAL_HOOKS = frozenset({Hook.PREROUTING, Hook.INPUT, Hook.OUTPUT, Hook.POSTROUTING})
INBOUND_HOOKS = frozenset({Hook.PREROUTING, Hook.INPUT})
OUTBOUND_HOOKS = frozenset({Hook.OUTPUT, Hook.POSTROUTING})
TRANSIT_HOOKS = frozenset({Hook.FORWARD})

BYPASS = Verdict(action=Action.MARK, mark=0x1, mask=0xFF, mark_name="bypass")
PROTECT = Verdict(action=Action.MARK, mark=0x2, mask=0xFF, mark_name="protect")
DROP = Verdict(action=Action.DROP)
ACCEPT = Verdict(action=Action.ACCEPT)

ND = frozenset(range(133, 138))
LINK_SCOPE_OTHER = frozenset({130, 131, 132, 141, 142, 143, 148, 149, 151, 152, 153})
UNASSIGNED_ERRORS = frozenset(range(5, 100)) | frozenset(range(102, 127))
UNASSIGNED_INFO = frozenset(range(154, 200)) | frozenset(range(202, 255))
EXPERIMENTAL = frozenset({100, 101, 200, 201})
RESERVED = frozenset({0, 127, 255})
MOBILE_IPV6 = frozenset(range(144, 148))


def _row(message: str) -> str:
    for name, _t, _r, _i, notes in DRAFT_ROWS:
        if name == message:
            return f"{DRAFT} §6 row '{name}', fn {notes}"
    raise KeyError(message)


_SPECS: list[tuple[int, str, Verdict, str, str, Match]] = []


def _add(priority: int, name: str, verdict: Verdict, description: str, citation: str,
         **match: object) -> None:
    _SPECS.append((priority, name, verdict, description, citation, Match(**match)))  # type: ignore[arg-type]


def _t(*numbers: int) -> frozenset[int]:
    return frozenset(numbers)


# --- 1000-1099: hardening, every hook -----------------------------------------
_add(1000, "hardening-malformed", DROP,
     "the IPv6 header, extension headers or ICMPv6 header cannot be read as sent",
     "RFC 8200 §4 (header chain processing); shim hardening", malformed=True)
_add(1010, "hardening-incomplete-chain", DROP,
     "a first (or unfragmented) packet without the whole header chain up to ICMPv6",
     "RFC 7112 §5 (first fragment MUST carry the whole chain); RFC 7113 §5 (RA-Guard)",
     chain_complete=False, frag=frozenset({"none", "atomic", "first"}))
_add(1020, "hardening-nd-fragmented", DROP,
     "Neighbor Discovery (and SEND CPS) never uses a fragment header",
     "RFC 6980 §5", types=ND | _t(148), frag=frozenset({"atomic", "first"}))
_add(1030, "hardening-nd-invalid", DROP,
     "Neighbor Discovery that fails the RFC 4861 validity checks (hop limit 255, code 0, ...)",
     "RFC 4861 §6.1.1, §6.1.2, §7.1.1, §7.1.2, §8.1 (silently discard)",
     types=ND, nd_valid=False)
_add(1040, "hardening-ptb-below-minimum-mtu", DROP,
     "Packet Too Big below the IPv6 minimum MTU 1280: no node may act on it",
     "RFC 8201 §4; RFC 8021 §3 (atomic fragments); RFC 4301 §6.1.1 (minimum PMTU)",
     types=_t(2), mtu=(0, 1279))

# --- 1100-1199: traffic to and from this host ---------------------------------
for _p, _n, _type, _msg, _rfc in (
    (1100, "nd-router-solicit", 133, "Router Solicit", "§5.8; RFC 4861 §6.1.1"),
    (1101, "nd-router-advert", 134, "Router Advert", "§5.9; RFC 4861 §6.1.2"),
    (1102, "nd-neighbor-solicit", 135, "Neighbour Solicit", "§5.10; RFC 4861 §7.1.1"),
    (1103, "nd-neighbor-advert", 136, "Neighbour Advert", "§5.11; RFC 4861 §7.1.2"),
):
    _add(_p, _n, BYPASS, "link-local ND must work before and without any SA",
         f"{_row(_msg)}; {_rfc}", types=_t(_type), hooks=LOCAL_HOOKS)
_add(1104, "nd-redirect", BYPASS, "Redirect is treated like the rest of ND",
     f"{_row('Redirect')}; §5.7; RFC 4861 §8.1; RFC 4890 §4.4.4",
     types=_t(137), hooks=LOCAL_HOOKS)
_add(1110, "mld", BYPASS, "MLD from a link-local source: link-scope multicast control",
     f"RFC 4890 §4.4.1; RFC 2710 §3; {DRAFT} §4.1 (multicast cannot use dynamic SAs)",
     types=_t(130, 131, 132), src_classes=frozenset({"link_local"}), hooks=LOCAL_HOOKS)
_add(1111, "mld2-report", BYPASS, "MLDv2 Report from link-local or :: (during DAD)",
     f"RFC 4890 §4.4.1; RFC 3810 §5.2.13; {DRAFT} §4.1",
     types=_t(143), src_classes=frozenset({"link_local", "unspecified"}), hooks=LOCAL_HOOKS)
_add(1112, "inverse-nd", BYPASS, "Inverse ND with hop limit 255",
     "RFC 4890 §4.4.1; RFC 3122", types=_t(141, 142), hop_limit=(255, 255), hooks=LOCAL_HOOKS)
_add(1113, "send-certification-path", BYPASS, "SEND CPS/CPA with hop limit 255",
     "RFC 4890 §4.4.1; RFC 3971 §6.4", types=_t(148, 149), hop_limit=(255, 255),
     hooks=LOCAL_HOOKS)
_add(1114, "multicast-router-discovery", BYPASS, "MRD from link-local with hop limit 1",
     "RFC 4890 §4.4.1; RFC 4286", types=_t(151, 152, 153),
     src_classes=frozenset({"link_local"}), hop_limit=(1, 1), hooks=LOCAL_HOOKS)
_add(1119, "link-scope-invalid", DROP,
     "link-scope control (MLD, IND, SEND, MRD) without the source or hop limit it needs",
     "RFC 4890 §4.4.1 (conditions)", types=LINK_SCOPE_OTHER, hooks=LOCAL_HOOKS)
for _p, _n, _type, _msg, _sec in (
    (1120, "destination-unreachable", 1, "Dest Unreachable", "§5.1"),
    (1121, "packet-too-big", 2, "Packet Too Big", "§4.3, §5.2"),
    (1122, "time-exceeded", 3, "Time Exceeded", "§5.3"),
):
    _add(_p, f"{_n}-in", BYPASS, "received in the clear while IKE negotiates",
         f"{_row(_msg)}; {_sec}; RFC 4890 §4.4.1; RFC 4301 §6.1.1",
         types=_t(_type), hooks=INBOUND_HOOKS)
    _add(_p + 5, f"{_n}-out", PROTECT, "an error about our traffic goes the way that traffic goes",
         f"{_row(_msg)}; {DRAFT} §4.2", types=_t(_type), hooks=OUTBOUND_HOOKS)
for _p, _n, _type, _msg, _sec in (
    (1130, "parameter-problem", 4, "Parameter Problem", "§5.4"),
    (1131, "echo-request", 128, "Echo Request", "§5.5"),
    (1132, "echo-reply", 129, "Echo Reply", "§5.6"),
    (1133, "router-renumbering", 138, "Router Renumbering", "§5.12; RFC 2894"),
):
    _add(_p, _n, PROTECT, "end-to-end: regular IPsec processing (the SPD decides)",
         f"{_row(_msg)}; {_sec}", types=_t(_type), hooks=LOCAL_HOOKS)
_add(1140, "node-information", PROTECT, "chosen like Echo: end-to-end, regular IPsec",
     "RFC 4890 §4.4.4 (policy to define); RFC 4620", types=_t(139, 140), hooks=LOCAL_HOOKS)
_add(1141, "mobile-ipv6", PROTECT, "the stack drops them unless it is a home agent or mobile node",
     "RFC 4890 §4.4.3; RFC 6275 §6.5-6.8", types=MOBILE_IPV6, hooks=LOCAL_HOOKS)
_add(1142, "unassigned-errors", PROTECT, "unknown errors go to the upper layer",
     "RFC 4890 §4.4.4 (policy to define); RFC 4443 §2.4 (b)",
     types=UNASSIGNED_ERRORS, hooks=LOCAL_HOOKS)
_add(1150, "experimental", DROP, "private experimentation types",
     "RFC 4890 §4.4.5; RFC 4443 §2.1", types=EXPERIMENTAL, hooks=LOCAL_HOOKS)
_add(1151, "reserved", DROP, "reserved type 0 and the expansion types 127 and 255",
     "RFC 4890 §4.4.5; RFC 4443 §2.1", types=RESERVED, hooks=LOCAL_HOOKS)
_add(1152, "unassigned-informational", DROP, "unknown informational messages",
     "RFC 4890 §4.4.5; RFC 4443 §2.4 (b) (silently discard)", types=UNASSIGNED_INFO,
     hooks=LOCAL_HOOKS)
_add(1153, "seamoby", DROP, "experimental Seamoby (CARD) messages",
     "RFC 4890 §4.4.3; RFC 4065", types=_t(150), hooks=LOCAL_HOOKS)

# --- 1500-1599: traffic through this host (gateway) ---------------------------
_add(1500, "transit-nd", DROP, "link-local ND is never forwarded",
     f"{DRAFT} §6 role 'Link Local'; RFC 4890 §4.3.3", types=ND, hooks=TRANSIT_HOOKS)
_add(1501, "transit-link-scope", DROP, "MLD, IND, SEND and MRD are never forwarded",
     "RFC 4890 §4.3.3", types=LINK_SCOPE_OTHER, hooks=TRANSIT_HOOKS)
for _p, _n, _type, _msg, _rfc in (
    (1510, "transit-destination-unreachable", 1, "Dest Unreachable", "§4.3.1"),
    (1511, "transit-packet-too-big", 2, "Packet Too Big", "§4.3.1"),
    (1512, "transit-time-exceeded", 3, "Time Exceeded", "§4.3.1, §4.3.2"),
    (1513, "transit-parameter-problem", 4, "Parameter Problem", "§4.3.1, §4.3.2"),
    (1514, "transit-echo-request", 128, "Echo Request", "§4.3.1"),
    (1515, "transit-echo-reply", 129, "Echo Reply", "§4.3.1"),
):
    _add(_p, _n, PROTECT, "forwarded through the tunnel of the traffic it belongs to",
         f"{_row(_msg)}; {DRAFT} §4.2; RFC 4890 {_rfc}", types=_t(_type), hooks=TRANSIT_HOOKS)
_add(1516, "transit-router-renumbering", DROP, "not forwarded unless a site needs it",
     f"RFC 4890 §4.3.5; {_row('Router Renumbering')} (endpoints)",
     types=_t(138), hooks=TRANSIT_HOOKS)
_add(1520, "transit-mobile-ipv6", PROTECT, "forwarded for home agents and mobile nodes",
     "RFC 4890 §4.3.2", types=MOBILE_IPV6, hooks=TRANSIT_HOOKS)
_add(1521, "transit-unassigned-errors", PROTECT, "chosen: forwarded like known errors",
     "RFC 4890 §4.3.4 (policy to define); RFC 4443 §2.4 (b)",
     types=UNASSIGNED_ERRORS, hooks=TRANSIT_HOOKS)
_add(1530, "transit-node-information", DROP, "Node Information is not forwarded",
     "RFC 4890 §4.3.5", types=_t(139, 140), hooks=TRANSIT_HOOKS)
_add(1531, "transit-experimental", DROP, "private experimentation types",
     "RFC 4890 §4.3.5", types=EXPERIMENTAL, hooks=TRANSIT_HOOKS)
_add(1532, "transit-reserved", DROP, "reserved type 0 and the expansion types 127 and 255",
     "RFC 4890 §4.3.5", types=RESERVED, hooks=TRANSIT_HOOKS)
_add(1533, "transit-unassigned-informational", DROP, "chosen: unknown informational is dropped",
     "RFC 4890 §4.3.4 (policy to define); RFC 4443 §2.4 (b)",
     types=UNASSIGNED_INFO, hooks=TRANSIT_HOOKS)
_add(1534, "transit-seamoby", DROP, "chosen: experimental Seamoby is dropped",
     "RFC 4890 §4.3.4 (policy to define); RFC 4065", types=_t(150), hooks=TRANSIT_HOOKS)

# --- 1900: what carries no ICMPv6 header to judge -----------------------------
_add(1900, "non-first-fragment", ACCEPT,
     "a non-first fragment carries no ICMPv6 header; its first fragment was judged",
     "RFC 8200 §4.5; RFC 7112 §5", frag=frozenset({"non_first"}))

DEFAULT_RULES: tuple[Rule, ...] = tuple(
    Rule(name=n, priority=p, origin=Origin.DEFAULT, match=m, verdict=v,
         description=d, citation=c, file="<defaults>", index=i,
         hardening=HARDENING_BAND[0] <= p <= HARDENING_BAND[1])
    for i, (p, n, v, d, c, m) in enumerate(_SPECS)
)

