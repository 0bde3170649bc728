# SPDX-License-Identifier: MIT
"""The door to native/icmp6.h: the C parser and the rule-table matcher.

Rule 1: only shim.bindings imports the cffi module shim._icmp6; its untyped
`ffi`/`lib` objects stay in this package, and everything leaving is a typed
value (PacketView, int, list[int]).
Rule 2: nothing here allocates per packet on the hot path: a NativeTable
owns its C rule array, hit counters and one scratch icmp6_view, and keeps
every cffi object alive for as long as the table lives.

A NativeTable is not thread-safe: cffi releases the GIL during the C call,
and the scratch view and counters are shared. Use one table per thread.
"""

from __future__ import annotations

import dataclasses
import functools
import ipaddress
import os
import struct
import time
from collections.abc import Sequence
from typing import Any

from shim._icmp6 import ffi, lib
from shim.core.model import (
    ADDR_CLASSES,
    FRAG_STATUSES,
    MALFORMED_FLAGS,
    ND_CHECKS,
    NativeRule,
    PacketView,
)

__all__ = ["CLASSIFIER_MAX_BYTES", "DEFAULT_EXT_LIMIT", "EXT_MAX", "FATE_HOW", "FATE_TTL",
           "NativeTable", "TableTooLarge", "U32", "is_non_icmpv6", "parse"]

DEFAULT_EXT_LIMIT = 16
EXT_MAX: int = int(lib.ICMP6_EXT_MAX)
_SCOPE_NONE: int = int(lib.ICMP6_MCAST_SCOPE_NONE)
_ABSENT: int = int(lib.ICMP6_ADDR_ABSENT)
_FRAG_NONE: int = int(lib.ICMP6_FRAG_NONE)
U32 = 0xFFFFFFFF
FATE_TTL = 60  # seconds: the kernel's reassembly timeout (ip6frag_time), so no datagram outlives it
# Memory one table's compiled classifier may hold (native/classify.h). 10,000 realistic
# rules need a few MiB; a table shaped so that it would need more is refused, not built.
CLASSIFIER_MAX_BYTES = 256 << 20
# Index = enum icmp6_fate_how.
FATE_HOW: tuple[str, ...] = ("none", "stored", "followed", "unknown")


def _names(bits: int, table: tuple[tuple[int, str], ...]) -> tuple[str, ...]:
    """Names of the set bits, in table order."""
    return tuple(name for bit, name in table if bits & bit) if bits else ()


_CODES = {"uint8_t": "B", "int8_t": "b", "uint16_t": "H", "int16_t": "h",
          "uint32_t": "I", "int32_t": "i", "uint64_t": "Q", "int64_t": "q"}


def _layout(ctype: Any) -> tuple[struct.Struct, tuple[str, ...]]:
    """A struct.Struct reading every field of a C struct in one call.

    Built from cffi's own offsets, so it follows the compiler's layout;
    reading the view this way costs one call instead of ~25 cdata lookups.
    """
    fmt, names, pos = "=", [], 0
    for name, field in ctype.fields:
        fmt += "x" * (field.offset - pos)
        if field.type.kind == "array":
            fmt += f"{field.type.length}s"
        else:
            fmt += _CODES[field.type.cname]
        names.append(name)
        pos = field.offset + ffi.sizeof(field.type)
    fmt += "x" * (ffi.sizeof(ctype) - pos)
    return struct.Struct(fmt), tuple(names)


_VIEW, _VIEW_FIELDS = _layout(ffi.typeof("struct icmp6_view"))
_VIEW_SIZE: int = int(ffi.sizeof("struct icmp6_view"))


@functools.lru_cache(maxsize=4096)
def _addr_text(raw: bytes) -> str:
    """Compressed text of a 16-octet address; cached, traffic repeats addresses."""
    return ipaddress.IPv6Address(raw).compressed


