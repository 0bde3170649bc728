# SPDX-License-Identifier: MIT
"""Diversion adapters: the nftables or ip6tables rules that feed NFQUEUE.

One door to each foreign tool (`nft`, `ip6tables`). Invariants:
- the shim touches only what it owns: `table inet icmp6_shim_q<N>` (nft) or the
  chain ICMP6_SHIM_Q<N> (and its budget chains ICMP6_SHIM_Q<N>_IN...) in ip6tables'
  mangle table plus one jump per built-in chain, where N is the instance's first
  queue: instances on other queues in the same namespace have other names, so none
  replaces or removes another's rules;
- install() is idempotent (starting twice never duplicates a rule) and
  remove() is idempotent (removing what is not there is not an error);
- `auto` probes the running kernel with `nft --check`, which sends the rules to
  the kernel and aborts the transaction, so the probe changes nothing;
- both backends render their rule lines from one list, DIVERTED: what the
  policy must see is said once.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Protocol

from shim.adapters.drift import AHEAD_OF, JUMPS_FROM, Sections, describe, ipt_sections, nft_sections
from shim.adapters.nftlib import (NETLINK_NETFILTER, NftContext, delete_table_at, generation,
                                  library_present)
from shim.core.errors import EnvironmentProblem
from shim.core.model import Backend, Hook, Settings

__all__ = [
    "BUDGET_CLASSES",
    "DIVERTED",
    "IPT_CHAIN",
    "BudgetSpec",
    "DiversionCounters",
    "NFT_TABLE",
    "Divert",
    "Diversion",
    "IptablesDiversion",
    "NftDiversion",
    "QueueSpec",
    "budget_spec",
    "BACKENDS",
    "choose_backend",
    "cleanup_all",
    "cleanup_instance",
    "drop_empty_mangle",
]

# Name prefixes; an instance's names add its first queue (two instances never share a queue).
# The bare prefixes are the names of versions before per-instance names; `cleanup --all`
# still finds them.
NFT_TABLE = "icmp6_shim"
IPT_CHAIN = "ICMP6_SHIM"
_NFT_NAME = re.compile(rf"^{NFT_TABLE}(_q\d+)?$")
_IPT_NAME = re.compile(rf"^{IPT_CHAIN}(_Q\d+)?$")
IPT_TABLE = "mangle"  # mangle runs before filter: later filter rules and xfrm see our mark
_NFPROTO_IPV6 = 10   # the family of iptables-nft's `table ip6 mangle`
_NFT_HOOK = {h: h.name.lower() for h in Hook}
_IPT_CHAIN = {h: h.name for h in Hook}

@dataclass(frozen=True, slots=True, kw_only=True)
class Divert:
    """One line of what is diverted, in the words of both backends.

    The lines are evaluated in order; a packet leaves at the first that matches:
    into the queue, or (queue False) back to the ruleset, not diverted.
    """

    what: str
    nft: str                           # the match in nft syntax ("" = every packet)
    ipt: tuple[tuple[str, ...], ...]   # one ip6tables match per rule (() = every packet)
    queue: bool = True
    # The budget it is charged to: the class of its ICMPv6 type (plain ICMPv6), or
    # "headers", the one budget of everything diverted for its header chain.
    by_type: bool = False


# What the policy must see. The kernel's own header walk (ipv6_find_hdr, as
# `meta l4proto` and `-p` use it) cannot find the upper layer in a first fragment
# whose chain continues in the next fragment, stops at AH for nft, and knows fewer
# extension headers than the shim's parser: matching only ICMPv6 let such packets
# pass unjudged. Fragments come first: legacy ip6tables' `-p` drops ("hotdrop") a
# non-first fragment whose Fragment header names an extension header before any
# later line could queue it. Every line is for IPv6 only (the nft table is inet).
DIVERTED: tuple[Divert, ...] = (
    Divert(what="every fragment, first and non-first: the shim judges the first by its "
                "own header walk (RFC 7112) and gives the rest their datagram's decision",
           nft="exthdr frag exists", ipt=(("-m", "frag"),)),
    Divert(what="every packet with AH: nft's walk stops at AH, so ICMPv6 behind it "
                "is not 'meta l4proto ipv6-icmp'",
           nft="meta l4proto ah", ipt=(("-m", "ah"),)),
    # nft: `icmpv6 type 0-255` needs the 4-octet ICMPv6 header; ICMPv6 without one has no
    # type to charge a budget to, so it falls to the last line (the "headers" budget).
    # ip6tables' -m icmp6 drops such packets itself (hotdrop).
    Divert(what="ICMPv6 with a readable type", nft="meta l4proto ipv6-icmp icmpv6 type 0-255",
           ipt=(("-p", "ipv6-icmp"),), by_type=True),
    Divert(what="Mobility, HIP, Shim6 and the experimental 253/254: extension headers to "
                "the shim's parser (RFC 7045), upper layers to the kernel's walk",
           nft="meta l4proto { 135, 139, 140, 253, 254 }",
           ipt=tuple(("-p", str(p)) for p in (135, 139, 140, 253, 254))),
    Divert(what="any other upper layer the kernel's walk found: not diverted",
           nft="meta l4proto != ipv6-icmp", ipt=(("!", "-p", "ipv6-icmp"),), queue=False),
    Divert(what="the rest: the kernel's walk found no upper layer (meta l4proto is unset, "
                "so the line above does not match), or ICMPv6 too short for its type",
           nft="", ipt=((),)),
)


# Budget classes: (name, ICMPv6 types); None is every type the others do not name,
# () is "headers": what DIVERTED queues for its header chain rather than as plain ICMPv6
# (fragments, AH, other extension headers, failed walks), which has no type to read. ND and
# the four RFC 4443 errors get buckets of their own, so an echo or node-information flood on
# a link cannot starve that link's ND or PMTUD either, and a fragment flood none of them.
BUDGET_CLASSES: tuple[tuple[str, tuple[int, ...] | None], ...] = (
    ("nd", (133, 134, 135, 136, 137)),
    ("error", (1, 2, 3, 4)),
    ("other", None),
    ("headers", ()),
)
# Hooks whose packets are charged to the interface they came in on; the others (output,
# postrouting) to the one they leave by. A forwarded packet is charged to its ingress only,
# so a flood through the gateway cannot use up the budget of the gateway's own replies.
_IN_HOOKS = frozenset({Hook.PREROUTING, Hook.INPUT, Hook.FORWARD})


def _direction(hook: Hook) -> str:
    return "in" if hook in _IN_HOOKS else "out"


@dataclass(frozen=True, slots=True, kw_only=True)
class BudgetSpec:
    """Per-interface budgets laid before the queue rule: a flood on one link is cut in the
    kernel before it can fill the queue every link shares."""

    rates: tuple[tuple[str, int], ...]  # (class, packets per second); a class not listed has none
    verdict: str = "drop"               # over budget: "drop", or "accept" (passes unjudged, counted)
    interfaces: tuple[str, ...] = ()    # iptables: interfaces with their own bucket (empty: all at start)

    def classes(self) -> list[tuple[str, tuple[int, ...] | None, int]]:
        """(class, types, rate) of every class with a budget, in BUDGET_CLASSES order."""
        rates = dict(self.rates)
        return [(name, types, rates[name]) for name, types in BUDGET_CLASSES if rates.get(name)]


def budget_spec(settings: Settings) -> BudgetSpec | None:
    """The [overload] settings as a BudgetSpec; None when budgets are off."""
    rates = (("nd", settings.budget_nd_rate), ("error", settings.budget_error_rate),
             ("other", settings.budget_other_rate), ("headers", settings.budget_headers_rate))
    if not settings.budget or not any(rate for _n, rate in rates):
        return None
    return BudgetSpec(rates=tuple((n, r) for n, r in rates if r), verdict=settings.budget_verdict,
                      interfaces=settings.budget_interfaces)


@dataclass(frozen=True, slots=True, kw_only=True)
class DiversionCounters:
    """The kernel rule counters of a diversion: what reached the queue rule, and what each
    budget rule cut (key `class_direction`, e.g. `nd_in`), read in one call."""

    queued: int
    budget: dict[str, int] = field(default_factory=dict)
    by_interface: dict[str, int] = field(default_factory=dict)  # iptables only: `ifname_direction`


@dataclass(frozen=True, slots=True, kw_only=True)
class QueueSpec:
    """Which queues the diversion feeds, and what happens with no reader."""

    first: int
    count: int = 1
    fail_open: bool = True  # bypass: traffic flows unfiltered when no process is bound
    hooks: tuple[Hook, ...] = (Hook.INPUT, Hook.OUTPUT, Hook.FORWARD)
    priority: int = -150
    budget: BudgetSpec | None = None

    @property
    def last(self) -> int:
        return self.first + self.count - 1

    @property
    def nft_table(self) -> str:
        return nft_table_name(self.first)

    @property
    def ipt_chain(self) -> str:
        return ipt_chain_name(self.first)


def nft_table_name(first_queue: int) -> str:
    """The nft table of the instance whose queues start at `first_queue`."""
    return f"{NFT_TABLE}_q{first_queue}"


def ipt_chain_name(first_queue: int) -> str:
    """The ip6tables chain of that instance (17 characters at most; its budget chains add
    at most 10 more: the limit is 28)."""
    return f"{IPT_CHAIN}_Q{first_queue}"


class Diversion(Protocol):
    """What the service needs of a backend."""

    name: str

    def probe(self) -> str | None: ...

    def install(self) -> None: ...

    def remove(self) -> None: ...

    def render(self) -> str: ...

    def counters(self) -> DiversionCounters | None: ...

    def verify(self) -> str | None: ...

    def restore(self) -> None: ...


def _run(argv: list[str], *, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired as exc:
        raise EnvironmentProblem(f"{argv[0]} did not answer within 30 s") from exc
    except FileNotFoundError as exc:
        raise EnvironmentProblem(
            f"{argv[0]} is not installed; install the Debian package "
            f"'{'nftables' if argv[0] == 'nft' else 'iptables'}'"
        ) from exc


def _fail(what: str, proc: subprocess.CompletedProcess[str]) -> EnvironmentProblem:
    detail = (proc.stderr or proc.stdout).strip().splitlines()
    first = detail[0] if detail else f"exit status {proc.returncode}"
    for line in detail:
        if "Error" in line or "error" in line or "Operation not permitted" in line:
            first = line.strip()
            break
    return EnvironmentProblem(f"{what}: {first}")


class NftDiversion:
    """`table inet icmp6_shim_q<N>`, a base chain per hook, one queue rule each."""

    name = "nft"

    def __init__(self, spec: QueueSpec) -> None:
        self.spec = spec
        self._nft: NftContext | None = None       # made by install(), held until remove()
        self._installed = False
        self._baseline: Sections | None = None    # our table as listed right after install
        self._verified: int | None = None         # the ruleset generation last found intact
        self._gen_sock: socket.socket | None = None

    def _queue_stmt(self) -> str:
        s = self.spec
        # A range without `fanout` spreads by a hash of the flow, as --queue-balance does;
        # `fanout` would pick the queue by CPU.
        target = f"{s.first}" if s.count == 1 else f"{s.first}-{s.last}"
        # The counter tells how many packets reached the queue: with what the shim judged and
        # the kernel dropped, it bounds the accepts the kernel's fail-open made unseen.
        return f"counter queue num {target}" + (" bypass" if s.fail_open else "")

    def _budget_sets(self) -> list[str]:
        b = self.spec.budget
        if b is None:
            return []
        directions = sorted({_direction(h) for h in self.spec.hooks})
        # Dynamic sets keyed by interface index: a bucket per interface, made on first use, so
        # interfaces that appear later get their own; the timeout forgets vanished ones.
        return [f"  set budget_{name}_{d} {{ type iface_index; flags dynamic, timeout; "
                f"timeout 60s; size 4096; }}" for name, _t, _r in b.classes() for d in directions]

    def _budget_rules(self, hook: Hook, line: Divert) -> list[str]:
        """The budget rules in front of one DIVERTED queue line, with that line's match:
        by ICMPv6 type for plain ICMPv6, the "headers" budget for the rest."""
        b = self.spec.budget
        if b is None:
            return []
        d = _direction(hook)
        key = "iif" if d == "in" else "oif"
        named = sorted(t for _n, types in BUDGET_CLASSES if types for t in types)
        lines = []
        for name, types, rate in b.classes():
            if line.by_type != (types != ()):
                continue
            test = ("" if types == () else "icmpv6 type { " + ", ".join(map(str, types)) + " }"
                    if types is not None else "icmpv6 type != { " + ", ".join(map(str, named)) + " }")
            lines.append(" ".join(filter(None, (
                "meta nfproto ipv6", line.nft, test, f"update @budget_{name}_{d}",
                f"{{ {key} limit rate over {rate}/second burst {rate} packets }}",
                f"counter {b.verdict} comment \"budget {name} {d}\""))))
        return lines

    def rule_lines(self, hook: Hook, queue: str | None = None) -> list[str]:
        """The rules of one hook's chain: DIVERTED's lines, each queue line preceded by the
        budget lines of the packets it queues.

        Args:
            queue: a statement in place of the queue statement (e.g. "counter", so
                `nft --check` can validate the matches on a kernel without `queue`).
        """
        stmt = queue if queue is not None else self._queue_stmt()
        lines = []
        for d in DIVERTED:
            if d.queue:
                lines += self._budget_rules(hook, d)
            lines.append(" ".join(filter(None, ("meta nfproto ipv6", d.nft,
                                                stmt if d.queue else "return"))))
        return lines

    def render(self, queue: str | None = None, *, prefix: str | None = None,
               table: str | None = None) -> str:
        """The ruleset as `nft -f` input; replaces any earlier copy atomically.

        With fail_open the table carries `flags owner`: it belongs to the netlink socket
        that created it, so another process's `flush ruleset` skips it, and the kernel
        deletes it when that socket closes (the daemon's end; with bypass, traffic then
        flows unjudged as it would anyway). Fail-closed must outlive the daemon, so no
        owner: a flush removes it and verify() lays it again.

        Args:
            queue: see rule_lines; None renders what install() installs.
            prefix: what precedes the table (default: make it exist, delete it).
            table: the table's name in place of ours (the probe's).
        """
        table = table or self.spec.nft_table
        if prefix is None:
            prefix = f"table inet {table} {{\n}}\ndelete table inet {table}\n"
        lines = [*prefix.splitlines(), f"table inet {table} {{",
                 *(["  flags owner;"] if self.owned else []), *self._budget_sets()]
        for hook in self.spec.hooks:
            lines += [
                f"  chain {_NFT_HOOK[hook]} {{",
                f"    type filter hook {_NFT_HOOK[hook]} priority {self.spec.priority}; policy accept;",
                *(f"    {rule}" for rule in self.rule_lines(hook, queue)),
                "  }",
            ]
        lines.append("}")
        return "\n".join(lines) + "\n"

    def probe(self) -> str | None:
        """None if the kernel accepts our ruleset, else the reason it does not."""
        if shutil.which("nft") is None:
            return "nft is not installed"
        missing = library_present()
        if missing is not None:
            return missing
        # A name of its own: our table may be another instance's, owned by its socket, and
        # the kernel refuses any other process a change to it even in a check ("Operation
        # not permitted"). That instance is then found where it belongs: at the queue bind.
        probe = f"{self.spec.nft_table}_probe"
        proc = _run(["nft", "--check", "-f", "-"], stdin=self.render(table=probe))
        if proc.returncode == 0:
            return None
        msg = proc.stderr.strip().splitlines()
        return msg[0] if msg else f"nft --check exit status {proc.returncode}"

    def install(self) -> None:
        """Lay the table through our own libnftables context (one transaction, replacing
        any earlier copy), then take the baseline verify() compares with.

        Raises:
            EnvironmentProblem: libnftables is missing or the kernel refused the ruleset.
        """
        if self._nft is None or not self._nft.open:
            self._nft = NftContext()
        body = self.render(prefix="")
        # The line that makes `delete` safe must match the existing table's owner flag (the
        # kernel cannot change it): ours from an earlier install, or a fail-closed leftover.
        table = self.spec.nft_table
        forms = [f"table inet {table} {{ flags owner; }}\n", f"table inet {table} {{ }}\n"]
        if not (self._installed and self.owned):
            forms.reverse()
        error: EnvironmentProblem | None = None
        for first in forms:
            try:
                self._nft.run(f"{first}delete table inet {table}\n{body}")
                break
            except EnvironmentProblem as exc:
                error = exc
        else:
            assert error is not None
            raise EnvironmentProblem(f"installing the nft diversion failed: {error}")
        self._installed = True
        self._verified = None
        self._baseline = nft_sections(self._nft.run(f"list table inet {table}"))
        self._gen_sock = self._gen_sock or _generation_socket()

    def remove(self) -> None:
        """Delete our table; with `flags owner` only our own context can, so it does.

        Raises:
            EnvironmentProblem: the table is still there afterwards (the stop then says so
                instead of "removed": with fail_open = false it would drop what it diverts).
        """
        table = self.spec.nft_table
        error: str | None = None
        if self._nft is None or not self._nft.open:
            error = _remove_nft_table(table)
        else:
            for first in (f"table inet {table} {{ flags owner; }}\n", f"table inet {table} {{ }}\n"):
                try:
                    self._nft.run(f"{first}delete table inet {table}\n")
                    error = None
                    break
                except EnvironmentProblem as exc:
                    error = str(exc)
            self._nft.close()  # an owned table goes with our socket in any case
        self._installed = False
        self._baseline = None
        if self._gen_sock is not None:
            self._gen_sock.close()
            self._gen_sock = None
        if error is not None and _run(["nft", "list", "table", "inet", table]).returncode == 0:
            raise EnvironmentProblem(f"removing nft table inet {table} failed: {error}")

    @property
    def owned(self) -> bool:
        """Whether the table carries `flags owner` (fail-open only: see render)."""
        return self.spec.fail_open

    def verify(self) -> str | None:
        """None while the table is as installed; else what was found instead.

        Cheap when nothing changed: one NFT_MSG_GETGEN on a socket kept open; the table is
        listed only when the ruleset generation moved since the last good check.

        Raises:
            OSError: the generation could not be read.
        """
        if self._baseline is None or self._nft is None:
            return None
        gen = generation(self._gen_sock)
        if gen == self._verified:
            return None
        table = self.spec.nft_table
        try:
            actual: dict[str, tuple[str, ...]] | None = nft_sections(
                self._nft.run(f"list table inet {table}"))
        except EnvironmentProblem as exc:
            if "No such file" not in str(exc):
                raise
            actual = None
        found = describe(self._baseline, actual, f"table inet {table}")
        if found is None:
            self._verified = gen
        return found

    def restore(self) -> None:
        """Install again (atomically replacing whatever is left of ours)."""
        self.install()

    def counters(self) -> DiversionCounters | None:
        """The queue and budget rule counters, from `nft -j list table`; None if unreadable."""
        proc = _run(["nft", "-j", "list", "table", "inet", self.spec.nft_table])
        if proc.returncode != 0:
            return None
        try:
            return parse_nft_counters(proc.stdout)
        except (ValueError, KeyError, TypeError):
            return None


def _generation_socket() -> socket.socket:
    """The socket verify() asks the ruleset generation on (kept: no socket per check)."""
    return socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC,
                         NETLINK_NETFILTER)


def _remove_nft_table(table: str) -> str | None:
    """Delete the table if there; None on success, else the kernel's reason."""
    # `add` then `delete` in one batch: no error whether or not the table exists.
    proc = _run(["nft", "-f", "-"], stdin=f"table inet {table} {{\n}}\ndelete table inet {table}\n")
    return None if proc.returncode == 0 else str(_fail("nft", proc)).split("Error: ", 1)[-1]


