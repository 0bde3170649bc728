# SPDX-License-Identifier: MIT
"""Diversion rendering (pure) and, in a namespace, install/remove/idempotence."""

from __future__ import annotations


import pytest

from shim.diversion import (BUDGET_CLASSES, BudgetSpec, IptablesDiversion, NftDiversion, QueueSpec,
                            choose_backend, parse_ipt_counters, parse_nft_counters)
from shim.errors import EnvironmentProblem
from shim.model import Backend, Hook
from shim.netns import Topology, TopologySpec, NodeSpec, in_netns


class TestRender:
    def test_nft_single_queue_bypass(self) -> None:
        """One queue with fail-open renders `queue num N bypass` on each hook chain."""
        text = NftDiversion(QueueSpec(first=3, hooks=(Hook.INPUT, Hook.FORWARD))).render()
        assert text.count("meta l4proto ipv6-icmp counter queue num 3 bypass") == 2
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


BUDGET = BudgetSpec(rates=(("nd", 50), ("error", 60), ("other", 70)), interfaces=("eth0", "eth1"))


class TestBudgetRender:
    """Issue 16.5: budgets are rules before the queue rule, keyed by interface and class."""

    def test_nft_budget_before_queue_keyed_by_direction(self) -> None:
        """Input/forward charge the ingress interface, output the egress one; the rules come
        before the (counted) queue rule in each chain."""
        text = NftDiversion(QueueSpec(first=0, budget=BUDGET)).render()
        for chain in text.split("  chain ")[1:]:
            hook = chain.split()[0]
            key = "oif" if hook == "output" else "iif"
            d = "out" if hook == "output" else "in"
            lines = [line.strip() for line in chain.splitlines()]
            queue = next(i for i, line in enumerate(lines) if "queue num 0" in line)
            budget = [i for i, line in enumerate(lines) if "limit rate over" in line]
            assert len(budget) == len(BUDGET_CLASSES) and max(budget) < queue
            assert all(f"@budget_{n}_{d} {{ {key} limit rate over {r}/second" in chain
                       for n, r in BUDGET.rates)
            assert "counter queue num 0" in lines[queue]

    def test_nft_other_excludes_the_named_classes(self) -> None:
        """`other` is every type that ND and errors do not name, even one without a budget."""
        spec = BudgetSpec(rates=(("other", 9),))
        text = NftDiversion(QueueSpec(first=0, hooks=(Hook.INPUT,), budget=spec)).render()
        named = sorted(t for _n, types in BUDGET_CLASSES if types for t in types)
        assert "icmpv6 type != { " + ", ".join(map(str, named)) + " }" in text
        assert text.count("limit rate over") == 1

    def test_iptables_budget_chains(self) -> None:
        """A bucket per interface plus a shared one per class and direction; output has its
        own direction chain; over budget drops, or accepts when so configured."""
        text = IptablesDiversion(QueueSpec(first=3, budget=BUDGET)).render()
        assert text.count("--hashlimit-above 50/sec") == 2 * 3  # (eth0, eth1, the rest) x in/out
        assert "-A ICMP6_SHIM_Q3_IN_ND -i eth1 -m hashlimit" in text
        assert "-A ICMP6_SHIM_Q3_OUT_OTHER -o eth0 -m hashlimit" in text
        assert "-I OUTPUT 1 -j ICMP6_SHIM_Q3_OUT" in text and "-I FORWARD 1 -j ICMP6_SHIM_Q3_IN" in text
        assert "-j ACCEPT" not in text
        accept = IptablesDiversion(QueueSpec(first=3, budget=BudgetSpec(
            rates=BUDGET.rates, verdict="accept", interfaces=("eth0",)))).render()
        assert "-j DROP" not in accept and accept.count("-j ACCEPT") == 2 * 3 * 2

    def test_no_budget_renders_none(self) -> None:
        """Without a BudgetSpec nothing but the queue rules is laid."""
        assert "hashlimit" not in IptablesDiversion(QueueSpec(first=0)).render()
        assert "limit rate" not in NftDiversion(QueueSpec(first=0)).render()


