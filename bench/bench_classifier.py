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
past the config limit of 20,000) and the process's RSS growth. Best of 5.
"""

from __future__ import annotations

import argparse
import ipaddress
import resource
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


def compiled(n: int) -> tuple[Compiled, float]:
    """The daemon's compile of the default config plus n realistic rules, and its seconds."""
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "icmp6-shim.toml").write_text(realistic_rules(n))
        config = load_config(Path(tmp))
        t0 = time.perf_counter()
        c = compile_config(config)
        return c, time.perf_counter() - t0


def _ns(t: NativeTable, data: bytes, hook: int, number: int) -> float:
    best = min(timeit.repeat(lambda: t.classify(data, hook, 2, 3), number=number, repeat=5))
    return best / number * 1e9


def classify_table(counts: tuple[int, ...], number: int) -> None:
    """classify() ns, compiled vs walk, per table and packet."""
    print("| user rules | packet | compiled ns | walk ns | compile s (whole config) |")
    print("|---:|---|---:|---:|---:|")
    for n in counts:
        c, secs = compiled(n)
        walk = NativeTable(c.table.native_rules(ifindex), c.table.type_role, c.table.type_ike,
                           c.config.settings.ext_limit, fate_slots=FATE_SLOTS, compiled=False)
        for label, (data, hook) in PACKETS.items():
            a, b = c.native.classify(data, hook, 2, 3), walk.classify(data, hook, 2, 3)
            assert a == b, (label, a, b)
            print(f"| {n:,} | {label} | {_ns(c.native, data, hook, number):.0f} "
                  f"| {_ns(walk, data, hook, max(number // max(n // 100, 1), 200)):.0f} "
                  f"| {secs:.2f} |")


def _direct_rules(n: int) -> list[NativeRule]:
    """n rules like realistic_rules' anchors, built as NativeRules (no config limit)."""
    out = []
    for i in range(n):
        p = ipaddress.IPv6Address(f"2001:db8:{0x100 + i // 256:x}:{(i % 256) << 8:x}::").packed
        side = {"src_prefix": p, "src_plen": 56} if i % 2 else {"dst_prefix": p, "dst_plen": 56}
        out.append(NativeRule(types=frozenset({(128, 129, 2, 1, 3)[i % 5]}), hooks=1 << (i % 5),
                              indev=(0, 2, 3)[i % 3], **side))
    return out


def build_table_sizes(counts: tuple[int, ...]) -> None:
    """Compile time and memory of the classifier alone, and the process's RSS growth."""
    d = build_table(Settings(), [])
    defaults = list(d.native_rules(ifindex))
    print("\n| rules (built directly) | classifier build s | classifier MiB | buckets | "
          "bit-vector buckets | RSS growth MiB |")
    print("|---:|---:|---:|---:|---:|---:|")
    for n in counts:
        rules = _direct_rules(n) + defaults
        before = _rss_kib()
        walk = NativeTable(rules, d.type_role, d.type_ike, 16, compiled=False)
        t0 = time.perf_counter()
        NativeTable(rules, d.type_role, d.type_ike, 16, compiled=False)
        plain = time.perf_counter() - t0
        t0 = time.perf_counter()
        t = NativeTable(rules, d.type_role, d.type_ike, 16)
        secs = time.perf_counter() - t0 - plain  # the classifier's share of the build
        s = t.classifier_stats()
        grown = (_rss_kib() - before) / 1024
        print(f"| {n:,} | {max(secs, 0):.3f} | {s['bytes'] / 2**20:.1f} | {s['buckets']:,} "
              f"| {s['bitvec_buckets']} | {grown:.1f} |")
        del t, walk


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    args = p.parse_args()
    counts = (0, 1_000) if args.quick else (0, 1_000, 10_000)
    before = _rss_kib()
    classify_table(counts, 20_000 if args.quick else 200_000)
    print(f"\nRSS growth over the classify tables: {(_rss_kib() - before) / 1024:.1f} MiB "
          f"(peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB)")
    build_table_sizes((1_000, 10_000) if args.quick else (1_000, 10_000, 50_000))
    return 0


if __name__ == "__main__":
    sys.exit(main())