def parse_nft_counters(text: str) -> DiversionCounters:
    """Sum the counters of our queue rules and of each budget rule in `nft -j` output."""
    queued, budget = 0, dict[str, int]()
    for item in json.loads(text).get("nftables", []):
        rule = item.get("rule") if isinstance(item, dict) else None
        if not isinstance(rule, dict):
            continue
        exprs = rule.get("expr", [])
        packets = next((int(e["counter"]["packets"]) for e in exprs
                        if isinstance(e, dict) and isinstance(e.get("counter"), dict)), 0)
        comment = str(rule.get("comment", ""))
        if comment.startswith("budget "):
            _tag, name, d = comment.split()
            budget[f"{name}_{d}"] = budget.get(f"{name}_{d}", 0) + packets
        elif any(isinstance(e, dict) and "queue" in e for e in exprs):
            queued += packets
    return DiversionCounters(queued=queued, budget=budget)


class IptablesDiversion:
    """Chain ICMP6_SHIM_Q<N> in ip6tables' mangle table, jumped to from each hook's chain."""

    name = "iptables"

    def __init__(self, spec: QueueSpec, binary: str = "ip6tables") -> None:
        self.spec = spec
        self.binary = binary
        self._baseline: Sections | None = None   # our lines as listed right after install
        self._verified: int | None = None        # the ruleset generation last found intact
        self._gen_sock: socket.socket | None = None
        self._nft_based: bool | None = None      # iptables-nft (generation-gated) or legacy
        self._table_was_there: bool | None = None

    def _target(self) -> list[str]:
        s = self.spec
        args = ["-j", "NFQUEUE"]
        args += ["--queue-num", str(s.first)] if s.count == 1 else ["--queue-balance", f"{s.first}:{s.last}"]
        return args + (["--queue-bypass"] if s.fail_open else [])

    def _ipt(self, *args: str) -> subprocess.CompletedProcess[str]:
        return _run([self.binary, "-w", "5", "-t", IPT_TABLE, *args])

    def _interfaces(self) -> tuple[str, ...]:
        b = self.spec.budget
        if b is not None and b.interfaces:
            return b.interfaces[:_IPT_MAX_BUCKETS]
        # hashlimit has no per-interface mode: a bucket per interface present now; interfaces
        # that appear later share one more bucket (nft's dynamic sets have no such limit).
        return tuple(name for _i, name in sorted(socket.if_nameindex()))[:_IPT_MAX_BUCKETS]


    def _budget_args(self) -> list[list[str]]:
        """ip6tables arguments that lay the budgets: a direction chain per hook kind sorts each
        packet DIVERTED queues into its class (by ICMPv6 type, or "headers" for what is
        diverted for its header chain) and goes to that class's chain, which holds one
        hashlimit bucket per interface. Jumped to before the queue chain, so the queue only
        sees what is within budget; what DIVERTED does not queue returns at once."""
        b = self.spec.budget
        if b is None:
            return []
        limited = {name: rate for name, _types, rate in b.classes()}
        target = "ACCEPT" if b.verdict == "accept" else "DROP"
        ifaces = self._interfaces()
        out: list[list[str]] = []
        for d in sorted({_direction(h) for h in self.spec.hooks}):
            chain, flag = f"{self.spec.ipt_chain}_{d.upper()}", "-i" if d == "in" else "-o"
            out.append(["-N", chain])
            for name, rate in limited.items():
                cls = f"{chain}_{_tag(name)}"
                out.append(["-N", cls])
                limit = ["-m", "hashlimit", "--hashlimit-above", f"{rate}/sec",
                         "--hashlimit-burst", str(rate)]
                # The rate is in the name: hashlimit keeps one kernel table per name, and a
                # rule laid in the same transaction that deletes the old one (ipt_script)
                # joins the old table, old rate included. At most 15 characters:
                # i6s65535ni63 + 3 hex digits.
                tag = f"i6s{self.spec.first}{name[0]}{d[0]}{zlib.crc32(str(rate).encode()) & 0xfff:03x}"
                for i, ifname in enumerate(ifaces):
                    out.append(["-A", cls, flag, ifname, *limit, "--hashlimit-name", f"{tag}{i}",
                                "-j", target])
                    out.append(["-A", cls, flag, ifname, "-j", "RETURN"])
                out.append(["-A", cls, *limit, "--hashlimit-name", f"{tag}x", "-j", target])

            def to(name: str) -> list[str]:
                # -g, not -j: the class chain's end returns past the direction chain's jump,
                # so a packet is charged to exactly one class; a class without a budget
                # returns at once (its packets must not fall into a later class either).
                return ["-g", f"{chain}_{_tag(name)}"] if name in limited else ["-j", "RETURN"]

            # In DIVERTED's order, so a packet is sorted by the line that would queue it
            # (a fragmented echo request is charged to "headers", as it is queued for that).
            for line in DIVERTED:
                for match in line.ipt:
                    if not line.queue:
                        out.append(["-A", chain, *match, "-j", "RETURN"])
                    elif not line.by_type:
                        out.append(["-A", chain, *match, *to("headers")])
                    else:
                        for name, types in BUDGET_CLASSES:
                            if types:
                                out += [["-A", chain, *match, "-m", "icmp6", "--icmpv6-type",
                                         str(t), *to(name)] for t in types]
                            elif types is None:
                                out.append(["-A", chain, *match, *to(name)])
        out += [["-I", _IPT_CHAIN[h], "1", "-j", f"{self.spec.ipt_chain}_{_direction(h).upper()}"]
                for h in self.spec.hooks]
        return out

    def rules(self) -> list[list[str]]:
        """The rules of the chain, from DIVERTED, as ip6tables -A arguments."""
        chain = self.spec.ipt_chain
        return [["-A", chain, *match, *(self._target() if d.queue else ["-j", "RETURN"])]
                for d in DIVERTED for match in d.ipt]

    def _commands(self) -> list[list[str]]:
        """What install() lays, in order (replacing any earlier copy, see ipt_script): the
        chain, its jumps, then the budgets, whose jumps go in front of the chain's."""
        chain = self.spec.ipt_chain
        return [["-N", chain], *self.rules(),
                *(["-I", _IPT_CHAIN[h], "1", "-j", chain] for h in self.spec.hooks),
                *self._budget_args()]

    def render(self) -> str:
        return "".join(f"{self.binary} -t {IPT_TABLE} {' '.join(args)}\n"
                       for args in self._commands())

    def probe(self) -> str | None:
        if shutil.which(self.binary) is None:
            return f"{self.binary} is not installed"
        return None

    def install(self) -> None:
        """Lay our chains and jumps in one `ip6tables-restore --noflush` transaction that
        also replaces any earlier copy: no moment without a diversion (a restore after a
        partial flush keeps what survived until the new copy is in), nothing half-laid if
        the kernel refuses a line.

        Raises:
            EnvironmentProblem: the table could not be read or the kernel refused the batch.
        """
        if self._table_was_there is None:
            # iptables-nft makes `table ip6 mangle` (all its base chains) on first use: if it
            # was not there before us, it is ours to remove once it is empty again.
            self._table_was_there = self._mangle_exists()
        self._restore(ipt_script(self._save(), self.spec.ipt_chain, self._commands()),
                      "installing the ip6tables diversion failed")
        self._verified = None
        self._baseline = self._sections()
        if self.nft_based() and self._gen_sock is None:
            self._gen_sock = _generation_socket()  # opened at start: the check holds it for life

    def _save(self) -> str:
        proc = _run([f"{self.binary}-save", "-t", IPT_TABLE])
        if proc.returncode != 0:
            raise _fail(f"{self.binary}-save failed", proc)
        return proc.stdout

    def _restore(self, script: str, what: str) -> None:
        proc = _run([f"{self.binary}-restore", "-w", "5", "--noflush"], stdin=script)
        if proc.returncode != 0:
            raise _fail(what, proc)

    def remove(self) -> None:
        """Delete our chains and jumps, and the mangle table if we made it and it is empty.

        Raises:
            EnvironmentProblem: they could not be removed (see NftDiversion.remove).
        """
        try:
            self.remove_chain(self.spec.ipt_chain)
        finally:
            self._baseline = None
            if self._gen_sock is not None:
                self._gen_sock.close()
                self._gen_sock = None
        if self._table_was_there is False:
            drop_empty_mangle()

    def _mangle_exists(self) -> bool:
        """Whether iptables-nft's `table ip6 mangle` exists (legacy: always, the kernel's)."""
        if not self.nft_based() or shutil.which("nft") is None:
            return True
        return _run(["nft", "list", "table", "ip6", IPT_TABLE]).returncode == 0

    def nft_based(self) -> bool:
        """iptables-nft (its changes are nf_tables transactions) rather than legacy."""
        if self._nft_based is None:
            proc = _run([self.binary, "-V"])
            self._nft_based = "nf_tables" in proc.stdout
        return self._nft_based

    def _sections(self) -> dict[str, tuple[str, ...]]:
        return ipt_sections(self._save(), self.spec.ipt_chain)

    def verify(self) -> str | None:
        """None while our chains and jumps are as installed; else what was found instead.

        With iptables-nft the listing (a fork) runs only when the ruleset generation moved;
        legacy ip6tables has no generation, so it is listed each call.

        Raises:
            OSError: the generation could not be read.
            EnvironmentProblem: the table could not be listed.
        """
        if self._baseline is None:
            return None
        gen: int | None = None
        if self.nft_based():
            gen = generation(self._gen_sock)
            if gen == self._verified:
                return None
        found = describe(self._baseline, self._sections(),
                         f"ip6tables -t {IPT_TABLE} chain {self.spec.ipt_chain}")
        if found is None:
            self._verified = gen
        return found

    def restore(self) -> None:
        """Install again: one transaction replaces what is left of ours with all of it."""
        self.install()

    def chains(self) -> list[str]:
        """The user chains of our table (`-S`), for cleanup; empty when unreadable."""
        listing = self._ipt("-S")
        return [parts[1] for parts in (line.split() for line in listing.stdout.splitlines())
                if len(parts) == 2 and parts[0] == "-N"] if listing.returncode == 0 else []

    def remove_chain(self, chain: str) -> None:
        """Delete the jumps to `chain` and to its budget chains, then those chains, in one
        transaction; nothing else is touched.

        Raises:
            EnvironmentProblem: the table could not be read or the batch was refused (then
                nothing changed).
        """
        if shutil.which(self.binary) is None:
            return
        script = ipt_script(self._save(), chain, [])
        if script:
            self._restore(script, f"removing ip6tables chain {chain} failed")

    def counters(self) -> DiversionCounters | None:
        """Queue and budget rule counters from one `ip6tables-save -c`; None if unreadable."""
        proc = _run([f"{self.binary}-save", "-c", "-t", IPT_TABLE])
        if proc.returncode != 0:
            return None
        return parse_ipt_counters(proc.stdout, self.spec.ipt_chain)