def _view(raw: bytes, size: int) -> PacketView:
    """Convert the octets of a filled struct icmp6_view (parsed from `size` octets)."""
    f = dict(zip(_VIEW_FIELDS, _VIEW.unpack(raw)))
    has_header = size >= 40
    fragmented = f["frag_status"] != _FRAG_NONE
    upper, icmp_type, icmp_code = f["upper_layer"], f["icmpv6_type"], f["icmpv6_code"]
    nd_valid, mtu = f["nd_valid"], f["mtu"]
    return PacketView(
        version=f["version"] if size >= 1 else None,
        payload_length=f["payload_length"] if has_header else None,
        hop_limit=f["hop_limit"] if has_header else None,
        src=None if f["src_class"] == _ABSENT else _addr_text(f["src"]),
        dst=None if f["dst_class"] == _ABSENT else _addr_text(f["dst"]),
        src_class=ADDR_CLASSES[f["src_class"]],
        dst_class=ADDR_CLASSES[f["dst_class"]],
        src_mcast_scope=None if f["src_mcast_scope"] == _SCOPE_NONE else f["src_mcast_scope"],
        dst_mcast_scope=None if f["dst_mcast_scope"] == _SCOPE_NONE else f["dst_mcast_scope"],
        ext_headers=tuple(f["ext"][: f["n_ext"]]),
        upper_layer=None if upper < 0 else upper,
        upper_layer_offset=None if upper < 0 else f["upper_layer_offset"],
        chain_complete=bool(f["chain_complete"]),
        frag_status=FRAG_STATUSES[f["frag_status"]],
        frag_offset=f["frag_offset"] if fragmented else None,
        frag_more=bool(f["frag_more"]) if fragmented else None,
        frag_id=f["frag_id"] if fragmented else None,
        frag_next_header=f["frag_next"] if fragmented else None,
        icmpv6_type=None if icmp_type < 0 else icmp_type,
        icmpv6_code=None if icmp_code < 0 else icmp_code,
        icmpv6_length=f["icmpv6_length"],
        nd_valid=None if nd_valid < 0 else bool(nd_valid),
        nd_failed=_names(f["nd_failed"], ND_CHECKS),
        mtu=None if mtu < 0 else mtu,
        malformed=_names(f["malformed"], MALFORMED_FLAGS),
    )


def parse(data: bytes | bytearray | memoryview,
          ext_limit: int = DEFAULT_EXT_LIMIT) -> PacketView:
    """Parse one IPv6 packet (octet 0 = IPv6 header) with the C parser.

    Args:
        data: the packet as NFQUEUE hands it over (possibly cut short).
        ext_limit: most extension headers to walk; clamped to 1..EXT_MAX.

    Returns:
        The PacketView; problems are reported in its `malformed` field.

    Raises:
        Nothing for any bytes-like data (bytearray, memoryview are copied).
    """
    if type(data) is not bytes:
        data = bytes(data)  # cffi passes only bytes as uint8_t * without a copy
    v = ffi.new("struct icmp6_view *")
    lib.icmp6_parse(data, len(data), max(0, min(ext_limit, U32)), v)
    return _view(ffi.buffer(v, _VIEW_SIZE)[:], len(data))


def is_non_icmpv6(view_bytes: bytes, ext_limit: int = DEFAULT_EXT_LIMIT) -> bool:
    """Whether the C parser calls the packet complete non-ICMPv6 traffic (icmp6_is_non_icmpv6)."""
    v = ffi.new("struct icmp6_view *")
    lib.icmp6_parse(view_bytes, len(view_bytes), max(0, min(ext_limit, U32)), v)
    return bool(lib.icmp6_is_non_icmpv6(v))


class TableTooLarge(ValueError):
    """The rules' compiled classifier would need more memory than its limit."""


def _bitset(values: frozenset[int] | None, what: str) -> list[int]:
    """The 4 x 64-bit set of a type or code set; None is every value."""
    if values is None:
        return [(1 << 64) - 1] * 4
    words = [0, 0, 0, 0]
    for value in values:
        if not 0 <= value <= 255:
            raise ValueError(f"ICMPv6 {what} {value} is outside 0..255")
        words[value >> 6] |= 1 << (value & 63)
    return words


