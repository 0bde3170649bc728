# SPDX-License-Identifier: MIT
"""Diversion adapters: the nftables or ip6tables rules that feed NFQUEUE.

One door to each foreign tool (`nft`, `ip6tables`). Invariants:
- the shim touches only what it owns: `table inet icmp6_shim_q<N>` (nft) or the
  chain ICMP6_SHIM_Q<N> in ip6tables' mangle table plus one jump per built-in chain,
  where N is the instance's first queue: instances on other queues in the same
  namespace have other names, so none replaces or removes another's rules;
- install() is idempotent (starting twice never duplicates a rule) and
  remove() is idempotent (removing what is not there is not an error);
- `auto` probes the running kernel with `nft --check`, which sends the rules to
  the kernel and aborts the transaction, so the probe changes nothing.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from shim.errors import EnvironmentProblem
from shim.model import Backend, Hook

__all__ = [
    "IPT_CHAIN",
    "NFT_TABLE",
    "Diversion",
    "IptablesDiversion",
    "NftDiversion",
    "QueueSpec",
    "choose_backend",
    "cleanup_all",
    "cleanup_instance",
]

# Name prefixes; an instance's names add its first queue (two instances never share a queue).
# The bare prefixes are the names of versions before per-instance names; `cleanup --all`
# still finds them.
NFT_TABLE = "icmp6_shim"
IPT_CHAIN = "ICMP6_SHIM"
_NFT_NAME = re.compile(rf"^{NFT_TABLE}(_q\d+)?$")
_IPT_NAME = re.compile(rf"^{IPT_CHAIN}(_Q\d+)?$")
IPT_TABLE = "mangle"  # mangle runs before filter: later filter rules and xfrm see our mark
_NFT_HOOK = {h: h.name.lower() for h in Hook}
_IPT_CHAIN = {h: h.name for h in Hook}


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
    """The ip6tables chain of that instance (17 characters at most: the limit is 28)."""
    return f"{IPT_CHAIN}_Q{first_queue}"


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
    """`table inet icmp6_shim_q<N>`, a base chain per hook, one queue rule each."""

    name = "nft"

    def __init__(self, spec: QueueSpec) -> None:
        self.spec = spec

    def _queue_stmt(self) -> str:
        s = self.spec
        # A range without `fanout` spreads by a hash of the flow, as --queue-balance does;
        # `fanout` would pick the queue by CPU.
        target = f"{s.first}" if s.count == 1 else f"{s.first}-{s.last}"
        return f"queue num {target}" + (" bypass" if s.fail_open else "")

    def render(self) -> str:
        """The ruleset as `nft -f` input; replaces any earlier copy atomically."""
        table = self.spec.nft_table
        lines = [f"table inet {table} {{", "}", f"delete table inet {table}",
                 f"table inet {table} {{"]
        for hook in self.spec.hooks:
            lines += [
                f"  chain {_NFT_HOOK[hook]} {{",
                f"    type filter hook {_NFT_HOOK[hook]} priority {self.spec.priority}; policy accept;",
                f"    meta l4proto ipv6-icmp {self._queue_stmt()}",
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
        _remove_nft_table(self.spec.nft_table)


def _remove_nft_table(table: str) -> None:
    # `add` then `delete` in one batch: no error whether or not the table exists.
    _run(["nft", "-f", "-"], stdin=f"table inet {table} {{\n}}\ndelete table inet {table}\n")


class IptablesDiversion:
    """Chain ICMP6_SHIM_Q<N> in ip6tables' mangle table, jumped to from each hook's chain."""

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

    def render(self) -> str:
        chain = self.spec.ipt_chain
        lines = [f"-N {chain}", f"-A {chain} -p ipv6-icmp " + " ".join(self._target())]
        lines += [f"-I {_IPT_CHAIN[h]} 1 -j {chain}" for h in self.spec.hooks]
        return "\n".join(f"{self.binary} -t {IPT_TABLE} {line}" for line in lines) + "\n"

    def probe(self) -> str | None:
        if shutil.which(self.binary) is None:
            return f"{self.binary} is not installed"
        return None

    def install(self) -> None:
        self.remove()
        chain = self.spec.ipt_chain
        for args in (
            ["-N", chain],
            ["-A", chain, "-p", "ipv6-icmp", *self._target()],
            *(["-I", _IPT_CHAIN[h], "1", "-j", chain] for h in self.spec.hooks),
        ):
            proc = self._ipt(*args)
            if proc.returncode != 0:
                self.remove()
                raise _fail("installing the ip6tables diversion failed", proc)

    def remove(self) -> None:
        self.remove_chain(self.spec.ipt_chain)

    def remove_chain(self, chain: str) -> None:
        """Delete the jumps to `chain`, then the chain; only that chain is touched."""
        if shutil.which(self.binary) is None:
            return
        for hook in Hook:
            # Bounded: each pass deletes one jump; a chain never holds more than a few.
            for _ in range(16):
                if self._ipt("-D", _IPT_CHAIN[hook], "-j", chain).returncode != 0:
                    break
        self._ipt("-F", chain)
        self._ipt("-X", chain)


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
                found.append(f"nft table inet {parts[2]}")
                _remove_nft_table(parts[2])
    if shutil.which("ip6tables"):
        ipt = IptablesDiversion(QueueSpec(first=0))
        listing = ipt._ipt("-S")
        for line in listing.stdout.splitlines() if listing.returncode == 0 else []:
            parts = line.split()
            if len(parts) == 2 and parts[0] == "-N" and _IPT_NAME.match(parts[1]) and ours(parts[1]):
                found.append(f"ip6tables -t {IPT_TABLE} chain {parts[1]}")
                ipt.remove_chain(parts[1])
    return found