_IPT_MAX_BUCKETS = 64  # interfaces with a hashlimit bucket of their own; the rest share one


# Chain-name tags of the budget classes: ICMP6_SHIM_Q65535 (17) + _OUT_ + tag must fit
# xtables' 28 characters.
_TAGS = {"nd": "ND", "error": "ERROR", "other": "OTHER", "headers": "HDRS"}


def _tag(name: str) -> str:
    return _TAGS[name]


def parse_ipt_counters(text: str, chain: str) -> DiversionCounters:
    """Sum `[packets:bytes] -A CHAIN ...` lines of ip6tables-save -c: our NFQUEUE rules, and
    each budget rule that drops or accepts (not the RETURNs)."""
    queued, budget, by_if = 0, dict[str, int](), dict[str, int]()
    classes = {f"{chain}_{d.upper()}_{_tag(name)}": (name, d)
               for d in ("in", "out") for name, _t in BUDGET_CLASSES}
    for line in text.splitlines():
        words = line.split()
        if len(words) < 3 or not words[0].startswith("[") or words[1] != "-A":
            continue
        try:
            packets = int(words[0].strip("[]").split(":")[0])
        except ValueError:
            continue
        where = words[2]
        if where == chain and "NFQUEUE" in words:
            queued += packets
        elif where in classes and "RETURN" not in words:
            name, d = classes[where]
            budget[f"{name}_{d}"] = budget.get(f"{name}_{d}", 0) + packets
            flag = "-i" if d == "in" else "-o"
            ifname = words[words.index(flag) + 1] if flag in words else "*"
            by_if[f"{ifname}_{d}"] = by_if.get(f"{ifname}_{d}", 0) + packets
    return DiversionCounters(queued=queued, budget=budget, by_interface=by_if)


