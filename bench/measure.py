# SPDX-License-Identifier: MIT
"""One measurement per function, each bounded, each returning plain JSON values.

- drain:   packets pre-queued with the consumer stopped (SIGSTOP), then drained
           (SIGCONT): packets / seconds until the kernel queue is empty, and
           consumer CPU seconds per packet over the drain;
- sweep:   offered rates in turn (a few seconds each) with the consumer running
           and realistic queue settings; kernel queue drops per rate;
- latency: round-trip times of probes through the queue (both directions are
           judged) at a moderate background rate;
- soak:    a long moderate flood sampling each process's RSS.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import time

from bench.consumers import ROOT, Consumer
from bench.harness import Bed, cpu_ticks, queue_stats, rss_kib

__all__ = ["drain", "forward_rate", "latency", "soak", "summary", "sweep"]


def summary(values: list[float]) -> dict[str, float]:
    """median and spread (min, max) of repeated runs."""
    if not values:
        return {"median": 0.0, "min": 0.0, "max": 0.0, "runs": 0}
    return {"median": round(statistics.median(values), 1), "min": round(min(values), 1),
            "max": round(max(values), 1), "runs": len(values)}


def _drops(pid: int) -> int:
    return sum(q.dropped + q.user_dropped for q in queue_stats(pid).values())


def _user_drops(pid: int) -> int:
    return sum(q.user_dropped for q in queue_stats(pid).values())


def _queued(pid: int) -> int:
    return sum(q.total for q in queue_stats(pid).values())


def drain(bed: Bed, c: Consumer, profile: str, count: int) -> dict[str, float]:
    """Pre-queue `count` packets with the consumer stopped, then time the drain."""
    pids = c.pids()
    c.signal_all(signal.SIGSTOP)
    drops0 = _drops(c.pid)
    bed.flood(profile, count, 0, 60)
    time.sleep(0.2)
    queued = _queued(c.pid)
    cpu0 = cpu_ticks(pids)
    t0 = time.monotonic()
    c.signal_all(signal.SIGCONT)
    t1 = bed.wait_queue(c.pid, 0, timeout=60 + count / 5000)
    cpu1 = cpu_ticks(pids)
    took = (t1 - t0) if t1 > 0 else float("nan")
    return {"queued": queued, "seconds": round(took, 4),
            "pps": round(queued / took, 1) if took > 0 else 0.0,
            "cpu_us_per_pkt": round((cpu1 - cpu0) / max(queued, 1) * 1e6, 3),
            "drops_while_queueing": _drops(c.pid) - drops0}


def forward_rate(bed: Bed, profile: str, count: int) -> dict[str, float]:
    """No queue at all: what reaches b of a flat-out flood."""
    rx0 = bed.rx_packets()
    r = bed.flood(profile, count, 0, 30)
    time.sleep(0.2)
    got = bed.rx_packets() - rx0
    return {"sent": r["sent"], "received": got, "pps": round(min(got, r["sent"]) / r["seconds"], 1)}


def sweep(bed: Bed, c: Consumer, profile: str, rates: list[int], secs: float) -> list[dict[str, float]]:
    """Offer each rate for `secs`; stop after the first rate that loses packets."""
    out = []
    for rate in rates:
        drops0, user0 = _drops(c.pid), _user_drops(c.pid)
        cpu0 = cpu_ticks(c.pids())
        r = bed.flood(profile, int(rate * secs), rate, secs + 2)
        bed.wait_queue(c.pid, 0, timeout=5)
        cpu1 = cpu_ticks(c.pids())
        dropped = _drops(c.pid) - drops0
        offered = r["sent"] / r["seconds"] if r["seconds"] else 0.0
        out.append({"target": rate, "offered_pps": round(offered, 1), "drops": dropped,
                    "socket_drops": _user_drops(c.pid) - user0,
                    "cpu_us_per_pkt": round((cpu1 - cpu0) / max(r["sent"], 1) * 1e6, 3)})
        if dropped:
            break
    return out


def latency(bed: Bed, background_pps: int, probes: int) -> dict[str, float]:
    """RTT percentiles of `probes` pings to b (1 ms apart) over a background flood."""
    secs = probes * 0.001 + 2
    gen = bed.topo.popen("a", "taskset", "-c", "0", str(bed.bins["gen"]), "eth0",
                         str(bed.work / "echo.frames"), str(int(background_pps * secs)),
                         str(background_pps), str(secs), stdout=subprocess.DEVNULL)
    try:
        proc = bed.topo.run("a", sys.executable, "-m", "bench.probe", "2001:db8:2::c", str(probes),
                            "0.001", timeout=probes * 0.25 + 30,
                            env=dict(os.environ, PYTHONPATH=str(ROOT)))
    finally:
        gen.wait(timeout=secs + 30)
    data = json.loads(proc.stdout.strip().splitlines()[-1])
    rtts = sorted(data["rtt_us"]) or [0.0]
    return {"p50_us": round(rtts[len(rtts) // 2], 1),
            "p99_us": round(rtts[min(len(rtts) - 1, int(len(rtts) * 0.99))], 1),
            "lost": data["lost"], "probes": probes}


def soak(bed: Bed, c: Consumer, rate: int, secs: float, every: float = 5.0) -> dict[str, object]:
    """Flood at `rate` for `secs`, sampling the RSS (KiB) of each process."""
    gen = bed.topo.popen("a", "taskset", "-c", "0", str(bed.bins["gen"]), "eth0",
                         str(bed.work / "mix.frames"), str(int(rate * secs)), str(rate), str(secs),
                         stdout=subprocess.DEVNULL)
    samples: list[list[int]] = []
    t_end = time.monotonic() + secs
    try:
        while time.monotonic() < t_end:
            time.sleep(min(every, max(0.0, t_end - time.monotonic())))
            samples.append([rss_kib(p) for p in c.pids()])
    finally:
        gen.wait(timeout=secs + 30)
    first, last = samples[1] if len(samples) > 1 else samples[0], samples[-1]
    return {"rate": rate, "seconds": secs, "rss_kib_samples": samples,
            "growth_kib": sum(last) - sum(first), "drops": _drops(c.pid)}
