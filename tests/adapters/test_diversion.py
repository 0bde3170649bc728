# SPDX-License-Identifier: MIT
"""Diversion rendering (pure) and, in a namespace, install/remove/idempotence."""

from __future__ import annotations

import subprocess

import pytest

from shim.adapters.diversion import (BUDGET_CLASSES, DIVERTED, BudgetSpec, IptablesDiversion, NftDiversion,
                            QueueSpec, choose_backend, ipt_script, parse_ipt_counters,
                            parse_nft_counters)
from shim.core.errors import EnvironmentProblem
from shim.core.model import Backend, Hook
from shim.lab.netns import Topology, TopologySpec, NodeSpec, in_netns


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
        assert text.count("meta l4proto ipv6-icmp icmpv6 type 0-255 counter queue num 3 bypass") == 2
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
                "exthdr frag exists counter queue num 1 bypass",
                "meta l4proto ah counter queue num 1 bypass",
                "meta l4proto ipv6-icmp icmpv6 type 0-255 counter queue num 1 bypass",
                "meta l4proto { 135, 139, 140, 253, 254 } counter queue num 1 bypass",
                "meta l4proto != ipv6-icmp return",
                "counter queue num 1 bypass",
            ]

    def test_nft_check_statement_replaces_only_the_queue(self) -> None:
        """render(queue=...) keeps every match and the return, so --check tests them."""
        spec = QueueSpec(first=4, hooks=(Hook.FORWARD,))
        real = NftDiversion(spec).render()
        counted = NftDiversion(spec).render(queue="counter")
        assert counted == real.replace("counter queue num 4 bypass", "counter")
        assert "return" in counted and "queue" not in counted.replace("ipv6-icmp", "")

    def test_iptables_diverts_what_the_policy_must_see(self) -> None:
        """The chain: -m frag first (legacy -p would hotdrop a non-first fragment naming an
        extension header), AH, ICMPv6, 135/139/140/253/254, RETURN of the rest, then every
        packet left (l4proto unset: the kernel's walk failed); one jump per hook."""
        text = IptablesDiversion(QueueSpec(first=2, hooks=(Hook.INPUT, Hook.FORWARD))).render()
        lines = [line.removeprefix("ip6tables -t mangle ") for line in text.splitlines()]
        q = "-j NFQUEUE --queue-num 2 --queue-bypass"
        assert lines == [
            "-N ICMP6_SHIM_Q2",
            f"-A ICMP6_SHIM_Q2 -m frag {q}",
            f"-A ICMP6_SHIM_Q2 -m ah {q}",
            f"-A ICMP6_SHIM_Q2 -p ipv6-icmp {q}",
            *(f"-A ICMP6_SHIM_Q2 -p {p} {q}" for p in (135, 139, 140, 253, 254)),
            "-A ICMP6_SHIM_Q2 ! -p ipv6-icmp -j RETURN",
            f"-A ICMP6_SHIM_Q2 {q}",
            "-I INPUT 1 -j ICMP6_SHIM_Q2",
            "-I FORWARD 1 -j ICMP6_SHIM_Q2",
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


BUDGET = BudgetSpec(rates=(("nd", 50), ("error", 60), ("other", 70)), interfaces=("eth0", "eth1"))
ALL_BUDGETS = BudgetSpec(rates=(*BUDGET.rates, ("headers", 80)), interfaces=("eth0",))


class TestBudgetRender:
    """Budgets are rules before the queue rule, keyed by interface and class."""

    def test_nft_budget_before_queue_keyed_by_direction(self) -> None:
        """Input/forward charge the ingress interface, output the egress one; the rules come
        before the (counted) queue rule in each chain."""
        text = NftDiversion(QueueSpec(first=0, budget=BUDGET)).render()
        for chain in text.split("  chain ")[1:]:
            hook = chain.split()[0]
            key = "oif" if hook == "output" else "iif"
            d = "out" if hook == "output" else "in"
            lines = [line.strip() for line in chain.splitlines()]
            queue = next(i for i, line in enumerate(lines)
                         if "meta l4proto ipv6-icmp icmpv6 type 0-255 counter queue num 0" in line)
            budget = [i for i, line in enumerate(lines) if "limit rate over" in line]
            # The three type classes, right before the ICMPv6 queue line, with its match.
            assert budget == [queue - 3, queue - 2, queue - 1]
            assert all("meta nfproto ipv6 meta l4proto ipv6-icmp icmpv6 type 0-255 icmpv6 type" in lines[i]
                       for i in budget)
            assert all(f"@budget_{n}_{d} {{ {key} limit rate over {r}/second" in chain
                       for n, r in BUDGET.rates)

    def test_nft_headers_budget_guards_every_other_queue_line(self) -> None:
        """What is queued for its header chain (fragments, AH, ...) is charged to "headers"
        with that line's own match, so a fragment flood is cut before the queue too."""
        chains = _chains(NftDiversion(QueueSpec(first=0, hooks=(Hook.INPUT,),
                                                budget=ALL_BUDGETS)).render())
        rules = chains["input"]
        queues = [i for i, r in enumerate(rules) if r.endswith("counter queue num 0 bypass")]
        assert len(queues) == _QUEUED
        for i in queues:
            match = rules[i].removesuffix(" counter queue num 0 bypass")
            if "ipv6-icmp" in match:
                continue
            assert rules[i - 1].startswith(f"{match} update @budget_headers_in {{ iif limit rate "
                                           "over 80/second"), rules[i - 1]
        assert sum("@budget_headers_in" in r for r in rules) == _QUEUED - 1

    def test_iptables_sorts_in_diverted_order(self) -> None:
        """The direction chain sorts a packet by the DIVERTED line that would queue it:
        fragments and AH first (a fragmented echo pays "headers"), then ICMPv6 by type, then
        the other extension headers; what DIVERTED returns returns; the rest pays "headers"."""
        text = IptablesDiversion(QueueSpec(first=5, hooks=(Hook.INPUT,), budget=ALL_BUDGETS)).render()
        chain = [line.removeprefix("ip6tables -t mangle -A ICMP6_SHIM_Q5_IN ")
                 for line in text.splitlines() if line.startswith("ip6tables -t mangle -A ICMP6_SHIM_Q5_IN ")]
        h = "-g ICMP6_SHIM_Q5_IN_HDRS"
        assert chain[:2] == [f"-m frag {h}", f"-m ah {h}"]
        assert chain[2] == "-p ipv6-icmp -m icmp6 --icmpv6-type 133 -g ICMP6_SHIM_Q5_IN_ND"
        assert chain[-7:] == [*(f"-p {p} {h}" for p in (135, 139, 140, 253, 254)),
                              "! -p ipv6-icmp -j RETURN", h]
        assert "-p ipv6-icmp -g ICMP6_SHIM_Q5_IN_OTHER" in chain
        # Without a headers budget those packets return at once (queued, never budgeted).
        text = IptablesDiversion(QueueSpec(first=5, hooks=(Hook.INPUT,), budget=BUDGET)).render()
        assert "HDRS" not in text and "-A ICMP6_SHIM_Q5_IN -m frag -j RETURN" in text

    def test_every_chain_name_fits_xtables_at_the_highest_queue(self) -> None:
        """xtables names hold 28 characters: the longest instance (queue 65535) with every
        budget and both directions still installs."""
        text = IptablesDiversion(QueueSpec(first=65535, budget=ALL_BUDGETS)).render()
        names = {line.split()[4] for line in text.splitlines() if line.split()[3] == "-N"}
        assert len(names) == 1 + 2 * (1 + len(BUDGET_CLASSES))
        assert max(map(len, names)) <= 28, sorted(names, key=len)[-1]

    def test_hashlimit_names_fit_and_carry_the_rate(self) -> None:
        """hashlimit names hold 15 characters at the highest queue and bucket index; a new
        rate is a new name (a kernel table of its own, not the old one's)."""
        many = tuple(f"eth{i}" for i in range(64))

        def names(rate: int) -> set[str]:
            budget = BudgetSpec(rates=(("nd", rate), ("headers", rate)), interfaces=many)
            text = IptablesDiversion(QueueSpec(first=65535, budget=budget)).render()
            words = text.split()
            return {words[i + 1] for i, w in enumerate(words) if w == "--hashlimit-name"}

        assert len(names(50)) == 2 * 2 * 65 and max(map(len, names(50))) <= 15
        assert names(50).isdisjoint(names(51))

    def test_icmpv6_without_a_type_pays_the_headers_budget(self) -> None:
        """nft: ICMPv6 too short for its type cannot be charged by type, so the ICMPv6 line
        asks for a readable type and such a packet reaches the last (budgeted) line."""
        rules = _chains(NftDiversion(QueueSpec(first=0, hooks=(Hook.INPUT,),
                                               budget=ALL_BUDGETS)).render())["input"]
        icmp = next(r for r in rules if "ipv6-icmp" in r and "queue" in r)
        assert "icmpv6 type 0-255" in icmp
        assert rules[-1] == "meta nfproto ipv6 counter queue num 0 bypass"
        assert "@budget_headers_in" in rules[-2] and "meta l4proto" not in rules[-2]

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


class TestIptScript:
    """ip6tables-restore input: one transaction that replaces ours and touches nothing else."""

    SAVE = ("*mangle\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n"
            ":ICMP6_SHIM_Q0 - [0:0]\n:ICMP6_SHIM_Q0_IN - [0:0]\n:ICMP6_SHIM_Q1 - [0:0]\n"
            ":THEIRS - [0:0]\n"
            "-A INPUT -j ICMP6_SHIM_Q0_IN\n-A INPUT -p udp -j THEIRS\n-A INPUT -j ICMP6_SHIM_Q0\n"
            "-A INPUT -j ICMP6_SHIM_Q0\n-A INPUT -j ICMP6_SHIM_Q1\n"
            "-A ICMP6_SHIM_Q0 -p ipv6-icmp -j NFQUEUE --queue-num 0\n"
            "-A ICMP6_SHIM_Q1 -p ipv6-icmp -j NFQUEUE --queue-num 1\nCOMMIT\n")

    def test_install_replaces_ours_and_only_ours(self) -> None:
        """Every old jump of ours is deleted by its spec (twice if listed twice), a chain the
        new copy no longer makes is deleted, the new one is declared (which flushes it) and
        laid; queue 1's chain and a foreign chain are not named at all."""
        div = IptablesDiversion(QueueSpec(first=0))
        lines = ipt_script(self.SAVE, "ICMP6_SHIM_Q0", div._commands()).splitlines()
        assert lines[0] == "*mangle" and lines[-1] == "COMMIT" and lines.count("COMMIT") == 1
        assert lines.count("-D INPUT -j ICMP6_SHIM_Q0") == 2
        assert lines.count("-D INPUT -j ICMP6_SHIM_Q0_IN") == 1
        assert "-X ICMP6_SHIM_Q0_IN" in lines and "-X ICMP6_SHIM_Q0" not in lines
        assert ":ICMP6_SHIM_Q0 - [0:0]" in lines
        assert not any("ICMP6_SHIM_Q1" in line or "THEIRS" in line for line in lines)
        laid = [line for line in lines if line.startswith(("-A ", "-I "))]
        assert laid == [" ".join(a) for a in div._commands() if a[0] != "-N"]
        # Deletions come before the new lines: a -D after the new -I would take the new jump.
        assert max(i for i, l in enumerate(lines) if l.startswith(("-D", "-X"))) < \
            min(i for i, l in enumerate(lines) if l.startswith(("-A", "-I")))

    def test_remove_and_nothing_to_do(self) -> None:
        """No commands: ours deleted; nothing of ours and nothing to lay: no script."""
        lines = ipt_script(self.SAVE, "ICMP6_SHIM_Q0", []).splitlines()
        assert {"-X ICMP6_SHIM_Q0", "-X ICMP6_SHIM_Q0_IN"} <= set(lines)
        assert not any(line.startswith(("-A", "-I")) for line in lines)
        assert ipt_script(self.SAVE, "ICMP6_SHIM_Q7", []) == ""


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
                listed = lone_ns.run("x", "nft", "list", "table", "inet", div.spec.nft_table).stdout
                div.remove()
            assert listed.count("queue") == 3 * _QUEUED and "exthdr frag exists" in listed

    @pytest.mark.parametrize("backend", ["nft"], indirect=True)
    def test_probe_ignores_an_instance_owning_our_table(self, lone_ns: Topology,
                                                         backend: str) -> None:
        """Another instance's fail-open table is owned by its socket, and the kernel refuses
        other processes any change to it, even a check: the probe must not touch it, or a
        second instance reports "nft unusable" (and auto would pick iptables beside it)
        instead of failing at the queue bind."""
        spec = QueueSpec(first=0, fail_open=True)
        first = NftDiversion(spec)
        with in_netns(lone_ns.ns("x")):
            first.install()
            try:
                assert "flags owner" in lone_ns.run("x", "nft", "list", "table", "inet",
                                                     spec.nft_table).stdout
                assert NftDiversion(spec).probe() is None
                div, _why = choose_backend(Backend.AUTO, spec)
                assert div.name == "nft"
            finally:
                first.remove()

    def test_iptables_install_is_all_or_nothing(self, lone_ns: Topology) -> None:
        """A batch the kernel refuses changes nothing: the copy laid before stays whole (an
        install is one ip6tables-restore transaction, never remove-then-add)."""
        spec = QueueSpec(first=0)

        class Refused(IptablesDiversion):
            def _commands(self) -> list[list[str]]:
                return [*super()._commands(),
                        ["-A", spec.ipt_chain, "-m", "no_such_match_i6", "-j", "ACCEPT"]]

        good = IptablesDiversion(spec)
        with in_netns(lone_ns.ns("x")):
            good.install()
            before = good._sections()
            with pytest.raises(EnvironmentProblem, match="installing the ip6tables diversion"):
                Refused(spec).install()
            after = good._sections()
            good.remove()
        assert after == before and any(k.startswith("jumps from") for k in before)

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


def _echoes_to_lo_refused(n: int) -> int:
    """Send `n` Echo Requests to ::1 (in the current namespace); how many were refused."""
    import socket

    refused = 0
    with socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6) as s:
        for i in range(n):
            try:
                s.sendto(bytes([128, 0, 0, 0, 0, 1, 0, i]), ("::1", 0))
            except PermissionError:  # dropped at OUTPUT: the sender hears EPERM
                refused += 1
    return refused


