# SPDX-License-Identifier: MIT
"""Issue #2: real packets through a real kernel, NFQUEUE and the shim on the gateway."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from shim.lab.netns import Topology
from shim.lab.packets import icmp6_packet
from shim.lab.runner import ShimProcess, time_scale
from tests.integration.wire import A, B, G_A, Wire

pytestmark = pytest.mark.netns

REPO = Path(__file__).resolve().parents[2]


def _echo(tag: bytes, dst: str = B) -> bytes:
    return icmp6_packet(A, dst, 128, 0, b"\x00\x07\x00\x01" + tag)


def _ours(topo: Topology) -> str:
    """What of ours is installed on g (nft table or ip6tables chain/jumps); without counter
    values (`nft -s`), which ND and MLD traffic moves at any time."""
    nft = topo.run("g", "nft", "-s", "list", "ruleset").stdout
    ipt = topo.run("g", "ip6tables-save").stdout
    lines = [line for line in (nft + ipt).splitlines()
             if "icmp6_shim" in line or "ICMP6_SHIM" in line or "NFQUEUE" in line or "queue num" in line]
    # Counters move whenever a packet (DAD, an RS of the fresh topology) crosses: they are
    # not part of "what is installed".
    return re.sub(r"counter packets \d+ bytes \d+", "counter", "\n".join(lines))


class TestVerdictsTakeEffect:
    def test_accepted_echo_reaches_b_and_is_judged_once(
        self, three_node: Topology, shim_on: Callable[..., ShimProcess],
        config_dir: Callable[..., Path], wire: Callable[..., Wire], backend: str,
    ) -> None:
        """On the defaults an Echo Request through g is accepted (protect mark) and arrives."""
        shim = shim_on(three_node.ns("g"), config_dir(""))
        w = wire()
        w.flush()
        w.send(_echo(b"accept-me"))
        ev = shim.next_event("verdict", src=A, dst=B, icmp6_type=128)
        assert ev is not None and ev["verdict"] == "mark" and ev["hook"] == "forward"
        assert (ev["indev"], ev["outdev"]) == ("eth0", "eth1")  # g's a and b sides, by name
        assert w.arrived("b", b"accept-me") == 1
        assert shim.next_event("verdict", timeout=0.5, src=A, dst=B, icmp6_type=128) is None

    def test_dropped_echo_never_reaches_b(
        self, three_node: Topology, shim_on: Callable[..., ShimProcess],
        config_dir: Callable[..., Path], wire: Callable[..., Wire], backend: str,
    ) -> None:
        """A user rule dropping Echo Requests to b stops them at g; others still pass."""
        cfg = config_dir('[[rule]]\nname = "no-echo-to-b"\ntype = "echo-request"\n'
                         f'dst = "{B}/128"\nverdict = "drop"\n')
        shim = shim_on(three_node.ns("g"), cfg)
        w = wire()
        w.flush()
        w.send(_echo(b"drop-me"))
        ev = shim.next_event("verdict", src=A, dst=B, icmp6_type=128)
        assert ev is not None and ev["verdict"] == "drop" and ev["rule"] == "no-echo-to-b"
        assert w.arrived("b", b"drop-me") == 0
        w.send(_echo(b"to-g-ok", dst=G_A))
        assert w.arrived("g", b"to-g-ok") == 1

    def test_mark_is_seen_by_a_later_nft_rule(
        self, three_node: Topology, shim_on: Callable[..., ShimProcess],
        config_dir: Callable[..., Path], wire: Callable[..., Wire], backend: str,
    ) -> None:
        """A user mark verdict is visible to a later nftables rule matching the mark."""
        obs = ("table inet observe {\n chain forward_obs {\n  type filter hook forward priority 0; policy accept;\n"
               "  meta mark & 0xff00 == 0x4200 icmpv6 type echo-request counter\n }\n}\n")
        subprocess.run(["ip", "netns", "exec", three_node.ns("g"), "nft", "-f", "-"], input=obs,
                       text=True, check=True)
        try:
            cfg = config_dir('[[rule]]\nname = "tag-echo"\ntype = "echo-request"\n'
                             'verdict = "mark:0x4200/0xff00"\n')
            shim = shim_on(three_node.ns("g"), cfg)
            w = wire()
            for i in range(3):
                w.send(_echo(b"mark-%d" % i))
            assert w.arrived("b", b"mark-2", timeout=1.5) == 1
            out = json.loads(three_node.run("g", "nft", "-j", "list", "table", "inet", "observe").stdout)
            counters = [x["rule"]["expr"][-1]["counter"]["packets"] for x in out["nftables"]
                        if "rule" in x]
            assert counters == [3]
            assert shim.events
        finally:
            three_node.run("g", "nft", "delete", "table", "inet", "observe")

    def test_neighbor_discovery_keeps_working(
        self, three_node: Topology, shim_on: Callable[..., ShimProcess],
        config_dir: Callable[..., Path], backend: str,
    ) -> None:
        """With the shim judging g's input, a resolves g and pings it; ND gets the bypass mark."""
        shim = shim_on(three_node.ns("g"), config_dir(""))
        three_node.run("a", "ip", "-6", "neigh", "flush", "dev", "eth0")
        three_node.run("g", "ip", "-6", "neigh", "flush", "dev", "eth0")
        ping = three_node.run("a", "ping", "-6", "-c", "2", "-i", "0.2", "-W", "2", G_A)
        assert ping.returncode == 0, ping.stdout + ping.stderr
        assert three_node.neighbor_state("a", G_A) in ("REACHABLE", "STALE", "DELAY", "PROBE")
        ns = shim.next_event("verdict", icmp6_type=135, hook="input")
        assert ns is not None and ns["verdict"] == "mark" and ns["mark"] == 0x1
        assert (ns["indev"], ns["outdev"]) == ("eth0", None)  # no output device at input


