# SPDX-License-Identifier: MIT
"""Turn a results dict into bench/results/latest.{md,json}: pure apart from the two writes.

The Markdown leads with the machine and core layout, then one row per
consumer: drain rate (median and spread of the runs), ratios to the
baselines, CPU per packet, highest offered rate without queue drops, RTT
added, RSS; then the targets of issue #7 as pass/fail lines.
"""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any

__all__ = ["machine", "render", "write"]


def machine() -> dict[str, object]:
    """nproc, CPU model, kernel, Python."""
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"nproc": os.cpu_count(), "cpu": model, "kernel": platform.release(),
            "python": platform.python_version()}


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if a and b else "-"


def _rate(v: dict[str, Any], profile: str = "echo") -> float:
    d = v.get("drain", {}).get(profile)
    return float(d["pps"]["median"]) if d else float(v.get("forward", {}).get("pps", 0.0))


def render(res: dict[str, Any]) -> str:
    """The Markdown report of one bench run."""
    m, variants = res["machine"], res["variants"]
    base_c = _rate(variants.get("c-batch", {}))
    base_py = _rate(variants.get("nfq-py", {}))
    base_scapy = _rate(variants.get("scapy", {}))
    lines = [
        f"# icmp6-shim benchmark ({'quick' if res.get('quick') else 'full'} run, {res['date']})", "",
        f"Machine: {m['nproc']} CPUs, {m['cpu']}, kernel {m['kernel']}, Python {m['python']}.",
        f"Core layout: {res['layout']}", "",
        ("Drain = packets pre-queued with the consumer stopped, then drained (Echo Request "
         f"profile, {res['drain_count']} packets, median of {res['repeats']} runs, [min–max]). "
         "No drops = highest offered rate of the sweep with no kernel queue drop "
         "(queue maxlen 4096, rcvbuf 4 MiB; ≥: no rate offered lost any). RTT = ping through "
         f"the gateway at {res['latency_bg']} pps background (both directions queued)."), "",
        ("| consumer | drain kpps | ×bare C | ×netfilterqueue | ×scapy | µs CPU/pkt | "
         "no drops up to kpps | RTT p50/p99 µs | RSS idle/peak MiB per worker |"),
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, v in variants.items():
        d = v.get("drain", {}).get("echo")
        rate = _rate(v)
        spread = (f"{rate / 1e3:.0f} [{d['pps']['min'] / 1e3:.0f}–{d['pps']['max'] / 1e3:.0f}]"
                  if d else f"{rate / 1e3:.0f} (forwarded)")
        ok = [s["offered_pps"] for s in v.get("sweep", []) if not s["drops"]]
        lat = v.get("latency", {})
        rss = v.get("rss_kib", {})
        cpu = d["cpu_us_per_pkt"]["median"] if d else "-"
        clean = bool(ok) and len(ok) == len(v.get("sweep", []))
        no_drops = (f"{'≥' if clean else ''}{max(ok) / 1e3:.0f}" if ok
                    else ("-" if not v.get("sweep") else "0"))
        lines.append(
            f"| {name} | {spread} | {_ratio(rate, base_c)} | {_ratio(rate, base_py)} | "
            f"{_ratio(rate, base_scapy)} | {cpu} | {no_drops} | "
            f"{lat.get('p50_us', '-')}/{lat.get('p99_us', '-')} | "
            f"{rss.get('idle', 0) / 1024:.0f}/{rss.get('peak', 0) / 1024:.0f} |")
    lines += ["", "Other traffic profiles (drain kpps, median):", "",
              "| consumer | ns | mix (echo, dst-opts, atomic fragment, NS) |", "|---|---|---|"]
    for name, v in variants.items():
        dr = v.get("drain", {})
        if "ns" in dr or "mix" in dr:
            lines.append(f"| {name} | {_rate(v, 'ns') / 1e3:.0f} | {_rate(v, 'mix') / 1e3:.0f} |")
    lines += ["", "Rate sweeps (offered kpps: queue drops):", ""]
    for name, v in variants.items():
        if v.get("sweep"):
            steps = ", ".join(f"{s['offered_pps'] / 1e3:.0f}: {s['drops']}"
                              + (f" ({s['socket_drops']} socket)" if s.get("socket_drops") else "")
                              for s in v["sweep"])
            lines.append(f"- {name}: {steps}")
    if res.get("soak"):
        lines += ["", "Soak (RSS growth over the run, KiB, all processes):", ""]
        for name, s in res["soak"].items():
            lines.append(f"- {name}: {s['seconds']:.0f} s at {s['rate'] / 1e3:.0f} kpps mix, "
                         f"growth {s['growth_kib']} KiB, queue drops {s['drops']}")
    lines += ["", "Targets (issue #7):", ""] + [f"- {t}" for t in res.get("targets", [])]
    if res.get("parse_bench"):
        lines += ["", "## Parser and matcher (bench/bench_parse.py)", "", res["parse_bench"].strip()]
    return "\n".join(lines) + "\n"


def write(res: dict[str, Any], out_dir: Path) -> tuple[Path, Path]:
    """Write latest.md and latest.json into out_dir; returns both paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    md, js = out_dir / "latest.md", out_dir / "latest.json"
    md.write_text(render(res))
    js.write_text(json.dumps(res, indent=1) + "\n")
    return md, js
