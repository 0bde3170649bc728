# SPDX-License-Identifier: MIT
"""The diversion defends itself: the host's firewall tools cannot switch the shim off unseen.

While echo requests from A to B stream through G, whose shim drops them, the host's
ruleset is hit the ways an operator's tools hit it: `nft flush ruleset`, a reload of a
Debian-style /etc/nftables.conf (a file of this test's own, starting with
`flush ruleset`, loaded with `nft -f` in G's namespace), and `ip6tables -t mangle -F`.
Either the diversion was never touched (nft with fail_open: an owned table, which a
flush skips), or the daemon finds the gap and lays it again: the echoes that pass are
bounded by about a second of the stream, `diversion_restored` is logged and counted,
and the drop rule applies again.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from shim.adapters.diversion import NftDiversion, QueueSpec, cleanup_instance, nft_table_name
from shim.daemon.control import query
from shim.lab.netns import Topology, in_netns
from shim.lab.packets import icmp6_packet
from shim.lab.runner import ShimProcess, time_scale
from tests.integration.wire import A, B, Wire

pytestmark = pytest.mark.netns

DROP_ECHO = '[[rule]]\nname = "drop-echo"\ntype = "echo-request"\nverdict = "drop"\n'
# As Debian 12 ships /etc/nftables.conf: `systemctl reload nftables` runs `nft -f` on it.
NFTABLES_CONF = """#!/usr/sbin/nft -f

flush ruleset

table inet filter {
	chain input {
		type filter hook input priority filter;
	}
	chain forward {
		type filter hook forward priority filter;
	}
	chain output {
		type filter hook output priority filter;
	}
}
"""
STREAM = 300          # echo requests in a stream, one every 10 ms
DISTURB_AT = 30       # the one after which the ruleset is hit
GAP_BOUND = 200       # at 10 ms each, ~2 s: a check each 0.5 s, the loop's idle tick, a restore


def _disturb(topo: Topology, how: str, tmp: Path) -> None:
    if how == "nft-flush":
        proc = topo.run("g", "nft", "flush", "ruleset")
    elif how == "nftables-conf":
        conf = tmp / "nftables.conf"
        conf.write_text(NFTABLES_CONF)
        proc = topo.run("g", "nft", "-f", str(conf))
    elif how == "ipt-accept-ahead":
        # Not a flush: a rule put in front of ours whose ACCEPT ends mangle's walk first.
        for chain in ("INPUT", "FORWARD", "OUTPUT"):
            proc = topo.run("g", "ip6tables", "-w", "5", "-t", "mangle", "-I", chain, "1",
                            "-p", "ipv6-icmp", "-j", "ACCEPT")
            assert proc.returncode == 0, proc.stderr
    else:
        proc = topo.run("g", "ip6tables", "-w", "5", "-t", "mangle", "-F")
    assert proc.returncode == 0, proc.stderr


def _stream(w: Wire, topo: Topology, how: str, tmp: Path) -> int:
    """Send STREAM echoes, hit the ruleset after DISTURB_AT; how many reached B."""
    rx = w.rx["b"]
    passed = 0

    def drain(wait: float) -> None:
        nonlocal passed
        rx.settimeout(wait)
        for _ in range(STREAM):  # bounded: at most one read per echo sent
            try:
                data = rx.recv(65535)
            except (TimeoutError, BlockingIOError):
                return
            passed += b"sdgap" in data

    for i in range(STREAM):
        w.send(icmp6_packet(A, B, 128, 0, b"\x00\x07\x00\x01" + b"sdgap%05d" % i))
        if i == DISTURB_AT:
            _disturb(topo, how, tmp)
        drain(0.01)  # read as they come: the socket buffer must not cap the count
    drain(1.0 * time_scale())
    return passed


# (backend, fail_open, disturbance, whether our diversion is hit by it, workers)
CASES = [
    ("iptables", True, "nft-flush", True, 1),
    ("iptables", True, "nftables-conf", True, 1),
    ("iptables", True, "ipt-mangle-flush", True, 1),
    ("iptables", False, "nft-flush", True, 1),
    ("iptables", True, "ipt-accept-ahead", True, 1),
    # The supervisor owns the diversion and its guard.
    ("iptables", True, "ipt-mangle-flush", True, 2),
    # fail_open: the table is owned by the daemon's netlink socket, and a flush skips it.
    ("nft", True, "nft-flush", False, 1),
    ("nft", True, "nftables-conf", False, 1),
    ("nft", True, "ipt-mangle-flush", False, 1),
    ("nft", True, "nft-flush", False, 2),
    # fail-closed must outlive the daemon, so it is not owned: flushed, then laid again.
    ("nft", False, "nft-flush", True, 1),
    ("nft", False, "nftables-conf", True, 1),
    ("nft", False, "ipt-mangle-flush", False, 1),
    # An ACCEPT in ip6tables' chains ends only their walk: nft's own base chain still queues.
    ("nft", False, "ipt-accept-ahead", False, 1),
]


def _config(tmp: Path, text: str) -> Path:
    """A config directory with `text` and the batched engine: the guard and stop are the
    loop's, the same for both engines, so one engine is enough here."""
    d = tmp / f"cfg{len(list(tmp.iterdir()))}"
    (d / "rules.d").mkdir(parents=True)
    (d / "icmp6-shim.toml").write_text(text + '\n[engine]\nkind = "batched"\n')
    return d


def _skip_without_nft_queue(topo: Topology) -> None:
    with in_netns(topo.ns("g")):
        why = NftDiversion(QueueSpec(first=0)).probe()
    if why is not None:
        pytest.skip(f"this kernel refuses the nft queue expression ({why}); "
                    "the stock-kernel lane runs this case")


