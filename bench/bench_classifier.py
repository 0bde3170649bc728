# SPDX-License-Identifier: MIT
"""The compiled classifier in-process: classify() ns, compile time and memory by rule count.

Run: .venv/bin/python bench/bench_classifier.py [--quick]
Tables: the default config plus 0 / 1,000 / 10,000 realistic user rules
(bench/rulesets.py: mixed types, source and destination prefixes, hooks, a few
interfaces), loaded and compiled as the daemon does, judged with the compiled
classifier and with the plain walk (the reference). Packets: the flood's echo
request a -> b at forward (no user rule matches), a Neighbor Solicitation at
input (a default matches), a Packet Too Big at forward. Then compile time and
classifier memory for 1,000 / 10,000 / 50,000 rules built directly (50,000 is
past the config limit of 20,000) and the process's RSS growth. classify() ns: best of
5; times: process CPU clock, min and median of repeated runs.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import timeit
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.rulesets import realistic_rules  # noqa: E402
from shim.bindings.icmp6 import NativeTable  # noqa: E402
from shim.config.loader import load_config  # noqa: E402
from shim.core.model import NativeRule, Settings  # noqa: E402
from shim.core.rules import build_table  # noqa: E402
from shim.daemon.compile import FATE_SLOTS, Compiled, compile_config, ifindex  # noqa: E402
from shim.lab.packets import icmp6_packet  # noqa: E402

PACKETS = {
    "echo a->b (forward, no user rule)": (icmp6_packet("2001:db8:1::a", "2001:db8:2::b", 128, 0,
                                                       b"x" * 56), 2),
    "NS (input, a default)": (icmp6_packet("fe80::1", "ff02::1:ff00:2", 135, 0,
                                           bytes(4) + ipaddress.IPv6Address("fe80::2").packed,
                                           hop_limit=255), 1),
    "PTB (forward)": (icmp6_packet("2001:db8:2::b", "2001:db8:1::a", 2, 0,
                                   (1280).to_bytes(4, "big") + bytes(48)), 2),
}


def _rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


def compiled(n: int, repeat: int = 1) -> tuple[Compiled, dict[str, float]]:
    """The daemon's load and compile of the default config plus n realistic rules.

    Returns the last Compiled and the reload's CPU seconds (process CPU clock, so a busy
    host's descheduling is not counted): load_config (TOML, validation) and compile_config
    (rule table, C table, candidate lists, classifier), min and median of `repeat` runs.
    """
    load_s, compile_s = [], []
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "icmp6-shim.toml").write_text(realistic_rules(n))
        for _ in range(repeat):
            t0 = time.process_time()
            config = load_config(Path(tmp))
            t1 = time.process_time()
            c = compile_config(config)
            load_s.append(t1 - t0)
            compile_s.append(time.process_time() - t1)
    return c, {"load_s_min": min(load_s), "load_s_median": _median(load_s),
               "compile_s_min": min(compile_s), "compile_s_median": _median(compile_s)}


def classify_table(counts: tuple[int, ...], number: int, rounds: int = 5) -> list[dict[str, object]]:
    """classify() ns, compiled vs walk, per table and packet; and each table's reload cost.

    Timings interleaved over rounds, best of all (see structure)."""
    rows: list[dict[str, object]] = []
    timed: list[tuple[dict[str, object], str, NativeTable, bytes, int, int]] = []
    keep = []
    for n in counts:
        c, secs = compiled(n, repeat=3)
        walk = NativeTable(c.table.native_rules(ifindex), c.table.type_role, c.table.type_ike,
                           c.config.settings.ext_limit, fate_slots=FATE_SLOTS, compiled=False)
        keep.append((c, walk))
        for label, (data, hook) in PACKETS.items():
            a, b = c.native.classify(data, hook, 2, 3), walk.classify(data, hook, 2, 3)
            assert a == b, (label, a, b)
            row: dict[str, object] = {"rules": n, "packet": label,
                                      **{k: round(v, 4) for k, v in secs.items()}}
            rows.append(row)
            timed += [(row, "compiled_ns", c.native, data, hook, number),
                      (row, "walk_ns", walk, data, hook, max(number // max(n // 100, 1), 200))]
    for _ in range(rounds):
        for row, key, table, data, hook, calls in timed:
            ns = timeit.timeit(lambda: table.classify(data, hook, 2, 3), number=calls) / calls * 1e9
            row[key] = round(min(float(row.get(key, ns)), ns))  # type: ignore[arg-type]
    return rows


def _direct_rules(n: int) -> list[NativeRule]:
    """n rules like realistic_rules' anchors, built as NativeRules (no config limit)."""
    out = []
    for i in range(n):
        p = ipaddress.IPv6Address(f"2001:db8:{0x100 + i // 256:x}:{(i % 256) << 8:x}::").packed
        side = {"src_prefix": p, "src_plen": 56} if i % 2 else {"dst_prefix": p, "dst_plen": 56}
        out.append(NativeRule(types=frozenset({(128, 129, 2, 1, 3)[i % 5]}), hooks=1 << (i % 5),
                              indev=(0, 2, 3)[i % 3], **side))
    return out


