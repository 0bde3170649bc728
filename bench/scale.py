# SPDX-License-Identifier: MIT
"""The `scale` step of `make bench`: the shim with 0, 1,000 and 10,000 user rules.

Through the real NFQUEUE of the bench's bed (a -- g -- b), for each shim engine
and each table (the defaults plus N realistic user rules, bench/rulesets.py, none
matching the flood): drain rate (bench/measure.py's drain, Echo Request profile)
as a ratio to the same run's 0-rule rate, RSS idle and peak, and RTT p50/p99 at
a moderate background rate with 0 and 10,000 rules (the shim's added latency is
that minus the same run's RTT with no queue). The bare batched C consumer is
drained in the same rounds, for "batched with defaults >= 0.95 x bare C".

Drift on this host (a TCG VM beside it) is slower than one round, so the
consumers are measured in rounds, each round starting every consumer in turn
and draining it `per_round` times; the figures are medians over all rounds.
Then bench/bench_classifier.py (a child process, so its RSS is its own) for
classify() ns, the reload's CPU time and the classifier's build time and memory
at 1,000 / 10,000 / 50,000 rules. Writes bench/results/scale.md and .json.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench import measure
from bench.consumers import start
from bench.harness import Bed, rss_kib
from bench.rulesets import realistic_rules

__all__ = ["COUNTS", "render", "run", "targets", "write"]

HERE = Path(__file__).resolve().parent
COUNTS = (0, 1_000, 10_000)
ENGINES = {"batched": "shim-batched", "netfilterqueue": "shim-nfq"}
BIG_MAXLEN, BIG_RCVBUF = 65_536, 1 << 30   # as the drains of bench/__main__.py
# The targets (in the benchmark, never in tests).
GOALS = {"drain_1k": 0.9, "drain_10k": 0.8, "compile_10k_s": 1.0, "rss_growth_mib": 50.0,
         "batched_vs_c": 0.95}


def _key(engine: str, n: int) -> str:
    return f"{engine}/{n}"


def run(bed: Bed, work: Path, *, quick: bool, drain_count: int) -> dict[str, Any]:
    """All measurements of the step, as plain JSON values."""
    rounds, per_round = (1, 2) if quick else (5, 2)
    probes, bg = (200, 20_000) if quick else (1000, 50_000)
    rules = {n: realistic_rules(n) for n in COUNTS}
    runs: dict[str, list[float]] = {}
    cpu: dict[str, list[float]] = {}   # consumer CPU µs per packet over each drain
    rss: dict[str, dict[str, int]] = {}
    lat: dict[str, dict[str, float]] = {}
    bed.divert(None)
    lat["none"] = measure.latency(bed, bg, probes)
    order = [("c-batch", None)] + [(e, n) for e in ENGINES for n in COUNTS]
    for rnd in range(rounds):
        for engine, n in order:
            key = engine if n is None else _key(engine, n)
            t0 = time.monotonic()
            c = start(bed, "c-batch" if n is None else ENGINES[engine], maxlen=BIG_MAXLEN,
                      rcvbuf=BIG_RCVBUF, work=work, rules=None if n is None else rules[n])
            try:
                idle = max(rss_kib(p) for p in c.pids())
                for _ in range(per_round):
                    d = measure.drain(bed, c, "echo", drain_count)
                    runs.setdefault(key, []).append(d["pps"])
                    cpu.setdefault(key, []).append(d["cpu_us_per_pkt"])
                if rnd == 0 and n in (0, 10_000):
                    # On this instance (queue maxlen 65,536): at the moderate background rate
                    # the queue never holds more than a few packets, so its size does not matter.
                    lat[key] = measure.latency(bed, bg, probes)
                peak = max(rss_kib(p, "VmHWM") for p in c.pids())
            finally:
                c.stop()
            if n is not None:
                r = rss.setdefault(key, {"idle": 0, "peak": 0})
                r["idle"], r["peak"] = max(r["idle"], idle), max(r["peak"], peak)
            print(f"bench: scale {key} round {rnd + 1}/{rounds} {time.monotonic() - t0:.0f}s",
                  file=sys.stderr, flush=True)
    cls = subprocess.run([sys.executable, str(HERE / "bench_classifier.py"), "--json"]
                         + (["--quick"] if quick else []),
                         capture_output=True, text=True, timeout=900, check=False)
    return {"quick": quick, "drain_count": drain_count, "rounds": rounds, "per_round": per_round,
            "latency_bg": bg, "probes": probes,
            "drain_pps": {k: measure.summary(v) | {"all": v} for k, v in runs.items()},
            "cpu_us_per_pkt": {k: {"median": round(statistics.median(v), 3), "all": v}
                               for k, v in cpu.items()},
            "rss_kib": rss, "latency": lat,
            "classifier": (json.loads(cls.stdout) if cls.returncode == 0
                           else {"failed": cls.stderr[-800:]})}


def _median(res: dict[str, Any], key: str) -> float:
    d = res["drain_pps"].get(key)
    return float(d["median"]) if d else 0.0


def targets(res: dict[str, Any]) -> list[str]:
    """The issue's targets against this run, MET or MISSED (or not measured)."""
    out = []

    def ratio_line(what: str, a: float, b: float, goal: float) -> None:
        if not a or not b:
            out.append(f"{what}: not measured")
        else:
            out.append(f"{what}: {a / b:.2f} (goal ≥ {goal}) {'MET' if a / b >= goal else 'MISSED'}")

    for engine in ENGINES:
        base = _median(res, _key(engine, 0))
        ratio_line(f"{engine}: drain 1,000 rules / 0 rules", _median(res, _key(engine, 1_000)),
                   base, GOALS["drain_1k"])
        ratio_line(f"{engine}: drain 10,000 rules / 0 rules", _median(res, _key(engine, 10_000)),
                   base, GOALS["drain_10k"])
        r0, r10 = res["rss_kib"].get(_key(engine, 0)), res["rss_kib"].get(_key(engine, 10_000))
        if r0 and r10:
            growth = (r10["peak"] - r0["peak"]) / 1024
            out.append(f"{engine}: peak RSS growth 0 -> 10,000 rules: {growth:.1f} MiB (goal < "
                       f"{GOALS['rss_growth_mib']:.0f}) "
                       f"{'MET' if growth < GOALS['rss_growth_mib'] else 'MISSED'}")
    ratio_line("batched, defaults / bare C batched consumer", _median(res, _key("batched", 0)),
               _median(res, "c-batch"), GOALS["batched_vs_c"])
    cls = res.get("classifier", {})
    ten = [r for r in cls.get("classify", []) if r["rules"] == 10_000]
    if ten:
        secs = ten[0]["load_s_median"] + ten[0]["compile_s_median"]
        out.append(f"reload of 10,000 rules (load_config + compile_config, CPU, median): "
                   f"{secs:.2f} s (goal < {GOALS['compile_10k_s']:.0f} s) "
                   f"{'MET' if secs < GOALS['compile_10k_s'] else 'MISSED'}")
    else:
        out.append("reload of 10,000 rules: not measured")
    return out