class TestDiversionDefendsItself:
    @pytest.mark.parametrize(("backend", "fail_open", "how", "hit", "workers"), CASES,
                             ids=[f"{b}-{'open' if o else 'closed'}-{h}-w{n}"
                                  for b, o, h, _, n in CASES])
    def test_flush_while_pings_stream(
        self, three_node: Topology, shim_on: Callable[..., ShimProcess],
        wire: Callable[..., Wire], tmp_path: Path,
        backend: str, fail_open: bool, how: str, hit: bool, workers: int,
    ) -> None:
        """The ruleset is flushed mid-stream: at most ~1 s of echoes passes (none when the
        owned table is untouched), the shim says what it found and restored, the drop
        rule applies again."""
        if backend == "nft":
            _skip_without_nft_queue(three_node)
        cfg = _config(tmp_path, f'[diversion]\nbackend = "{backend}"\n'
                         f'[queue]\nfail_open = {"true" if fail_open else "false"}\nworkers = {workers}\n'
                       + DROP_ECHO)
        shim = shim_on(three_node.ns("g"), cfg, extra=())
        w = wire()
        w.flush()
        passed = _stream(w, three_node, how, tmp_path)
        event = shim.next_event("diversion_restored", timeout=3.0 if hit else 1.5)
        if hit:
            assert event is not None, shim.stderr_tail()
            assert passed <= GAP_BOUND * time_scale(), passed
            assert event["backend"] == backend and event["found"], event
            print(f"passed {passed} of {STREAM}; found: {event['found']}")
            snap = query(shim.control_socket)
            assert snap["diversion"]["restored"] >= 1, snap["diversion"]
            statuses = [shim.wait_notify("STATUS", timeout=5)["STATUS"] for _ in range(8)]
            assert any("diversion restored" in st for st in statuses), statuses
        else:
            assert event is None and passed == 0, (event, passed)
            listed = three_node.run("g", "nft", "list", "table", "inet", nft_table_name(0))
            # Owned only with fail_open (see the CASES comment); there in either case.
            assert listed.returncode == 0, listed
            assert ("flags owner" in listed.stdout) == fail_open, listed.stdout
        w.send(icmp6_packet(A, B, 128, 0, b"\x00\x07\x00\x02" + b"sdafter"))
        assert w.arrived("b", b"sdafter") == 0  # the table's verdict applies again


class TestOwnedTableLife:
    @pytest.mark.parametrize("fail_open", [True, False], ids=["open", "closed"])
    def test_sigkill_follows_fail_open(
        self, three_node: Topology, shim_on: Callable[..., ShimProcess], tmp_path: Path,
        fail_open: bool,
    ) -> None:
        """SIGKILL: the kernel deletes the owned (fail-open) table with the daemon's socket;
        the fail-closed table is not owned and stays, so the kernel keeps dropping."""
        _skip_without_nft_queue(three_node)
        cfg = _config(tmp_path, '[diversion]\nbackend = "nft"\n'
                      f'[queue]\nfail_open = {"true" if fail_open else "false"}\n')
        shim = shim_on(three_node.ns("g"), cfg, extra=())
        assert shim.proc is not None
        shim.proc.kill()
        shim.proc.wait(10)
        try:
            listed = three_node.run("g", "nft", "list", "tables").stdout
            assert (nft_table_name(0) in listed) is not fail_open, listed
        finally:
            with in_netns(three_node.ns("g")):
                cleanup_instance(0)


class TestStopLeavesNothing:
    def test_iptables_stop_removes_the_mangle_table_it_made(
        self, three_node: Topology, shim_on: Callable[..., ShimProcess],
        tmp_path: Path,
    ) -> None:
        """iptables-nft made `table ip6 mangle` for our chains: stop removes it, and
        cleanup then finds nothing; a mangle table with someone's rule is kept."""
        three_node.run("g", "nft", "delete", "table", "ip6", "mangle")
        shim = shim_on(three_node.ns("g"), _config(tmp_path, '[diversion]\nbackend = "iptables"\n'),
                       extra=())
        assert "table ip6 mangle" in three_node.run("g", "nft", "list", "tables").stdout
        assert shim.stop() == 0
        assert "table ip6 mangle" not in three_node.run("g", "nft", "list", "tables").stdout
        with in_netns(three_node.ns("g")):
            assert cleanup_instance(0) == []
        rule = ("ip6tables", "-w", "5", "-t", "mangle", "-A", "INPUT", "-p", "udp", "-j", "ACCEPT")
        assert three_node.run("g", *rule).returncode == 0
        try:
            shim = shim_on(three_node.ns("g"), _config(tmp_path, '[diversion]\nbackend = "iptables"\n'),
                           extra=())
            assert shim.stop() == 0
            save = three_node.run("g", "ip6tables-save", "-t", "mangle").stdout
            assert "-A INPUT -p udp -j ACCEPT" in save and "ICMP6_SHIM" not in save, save
        finally:
            three_node.run("g", "nft", "delete", "table", "ip6", "mangle")

    def test_cleanup_removes_the_emptied_mangle_table_of_a_crash(self, three_node: Topology) -> None:
        """After a crash (chains left behind), cleanup removes them and the table they left
        empty, and says so."""
        from shim.adapters.diversion import IptablesDiversion

        three_node.run("g", "nft", "delete", "table", "ip6", "mangle")
        with in_netns(three_node.ns("g")):
            IptablesDiversion(QueueSpec(first=0)).install()  # a run that never removed it
            found = cleanup_instance(0)
        assert found == ["ip6tables -t mangle chain ICMP6_SHIM_Q0", "nft table ip6 mangle (left empty)"]
        assert "table ip6 mangle" not in three_node.run("g", "nft", "list", "tables").stdout