def build_one(n: int, repeat: int) -> dict[str, object]:
    """Compile time and memory of the classifier of n rules (plus the defaults), built directly.

    The build is timed by itself (NativeTable.classifier_build_cpu: icmp6_cls_build on a
    built table, process CPU clock, `repeat` times, min and median). The first version of
    this bench subtracted a separately timed plain-walk NativeTable from a compiled one
    (wall clock, once each): the classifier is a small share of either (the Python-side
    rule fill and the candidate lists dominate), so the difference was noise of the two
    larger numbers, clamped at 0 when negative (50,000 rules showed 0.000 s). Memory: the
    classifier's own bytes, and the RSS growth of building the whole C table (rules,
    candidate lists, classifier) measured in a process of its own (build_table_sizes), so
    no earlier table's freed memory is reused.
    """
    d = build_table(Settings(), [])
    rules = _direct_rules(n) + list(d.native_rules(ifindex))
    before = _rss_kib()
    t = NativeTable(rules, d.type_role, d.type_ike, 16)
    grown = (_rss_kib() - before) / 1024
    build = t.classifier_build_cpu(repeat)
    s = t.classifier_stats()
    return {"rules": n, "build_s_min": round(min(build), 5),
            "build_s_median": round(_median(build), 5), "repeat": repeat,
            "classifier_mib": round(s["bytes"] / 2**20, 2), "buckets": s["buckets"],
            "bitvec_buckets": s["bitvec_buckets"], "table_rss_growth_mib": round(grown, 1)}


def build_table_sizes(counts: tuple[int, ...], repeat: int) -> list[dict[str, object]]:
    """build_one for each count, each in a fresh child process."""
    rows = []
    for n in counts:
        out = subprocess.run([sys.executable, __file__, "--build", str(n), "--repeat", str(repeat)],
                             capture_output=True, text=True, check=True, timeout=600)
        rows.append(json.loads(out.stdout))
    return rows


def _unanchored_rules(n: int) -> list[NativeRule]:
    """n rules without a prefix (one bucket: the bit-vector scheme over all of them), none
    matching PACKETS' echo: mixed types, hop-limit windows, interfaces the packet never uses."""
    return [NativeRule(types=frozenset({(128, 129, 2, 1, 3)[i % 5]}), hooks=1 << (i % 5),
                       hop_min=i % 200, hop_max=i % 200 + 8, indev=5 + i % 50)
            for i in range(n)]


