# SPDX-License-Identifier: MIT
"""Diversion rendering (pure) and, in a namespace, install/remove/idempotence."""

from __future__ import annotations


import pytest

from shim.diversion import IptablesDiversion, NftDiversion, QueueSpec, choose_backend
from shim.errors import EnvironmentProblem
from shim.model import Backend, Hook
from shim.netns import Topology, TopologySpec, NodeSpec, in_netns


class TestRender:
    def test_nft_single_queue_bypass(self) -> None:
        """One queue with fail-open renders `queue num N bypass` on each hook chain."""
        text = NftDiversion(QueueSpec(first=3, hooks=(Hook.INPUT, Hook.FORWARD))).render()
        assert text.count("meta l4proto ipv6-icmp queue num 3 bypass") == 2
        assert "hook input priority -150" in text and "hook forward priority -150" in text

    def test_nft_fanout_fail_closed(self) -> None:
        """Several queues are spread by flow hash; fail-closed drops `bypass`."""
        text = NftDiversion(QueueSpec(first=2, count=3, fail_open=False)).render()
        assert "queue num 2-4\n" in text and "fanout" not in text and "bypass" not in text

    def test_iptables_balance(self) -> None:
        """Several queues use --queue-balance A:B, fail-open adds --queue-bypass."""
        text = IptablesDiversion(QueueSpec(first=0, count=2)).render()
        assert "--queue-balance 0:1 --queue-bypass" in text
        assert "-I INPUT 1 -j ICMP6_SHIM" in text


@pytest.fixture
def lone_ns() -> object:
    topo = Topology(TopologySpec(name="lone", description="", nodes=(NodeSpec(name="x"),), links=()),
                    prefix="i6div-")
    topo.up()
    yield topo
    topo.down()


def _ruleset(topo: Topology) -> tuple[str, str]:
    nft = topo.run("x", "nft", "list", "ruleset").stdout
    ipt = topo.run("x", "ip6tables-save").stdout
    return nft, ipt


@pytest.mark.netns
class TestInNamespace:
    def test_auto_picks_a_working_backend_and_says_why(self, lone_ns: Topology) -> None:
        """auto probes the kernel: nft if it has the queue expression, else iptables."""
        spec = QueueSpec(first=0)
        with in_netns(lone_ns.ns("x")):
            div, why = choose_backend(Backend.AUTO, spec)
            nft_ok = NftDiversion(spec).probe() is None
        assert div.name == ("nft" if nft_ok else "iptables")
        assert why

    @pytest.mark.parametrize("backend", ["nft", "iptables"])
    def test_install_twice_then_remove(self, lone_ns: Topology, backend: str) -> None:
        """Installing twice yields one copy; remove leaves nothing of ours."""
        spec = QueueSpec(first=5, hooks=(Hook.INPUT, Hook.FORWARD))
        div = NftDiversion(spec) if backend == "nft" else IptablesDiversion(spec)
        with in_netns(lone_ns.ns("x")):
            if backend == "nft" and div.probe() is not None:
                with pytest.raises(EnvironmentProblem):
                    div.install()
                return
            div.install()
            div.install()
        nft, ipt = _ruleset(lone_ns)
        if backend == "nft":
            assert nft.count("queue") == 2
        else:
            assert ipt.count("-j NFQUEUE") == 1 and ipt.count("-j ICMP6_SHIM") == 2
        with in_netns(lone_ns.ns("x")):
            div.remove()
            div.remove()
        nft, ipt = _ruleset(lone_ns)
        assert "icmp6_shim" not in nft and "ICMP6_SHIM" not in ipt and "NFQUEUE" not in ipt

    def test_remove_leaves_foreign_rules(self, lone_ns: Topology) -> None:
        """Our install/remove never touches a rule that is not ours."""
        lone_ns.run("x", "ip6tables", "-t", "mangle", "-A", "INPUT", "-p", "udp", "-j", "ACCEPT")
        lone_ns.run("x", "nft", "add", "table", "inet", "theirs")
        with in_netns(lone_ns.ns("x")):
            div = IptablesDiversion(QueueSpec(first=0))
            div.install()
            div.remove()
        nft, ipt = _ruleset(lone_ns)
        assert "-A INPUT -p udp -j ACCEPT" in ipt and "table inet theirs" in nft