class TestLifecycle:
    def test_stop_removes_diversion_and_starting_twice_does_not_duplicate(
        self, three_node: Topology, shim_on: Callable[..., ShimProcess],
        config_dir: Callable[..., Path], backend: str,
    ) -> None:
        """A second shim on a bound queue fails with one line; the rules exist once; stop removes them."""
        cfg = config_dir("")
        first = shim_on(three_node.ns("g"), cfg)
        installed = _ours(three_node)
        assert installed
        second = ShimProcess(cfg, netns=three_node.ns("g")).start()
        # Scaled: under emulation an interpreter start alone can take most of 20 s.
        assert second.proc is not None and second.proc.wait(20 * time_scale()) != 0
        second.close()
        err = " ".join(second.stderr_lines)
        assert "cannot bind NFQUEUE queue 0" in err and "Traceback" not in err
        assert _ours(three_node) == installed
        assert first.stop() == 0
        assert _ours(three_node) == ""

    @pytest.mark.parametrize("fail_open", [True, False])
    def test_sigkill_then_cleanup(
        self, three_node: Topology, shim_on: Callable[..., ShimProcess],
        config_dir: Callable[..., Path], wire: Callable[..., Wire], fail_open: bool, backend: str,
    ) -> None:
        """After SIGKILL, fail-open lets traffic flow and fail-closed stops it; cleanup removes all."""
        shim = shim_on(three_node.ns("g"), config_dir(f"[queue]\nfail_open = {str(fail_open).lower()}\n"))
        shim.signal(signal.SIGKILL)
        assert shim.proc is not None
        shim.proc.wait(10)
        # nft with fail_open owns its table through the daemon's netlink socket: the kernel
        # destroys it with the process, so nothing of ours is left to clean up.
        owned = backend == "nft" and fail_open
        assert bool(_ours(three_node)) != owned, _ours(three_node)
        w = wire()
        w.flush()
        w.send(_echo(b"after-kill"))
        assert w.arrived("b", b"after-kill") == (1 if fail_open else 0)
        out = three_node.run("g", sys.executable, "-m", "shim", "cleanup")
        assert out.returncode == 0 and (owned or "removed" in out.stdout), out.stdout + out.stderr
        assert _ours(three_node) == ""
        w.send(_echo(b"after-cleanup"))
        assert w.arrived("b", b"after-cleanup") == 1


