# SPDX-License-Identifier: MIT
"""Diversion rendering (pure) and, in a namespace, install/remove/idempotence."""

from __future__ import annotations

import subprocess

import pytest

from shim.diversion import DIVERTED, IptablesDiversion, NftDiversion, QueueSpec, choose_backend
from shim.errors import EnvironmentProblem
from shim.model import Backend, Hook
from shim.netns import Topology, TopologySpec, NodeSpec, in_netns


_QUEUED = sum(1 for d in DIVERTED if d.queue)
_IPT_QUEUED = sum(len(d.ipt) for d in DIVERTED if d.queue)


def _chains(text: str) -> dict[str, list[str]]:
    """nft -f text -> {chain name: its rule lines (without the type line)}."""
    chains: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("chain "):
            current = chains.setdefault(line.split()[1], [])
        elif line == "}":
            current = None
        elif current is not None and not line.startswith("type "):
            current.append(line)
    return chains


class TestRender:
    def test_nft_single_queue_bypass(self) -> None:
        """One queue with fail-open renders `queue num N bypass` on each hook chain."""
        text = NftDiversion(QueueSpec(first=3, hooks=(Hook.INPUT, Hook.FORWARD))).render()
        assert text.count("meta l4proto ipv6-icmp queue num 3 bypass") == 2
        assert text.count("queue num 3 bypass") == 2 * _QUEUED
        assert "hook input priority -150" in text and "hook forward priority -150" in text

    @pytest.mark.parametrize("hooks", [(Hook.INPUT,), (Hook.INPUT, Hook.OUTPUT, Hook.FORWARD),
                                       tuple(Hook)])
    def test_nft_diverts_what_the_policy_must_see(self, hooks: tuple[Hook, ...]) -> None:
        """Each hook chain: fragments, AH, ICMPv6, the parser's extra extension headers,
        then a return of every other found upper layer, then a queue of the rest (walk
        failed), every line for IPv6 only, in this order."""
        chains = _chains(NftDiversion(QueueSpec(first=1, hooks=hooks)).render())
        assert sorted(chains) == sorted(h.name.lower() for h in hooks)
        for rules in chains.values():
            assert all(r.startswith("meta nfproto ipv6 ") for r in rules)
            body = [r.removeprefix("meta nfproto ipv6 ") for r in rules]
            assert body == [
                "exthdr frag exists queue num 1 bypass",
                "meta l4proto ah queue num 1 bypass",
                "meta l4proto ipv6-icmp queue num 1 bypass",
                "meta l4proto { 135, 139, 140, 253, 254 } queue num 1 bypass",
                "meta l4proto != ipv6-icmp return",
                "queue num 1 bypass",
            ]

    def test_nft_check_statement_replaces_only_the_queue(self) -> None:
        """render(queue=...) keeps every match and the return, so --check tests them."""
        spec = QueueSpec(first=4, hooks=(Hook.FORWARD,))
        real = NftDiversion(spec).render()
        counted = NftDiversion(spec).render(queue="counter")
        assert counted == real.replace("queue num 4 bypass", "counter")
        assert "return" in counted and "queue" not in counted.replace("ipv6-icmp", "")

    def test_iptables_diverts_what_the_policy_must_see(self) -> None:
        """The chain: -m frag first (legacy -p would hotdrop a non-first fragment naming an
        extension header), AH, ICMPv6, 135/139/140/253/254, RETURN of the rest, then every
        packet left (l4proto unset: the kernel's walk failed); one jump per hook."""
        text = IptablesDiversion(QueueSpec(first=2, hooks=(Hook.INPUT, Hook.FORWARD))).render()
        lines = [line.removeprefix("ip6tables -t mangle ") for line in text.splitlines()]
        q = "-j NFQUEUE --queue-num 2 --queue-bypass"
        assert lines == [
            "-N ICMP6_SHIM",
            f"-A ICMP6_SHIM -m frag {q}",
            f"-A ICMP6_SHIM -m ah {q}",
            f"-A ICMP6_SHIM -p ipv6-icmp {q}",
            *(f"-A ICMP6_SHIM -p {p} {q}" for p in (135, 139, 140, 253, 254)),
            "-A ICMP6_SHIM ! -p ipv6-icmp -j RETURN",
            f"-A ICMP6_SHIM {q}",
            "-I INPUT 1 -j ICMP6_SHIM",
            "-I FORWARD 1 -j ICMP6_SHIM",
        ]

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
            assert nft.count("queue") == 2 * _QUEUED
        else:
            assert ipt.count("-j NFQUEUE") == _IPT_QUEUED and ipt.count("-j ICMP6_SHIM") == 2
            installed = [line for line in ipt.splitlines() if line.startswith("-A ICMP6_SHIM")]
            assert len(installed) == len(div.rules())  # render() is what install() ran
        with in_netns(lone_ns.ns("x")):
            div.remove()
            div.remove()
        nft, ipt = _ruleset(lone_ns)
        assert "icmp6_shim" not in nft and "ICMP6_SHIM" not in ipt and "NFQUEUE" not in ipt

    def test_nft_accepts_the_matches(self, lone_ns: Topology) -> None:
        """`nft --check` takes every match and the return on this kernel (with `counter`
        for the queue statement where the kernel has no queue expression)."""
        div = NftDiversion(QueueSpec(first=0))
        with in_netns(lone_ns.ns("x")):
            proc = subprocess.run(["nft", "--check", "-f", "-"], input=div.render(queue="counter"),
                                  capture_output=True, text=True, timeout=30)
            queue_ok = div.probe() is None
        assert proc.returncode == 0, proc.stderr
        if queue_ok:  # a stock kernel: the whole diversion, queue included, is accepted
            with in_netns(lone_ns.ns("x")):
                div.install()
                listed = lone_ns.run("x", "nft", "list", "table", "inet", "icmp6_shim").stdout
                div.remove()
            assert listed.count("queue") == 3 * _QUEUED and "exthdr frag exists" in listed

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
