# SPDX-License-Identifier: MIT
"""The bench's test bed: namespaces, compiled helpers, generator runs, kernel and process counters.

Invariants: every run is bounded in packets and seconds; the topology is the
three-node one (a -- g -- b) with names prefixed so only it is touched; the
generator runs pinned to CPU 0 (its softirq work, i.e. the kernel's side of
the queue, runs there too) and consumers to CPU 1 unless told otherwise.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from bench.frames import frames, frames_file
from shim.lab.netns import Topology, load_topology

__all__ = ["Bed", "QueueStat", "build_tools", "cpu_ticks", "pid_tree", "queue_stats", "rss_kib"]

HERE = Path(__file__).resolve().parent
TICK = os.sysconf("SC_CLK_TCK")


def build_tools(out: Path) -> dict[str, Path]:
    """Compile gen.c and nfq_accept.c into `out`; returns name -> binary.

    Raises:
        subprocess.CalledProcessError: a compile failed.
    """
    out.mkdir(parents=True, exist_ok=True)
    bins = {}
    for name in ("gen", "nfq_accept"):
        binary = out / name
        subprocess.run(["cc", "-std=gnu11", "-O2", "-o", str(binary), str(HERE / f"{name}.c")],
                       check=True, capture_output=True, text=True)
        bins[name] = binary
    return bins


@dataclass(frozen=True, slots=True)
class QueueStat:
    """One line of /proc/net/netfilter/nfnetlink_queue."""

    queue: int
    total: int          # packets waiting for a verdict
    dropped: int        # queue full (maxlen)
    user_dropped: int   # netlink delivery failed (socket buffer full)
    id_sequence: int    # last packet id: packets ever queued


def queue_stats(pid: int) -> dict[int, QueueStat]:
    """Queue counters in the network namespace of process `pid` (empty if none bound)."""
    out = {}
    try:
        text = Path(f"/proc/{pid}/net/netfilter/nfnetlink_queue").read_text()
    except OSError:
        return {}
    for line in text.splitlines():
        f = [int(x) for x in line.split()]
        if len(f) >= 8:
            out[f[0]] = QueueStat(queue=f[0], total=f[2], dropped=f[5], user_dropped=f[6],
                                  id_sequence=f[7])
    return out


def pid_tree(root: int) -> list[int]:
    """root and all its descendants."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, []))
    return tree


def cpu_ticks(pids: list[int]) -> float:
    """CPU seconds (user + system) used so far by these processes."""
    total = 0
    for pid in pids:
        try:
            f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(f[11]) + int(f[12])
        except (OSError, IndexError, ValueError):
            continue
    return total / TICK


def rss_kib(pid: int, field: str = "VmRSS") -> int:
    """VmRSS (or VmHWM) of one process in KiB, 0 if gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


class Bed:
    """The three-node topology plus the generator, set up for floods a -> g -> b."""

    def __init__(self, bins: dict[str, Path], work: Path) -> None:
        self.bins = bins
        self.work = work
        self.topo = Topology(load_topology("three-node"), prefix=f"i6b{os.getpid() % 10000}-")

    def up(self) -> Bed:
        self.topo.up()
        try:
            t = self.topo
            t.run("b", "ip", "-6", "addr", "add", "2001:db8:2::c/64", "dev", "eth0", "nodad", check=True)
            # The flood goes to ::b and stops there cheaply; probes go to ::c and are answered.
            t.run("b", "ip6tables", "-t", "raw", "-A", "PREROUTING", "-d", "2001:db8:2::b", "-p",
                  "ipv6-icmp", "--icmpv6-type", "echo-request", "-j", "DROP", check=True)
            t.run("a", "ping", "-6", "-c", "1", "-W", "2", "2001:db8:2::c")  # resolve neighbours
            for profile in ("echo", "ns", "mix"):
                (self.work / f"{profile}.frames").write_bytes(frames_file(frames(
                    profile, src_mac=self._mac("a", "eth0"), gw_mac=self._mac("g", "eth0"),
                    src="2001:db8:1::a", src_ll=t.link_local("a", "eth0"), dst="2001:db8:2::b",
                    gw="2001:db8:1::1")))
        except BaseException:
            self.topo.down()
            raise
        return self

    def down(self) -> None:
        self.topo.down()

    def _mac(self, node: str, ifname: str) -> bytes:
        out = self.topo.run(node, "cat", f"/sys/class/net/{ifname}/address", check=True).stdout
        return bytes.fromhex(out.strip().replace(":", ""))

    def flood(self, profile: str, count: int, rate: float, max_s: float) -> dict[str, float]:
        """Send `count` frames of `profile` at `rate` pps (0: flat out), pinned to CPU 0."""
        proc = self.topo.run("a", "taskset", "-c", "0", str(self.bins["gen"]), "eth0",
                             str(self.work / f"{profile}.frames"), str(count), str(rate),
                             str(max_s), timeout=max_s + 30, check=True)
        result: dict[str, float] = json.loads(proc.stdout.strip().splitlines()[-1])
        return result

    def rx_packets(self, node: str = "b", ifname: str = "eth0") -> int:
        out = self.topo.run(node, "cat", f"/sys/class/net/{ifname}/statistics/rx_packets").stdout
        return int(out.strip() or 0)

    def divert(self, queues: tuple[int, int] | None) -> None:
        """Install (or with None remove) a plain NFQUEUE diversion of ICMPv6 on g."""
        for chain in ("INPUT", "OUTPUT", "FORWARD"):
            self.topo.run("g", "ip6tables", "-t", "mangle", "-F", chain)
            if queues is None:
                continue
            target = (["--queue-num", str(queues[0])] if queues[0] == queues[1]
                      else ["--queue-balance", f"{queues[0]}:{queues[1]}"])
            self.topo.run("g", "ip6tables", "-t", "mangle", "-A", chain, "-p", "ipv6-icmp",
                          "-j", "NFQUEUE", *target, check=True)

    def wait_queue(self, pid: int, until: int, timeout: float) -> float:
        """Wait until the queued total (all queues) is <= until; returns when it was, or -1."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if sum(q.total for q in queue_stats(pid).values()) <= until:
                return time.monotonic()
            time.sleep(0.0005)
        return -1.0