# NativeRule fields copied as they are; the others are written by _fill_rule itself. Derived,
# so a new field is copied (or, with no C field of its name, fails loudly at table build).
_PLAIN_FIELDS = tuple(f.name for f in dataclasses.fields(NativeRule) if f.name not in {
    "types", "codes", "src_prefix", "dst_prefix", "nd_valid", "mtu_min", "mtu_max"})


def _fill_rule(c: Any, rule: NativeRule) -> None:
    """Write one NativeRule into a zeroed struct icmp6_rule."""
    for name, allowed in (("chain_complete", (-1, 0, 1)), ("malformed", (-1, 0, 1)),
                          ("nd_valid", (None, 0, 1))):
        if getattr(rule, name) not in allowed:
            raise ValueError(f"{name} must be one of {allowed}, not {getattr(rule, name)!r}")
    need = 0
    need |= lib.ICMP6_NEED_TYPE if rule.types is not None else 0
    need |= lib.ICMP6_NEED_CODE if rule.codes is not None else 0
    c.types = _bitset(rule.types, "type")
    c.codes = _bitset(rule.codes, "code")
    for name in _PLAIN_FIELDS:
        setattr(c, name, getattr(rule, name))  # cffi raises OverflowError when out of range
    for name in ("src_prefix", "dst_prefix"):
        prefix = getattr(rule, name)
        if len(prefix) != 16:
            raise ValueError(f"{name} must be 16 octets, not {len(prefix)}")
        ffi.memmove(getattr(c, name), prefix, 16)
    if rule.nd_valid is not None:
        need |= lib.ICMP6_NEED_ND
        c.nd_valid = rule.nd_valid
    if rule.mtu_min is not None or rule.mtu_max is not None:
        need |= lib.ICMP6_NEED_MTU
        c.mtu_min = 0 if rule.mtu_min is None else rule.mtu_min
        c.mtu_max = U32 if rule.mtu_max is None else rule.mtu_max
    c.need = need


