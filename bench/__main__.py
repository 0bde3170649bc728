# SPDX-License-Identifier: MIT
"""`make bench` (= `python -m bench [--quick] [--only NAMES]`): throughput against baselines.

Builds its own namespaces (a -- g -- b), compiles the generator and the bare C
consumer, then for every consumer variant (bench/consumers.py) measures drain
rate and CPU per packet (repeated, median and spread), a short rate sweep for
the highest rate with no queue drops, RTT through the queue and RSS; then a
bounded soak of both shim engines, and the parser micro-benchmark. Writes
bench/results/latest.md and .json. Then the `scale` step (bench/scale.py): the
shim with 0 / 1,000 / 10,000 user rules through the same queue, and the
classifier's compile time and memory; writes bench/results/scale.md and .json.
`--only` takes variant names and/or step names (`scale`); latest.* is written
only when a variant ran. Needs root. Full run < ~20 min; --quick is a smoke run
of every step in about two to three minutes.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import measure, scale
from bench.consumers import VARIANTS, start
from bench.harness import Bed, build_tools, rss_kib
from bench.report import machine, write

HERE = Path(__file__).resolve().parent
BIG_MAXLEN, BIG_RCVBUF = 65_536, 1 << 30     # drains: everything pre-queued must fit
DEF_MAXLEN, DEF_RCVBUF = 4096, 4 << 20        # sweeps: the shim's defaults
STEPS = ("scale",)   # steps beside the variants, selectable with --only
LAYOUT = ("generator, the kernel's receive/queue softirq and the bench itself on CPU 0; one "
          "consumer (or worker) pinned to CPU 1, where the verdict's re-injection and forwarding "
          "to b also run; with 2 workers, both workers float over both CPUs, sharing CPU 0 with "
          "the generator.")


def _variant(bed: Bed, name: str, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if name == "none":
        out["forward"] = measure.forward_rate(bed, "echo", args.drain_count)
        c = start(bed, name, maxlen=DEF_MAXLEN, rcvbuf=DEF_RCVBUF, work=work)
        out["latency"] = measure.latency(bed, args.latency_bg, args.probes)
        return out
    slow = name == "scapy"
    count = args.drain_count // 10 if slow else args.drain_count
    c = start(bed, name, maxlen=BIG_MAXLEN, rcvbuf=BIG_RCVBUF, work=work)
    try:
        idle = max(rss_kib(p) for p in c.pids())
        out["drain"] = {}
        profiles = ("echo", "ns", "mix") if name in ("c-batch", "shim-nfq", "shim-batched") else ("echo",)
        for profile in profiles:
            runs = [measure.drain(bed, c, profile, count)
                    for _ in range(args.repeats if profile == "echo" else 1)]
            out["drain"][profile] = {"pps": measure.summary([r["pps"] for r in runs]),
                                     "cpu_us_per_pkt": measure.summary([r["cpu_us_per_pkt"] for r in runs]),
                                     "runs": runs}
        peak = max(rss_kib(p, "VmHWM") for p in c.pids())
    finally:
        c.stop()
    c = start(bed, name, maxlen=DEF_MAXLEN, rcvbuf=DEF_RCVBUF, work=work)
    try:
        rates = [r for r in args.rates if not slow or r <= 50_000]
        out["sweep"] = measure.sweep(bed, c, "echo", rates, args.step_s)
        out["latency"] = measure.latency(bed, args.latency_bg, args.probes)
        peak = max([peak] + [rss_kib(p, "VmHWM") for p in c.pids()])
    finally:
        c.stop()
    out["rss_kib"] = {"idle": idle, "peak": peak}
    return out


def _soak(bed: Bed, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    out = {}
    for name in ("shim-nfq", "shim-batched"):
        c = start(bed, name, maxlen=DEF_MAXLEN, rcvbuf=DEF_RCVBUF, work=work)
        try:
            out[name] = measure.soak(bed, c, args.soak_rate, args.soak_s)
        finally:
            c.stop()
    return out


def _targets(v: dict[str, Any]) -> list[str]:
    def rate(name: str) -> float:
        d = v.get(name, {}).get("drain", {}).get("echo")
        return float(d["pps"]["median"]) if d else 0.0

    def line(what: str, a: float, b: float, goal: float) -> str:
        if not a or not b:
            return f"{what}: not measured"
        return f"{what}: {a / b:.2f} (goal {goal}) {'MET' if a / b >= goal else 'MISSED'}"

    nfq, batched = max(rate("shim-nfq"), 0.0), rate("shim-batched")
    return [line("shim-nfq / bare netfilterqueue", nfq, rate("nfq-py"), 0.9),
            line("shim-nfq / scapy classifier", nfq, rate("scapy"), 10),
            line("shim-nfq-100 / shim-nfq (rule count barely matters)", rate("shim-nfq-100"), nfq, 0.9),
            line("shim-batched / bare C batched", batched, rate("c-batch"), 0.8),
            line("shim-batched / shim-nfq", batched, nfq, 2.0)]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smoke run: small counts, one repeat")
    p.add_argument("--only", default="",
                   help=f"comma-separated variants and/or steps {STEPS} (default: all)")
    p.add_argument("--out", type=Path, default=HERE / "results")
    args = p.parse_args(argv)
    # The bench's own threads (log readers, /proc polling) stay off the consumer's CPU.
    os.sched_setaffinity(0, {0})
    q = args.quick
    args.drain_count = 20_000 if q else 60_000  # this kernel queues at most ~65536 per queue
    args.repeats = 1 if q else 5
    args.rates = [100_000, 300_000] if q else [50_000, 100_000, 150_000, 200_000, 250_000, 300_000, 350_000]
    args.step_s = 1.0 if q else 2.0
    args.probes, args.latency_bg = (200, 20_000) if q else (1000, 50_000)
    args.soak_s, args.soak_rate = (5.0, 50_000) if q else (60.0, 100_000)
    only = [x for x in args.only.split(",") if x]
    unknown = sorted(set(only) - set(VARIANTS) - set(STEPS))
    if unknown:
        p.error(f"--only: unknown {', '.join(unknown)}; variants {', '.join(VARIANTS)}, "
                f"steps {', '.join(STEPS)}")
    names = [n for n in VARIANTS if not only or n in only]
    steps = [s for s in STEPS if not only or s in only]
    res: dict[str, Any] = {"machine": machine(), "layout": LAYOUT, "quick": q,
                           "date": time.strftime("%Y-%m-%d %H:%M"), "drain_count": args.drain_count,
                           "repeats": args.repeats, "latency_bg": args.latency_bg, "variants": {}}
    with tempfile.TemporaryDirectory(prefix="icmp6-bench-") as tmp:
        work = Path(tmp)
        bed = Bed(build_tools(work / "bin"), work).up()
        try:
            for name in names:
                t0 = time.monotonic()
                res["variants"][name] = _variant(bed, name, args, work)
                print(f"bench: {name} done in {time.monotonic() - t0:.0f}s", file=sys.stderr, flush=True)
            if not only:
                res["soak"] = _soak(bed, args, work)
            if "scale" in steps:
                t0 = time.monotonic()
                scaled = scale.run(bed, work, quick=q, drain_count=args.drain_count)
                print(f"bench: scale done in {time.monotonic() - t0:.0f}s", file=sys.stderr, flush=True)
        finally:
            bed.down()
    if "scale" in steps:
        md, js = scale.write(scaled, res["machine"], args.out)
        print(md.read_text())
        print(f"bench: wrote {md} and {js}", file=sys.stderr)
    if not names:
        return 0
    res["targets"] = _targets(res["variants"])
    parse = subprocess.run([sys.executable, str(HERE / "bench_parse.py")] + (["--quick"] if q else []),
                           capture_output=True, text=True, timeout=600, check=False)
    res["parse_bench"] = parse.stdout if parse.returncode == 0 else f"failed: {parse.stderr[-500:]}"
    md, js = write(res, args.out)
    print(md.read_text())
    print(f"bench: wrote {md} and {js}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