def ipt_script(save: str, chain: str, commands: list[list[str]]) -> str:
    """The `ip6tables-restore --noflush` input that replaces what `save` holds of `chain`
    (it, its budget chains and every jump to them) with `commands` (ip6tables arguments:
    -N, -A, -I); "" when there is nothing to remove or lay.

    Declaring a chain that exists flushes it under --noflush, so old rules go with the
    declaration; old jumps are deleted by their listed spec; a chain of ours that the
    commands no longer make is deleted after its jumps. One COMMIT: all or nothing.
    """
    old = ipt_sections(save, chain)
    made = [args[1] for args in commands if args[:1] == ["-N"]]
    existing = [name for name in old if not name.startswith((JUMPS_FROM, AHEAD_OF))]
    lines = [f":{name} - [0:0]" for name in dict.fromkeys([*made, *existing])]
    lines += [f"-D {name[len(JUMPS_FROM):]} {spec}" for name, specs in old.items()
              if name.startswith(JUMPS_FROM) for spec in specs]
    lines += [f"-X {name}" for name in existing if name not in made]
    lines += [" ".join(args) for args in commands if args[:1] != ["-N"]]
    return "\n".join([f"*{IPT_TABLE}", *lines, "COMMIT", ""]) if lines else ""


# The backend registry: every Backend but AUTO has a class; tests/adapters/test_diversion.py
# fails when one is missing. choose_backend words each choice for the operator.
BACKENDS: Mapping[Backend, Callable[[QueueSpec], Diversion]] = MappingProxyType({
    Backend.NFT: NftDiversion,
    Backend.IPTABLES: IptablesDiversion,
})


