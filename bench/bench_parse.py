# SPDX-License-Identifier: MIT
"""Benchmark: nanoseconds per packet for the C parser and matcher.

Run as `.venv/bin/python bench/bench_parse.py [--quick]`. It compiles a small
throw-away cffi module (in a temp dir) from native/icmp6.c plus a C timing
loop, so the C figures carry no Python cost, and a no-op C function with the
same argument shape as icmp6_parse, so the cffi call overhead shows on its
own. The Python figures go through shim.bindings.icmp6, as the daemon does. Output
is a Markdown table on stdout. Nothing is written outside the temp dir.

Figures are the best of several repeats (the least disturbed run), per call.
"""

from __future__ import annotations

import argparse
import importlib.util
import ipaddress
import platform
import struct
import sys
import tempfile
import timeit
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from shim.core.model import NativeRule  # noqa: E402
from shim.bindings.icmp6 import NativeTable, parse  # noqa: E402

__all__ = ["SHAPES", "main"]

N_RULES = 24  # about the size of the draft's default table

BENCH_C = r"""
#include <time.h>
#include <string.h>
#include "icmp6.h"

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

int noop(const uint8_t *buf, size_t len) { return buf != NULL && len > 0; }

static void build(struct icmp6_table *t, struct icmp6_rule *r, uint32_t n)
{
    memset(t, 0, sizeof *t);
    for (uint32_t i = 0; i < n; i++) {
        memset(&r[i], 0, sizeof r[i]);
        memset(r[i].codes, 0xff, sizeof r[i].codes);
        uint32_t type = (i * 7 + 1) % 256;
        r[i].types[type / 64] = 1ull << (type % 64);
        r[i].need = ICMP6_NEED_TYPE;
        r[i].hooks = 0x1f; r[i].roles = 0xf; r[i].ike = 0xf; r[i].frag = 0xf;
        r[i].src_classes = 0x1ff; r[i].dst_classes = 0x1ff; r[i].hop_max = 255;
        r[i].chain_complete = -1; r[i].malformed = -1;
    }
    memset(t->type_role, ICMP6_ROLE_END_TO_END, 256);
    memset(t->type_ike, ICMP6_IKE_MAY, 256);
    t->n_rules = n; t->rules = r; t->ext_limit = 16;
}

double bench_parse(const uint8_t *buf, size_t len, uint64_t iters)
{
    struct icmp6_view v;
    volatile uint32_t sink = 0;
    double t0 = now_ns();
    for (uint64_t i = 0; i < iters; i++) {
        icmp6_parse(buf, len, 16, &v);
        sink += v.malformed + (uint32_t)v.icmpv6_type;
    }
    return (now_ns() - t0) / (double)iters;
}

double bench_classify(const uint8_t *buf, size_t len, uint64_t iters, uint32_t n_rules)
{
    struct icmp6_rule rules[64];
    struct icmp6_table t;
    struct icmp6_view v;
    volatile uint32_t sink = 0;
    build(&t, rules, n_rules > 64 ? 64 : n_rules);
    double t0 = now_ns();
    for (uint64_t i = 0; i < iters; i++) {
        sink += icmp6_classify(&t, buf, len, 1, 0, 0, &v);
    }
    return (now_ns() - t0) / (double)iters;
}
"""

BENCH_CDEF = """
int noop(const uint8_t *buf, size_t len);
double bench_parse(const uint8_t *buf, size_t len, uint64_t iters);
double bench_classify(const uint8_t *buf, size_t len, uint64_t iters, uint32_t n_rules);
"""


def _ipv6(nh: int, payload: bytes, src: str = "2001:db8::1", dst: str = "2001:db8::2",
          hlim: int = 64) -> bytes:
    return (struct.pack("!IHBB", 6 << 28, len(payload), nh, hlim)
            + ipaddress.IPv6Address(src).packed + ipaddress.IPv6Address(dst).packed + payload)


def _padn(nh: int) -> bytes:
    return bytes([nh, 0, 1, 4, 0, 0, 0, 0])