def render(res: dict[str, Any], machine: dict[str, object], date: str) -> str:
    """The Markdown report of the step."""
    m = machine
    lines = [f"# Rule scale through the real NFQUEUE ({'quick' if res['quick'] else 'full'} run, "
             f"{date})", "",
             f"Machine: {m['nproc']} CPUs, {m['cpu']}, kernel {m['kernel']}, Python {m['python']}. "
             "A TCG VM runs beside the bench on this host: absolute rates move between runs, "
             "the ratios within one run are what counts.", "",
             f"Command: `make bench BENCH_ARGS='--only scale{' --quick' if res['quick'] else ''}'` "
             f"(= `python -m bench --only scale{' --quick' if res['quick'] else ''}`, as root).", "",
             f"Drain: {res['drain_count']} Echo Request packets a -> b pre-queued with the consumer "
             f"stopped, then drained (queue maxlen {BIG_MAXLEN}); {res['rounds']} round(s), each "
             f"starting every consumer in turn and draining it {res['per_round']} times; median "
             "[min–max] of all drains. Tables: the defaults plus N realistic user rules "
             "(bench/rulesets.py), none matching the flood. RTT: ping a -> b through the gateway "
             f"({res['probes']} probes, 1 ms apart) over {res['latency_bg']} pps background; "
             "added = minus the same run's RTT with no queue.", "",
             "CPU/pkt: the consumer's user+system CPU over each drain / packets (clock ticks of "
             "10 ms over a drain of a few hundred ms: ±0.2 µs), median; it is less moved by this "
             "host's noise than the rate, which also counts time the consumer or the kernel's "
             "side was not running.", "",
             "| consumer | user rules | drain kpps | × same engine, 0 rules | µs CPU/pkt "
             "| RSS idle/peak MiB | RTT p50/p99 µs | added p50/p99 µs |",
             "|---|---:|---|---:|---:|---|---|---|"]
    none = res["latency"].get("none", {})
    c = res["drain_pps"].get("c-batch")
    cpu = res.get("cpu_us_per_pkt", {})

    def cpu_cell(key: str) -> str:
        return f"{cpu[key]['median']:.2f}" if key in cpu else "-"

    if c:
        lines.append(f"| bare C batched | - | {c['median'] / 1e3:.0f} [{c['min'] / 1e3:.0f}–"
                     f"{c['max'] / 1e3:.0f}] | - | {cpu_cell('c-batch')} | - | - | - |")
    for engine in ENGINES:
        base = _median(res, _key(engine, 0))
        for n in COUNTS:
            key = _key(engine, n)
            d = res["drain_pps"].get(key)
            if not d:
                continue
            r = res["rss_kib"].get(key, {})
            lat = res["latency"].get(key)
            rtt = f"{lat['p50_us']:.0f}/{lat['p99_us']:.0f}" if lat else "-"
            added = (f"{lat['p50_us'] - none['p50_us']:.0f}/{lat['p99_us'] - none['p99_us']:.0f}"
                     if lat and none else "-")
            lines.append(f"| shim, {engine} | {n:,} | {d['median'] / 1e3:.0f} [{d['min'] / 1e3:.0f}–"
                         f"{d['max'] / 1e3:.0f}] | {d['median'] / base:.2f} | {cpu_cell(key)} | "
                         f"{r.get('idle', 0) / 1024:.0f}/{r.get('peak', 0) / 1024:.0f} | {rtt} "
                         f"| {added} |")
    if none:
        lines += ["", f"No queue (forwarding only): RTT p50/p99 {none['p50_us']:.0f}/"
                      f"{none['p99_us']:.0f} µs."]
    lines += ["", "Targets:", ""] + [f"- {t}" for t in targets(res)]
    cls = res.get("classifier", {})
    if "failed" in cls:
        lines += ["", f"bench_classifier.py failed: {cls['failed']}"]
    elif cls:
        from bench.bench_classifier import render as render_cls
        lines += ["", "## In-process (bench/bench_classifier.py)", "",
                  render_cls(cls["classify"], cls["rss"], cls["build"], cls.get("shapes")).rstrip()]
    return "\n".join(lines) + "\n"


def write(res: dict[str, Any], machine: dict[str, object], out_dir: Path) -> tuple[Path, Path]:
    """Write scale.md and scale.json into out_dir; returns both paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    date = time.strftime("%Y-%m-%d %H:%M")
    res = dict(res, machine=machine, date=date, targets=targets(res))
    md, js = out_dir / "scale.md", out_dir / "scale.json"
    md.write_text(render(res, machine, date))
    js.write_text(json.dumps(res, indent=1) + "\n")
    return md, js

