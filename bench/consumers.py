# SPDX-License-Identifier: MIT
"""The consumers the bench compares, each started in the gateway namespace.

Variants: "none" (no queue at all), "c-batch" (bare C, recvmmsg + batch
verdicts), "nfq-py" (bare netfilterqueue accept-all), "scapy" (netfilterqueue +
scapy dissection + a naive rule list), and the shim itself: "shim-nfq" /
"shim-batched" on the default table, "-100" with 100 user rules in front,
"-2w" with two workers (queue balancing). Invariant: stop() always ends
what start() began (SIGCONT first, then SIGTERM, then SIGKILL, all bounded).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from bench.harness import Bed, pid_tree
from shim.lab.runner import ShimProcess

__all__ = ["VARIANTS", "Consumer", "start", "user_rules"]

ROOT = Path(__file__).resolve().parent.parent
VARIANTS = ("none", "c-batch", "nfq-py", "scapy", "shim-nfq", "shim-nfq-100", "shim-batched",
            "shim-batched-100", "shim-nfq-2w", "shim-batched-2w")


def user_rules(n: int) -> str:
    """n user rules that the flood never matches, so every packet walks all of them first."""
    return "".join(
        f'[[rule]]\nname = "bench-{i}"\ntype = "echo-request"\nsrc = "2001:db8:ff:{i:x}::/64"\n'
        f'verdict = "drop"\n\n' for i in range(n))


@dataclass(slots=True)
class Consumer:
    """A started consumer: the root pid, the process handles, and how it was run."""

    name: str
    pid: int
    workers: int = 1
    proc: subprocess.Popen[bytes] | None = None
    shim: ShimProcess | None = None
    extra: dict[str, object] = field(default_factory=dict)

    def pids(self) -> list[int]:
        return pid_tree(self.pid) if self.pid else []

    def signal_all(self, sig: int) -> None:
        for pid in self.pids():
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass

    def stop(self) -> None:
        if not self.pid:
            return
        self.signal_all(signal.SIGCONT)
        if self.shim is not None:
            self.shim.close()
        elif self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


def _pin(pids: list[int], cpus: str) -> None:
    for pid in pids:
        subprocess.run(["taskset", "-a", "-p", "-c", cpus, str(pid)], capture_output=True, check=False)


def start(bed: Bed, name: str, *, maxlen: int, rcvbuf: int, work: Path,
          rules: str | None = None) -> Consumer:
    """Start variant `name` with this queue maxlen and socket buffer; ready when it returns.

    `rules` (TOML [[rule]]s) replaces a shim variant's user rules (bench/scale.py)."""
    if name == "none":
        bed.divert(None)
        return Consumer(name=name, pid=0)
    if name.startswith("shim-"):
        return _start_shim(bed, name, maxlen=maxlen, rcvbuf=rcvbuf, work=work, rules=rules)
    if name == "c-batch":
        argv = ["taskset", "-c", "1", str(bed.bins["nfq_accept"]), "0", str(maxlen), str(rcvbuf)]
    else:
        argv = ["taskset", "-c", "1", sys.executable, "-m", "bench.py_consumers",
                "nfq" if name == "nfq-py" else "scapy", "0", str(maxlen), str(rcvbuf)]
    proc = bed.topo.popen("g", *argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    assert proc.stderr is not None
    line = b""
    for _ in range(10):  # until "bound" (bounded: the consumer exits on failure)
        line = proc.stderr.readline()
        if not line or line.strip() == b"bound":
            break
    if line.strip() != b"bound":
        proc.kill()
        raise RuntimeError(f"{name} did not bind: {line!r} {proc.stderr.read()[-500:]!r}")
    bed.divert((0, 0))
    return Consumer(name=name, pid=proc.pid, proc=proc)


def _start_shim(bed: Bed, name: str, *, maxlen: int, rcvbuf: int, work: Path,
                rules: str | None = None) -> Consumer:
    engine = "batched" if "batched" in name else "netfilterqueue"
    workers = 2 if name.endswith("-2w") else 1
    cfg = work / f"cfg-{name}-{maxlen}"
    (cfg / "rules.d").mkdir(parents=True, exist_ok=True)
    (cfg / "icmp6-shim.toml").write_text(
        f"[queue]\nmaxlen = {maxlen}\nsock_rcvbuf = {rcvbuf}\nworkers = {workers}\n"
        f'[diversion]\nbackend = "iptables"\n[engine]\nkind = "{engine}"\n'
        # The bench measures how fast the shim judges; per-interface budgets would cut the
        # offered load in the kernel at a few thousand packets a second.
        "[overload]\nbudget = false\n")
    if rules is None:
        rules = user_rules(100) if name.endswith("-100") else ""
    (cfg / "rules.d" / "bench.toml").write_text(rules)
    bed.divert(None)
    shim = ShimProcess(cfg, netns=bed.topo.ns("g"), extra=())
    shim.start()
    shim.wait_ready(timeout=60)  # 10,000 rules take a few seconds to load on this VM
    assert shim.proc is not None
    c = Consumer(name=name, pid=shim.proc.pid, workers=workers, shim=shim)
    # One worker: pinned to CPU 1, the generator and its softirq own CPU 0.
    # Two workers: both CPUs, shared with the generator (there are only two).
    _pin(c.pids(), "1" if workers == 1 else "0,1")
    return c