SLLA = bytes([1, 1, 2, 0, 0, 0, 0, 1])
SHAPES: dict[str, bytes] = {
    "echo request, 64 B data": _ipv6(58, bytes([128, 0, 0, 0, 0, 1, 0, 1]) + bytes(56)),
    "packet too big": _ipv6(58, bytes([2, 0, 0, 0]) + struct.pack("!I", 1280)
                                     + bytes(1280 - 48)),
    "NS + SLLA (valid ND)": _ipv6(58, bytes([135, 0, 0, 0]) + bytes(4)
                                  + ipaddress.IPv6Address("fe80::2").packed + SLLA,
                                  src="fe80::1", dst="ff02::1:ff00:2", hlim=255),
    "RA + 3 options": _ipv6(58, bytes([134, 0, 0, 0, 64, 0, 7, 8]) + bytes(8) + SLLA
                            + bytes([5, 1, 0, 0, 0, 0, 5, 220])
                            + bytes([3, 4, 64, 0xC0]) + bytes(28),
                            src="fe80::1", dst="ff02::1", hlim=255),
    "HBH+DstOpt+Frag(first)+echo": _ipv6(0, _padn(60) + _padn(44)
                                         + struct.pack("!BBHI", 58, 0, 1, 9)
                                         + bytes([128, 0, 0, 0]) + bytes(4)),
    "non-first fragment": _ipv6(44, struct.pack("!BBHI", 58, 0, 1448, 9) + bytes(1232)),
    "17 DestOpts (too many)": _ipv6(60, b"".join(_padn(60) for _ in range(16)) + _padn(58)
                                    + bytes([128, 0, 0, 0]) + bytes(4)),
    "truncated IPv6 header": bytes(30),
}


def _build_bench_module(tmp: Path) -> ModuleType:
    """Compile icmp6.c + the timing loop into a throw-away cffi module."""
    from cffi import FFI  # type: ignore[import-untyped]

    native = ROOT / "native"
    ffi = FFI()
    ffi.cdef("\n".join(line for line in (native / "icmp6.h").read_text().splitlines()
                       if not line.lstrip().startswith("#")) + BENCH_CDEF)
    # icmp6.c calls the compiled classifier (icmp6_cls_first), so classify.c links in too.
    ffi.set_source("_icmp6_bench", BENCH_C, sources=[str(native / "icmp6.c"), str(native / "classify.c")],
                   include_dirs=[str(native)], extra_compile_args=["-std=c11", "-O2"])
    so = ffi.compile(tmpdir=str(tmp), verbose=False)
    spec = importlib.util.spec_from_file_location("_icmp6_bench", so)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _best_ns(stmt: Any, number: int, repeat: int) -> float:
    """Best-of-repeat nanoseconds per call of stmt()."""
    return min(timeit.repeat(stmt, number=number, repeat=repeat)) / number * 1e9


def main() -> None:
    """Measure every shape and print the Markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer iterations (smoke run)")
    args = parser.parse_args()
    c_iters, py_number, repeat = (20_000, 2_000, 3) if args.quick else (2_000_000, 50_000, 5)

    rules = [NativeRule(types=frozenset({(i * 7 + 1) % 256})) for i in range(N_RULES)]
    table = NativeTable(rules, bytes([2] * 256), bytes([4] * 256), 16)
    with tempfile.TemporaryDirectory() as tmp:
        bench = _build_bench_module(Path(tmp))
        lib = bench.lib
        rows = []
        for name, data in SHAPES.items():
            n = len(data)
            c_parse = min(lib.bench_parse(data, n, c_iters) for _ in range(repeat))
            c_class = min(lib.bench_classify(data, n, c_iters, N_RULES) for _ in range(repeat))
            py_parse = _best_ns(lambda d=data: parse(d), py_number, repeat)
            py_class = _best_ns(lambda d=data: table.classify(d, 1, 0, 0), py_number, repeat)
            rows.append((name, n, c_parse, c_class, py_parse, py_class))
        noop = lib.noop
        sample = SHAPES["echo request, 64 B data"]
        noop_ns = _best_ns(lambda: noop(sample, len(sample)), py_number * 4, repeat)
        empty_ns = _best_ns(lambda: None, py_number * 4, repeat)

    print(f"Python {platform.python_version()}, {platform.machine()}, "
          f"{N_RULES}-rule table with no matching rule (full walk); ns per packet, best of "
          f"{repeat}\n")
    print("| packet shape | octets | C parse | C classify | Python parse() -> PacketView "
          "| Python NativeTable.classify() |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, n, c_parse, c_class, py_parse, py_class in rows:
        print(f"| {name} | {n} | {c_parse:.0f} | {c_class:.0f} | {py_parse:.0f} | "
              f"{py_class:.0f} |")
    print(f"\ncffi call overhead: no-op C call with (bytes, len) from Python = {noop_ns:.0f} ns; "
          f"an empty Python lambda call = {empty_ns:.0f} ns.")


if __name__ == "__main__":
    main()
