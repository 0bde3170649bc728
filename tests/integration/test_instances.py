# SPDX-License-Identifier: MIT
"""Real daemons in namespaces: a metrics connection flood from
user nobody does not wedge judging; `stats` answers 10,000 rules whole; two instances in one
namespace keep their own diversion and control socket; cleanup removes only what it is asked."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from shim.daemon.control import query
from shim.lab.netns import Topology, TopologySpec, NodeSpec, in_netns
from shim.lab.runner import ShimProcess
from tests.integration.wire import A, B, Wire
from shim.lab.packets import icmp6_packet

pytestmark = pytest.mark.netns

ROOT = Path(__file__).resolve().parent.parent.parent
DROP_ECHO = '[[rule]]\nname = "drop-echo"\ntype = "echo-request"\nverdict = "drop"\n'

# Opens N TCP connections to HOST:PORT, sends half an HTTP request on each (never the blank
# line), holds them HOLD seconds and exits. Bounded in count and time; stdlib only.
ATTACKER = r"""
import resource, select, socket, sys, time
host, port, n, hold = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, n + 64), hard))
socks, sent = [], set()
for _ in range(n):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setblocking(False)
    try:
        s.connect((host, port))
    except BlockingIOError:
        pass
    except OSError:
        s.close()
        continue
    socks.append(s)