def choose_backend(requested: Backend, spec: QueueSpec) -> tuple[Diversion, str]:
    """Pick the diversion backend; returns it with the reason for the choice.

    Raises:
        EnvironmentProblem: the requested backend (or, for auto, every backend) is unusable.
    """
    nft = BACKENDS[Backend.NFT](spec)
    ipt = BACKENDS[Backend.IPTABLES](spec)
    if requested is Backend.NFT:
        why = nft.probe()
        if why:
            raise EnvironmentProblem(f"backend nft is unusable here: {why}; try backend = \"iptables\"")
        return nft, "configured"
    if requested is Backend.IPTABLES:
        why = ipt.probe()
        if why:
            raise EnvironmentProblem(f"backend iptables is unusable here: {why}")
        return ipt, "configured"
    nft_why = nft.probe()
    if nft_why is None:
        return nft, "the kernel accepts the native nft queue expression"
    ipt_why = ipt.probe()
    if ipt_why is None:
        return ipt, f"nft queue rejected ({nft_why}); using the xtables NFQUEUE target"
    raise EnvironmentProblem(
        f"no diversion backend works: nft: {nft_why}; iptables: {ipt_why}; "
        "install nftables or iptables"
    )


def drop_empty_mangle() -> bool:
    """Delete iptables-nft's `table ip6 mangle` if it holds nothing: no rule, no user chain,
    no set, only base chains with policy accept (what iptables-nft makes on first use, and
    what our removal leaves). Conditional on the ruleset generation at which it was seen
    empty, so a rule added meanwhile is never lost. Returns whether it was deleted."""
    if shutil.which("nft") is None:
        return False
    try:
        before = generation()
        proc = _run(["nft", "-j", "list", "table", "ip6", IPT_TABLE])
        if proc.returncode != 0 or generation() != before:
            return False
        items = [next(iter(i.items())) for i in json.loads(proc.stdout).get("nftables", [])
                 if isinstance(i, dict) and i]
    except (OSError, ValueError, StopIteration, AttributeError):
        return False
    for kind, obj in items:
        if kind in ("metainfo", "table"):
            continue
        if kind != "chain" or not isinstance(obj, dict) or "hook" not in obj \
                or obj.get("policy", "accept") != "accept":
            return False
    return delete_table_at(_NFPROTO_IPV6, IPT_TABLE, before)