class NativeTable:
    """A compiled rule table for the C walk: first match wins.

    Invariant: the cffi objects the C table points at (rules, hits) are
    attributes of self, so they outlive every call.
    """

    __slots__ = (
        "_cand",
        "_cand_off",
        "_classify",
        "_cls",
        "_fate",
        "_fate_slots",
        "_hits",
        "_matches",
        "_n",
        "_rules",
        "_scratch",
        "_table",
        "_type_hits",
    )

    def __init__(self, rules: Sequence[NativeRule], type_role: bytes, type_ike: bytes,
                 ext_limit: int, *, fate_slots: int = 0, fate_ttl: int = FATE_TTL,
                 compiled: bool = True, max_bytes: int = CLASSIFIER_MAX_BYTES) -> None:
        """Build the C table.

        Index n_rules is "no rule matched", n_rules + 1 "not ICMPv6": complete
        traffic of another protocol never meets a rule, since rules are written
        for ICMPv6 (a rule naming only a source must not drop fragmented UDP).

        Args:
            rules: in evaluation order.
            type_role: 256 octets, enum icmp6_role bit per ICMPv6 type.
            type_ike: 256 octets, enum icmp6_ike bit per ICMPv6 type.
            ext_limit: passed to the parser; clamped by C to 1..EXT_MAX.
            fate_slots: datagrams the fragment fate table remembers (0: none, so
                every non-first fragment is walked like any packet).
            fate_ttl: seconds a remembered datagram is followed.
            compiled: build the compiled classifier (native/classify.h); False keeps
                the plain walk, the reference it is tested against.
            max_bytes: memory the compiled classifier may hold.

        Raises:
            TableTooLarge: the compiled classifier would need more than max_bytes.
            ValueError: a table is not 256 octets or a rule field is out of range.
            OverflowError: a rule field does not fit its C type.
        """
        if len(type_role) != 256 or len(type_ike) != 256:
            raise ValueError("type_role and type_ike must be 256 octets each")
        if not 0 <= ext_limit <= U32:
            raise ValueError(f"ext_limit {ext_limit} is outside 0..2**32-1")
        self._n = len(rules)
        self._rules = ffi.new("struct icmp6_rule[]", max(self._n, 1))
        for i, rule in enumerate(rules):
            _fill_rule(self._rules[i], rule)
        if not 0 <= fate_slots <= 1 << 20:
            raise ValueError(f"fate_slots {fate_slots} is outside 0..{1 << 20}")
        if not 0 <= fate_ttl <= U32:
            raise ValueError(f"fate_ttl {fate_ttl} is outside 0..2**32-1")
        self._hits = ffi.new("uint64_t[]", self._n + 2)
        self._type_hits = ffi.new("uint64_t[]", 256)
        self._table = ffi.new("struct icmp6_table *")
        self._table.n_rules = self._n
        self._table.rules = self._rules
        self._table.type_role = type_role
        self._table.type_ike = type_ike
        self._table.ext_limit = ext_limit
        self._table.hits = self._hits
        self._table.type_hits = self._type_hits
        self._table.non_icmpv6 = 1
        # The fate table lives as long as this table: the decisions it remembers are
        # indexes into this table, so a reload starts with an empty one.
        self._fate_slots = ffi.new("struct icmp6_fate_entry[]", max(fate_slots, 1))
        self._fate = ffi.new("struct icmp6_fate *") if fate_slots else None
        if self._fate is not None:
            self._fate.slots, self._fate.n_slots = self._fate_slots, fate_slots
            self._fate.ttl = fate_ttl
            self._fate.seed = int.from_bytes(os.urandom(4), "little")
            self._fate.now = int(time.monotonic())
            self._table.fate = self._fate
        # Per-type candidate lists: a packet visits only the rules its type can match,
        # so the walk costs what its type's rules cost, not what the whole table does.
        cap = 257 * self._n + 1
        self._cand_off = ffi.new("uint32_t[]", 258)
        self._cand = ffi.new("uint32_t[]", cap)
        used = lib.icmp6_index_candidates(self._table, self._cand_off, self._cand, cap)
        if used or self._n == 0:
            self._table.cand_off = self._cand_off
            self._table.cand = self._cand
            self._table.n_cand = used
        self._cls = self._build_classifier(max_bytes) if compiled else None
        if self._cls is not None:
            self._table.cls = self._cls
        self._scratch = ffi.new("struct icmp6_view *")
        self._classify = lib.icmp6_classify
        self._matches = lib.icmp6_rule_matches

    def _build_classifier(self, max_bytes: int) -> Any:
        """Build the compiled classifier of this table's rules, freed with the table."""
        out = ffi.new("struct icmp6_cls **")
        status = lib.icmp6_cls_build(self._table, max(0, min(max_bytes, (1 << 64) - 1)), out)
        if status == lib.ICMP6_CLS_TOO_LARGE:
            raise TableTooLarge(f"{self._n} rules need a compiled classifier larger than "
                                f"{max_bytes >> 20} MiB")
        if status == lib.ICMP6_CLS_NOMEM:
            raise MemoryError("out of memory building the compiled classifier")
        if status != lib.ICMP6_CLS_OK:
            raise ValueError(f"icmp6_cls_build refused the table (status {status})")
        return ffi.gc(out[0], lib.icmp6_cls_free)

    def classifier_stats(self) -> dict[str, int]:
        """What the compiled classifier holds (struct icmp6_cls_stats); zeros without one."""
        s = ffi.new("struct icmp6_cls_stats *")
        lib.icmp6_cls_stats(self._cls if self._cls is not None else ffi.NULL, s)
        return {name: int(getattr(s, name)) for name, _ in ffi.typeof(s[0]).fields}

    def classifier_build_cpu(self, repeat: int) -> list[float]:
        """CPU seconds of `repeat` fresh builds of this table's classifier (for the benchmark).

        Each build is icmp6_cls_build alone on this table's rules, timed with the process's
        CPU clock and freed at once: the Python-side table fill and the candidate lists are
        not in it, and neither is time the process spends descheduled on a busy host.
        The table's own classifier (if any) is not touched.

        Raises:
            ValueError: repeat < 1, or the build refused the table.
        """
        if repeat < 1:
            raise ValueError("repeat must be at least 1")
        out = ffi.new("struct icmp6_cls **")
        seconds = []
        for _ in range(repeat):
            t0 = time.process_time()
            status = lib.icmp6_cls_build(self._table, (1 << 64) - 1, out)
            seconds.append(time.process_time() - t0)
            if status != lib.ICMP6_CLS_OK:
                raise ValueError(f"icmp6_cls_build refused the table (status {status})")
            lib.icmp6_cls_free(out[0])
        return seconds

    @property
    def compiled(self) -> bool:
        """Whether classify() uses the compiled classifier (else the plain walk)."""
        return self._cls is not None

    @property
    def c_table(self) -> Any:
        """The struct icmp6_table, for shim.bindings.engine's pump (cffi stays in bindings)."""
        return self._table

    @property
    def n_rules(self) -> int:
        """Number of rules; classify() returns it when none matches."""
        return self._n

    def classify(self, data: bytes, hook: int, indev: int, outdev: int) -> int:
        """Index of the first rule matching the packet, or n_rules; counts the hit.

        The hot path: one C call, which also counts the rule and ICMPv6 type hits.
        """
        if self._fate is not None:
            self._fate.now = int(time.monotonic())  # the batched engine sets it once per pump
        index: int = self._classify(self._table, data, len(data), hook, indev, outdev,
                                    self._scratch)
        return index

    def all_matches(self, data: bytes, hook: int, indev: int, outdev: int) -> list[int]:
        """Indexes of every rule matching the packet (for `explain`); counts nothing."""
        lib.icmp6_parse(data, len(data), self._table.ext_limit, self._scratch)
        return [i for i in range(self._n)
                if self._matches(self._table, self._rules + i, self._scratch, hook, indev, outdev)]

    def matches(self, index: int, data: bytes, hook: int, indev: int, outdev: int) -> bool:
        """Whether rule `index` matches the packet; counts nothing.

        Raises:
            IndexError: index is not a rule index.
        """
        if not 0 <= index < self._n:
            raise IndexError(f"rule index {index} is outside 0..{self._n - 1}")
        lib.icmp6_parse(data, len(data), self._table.ext_limit, self._scratch)
        return bool(self._matches(self._table, self._rules + index, self._scratch, hook,
                                  indev, outdev))

    def view(self, data: bytes) -> PacketView:
        """The packet as this table's parser (same ext_limit) sees it."""
        return parse(data, int(self._table.ext_limit))

    def hits(self) -> list[int]:
        """A copy of the hit counters: one per rule, then no-match, then non-ICMPv6."""
        return list(self._hits[0:self._n + 2])

    def fate_counters(self) -> dict[str, int]:
        """The fragment fate table's counters (zeros when it is off)."""
        f = self._fate
        if f is None:
            return {"stored": 0, "followed": 0, "unknown": 0}
        return {"stored": int(f.stored), "followed": int(f.followed), "unknown": int(f.unknown)}

    def last_fate(self) -> str:
        """What the last classify() did with a fragment: a FATE_HOW name."""
        return FATE_HOW[int(self._fate.last)] if self._fate is not None else "none"

    def type_hits(self) -> list[int]:
        """A copy of the per-ICMPv6-type counters of classify() (index = type)."""
        return list(self._type_hits[0:256])

    def reset_hits(self) -> None:
        """Zero every hit counter, per rule and per type."""
        ffi.memmove(self._hits, bytes(8 * (self._n + 2)), 8 * (self._n + 2))
        ffi.memmove(self._type_hits, bytes(8 * 256), 8 * 256)
