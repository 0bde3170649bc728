# SPDX-License-Identifier: MIT
"""Diversion adapters: the nftables or ip6tables rules that feed NFQUEUE.

One door to each foreign tool (`nft`, `ip6tables`). Invariants:
- the shim touches only what it owns: `table inet icmp6_shim` (nft) or the
  chain ICMP6_SHIM in ip6tables' mangle table plus one jump per built-in chain;
- install() is idempotent (starting twice never duplicates a rule) and
  remove() is idempotent (removing what is not there is not an error);
- `auto` probes the running kernel with `nft --check`, which sends the rules to
  the kernel and aborts the transaction, so the probe changes nothing;
- both backends render their rule lines from one list, DIVERTED: what the
  policy must see is said once.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from typing import Protocol

from shim.errors import EnvironmentProblem
from shim.model import Backend, Hook

__all__ = [
    "DIVERTED",
    "IPT_CHAIN",
    "NFT_TABLE",
    "Divert",
    "Diversion",
    "IptablesDiversion",
    "NftDiversion",
    "QueueSpec",
    "choose_backend",
    "cleanup_all",
]

NFT_TABLE = "icmp6_shim"
IPT_CHAIN = "ICMP6_SHIM"
IPT_TABLE = "mangle"  # mangle runs before filter: later filter rules and xfrm see our mark
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
    Divert(what="ICMPv6", nft="meta l4proto ipv6-icmp", ipt=(("-p", "ipv6-icmp"),)),
    Divert(what="Mobility, HIP, Shim6 and the experimental 253/254: extension headers to "
                "the shim's parser (RFC 7045), upper layers to the kernel's walk",
           nft="meta l4proto { 135, 139, 140, 253, 254 }",
           ipt=tuple(("-p", str(p)) for p in (135, 139, 140, 253, 254))),
    Divert(what="any other upper layer the kernel's walk found: not diverted",
           nft="meta l4proto != ipv6-icmp", ipt=(("!", "-p", "ipv6-icmp"),), queue=False),
    Divert(what="the rest: the kernel's walk found no upper layer (meta l4proto is unset, "
                "so the line above does not match)", nft="", ipt=((),)),
)


@dataclass(frozen=True, slots=True, kw_only=True)
class QueueSpec:
    """Which queues the diversion feeds, and what happens with no reader."""

    first: int
    count: int = 1
    fail_open: bool = True  # bypass: traffic flows unfiltered when no process is bound
    hooks: tuple[Hook, ...] = (Hook.INPUT, Hook.OUTPUT, Hook.FORWARD)
    priority: int = -150

    @property
    def last(self) -> int:
        return self.first + self.count - 1


class Diversion(Protocol):
    """What the service needs of a backend."""

    name: str

    def install(self) -> None: ...

    def remove(self) -> None: ...

    def render(self) -> str: ...


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
    """`table inet icmp6_shim`, a base chain per hook, one queue rule each."""

    name = "nft"

    def __init__(self, spec: QueueSpec) -> None:
        self.spec = spec

    def _queue_stmt(self) -> str:
        s = self.spec
        # A range without `fanout` spreads by a hash of the flow, as --queue-balance does;
        # `fanout` would pick the queue by CPU.
        target = f"{s.first}" if s.count == 1 else f"{s.first}-{s.last}"
        return f"queue num {target}" + (" bypass" if s.fail_open else "")

    def rule_lines(self, queue: str | None = None) -> list[str]:
        """The rules of each chain, from DIVERTED.

        Args:
            queue: a statement in place of the queue statement (e.g. "counter", so
                `nft --check` can validate the matches on a kernel without `queue`).
        """
        stmt = queue if queue is not None else self._queue_stmt()
        return [" ".join(filter(None, ("meta nfproto ipv6", d.nft, stmt if d.queue else "return")))
                for d in DIVERTED]

    def render(self, queue: str | None = None) -> str:
        """The ruleset as `nft -f` input; replaces any earlier copy atomically.

        Args:
            queue: see rule_lines; None renders what install() installs.
        """
        lines = [f"table inet {NFT_TABLE} {{", "}", f"delete table inet {NFT_TABLE}",
                 f"table inet {NFT_TABLE} {{"]
        for hook in self.spec.hooks:
            lines += [
                f"  chain {_NFT_HOOK[hook]} {{",
                f"    type filter hook {_NFT_HOOK[hook]} priority {self.spec.priority}; policy accept;",
                *(f"    {rule}" for rule in self.rule_lines(queue)),
                "  }",
            ]
        lines.append("}")
        return "\n".join(lines) + "\n"

    def probe(self) -> str | None:
        """None if the kernel accepts our ruleset, else the reason it does not."""
        if shutil.which("nft") is None:
            return "nft is not installed"
        proc = _run(["nft", "--check", "-f", "-"], stdin=self.render())
        if proc.returncode == 0:
            return None
        msg = proc.stderr.strip().splitlines()
        return msg[0] if msg else f"nft --check exit status {proc.returncode}"

    def install(self) -> None:
        proc = _run(["nft", "-f", "-"], stdin=self.render())
        if proc.returncode != 0:
            raise _fail("installing the nft diversion failed", proc)

    def remove(self) -> None:
        # `add` then `delete` in one batch: no error whether or not the table exists.
        _run(["nft", "-f", "-"], stdin=f"table inet {NFT_TABLE} {{\n}}\ndelete table inet {NFT_TABLE}\n")


class IptablesDiversion:
    """Chain ICMP6_SHIM in ip6tables' mangle table, jumped to from each hook's chain."""

    name = "iptables"

    def __init__(self, spec: QueueSpec, binary: str = "ip6tables") -> None:
        self.spec = spec
        self.binary = binary

    def _target(self) -> list[str]:
        s = self.spec
        args = ["-j", "NFQUEUE"]
        args += ["--queue-num", str(s.first)] if s.count == 1 else ["--queue-balance", f"{s.first}:{s.last}"]
        return args + (["--queue-bypass"] if s.fail_open else [])

    def _ipt(self, *args: str) -> subprocess.CompletedProcess[str]:
        return _run([self.binary, "-w", "5", "-t", IPT_TABLE, *args])

    def rules(self) -> list[list[str]]:
        """The rules of the chain, from DIVERTED, as ip6tables -A arguments."""
        return [["-A", IPT_CHAIN, *match, *(self._target() if d.queue else ["-j", "RETURN"])]
                for d in DIVERTED for match in d.ipt]

    def _commands(self) -> list[list[str]]:
        """What install() runs, in order (after removing any earlier copy)."""
        return [["-N", IPT_CHAIN], *self.rules(),
                *(["-I", _IPT_CHAIN[h], "1", "-j", IPT_CHAIN] for h in self.spec.hooks)]

    def render(self) -> str:
        return "".join(f"{self.binary} -t {IPT_TABLE} {' '.join(args)}\n"
                       for args in self._commands())

    def probe(self) -> str | None:
        if shutil.which(self.binary) is None:
            return f"{self.binary} is not installed"
        return None

    def install(self) -> None:
        self.remove()
        for args in self._commands():
            proc = self._ipt(*args)
            if proc.returncode != 0:
                self.remove()
                raise _fail("installing the ip6tables diversion failed", proc)

    def remove(self) -> None:
        if shutil.which(self.binary) is None:
            return
        for hook in Hook:
            # Bounded: each pass deletes one jump; a chain never holds more than a few.
            for _ in range(16):
                if self._ipt("-D", _IPT_CHAIN[hook], "-j", IPT_CHAIN).returncode != 0:
                    break
        self._ipt("-F", IPT_CHAIN)
        self._ipt("-X", IPT_CHAIN)


def choose_backend(requested: Backend, spec: QueueSpec) -> tuple[Diversion, str]:
    """Pick the diversion backend; returns it with the reason for the choice.

    Raises:
        EnvironmentProblem: the requested backend (or, for auto, every backend) is unusable.
    """
    nft = NftDiversion(spec)
    ipt = IptablesDiversion(spec)
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


def cleanup_all() -> list[str]:
    """Remove every diversion the shim may have left behind; return what was found."""
    found: list[str] = []
    if shutil.which("nft"):
        if _run(["nft", "list", "table", "inet", NFT_TABLE]).returncode == 0:
            found.append(f"nft table inet {NFT_TABLE}")
        NftDiversion(QueueSpec(first=0)).remove()
    if shutil.which("ip6tables"):
        ipt = IptablesDiversion(QueueSpec(first=0))
        if ipt._ipt("-S", IPT_CHAIN).returncode == 0:
            found.append(f"ip6tables -t {IPT_TABLE} chain {IPT_CHAIN}")
        ipt.remove()
    return found