NOT_REMOVED = " (not removed: "  # how cleanup's list marks what it found and could not remove


def cleanup_instance(first_queue: int) -> list[str]:
    """Remove what the instance on `first_queue` may have left behind; return what was found.

    Other instances' tables and chains (other queues) are left alone.
    """
    return _cleanup(lambda name: name in (nft_table_name(first_queue), ipt_chain_name(first_queue)))


def cleanup_all() -> list[str]:
    """Remove every instance's leftovers in this namespace (and pre-instance names)."""
    return _cleanup(lambda name: bool(_NFT_NAME.match(name) or _IPT_NAME.match(name)))


def _cleanup(ours: Callable[[str], bool]) -> list[str]:
    found: list[str] = []
    if shutil.which("nft"):
        listing = _run(["nft", "list", "tables", "inet"])
        for line in listing.stdout.splitlines() if listing.returncode == 0 else []:
            parts = line.split()
            if len(parts) == 3 and parts[:2] == ["table", "inet"] and _NFT_NAME.match(parts[2]) \
                    and ours(parts[2]):
                why = _remove_nft_table(parts[2])
                # An owned table (a running fail-open daemon's) refuses every other process.
                found.append(f"nft table inet {parts[2]}" + (f"{NOT_REMOVED}{why})" if why else ""))
    if shutil.which("ip6tables"):
        ipt = IptablesDiversion(QueueSpec(first=0))
        removed = False
        for chain in ipt.chains():
            if _IPT_NAME.match(chain) and ours(chain):
                try:
                    ipt.remove_chain(chain)
                    found.append(f"ip6tables -t {IPT_TABLE} chain {chain}")
                    removed = True
                except EnvironmentProblem as exc:
                    found.append(f"ip6tables -t {IPT_TABLE} chain {chain}{NOT_REMOVED}{exc})")
        # The table iptables-nft made for our chains, if removing them left it empty.
        if removed and ipt.nft_based() and drop_empty_mangle():
            found.append(f"nft table ip6 {IPT_TABLE} (left empty)")
    return found