class TestAuto:
    @pytest.mark.backend
    def test_auto_picks_nft_where_the_kernel_queues_with_nft_else_iptables(
        self, three_node: Topology, shim_on: Callable[..., ShimProcess],
        config_dir: Callable[..., Path], kernel_backends: dict[str, str | None],
    ) -> None:
        """`auto` takes nft when this kernel accepts an nft queue rule (asked of the kernel
        by the fixture, not by the shim's probe), else the xtables NFQUEUE target."""
        expected = "nft" if kernel_backends["nft"] is None else "iptables"
        if kernel_backends[expected] is not None:
            pytest.skip(f"this kernel takes neither backend: {kernel_backends}")
        shim = shim_on(three_node.ns("g"), config_dir('[diversion]\nbackend = "auto"\n'))
        ev = shim.next_event("backend_chosen")
        assert ev is not None and ev["backend"] == expected, (ev, kernel_backends)
        tables = three_node.run("g", "nft", "list", "tables").stdout
        ipt = three_node.run("g", "ip6tables-save", "-t", "mangle").stdout
        assert ("inet icmp6_shim" in tables) == (expected == "nft"), tables
        assert ("-j NFQUEUE" in ipt) == (expected == "iptables"), ipt


class TestClearErrors:
    def _run(self, topo: Topology, *prefix: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return topo.run("g", *prefix, sys.executable, "-m", "shim", "run", timeout=30, env=env)

    def test_without_cap_net_admin(self, three_node: Topology) -> None:
        """Without CAP_NET_ADMIN: one line naming the capability, exit 3, nothing installed."""
        out = self._run(three_node, "setpriv", "--inh-caps=-all", "--bounding-set=-net_admin",
                        "--reuid=65534", "--regid=65534", "--clear-groups")
        assert out.returncode == 3, out.stderr
        assert "CAP_NET_ADMIN" in out.stderr and "Traceback" not in out.stderr
        assert len(out.stderr.strip().splitlines()) == 1
        assert _ours(three_node) == ""

    def test_without_nft_and_iptables(self, three_node: Topology, tmp_path: Path) -> None:
        """With neither nft nor ip6tables on PATH: a precise line, exit 3, queue unbound."""
        bindir = tmp_path / "bin"
        bindir.mkdir()
        for tool in ("ip", "setpriv"):
            os.symlink(f"/usr/bin/{tool}" if os.path.exists(f"/usr/bin/{tool}") else f"/usr/sbin/{tool}",
                       bindir / tool)
        env = dict(os.environ, PATH=str(bindir))
        out = self._run(three_node, env=env)
        assert out.returncode == 3, out.stderr
        assert "no diversion backend works" in out.stderr and "Traceback" not in out.stderr
        assert _ours(three_node) == ""

    def test_broken_config(self, three_node: Topology, config_dir: Callable[..., Path]) -> None:
        """A broken config stops the start with exit 2 and a line naming the file."""
        cfg = config_dir("[queue]\nnum = 'zero'\n")
        out = three_node.run("g", sys.executable, "-m", "shim", "run", "--config", str(cfg))
        assert out.returncode == 2 and "icmp6-shim.toml" in out.stderr and "Traceback" not in out.stderr


class TestLargePackets:
    def test_large_packet_is_judged_whole(
        self, three_node: Topology, shim_on: Callable[..., ShimProcess],
        config_dir: Callable[..., Path], backend: str,
    ) -> None:
        """A 5000-octet echo sent by g itself (one skb at OUTPUT) is copied whole and judged."""
        shim = shim_on(three_node.ns("g"), config_dir(""))
        kernel = [line.split() for line in three_node.run(
            "g", "cat", "/proc/net/netfilter/nfnetlink_queue").stdout.splitlines()]
        assert kernel and kernel[0][4] == "65531"  # copy_range: 0xffff less the attribute header
        ping = three_node.run("g", "ping", "-6", "-c", "2", "-i", "0.2", "-W", "2", "-s", "5000", B)
        assert ping.returncode == 0, ping.stdout + ping.stderr
        ev = shim.next_event("verdict", icmp6_type=128, hook="output", dst=B)
        assert ev is not None and ev["rule"] == "echo-request" and ev["verdict"] == "mark"
