# SPDX-License-Identifier: MIT
"""The cheap pieces of `make bench`: frames, helper builds, the generator, the report writer.

Nothing here asserts on timings: only that each piece works.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from bench import scale
from bench.frames import PROFILES, frames, frames_file
from bench.harness import build_tools
from bench.report import machine, render, write
from shim.bindings.icmp6 import parse
from shim.lab.netns import Topology, load_topology

__all__: list[str] = []

MACS = {"src_mac": bytes.fromhex("020000000001"), "gw_mac": bytes.fromhex("020000000002")}
ADDRS = {"src": "2001:db8:1::a", "src_ll": "fe80::1", "dst": "2001:db8:2::b", "gw": "2001:db8:1::1"}


class TestFrames:
    """Every profile yields well-formed ICMPv6 the shim's parser accepts."""

    @pytest.mark.parametrize("profile", PROFILES)
    def test_profile_frames_parse_clean(self, profile: str) -> None:
        """Each frame is IPv6 with a complete chain, an ICMPv6 type, nothing malformed."""
        for frame in frames(profile, **MACS, **ADDRS):
            assert frame[12:14] == b"\x86\xdd"
            view = parse(frame[14:])
            assert view.malformed == () and view.chain_complete
            assert view.icmpv6_type in (128, 135)
            assert view.nd_valid in (None, True)

    def test_frames_file_round_trip(self) -> None:
        """Length-prefixed frames, little-endian, as gen.c reads them."""
        fl = frames("mix", **MACS, **ADDRS)
        blob = frames_file(fl)
        out, off = [], 0
        while off < len(blob):
            n = int.from_bytes(blob[off:off + 2], "little")
            out.append(blob[off + 2:off + 2 + n])
            off += 2 + n
        assert out == fl


class TestReport:
    """The report writer renders a results dict to Markdown and JSON."""

    def test_write_md_and_json(self, tmp_path: Path) -> None:
        """latest.md holds the table and targets; latest.json round-trips."""
        drain = {"echo": {"pps": {"median": 2e5, "min": 1.9e5, "max": 2.1e5, "runs": 3},
                          "cpu_us_per_pkt": {"median": 4.0, "min": 4.0, "max": 4.0, "runs": 3},
                          "runs": []}}
        res = {"machine": machine(), "layout": "test layout", "quick": True, "date": "today",
               "drain_count": 10, "repeats": 3, "latency_bg": 1,
               "variants": {"nfq-py": {"drain": drain, "sweep": [
                   {"target": 1, "offered_pps": 1000.0, "drops": 0, "cpu_us_per_pkt": 1.0}],
                   "latency": {"p50_us": 1.0, "p99_us": 2.0}, "rss_kib": {"idle": 1024, "peak": 2048}}},
               "targets": ["a: MET"]}
        md, js = write(res, tmp_path)
        text = md.read_text()
        assert "| nfq-py | 200 [190–210] |" in text and "- a: MET" in text
        assert "test layout" in text
        assert json.loads(js.read_text())["variants"]["nfq-py"]["rss_kib"]["peak"] == 2048
        assert render(res) == text


class TestScaleReport:
    """The scale step's writer: ratios to the same engine's 0-rule rate, targets met or missed."""

    @staticmethod
    def _res(rates: dict[str, float]) -> dict[str, object]:
        def drain(pps: float) -> dict[str, object]:
            return {"median": pps, "min": pps, "max": pps, "runs": 1, "all": [pps]}

        return {"quick": True, "drain_count": 10, "rounds": 1, "per_round": 1, "latency_bg": 1,
                "probes": 1, "drain_pps": {k: drain(v) for k, v in rates.items()},
                "cpu_us_per_pkt": {k: {"median": 2.0, "all": [2.0]} for k in rates},
                "rss_kib": {"batched/0": {"idle": 1024, "peak": 1024},
                            "batched/10000": {"idle": 2048, "peak": 100 * 1024}},
                "latency": {}, "classifier": {}}

    def test_ratios_and_targets(self, tmp_path: Path) -> None:
        """Each table's ratio is its rate over the same engine's 0-rule rate; a ratio under
        its goal and an RSS growth over 50 MiB are MISSED, the others MET."""
        rates = {"c-batch": 400e3, "batched/0": 400e3, "batched/1000": 380e3, "batched/10000": 200e3}
        md, js = scale.write(self._res(rates), machine(), tmp_path)
        text = md.read_text()
        assert f"| shim, batched | 10,000 | 200 [200–200] | {200 / 400:.2f} |" in text
        targets = json.loads(js.read_text())["targets"]
        assert any("10,000 rules / 0 rules" in t and "MISSED" in t for t in targets)
        assert any("1,000 rules / 0 rules" in t and f"{380 / 400:.2f}" in t and "MET" in t
                   for t in targets)
        assert any("RSS growth" in t and "MISSED" in t for t in targets)  # 99 MiB
        assert any("bare C" in t and "MET" in t for t in targets)
        assert any("netfilterqueue" in t and "not measured" in t for t in targets)


class TestTools:
    """The C helpers build; the generator sends what it says."""

    def test_helpers_build(self, tmp_path: Path) -> None:
        """gen and nfq_accept compile with their strict pragmas."""
        bins = build_tools(tmp_path)
        assert all(os.access(b, os.X_OK) for b in bins.values())

    @pytest.mark.netns
    def test_generator_sends_n_packets_a_counter_sees(self, tmp_path: Path) -> None:
        """N frames sent on a:eth0 arrive as N more rx packets on b:eth0 (bounded run)."""
        bins = build_tools(tmp_path)
        topo = Topology(load_topology("two-hosts"), prefix=f"i6g{os.getpid() % 10000}-")
        with topo:
            mac = bytes.fromhex(topo.run("b", "cat", "/sys/class/net/eth0/address").stdout.strip()
                                .replace(":", ""))
            src_mac = bytes.fromhex(topo.run("a", "cat", "/sys/class/net/eth0/address").stdout
                                    .strip().replace(":", ""))
            (tmp_path / "f").write_bytes(frames_file(frames(
                "echo", src_mac=src_mac, gw_mac=mac, src="2001:db8:1::a", src_ll="fe80::1",
                dst="2001:db8:1::b", gw="2001:db8:1::b")))

            def rx() -> int:
                return int(topo.run("b", "cat", "/sys/class/net/eth0/statistics/rx_packets").stdout)

            before = rx()
            out = topo.run("a", str(bins["gen"]), "eth0", str(tmp_path / "f"), "500", "0", "10",
                           check=True)
            assert json.loads(out.stdout)["sent"] == 500
            assert rx() - before >= 500
        assert subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False).stdout.count(
            topo.prefix) == 0