end = time.monotonic() + hold
while time.monotonic() < end:
    pending = {s.fileno(): s for s in socks if s.fileno() not in sent}
    if not pending:
        time.sleep(0.1)
        continue
    poller = select.poll()
    for fd in pending:
        poller.register(fd, select.POLLOUT)
    for fd, _ev in poller.poll(100):
        try:
            pending[fd].send(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
        except OSError:
            pass
        sent.add(fd)
print(len(socks), len(sent), flush=True)
"""


def _echo(tag: bytes) -> bytes:
    return icmp6_packet(A, B, 128, 0, b"\x00\x09\x00\x01" + tag)


def _config(tmp_path: Path, name: str, text: str, dropins: dict[str, str] | None = None) -> Path:
    d = tmp_path / name
    (d / "rules.d").mkdir(parents=True)
    (d / "icmp6-shim.toml").write_text(text)
    for fname, body in (dropins or {}).items():
        (d / "rules.d" / fname).write_text(body)
    return d


def _threads_and_sockets(pid: int) -> tuple[int, int]:
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        threads = next(int(line.split()[1]) for line in f if line.startswith("Threads:"))
    sockets = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            sockets += os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:")
        except OSError:
            pass
    return threads, sockets


def _ping(topo: Topology, count: int) -> int:
    # -w: wait for all `count` replies up to a deadline; a reply late on two busy cores counts
    # (-W alone gives up two RTTs after the last request).
    out = topo.run("a", "ping", "-6", "-n", "-c", str(count), "-i", "0.2", "-w", str(int(count * 0.2) + 10),
                   "2001:db8:2::b", timeout=count * 0.2 + 30)
    m = re.search(r"(\d+) received", out.stdout)
    assert m, out.stdout + out.stderr
    return int(m.group(1))


class TestMetricsFlood:
    def test_half_open_flood_from_nobody_keeps_pings_judged_and_the_server_recovers(
        self, three_node: Topology, shim_on: Callable[..., ShimProcess], tmp_path: Path,
    ) -> None:
        """2000 half-sent requests from user nobody on the loopback metrics port: the daemon holds
        at most max_connections of them (no thread each), every ping a->b through g is judged
        meanwhile, and once the flood ends a scrape is answered."""
        cfg = _config(tmp_path, "cfg", '[metrics]\nprometheus = "127.0.0.1:9477"\n'
                      "max_connections = 8\ntimeout = 1.0\n")
        shim = shim_on(three_node.ns("g"), cfg, extra=())
        assert shim.proc is not None
        warn = shim.next_event("metrics_tcp_open", timeout=5)
        assert warn is not None and warn["level"] == "warning"
        # Wait (bounded) until the path works: on a fresh topology addresses may still be
        # tentative (DAD) for a moment, and those pings never reach g (nothing to do with the shim).
        for _ in range(20):
            if _ping(three_node, 1) == 1:
                break
        else:
            pytest.fail("a -> b never worked, even before the flood")
        threads0, sockets0 = _threads_and_sockets(shim.proc.pid)
        before = query(shim.control_socket)["types"]
        attacker = subprocess.Popen(
            ["ip", "netns", "exec", three_node.ns("g"), "setpriv", "--reuid", "nobody",
             "--regid", "nogroup", "--clear-groups", sys.executable, "-I", "-c", ATTACKER,
             "127.0.0.1", "9477", "2000", "12"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True)
        try:
            time.sleep(2.0)  # the connections are open and their half requests sent
            peak_threads, peak_sockets = threads0, sockets0
            for _ in range(4):
                t, s = _threads_and_sockets(shim.proc.pid)
                peak_threads, peak_sockets = max(peak_threads, t), max(peak_sockets, s)
                time.sleep(0.25)
            received = _ping(three_node, 20)
            out, err = attacker.communicate(timeout=60)
        finally:
            if attacker.poll() is None:
                attacker.kill()
                attacker.wait(10)
        opened = int(out.split()[0]) if out.split() else 0
        assert opened >= 1000, (out, err)  # the flood really happened
        assert peak_threads == threads0, "a thread per connection"
        assert peak_sockets <= sockets0 + 8, (peak_sockets, sockets0)
        after = query(shim.control_socket)
        judged = after["types"]["128"] - before.get("128", 0)  # type: ignore[index, union-attr]
        assert judged == 20 and received == 20, (judged, received)  # every ping judged and answered
        assert all(k["queue_dropped"] == 0 for k in after["kernel"])  # type: ignore[union-attr, index]
        body = ""
        for _ in range(20):  # bounded: recovery is one deadline (1 s) away
            try:
                with in_netns(three_node.ns("g")):
                    body = urllib.request.urlopen("http://127.0.0.1:9477/metrics", timeout=3).read().decode()
                break
            except OSError:
                time.sleep(0.5)
        assert "icmp6_shim_packets_total" in body


class TestManyRules:
    def test_stats_returns_10000_rules_whole_every_time(
        self, three_node: Topology, shim_on: Callable[..., ShimProcess], tmp_path: Path,
    ) -> None:
        """With 10,000 user rules (a ~1.5 MB reply), `stats --json` answers in full 6 times of 6."""
        many = "".join(f'[[rule]]\nname = "r{i}"\ntype = "echo-reply"\nsrc = "2001:db8:{i:x}::/48"\n'
                       'verdict = "drop"\n' for i in range(10_000))
        shim = shim_on(three_node.ns("g"), _config(tmp_path, "cfg", "", {"many.toml": many}), extra=())
        sizes = []
        for _ in range(6):
            out = three_node.run("g", sys.executable, "-m", "shim", "stats", "--json",
                                 "--socket", shim.control_socket, timeout=60)
            assert out.returncode == 0, out.stderr
            snap = json.loads(out.stdout)
            names = {r["rule"] for r in snap["rules"]}
            assert {f"r{i}" for i in range(10_000)} <= names
            sizes.append(len(out.stdout))
        assert min(sizes) > 1_000_000


class TestTwoInstances:
    def test_second_instance_keeps_the_first_ones_diversion_and_socket(
        self, three_node: Topology, shim_on: Callable[..., ShimProcess], tmp_path: Path,
        wire: Callable[..., Wire],
    ) -> None:
        """Queues 0 and 1 in one namespace: two chains (or tables); stopping the second leaves the
        first enforcing; a third pointed at the first's live control socket exits 3 and leaves it."""
        first = shim_on(three_node.ns("g"), _config(tmp_path, "one", DROP_ECHO), extra=())
        second = shim_on(three_node.ns("g"), _config(tmp_path, "two", "[queue]\nnum = 1\n" + DROP_ECHO),
                         extra=())
        rules = three_node.run("g", "nft", "list", "ruleset").stdout
        assert "ICMP6_SHIM_Q0" in rules and "ICMP6_SHIM_Q1" in rules or \
            "icmp6_shim_q0" in rules and "icmp6_shim_q1" in rules, rules
        assert second.stop() == 0
        w = wire()
        w.flush()
        for i in range(5):
            w.send(_echo(b"first%d" % i))
        assert w.arrived("b", b"first", timeout=1.0, contains=True) == 0
        hits = {r["rule"]: r["hits"] for r in query(first.control_socket)["rules"]}  # type: ignore[union-attr]
        assert hits["drop-echo"] >= 5
        third = ShimProcess(_config(tmp_path, "three", "[queue]\nnum = 2\n"), netns=three_node.ns("g"),
                            extra=("--control-socket", first.control_socket))
        try:
            third.start()
            assert third.proc is not None
            assert third.proc.wait(30) == 3
            assert any("in use by a running process" in line for line in third.stderr_lines), \
                third.stderr_tail()
        finally:
            third.close()
        assert query(first.control_socket)["pid"] == first.proc.pid  # type: ignore[union-attr]
        rules = three_node.run("g", "nft", "list", "ruleset").stdout
        assert "Q2" not in rules and "_q2" not in rules  # the refused one installed nothing


@pytest.fixture
def lone_ns() -> Iterator[Topology]:
    topo = Topology(TopologySpec(name="lone", description="", nodes=(NodeSpec(name="x"),), links=()),
                    prefix=f"i6ci{os.getpid() % 10000}-")
    topo.up()
    try:
        yield topo
    finally:
        topo.down()


class TestCleanup:
    # Not the `backend` fixture: leftovers are made by hand (empty tables for nft, which this
    # kernel refuses to queue with), so both kinds run on every kernel.
    @pytest.mark.parametrize("kind", ["nft", "iptables"])
    def test_cleanup_removes_this_instance_or_with_all_every_instance(
        self, lone_ns: Topology, tmp_path: Path, kind: str,
    ) -> None:
        """`cleanup --config` (queue 1) removes only queue 1's leftovers; `cleanup --all` every
        instance's, including pre-instance names, and never a foreign table or chain."""
        x = lone_ns.ns("x")
        if kind == "nft":
            # Empty tables stand in for leftovers: this kernel refuses the queue expression.
            for table in ("icmp6_shim_q0", "icmp6_shim_q1", "icmp6_shim", "theirs"):
                lone_ns.run("x", "nft", "add", "table", "inet", table, check=True)
        else:
            from shim.adapters.diversion import IptablesDiversion, QueueSpec

            with in_netns(x):
                IptablesDiversion(QueueSpec(first=0)).install()
                IptablesDiversion(QueueSpec(first=1)).install()
            lone_ns.run("x", "ip6tables", "-t", "mangle", "-N", "THEIRS", check=True)

        def listing() -> str:
            if kind == "nft":
                return lone_ns.run("x", "nft", "list", "tables").stdout
            return lone_ns.run("x", "ip6tables-save", "-t", "mangle").stdout

        q0, q1 = ("icmp6_shim_q0", "icmp6_shim_q1") if kind == "nft" else ("ICMP6_SHIM_Q0", "ICMP6_SHIM_Q1")
        cfg = _config(tmp_path, "cfg", "[queue]\nnum = 1\n")
        out = lone_ns.run("x", sys.executable, "-m", "shim", "cleanup", "--config", str(cfg))
        assert out.returncode == 0, out.stderr
        after = listing()
        assert q1 not in after and q0 in after, after
        out = lone_ns.run("x", sys.executable, "-m", "shim", "cleanup", "--all")
        assert out.returncode == 0, out.stderr
        after = listing()
        assert "icmp6_shim" not in after.lower(), after
        assert ("theirs" if kind == "nft" else "THEIRS") in after


class TestMetricsUnderSupervisor:
    def test_workers_serve_metrics_on_the_unix_socket_and_the_cli_prints_it(
        self, three_node: Topology, shim_on: Callable[..., ShimProcess], tmp_path: Path,
        wire: Callable[..., Wire],
    ) -> None:
        """workers = 2: the supervisor's loop serves [metrics] socket (mode 0660); `icmp6-shim
        metrics` prints the page with the workers' summed counters; stop removes the socket."""
        sock = tmp_path / "run" / "metrics.sock"
        cfg = _config(tmp_path, "cfg", f'[queue]\nworkers = 2\n[metrics]\nsocket = "{sock}"\n' + DROP_ECHO)
        shim = shim_on(three_node.ns("g"), cfg, extra=())
        assert oct(os.stat(sock).st_mode & 0o777) == "0o660"
        w = wire()
        for i in range(4):
            w.send(_echo(b"sup%d" % i))
        page = ""
        for _ in range(20):  # bounded: worker reports reach the supervisor every 0.25 s
            out = three_node.run("g", sys.executable, "-m", "shim", "metrics", "--config", str(cfg))
            assert out.returncode == 0, out.stderr
            page = out.stdout
            if 'rule="drop-echo",verdict="drop"} 4.0' in page:
                break
            time.sleep(0.5)
        assert 'icmp6_shim_rule_hits_total{origin="user",rule="drop-echo",verdict="drop"} 4.0' in page
        assert shim.stop() == 0
        assert not sock.exists()