def structure(counts: tuple[int, ...], repeat: int, rounds: int = 7) -> list[dict[str, object]]:
    """The design's figures (docs/design.md "The compiled classifier"): the same number of
    rules anchored on prefixes (one small bucket each) or all in one bit-vector bucket (the
    flat per-field bitset scheme: Lakshman-Stiliadis, and pipapo's per-packet AND of
    rules/64 words per field group), against the walk; classify() ns of the echo a -> b.

    This host's noise comes in spells longer than one timing, so every table is timed once
    per round, the rounds interleaved, and each figure is the best over all rounds."""
    d = build_table(Settings(), [])
    defaults = list(d.native_rules(ifindex))
    data, hook = PACKETS["echo a->b (forward, no user rule)"]
    rows: list[dict[str, object]] = [{"shape": "defaults only", "rules": 0}]
    timed: list[tuple[dict[str, object], str, NativeTable, int]] = [
        (rows[0], "compiled_ns", NativeTable(defaults, d.type_role, d.type_ike, 16), 20_000)]
    for n in counts:
        for shape, make in (("anchored on prefixes", _direct_rules),
                            ("no prefix: one bit-vector bucket", _unanchored_rules)):
            rules = make(n) + defaults
            t = NativeTable(rules, d.type_role, d.type_ike, 16)
            walk = NativeTable(rules, d.type_role, d.type_ike, 16, compiled=False)
            assert t.classify(data, hook, 2, 3) == walk.classify(data, hook, 2, 3)
            s = t.classifier_stats()
            build = t.classifier_build_cpu(repeat)
            row: dict[str, object] = {
                "shape": shape, "rules": n, "build_s_min": round(min(build), 5),
                "classifier_mib": round(s["bytes"] / 2**20, 2), "buckets": s["buckets"],
                "largest_bucket": s["largest_bucket"], "bitvec_buckets": s["bitvec_buckets"]}
            rows.append(row)
            timed += [(row, "compiled_ns", t, 20_000), (row, "walk_ns", walk, max(200, 2_000_000 // n))]
    for _ in range(rounds):
        for row, key, table, number in timed:
            ns = timeit.timeit(lambda: table.classify(data, hook, 2, 3), number=number) / number * 1e9
            row[key] = round(min(float(row.get(key, ns)), ns))  # type: ignore[arg-type]
    return rows


def render(classify: list[dict[str, object]], rss: dict[str, float],
           build: list[dict[str, object]], shapes: list[dict[str, object]] | None = None) -> str:
    """The Markdown of one run (bench/results/classifier.md)."""
    lines = ["| user rules | packet | compiled ns | walk ns | reload CPU s: load_config + "
             "compile_config (min, median of 3) |", "|---:|---|---:|---:|---:|"]
    for r in classify:
        lines.append(f"| {r['rules']:,} | {r['packet']} | {r['compiled_ns']} | {r['walk_ns']} "
                     f"| {r['load_s_min']:.3f} + {r['compile_s_min']:.3f} "
                     f"({r['load_s_median']:.3f} + {r['compile_s_median']:.3f}) |")
    lines += ["", f"RSS growth over the classify tables: {rss['growth_mib']:.1f} MiB "
              f"(peak RSS {rss['peak_mib']:.0f} MiB)", "",
              "| rules (built directly) | classifier build CPU s, min | median | classifier MiB "
              "| buckets | bit-vector buckets | RSS growth building the whole C table, fresh process, MiB |",
              "|---:|---:|---:|---:|---:|---:|---:|"]
    for r in build:
        lines.append(f"| {r['rules']:,} | {r['build_s_min']:.4f} | {r['build_s_median']:.4f} "
                     f"| {r['classifier_mib']:.1f} | {r['buckets']:,} | {r['bitvec_buckets']} "
                     f"| {r['table_rss_growth_mib']:.1f} |")
    if shapes:
        lines += ["", "Structure (echo a -> b, no rule matches; the same rules anchored on "
                  "prefixes or all without one):", "",
                  "| rules | shape | compiled ns | walk ns | build CPU s | classifier MiB | buckets "
                  "| largest bucket |", "|---:|---|---:|---:|---:|---:|---:|---:|"]
        for r in shapes:
            if not r["rules"]:
                lines.append(f"| 0 | {r['shape']} | {r['compiled_ns']} | - | - | - | - | - |")
                continue
            lines.append(f"| {r['rules']:,} | {r['shape']} | {r['compiled_ns']} | {r['walk_ns']} "
                         f"| {r['build_s_min']:.4f} | {r['classifier_mib']:.1f} | {r['buckets']:,} "
                         f"| {r['largest_bucket']:,} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--json", action="store_true", help="one JSON object instead of Markdown")
    p.add_argument("--build", type=int, default=-1, help=argparse.SUPPRESS)  # build_one in a child
    p.add_argument("--repeat", type=int, default=7, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.build >= 0:
        print(json.dumps(build_one(args.build, args.repeat)))
        return 0
    counts = (0, 1_000, 10_000)  # --quick: fewer calls per figure, the same tables
    before = _rss_kib()
    classify = classify_table(counts, 20_000 if args.quick else 200_000)
    rss = {"growth_mib": (_rss_kib() - before) / 1024,
           "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    build = build_table_sizes((1_000, 10_000, 50_000), 3 if args.quick else 7)
    shapes = structure((1_000, 10_000, 50_000), 3)
    if args.json:
        print(json.dumps({"classify": classify, "rss": rss, "build": build, "shapes": shapes}))
    else:
        print(f"Command: `.venv/bin/python bench/bench_classifier.py{' --quick' if args.quick else ''}`"
              f" ({time.strftime('%Y-%m-%d %H:%M')}; build and reload times are process CPU, so a "
              "busy host slows them less than wall clock would; classify() ns are wall clock, "
              "the best of interleaved rounds)\n")
        print(render(classify, rss, build, shapes), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
