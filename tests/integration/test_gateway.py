# SPDX-License-Identifier: MIT
"""The gateway recipe against real xfrm fwd policies: what judges transit, what the fwd check sees.

The kernel checks `dir fwd` policies in ip6_forward before the FORWARD hook. The recipe
(hooks input, forward, output: docs/rules.md "On a gateway") judges a forwarded packet
once, at forward, with the transit rules; the fwd check sees the mark the packet arrived
with, so the operator's fwd policies decide it and the shim's mark is for later rules.
The counter-case is the old advice (prerouting too): judged twice, and the host rules'
bypass at prerouting selects the exported fwd allow, past the operator's fwd policy.
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from shim.lab.netns import Topology
from shim.lab.packets import icmp6_packet
from shim.lab.runner import ShimProcess
from tests.integration.wire import A, B, Wire

pytestmark = pytest.mark.netns

OBSERVE = ("table inet gwobs {\n chain post {\n  type filter hook postrouting priority 0; policy accept;\n"
           "  icmpv6 type packet-too-big meta mark & 0xff == 0x2 counter\n"
           "  icmpv6 type packet-too-big meta mark & 0xff == 0x1 counter\n }\n}\n")
# The operator's SPD: no forwarded Packet Too Big in the clear (as a tunnel's fwd policy would).
SPD_BLOCK = ["dir", "fwd", "src", "::/0", "dst", "::/0", "proto", "ipv6-icmp", "type", "2",
             "priority", "100", "action", "block"]


def _ptb(tag: bytes) -> bytes:
    invoking = icmp6_packet(B, A, 128, 0, b"\x00\x07\x00\x01" + bytes(32))
    return icmp6_packet(A, B, 2, 0, struct.pack("!I", 1280) + invoking + tag)


@pytest.fixture
def gateway(three_node: Topology) -> Iterator[Topology]:
    """g with an observer of the marks leaving it; its xfrm policies flushed afterwards."""
    subprocess.run(["ip", "netns", "exec", three_node.ns("g"), "nft", "-f", "-"], input=OBSERVE,
                   text=True, check=True)
    try:
        yield three_node
    finally:
        three_node.run("g", "nft", "delete", "table", "inet", "gwobs")
        three_node.run("g", "ip", "xfrm", "policy", "flush")


def _left_marked(topo: Topology) -> tuple[int, int]:
    """PTBs that left g carrying protect (0x2) and bypass (0x1)."""
    out = json.loads(topo.run("g", "nft", "-j", "list", "table", "inet", "gwobs").stdout)
    counts = [x["rule"]["expr"][-1]["counter"]["packets"] for x in out["nftables"] if "rule" in x]
    return counts[0], counts[1]


def _judged(topo: Topology, shim: ShimProcess) -> dict[str, int]:
    """The PTB rules' hits on g, from `stats --json` (one hit per judgement)."""
    out = topo.run("g", sys.executable, "-m", "shim", "stats", "--json", "--socket", shim.control_socket)
    assert out.returncode == 0, out.stderr
    rules = json.loads(out.stdout)["rules"]
    return {r["rule"]: r["hits"] for r in rules if "packet-too-big" in r["rule"] and r["hits"]}


def _export(topo: Topology, cfg: Path, *more: str) -> subprocess.CompletedProcess[str]:
    return topo.run("g", sys.executable, "-m", "shim", "export", "xfrm", "--config", str(cfg), *more)


class TestGatewayRecipe:
    def test_transit_ptb_judged_once_at_forward_and_fwd_check_sees_no_shim_mark(
        self, gateway: Topology, shim_on: Callable[..., ShimProcess],
        config_dir: Callable[..., Path], wire: Callable[..., Wire],
    ) -> None:
        """The recipe: one judgement (transit rule), protect set after the fwd check, export says so."""
        cfg = config_dir('[diversion]\nhooks = ["input", "forward", "output"]\n')
        exported = _export(gateway, cfg)
        assert "policy add dir fwd" not in exported.stdout and "no dir fwd allow" in exported.stdout
        # Block both shim marks at the fwd check: had a shim mark reached it, the PTB would stop.
        for mark, prio in (("0x1", "1"), ("0x2", "2")):
            gateway.run("g", "ip", "xfrm", "policy", "add", "dir", "fwd", "src", "::/0", "dst", "::/0",
                        "proto", "ipv6-icmp", "mark", mark, "mask", "0xff", "priority", prio,
                        "action", "block", check=True)
        shim = shim_on(gateway.ns("g"), cfg)
        w = wire()
        w.flush()
        w.send(_ptb(b"recipe-ptb"))
        assert w.arrived("b", b"recipe-ptb", timeout=1.5) == 1
        assert _judged(gateway, shim) == {"transit-packet-too-big": 1}
        assert _left_marked(gateway) == (1, 0)  # protect, set at forward, seen by later rules

    def test_operator_fwd_policy_decides_transit_under_the_recipe(
        self, gateway: Topology, shim_on: Callable[..., ShimProcess],
        config_dir: Callable[..., Path], wire: Callable[..., Wire],
    ) -> None:
        """Recipe plus exported policies plus an SPD blocking forwarded PTBs: blocked before the shim."""
        cfg = config_dir('[diversion]\nhooks = ["input", "forward", "output"]\n')
        assert _export(gateway, cfg, "--apply").returncode == 0
        gateway.run("g", "ip", "xfrm", "policy", "add", *SPD_BLOCK, check=True)
        shim = shim_on(gateway.ns("g"), cfg)
        w = wire()
        w.flush()
        w.send(_ptb(b"spd-ptb"))
        assert w.arrived("b", b"spd-ptb", timeout=1.5) == 0
        assert _judged(gateway, shim) == {}  # the fwd check stopped it before the FORWARD hook

    def test_prerouting_too_judges_twice_and_its_bypass_passes_the_fwd_policy(
        self, gateway: Topology, shim_on: Callable[..., ShimProcess],
        config_dir: Callable[..., Path], wire: Callable[..., Wire],
    ) -> None:
        """Old advice (prerouting, forward, output): host rule bypass, then transit protect; the
        prerouting mark selects the exported fwd allow, so the PTB passes the operator's block."""
        cfg = config_dir('[diversion]\nhooks = ["prerouting", "forward", "output"]\n')
        exported = _export(gateway, cfg, "--apply")
        assert exported.returncode == 0 and "judged twice" in exported.stdout
        assert "dir fwd src ::/0 dst ::/0 proto ipv6-icmp mark 0x1 mask 0xff" in exported.stdout
        gateway.run("g", "ip", "xfrm", "policy", "add", *SPD_BLOCK, check=True)
        shim = shim_on(gateway.ns("g"), cfg)
        w = wire()
        w.flush()
        w.send(_ptb(b"twice-ptb"))
        assert w.arrived("b", b"twice-ptb", timeout=1.5) == 1
        assert _judged(gateway, shim) == {"packet-too-big-in": 1, "transit-packet-too-big": 1}
        assert _left_marked(gateway) == (1, 0)  # the last judgement's mark; the fwd check saw 0x1