@pytest.mark.netns
class TestBudgetInNamespace:
    def test_iptables_budget_counts_and_removes(self, lone_ns: Topology) -> None:
        """Echo requests over lo beyond a 1/s budget are cut and counted on the interface found
        at install (lo); installing twice lays one copy; remove leaves nothing of ours."""
        spec = QueueSpec(first=7, budget=BudgetSpec(rates=(("other", 1),)))
        div = IptablesDiversion(spec)
        with in_netns(lone_ns.ns("x")):
            div.install()
            div.install()
            refused = _echoes_to_lo_refused(20)
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

    def test_iptables_new_rate_applies_over_a_kept_copy(self, lone_ns: Topology) -> None:
        """A copy laid with a 1/s budget (a fail-closed leftover) replaced by one with a high
        budget: the new rate applies at once. hashlimit keeps one kernel table per name, and
        a rule laid in the transaction that deletes the old one would join the old table."""
        def spec(rate: int) -> QueueSpec:
            return QueueSpec(first=7, budget=BudgetSpec(rates=(("other", rate),)))

        with in_netns(lone_ns.ns("x")):
            IptablesDiversion(spec(1)).install()
            div = IptablesDiversion(spec(100_000))
            div.install()
            refused = _echoes_to_lo_refused(20)
            counters = div.counters()
            div.remove()
        assert counters is not None and refused == 0 and counters.budget["other_out"] == 0

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


class TestBackendRegistry:
    def test_every_backend_but_auto_has_a_class(self) -> None:
        """BACKENDS covers the Backend enum (auto picks among them), and nothing else."""
        from shim.adapters.diversion import BACKENDS

        assert set(BACKENDS) == set(Backend) - {Backend.AUTO}

    def test_each_backend_has_the_protocol(self) -> None:
        """Every backend names itself and can probe, install, remove, render and count."""
        from shim.adapters.diversion import BACKENDS, QueueSpec

        for kind, make in BACKENDS.items():
            backend = make(QueueSpec(first=7))
            assert backend.name
            for method in ("probe", "install", "remove", "render", "counters"):
                assert callable(getattr(backend, method)), (kind, method)