class TestCounterParsing:
    def test_iptables_save(self) -> None:
        """Queue and budget rule counters from ip6tables-save -c; RETURNs are not cuts."""
        text = ("*mangle\n[7:700] -A ICMP6_SHIM_Q0 -p ipv6-icmp -j NFQUEUE --queue-num 0\n"
                "[5:500] -A ICMP6_SHIM_Q0_IN_ND -i eth0 -m hashlimit --hashlimit-above 1/sec -j DROP\n"
                "[9:900] -A ICMP6_SHIM_Q0_IN_ND -i eth0 -j RETURN\n"
                "[2:200] -A ICMP6_SHIM_Q0_IN_ND -m hashlimit --hashlimit-above 1/sec -j DROP\n"
                "[3:300] -A ICMP6_SHIM_Q0_OUT_OTHER -o eth1 -m hashlimit --hashlimit-above 1/sec -j DROP\n"
                "[4:400] -A ICMP6_SHIM_Q0_IN -p ipv6-icmp -g ICMP6_SHIM_Q0_IN_ND\nCOMMIT\n")
        # Another instance's chains (queue 1) are not ours.
        text = text.replace("COMMIT", "[8:800] -A ICMP6_SHIM_Q1 -p ipv6-icmp -j NFQUEUE --queue-num 1\n"
                            "[6:600] -A ICMP6_SHIM_Q1_IN_ND -i eth0 -m hashlimit --hashlimit-above 1/sec "
                            "-j DROP\nCOMMIT")
        c = parse_ipt_counters(text, "ICMP6_SHIM_Q0")
        assert c.queued == 7
        assert c.budget == {"nd_in": 7, "other_out": 3}
        assert c.by_interface == {"eth0_in": 5, "*_in": 2, "eth1_out": 3}

    def test_nft_json(self) -> None:
        """Queue rules (by their queue statement) and budget rules (by comment) from nft -j."""
        import json

        rules = [{"rule": {"expr": [{"counter": {"packets": 4, "bytes": 1}}, {"queue": {"num": 0}}]}},
                 {"rule": {"comment": "budget nd in", "expr": [{"counter": {"packets": 6, "bytes": 1}},
                                                               {"drop": None}]}},
                 {"rule": {"comment": "budget nd in", "expr": [{"counter": {"packets": 1, "bytes": 1}}]}}]
        c = parse_nft_counters(json.dumps({"nftables": [{"metainfo": {}}, *rules]}))
        assert (c.queued, c.budget) == (4, {"nd_in": 7})


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


@pytest.mark.netns
class TestBudgetInNamespace:
    def test_iptables_budget_counts_and_removes(self, lone_ns: Topology) -> None:
        """Echo requests over lo beyond a 1/s budget are cut and counted on the interface found
        at install (lo); installing twice lays one copy; remove leaves nothing of ours."""
        import socket

        spec = QueueSpec(first=7, budget=BudgetSpec(rates=(("other", 1),)))
        div = IptablesDiversion(spec)
        with in_netns(lone_ns.ns("x")):
            div.install()
            div.install()
            refused = 0
            with socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6) as s:
                for i in range(20):
                    try:
                        s.sendto(bytes([128, 0, 0, 0, 0, 1, 0, i]), ("::1", 0))
                    except PermissionError:  # dropped at OUTPUT: the sender hears EPERM
                        refused += 1
            counters = div.counters()
        _nft, ipt = _ruleset(lone_ns)
        assert ipt.count("-j ICMP6_SHIM_Q7_IN") == 2 and ipt.count("-j ICMP6_SHIM_Q7_OUT") == 1
        assert counters is not None
        # 20 requests leave by lo: at most a burst of 1 and a token or two pass the budget.
        # Cut at output: our refused requests, and the kernel's reply to one that passed.
        assert counters.budget["other_out"] == counters.by_interface["lo_out"] >= refused >= 15
        assert counters.queued >= 1  # what was within budget reached the queue rule
        with in_netns(lone_ns.ns("x")):
            div.remove()
        _nft, ipt = _ruleset(lone_ns)
        assert "ICMP6_SHIM" not in ipt and "hashlimit" not in ipt

    def test_nft_budget_rules_pass_the_kernel_check(self, lone_ns: Topology) -> None:
        """The budget sets and rules are valid for this kernel (`nft --check`), with the queue
        statement swapped for `accept` where the kernel lacks the queue expression."""
        text = NftDiversion(QueueSpec(first=0, budget=BUDGET)).render()
        div = NftDiversion(QueueSpec(first=0))
        with in_netns(lone_ns.ns("x")):
            if div.probe() is not None:
                text = text.replace("counter queue num 0 bypass", "counter accept")
            proc = lone_ns.run("x", "sh", "-c", f"nft --check -f - <<'EOF'\n{text}EOF\n")
        assert proc.returncode == 0, proc.stderr
