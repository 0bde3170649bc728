# SPDX-License-Identifier: MIT
"""A reload from the defaults to 10,000 user rules and back, under flood: no packet goes
without a verdict, and every packet is judged wholly by the old table or wholly by the new.

One engine (batched, the default): both engines take a new table the same way, by the one
assignment `reader.judge = judge` in Service._swap between two pumps (or callbacks); the
batched one is the path with more to get wrong, since its C verdict plan is rebuilt from
the new Judge. One backend (iptables): the reload never touches the diversion, and this
host's kernel has no nft queue expression.

How a mixed judgement would show (the check must be able to fail):
- probes P (Echo Request A -> B, hop limit 200) are accepted by the defaults and dropped by
  the last of the 10,000 rules (`probe-drop`, hop limit 150-254): in send order their
  fates must read accepted..., dropped..., accepted... with every P sent before a SIGHUP
  judged by the table it replaces and every P sent after a `reload_ok` by the new one;
- controls C (the same but hop limit 64) are accepted by both tables, and must all arrive.
  The new table's first 64 user rules drop (and match nothing), so a default rule's index
  looked up in the new table's verdicts drops C; a new index in the old verdicts lies past
  the old plan and is an error; a classifier or candidate list of the other table names
  the wrong rule for P or C;
- the whole time a paced Echo Reply flood A -> B runs through the queue; at the end the
  kernel queued exactly as many packets as the shim judged (`id_sequence` = packets =
  sum of verdicts), with no queue or socket drop and no error.
"""

from __future__ import annotations

import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from bench.rulesets import realistic_rules
from shim.daemon.control import query
from shim.lab.netns import Topology
from shim.lab.packets import icmp6_packet
from shim.lab.runner import ShimProcess, time_scale
from tests.integration.wire import A, B

pytestmark = pytest.mark.netns

ROOT = Path(__file__).resolve().parents[2]
USER_RULES = 10_000
FILLERS = 64            # > the defaults' largest index: see the module docstring
PROBE_HOP, CONTROL_HOP = 200, 64
FLOOD_RATE, FLOOD_SECONDS = 20_000, 120   # pps; the flooder's own bound
PROBE_INTERVAL = 0.002  # one P and one C every 2 ms
PHASE_S = 1.5           # probing before the first reload, between, after the second
ICMP6_FILTER = 1        # <netinet/icmp6.h>; Python's socket module does not name it

BASE = '[overload]\nbudget = false\n[engine]\nkind = "batched"\n[diversion]\nbackend = "iptables"\n'


def _big_table() -> str:
    fillers = "".join(f'[[rule]]\nname = "filler-{i}"\ntype = "echo-request"\n'
                      f'src = "2001:db8:ff:{i:x}::/64"\nverdict = "drop"\n\n' for i in range(FILLERS))
    probe = ('[[rule]]\nname = "probe-drop"\ntype = "echo-request"\nsrc = "2001:db8:1::a/128"\n'
             'hop_limit = "150-254"\nhook = "forward"\nverdict = "drop"\n')
    return fillers + realistic_rules(USER_RULES - FILLERS - 1) + probe


def _tag(kind: bytes, seq: int) -> bytes:
    return b"SCALE" + kind + b"%08d" % seq


class _Listener:
    """A raw socket on b that passes only Echo Requests (the flood is Echo Replies) and
    records the probe tags that arrive, in a thread, until stopped."""

    def __init__(self, topo: Topology) -> None:
        self.sock = topo.socket("b", socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
        blocked = [0xFFFFFFFF] * 8
        blocked[128 >> 5] &= ~(1 << (128 & 31))  # ICMP6_FILTER_SETPASS(128)
        self.sock.setsockopt(socket.IPPROTO_ICMPV6, ICMP6_FILTER, struct.pack("=8I", *blocked))
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.sock.settimeout(0.05)
        self.seen: dict[bytes, set[int]] = {b"P": set(), b"C": set()}
        self.dups = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(2048)
            except TimeoutError:
                continue
            tail = data[-14:]
            if tail.startswith(b"SCALE") and tail[5:6] in self.seen and tail[6:].isdigit():
                got = self.seen[tail[5:6]]
                seq = int(tail[6:])
                self.dups += seq in got
                got.add(seq)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


class _Prober:
    """From a: one P and one C every PROBE_INTERVAL, each with its send time, until stopped
    (bounded in count too)."""

    def __init__(self, topo: Topology) -> None:
        self.sock = topo.socket("a", socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_RAW)
        self.sent: list[tuple[int, float]] = []  # (seq, monotonic send time), P and C alike
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        limit = int(600 / PROBE_INTERVAL)
        for seq in range(limit):
            if self._stop.is_set():
                break
            t = time.monotonic()
            for kind, hop in ((b"P", PROBE_HOP), (b"C", CONTROL_HOP)):
                body = struct.pack("!HH", 0x5ca1, seq & 0xFFFF) + _tag(kind, seq)
                self.sock.sendto(icmp6_packet(A, B, 128, 0, body, hop_limit=hop), (B, 0))
            self.sent.append((seq, t))
            time.sleep(max(0.0, PROBE_INTERVAL - (time.monotonic() - t)))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self.sock.close()


def _idle(shim: ShimProcess) -> dict[str, object]:
    """Stats once the kernel queue is empty and the counters stand still (bounded)."""
    snap = query(shim.control_socket)
    for _ in range(int(50 * time_scale())):
        time.sleep(0.2)
        fresh = query(shim.control_socket)
        if all(k["queue_total"] == 0 for k in fresh["kernel"]) and \
                fresh["packets"] == snap["packets"]:  # type: ignore[union-attr]
            return fresh
        snap = fresh
    return snap


def _reload(shim: ShimProcess, rules: int) -> tuple[float, float, dict[str, object]]:
    """SIGHUP; wait for the reload_ok of a table of `rules` rules. Returns the monotonic
    time just before the signal, the time the event was seen, and the event."""
    t_hup = time.monotonic()
    shim.signal(signal.SIGHUP)
    ev = shim.next_event("reload_ok", timeout=120)
    t_ok = time.monotonic()
    assert ev is not None, f"no reload_ok: {shim.events[-5:]} {shim.stderr_tail()}"
    assert ev["rules"] == rules, ev
    return t_hup, t_ok, ev


class TestReloadAtScale:
    def test_reload_to_10k_rules_and_back_under_flood(
        self, three_node: Topology, shim_on: Callable[..., ShimProcess], tmp_path: Path,
    ) -> None:
        """Defaults -> 10,000 user rules -> defaults while a flood runs: no verdict missing,
        every probe judged by exactly one table, the one in force when it was judged."""
        cfg = tmp_path / "cfg"
        (cfg / "rules.d").mkdir(parents=True)
        (cfg / "icmp6-shim.toml").write_text(BASE)
        shim = shim_on(three_node.ns("g"), cfg, extra=())
        ready = shim.next_event("ready", timeout=5)  # logged before READY=1; the reader may lag
        assert ready is not None, shim.events[-5:]
        n_default = ready["rules"]
        assert isinstance(n_default, int) and n_default > 0
        three_node.run("a", "ping", "-6", "-c", "1", "-W", "2", B)  # neighbours resolved
        listener = _Listener(three_node)
        prober: _Prober | None = None
        flooder = three_node.popen(
            "a", sys.executable, "-m", "tests.integration.flood", A, B, "129", "56",
            # Under emulation (time scale > 1) the same load is a proportionally lower rate.
            str(FLOOD_RATE * FLOOD_SECONDS), str(FLOOD_SECONDS), str(int(FLOOD_RATE / time_scale())),
            cwd=str(ROOT), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            prober = _Prober(three_node)
            time.sleep(PHASE_S)
            (cfg / "rules.d" / "90-scale.toml").write_text(_big_table())
            hup1, ok1, ev1 = _reload(shim, n_default + USER_RULES)
            time.sleep(PHASE_S)
            (cfg / "rules.d" / "90-scale.toml").unlink()
            hup2, ok2, _ = _reload(shim, n_default)
            time.sleep(PHASE_S)
            assert flooder.poll() is None, "the flooder ended early: the reloads ran without flood"
        finally:
            if prober is not None:
                prober.close()
            flooder.terminate()
            try:
                flooder.wait(10)
            except subprocess.TimeoutExpired:
                flooder.kill()
                flooder.wait(5)
        snap = _idle(shim)
        time.sleep(0.5 * time_scale())  # the last probes' way from g to b's socket
        listener.close()
        assert prober is not None

        # Every packet queued got exactly one verdict: nothing dropped by the kernel (queue
        # full, socket full), nothing left queued, no error verdict.
        (kq,) = snap["kernel"]  # type: ignore[misc]
        assert kq["queue_dropped"] == 0 and kq["user_dropped"] == 0 and kq["queue_total"] == 0, kq
        verdicts = snap["verdicts"]
        assert isinstance(verdicts, dict)
        assert snap["errors"] == 0 and snap["enobufs"] == 0, snap
        assert snap["packets"] == sum(verdicts.values()) == kq["id_sequence"], (snap, kq)
        assert snap["reloads"] == 2 and snap["reload_failures"] == 0
        assert isinstance(ev1["judged_during"], int) and ev1["judged_during"] > 0, ev1
        # The flood did run through the queue: far more packets than the probes.
        assert kq["id_sequence"] > 4 * len(prober.sent), (kq, len(prober.sent))

        sent = prober.sent
        seen_p, seen_c = listener.seen[b"P"], listener.seen[b"C"]
        assert listener.dups == 0
        # Both tables accept C: any C missing was judged by neither table as it stands.
        missing_c = [seq for seq, _ in sent if seq not in seen_c]
        assert missing_c == [], f"{len(missing_c)} of {len(sent)} controls lost: {missing_c[:10]}"
        fates = [(seq, t, seq in seen_p) for seq, t in sent]
        phases = {
            "before the first SIGHUP (defaults: accepted)": [f for f in fates if f[1] < hup1],
            "after the first reload_ok, before the second SIGHUP (10k: dropped)":
                [f for f in fates if ok1 < f[1] < hup2],
            "after the second reload_ok (defaults: accepted)": [f for f in fates if f[1] > ok2],
        }
        for (what, fs), want in zip(phases.items(), (True, False, True)):
            assert len(fs) >= 50, f"{what}: only {len(fs)} probes, the phase proves little"
            wrong = [seq for seq, _, accepted in fs if accepted != want]
            assert wrong == [], f"{what}: {len(wrong)} of {len(fs)} probes judged otherwise: {wrong[:10]}"
        # In send order (one queue, judged in order) the fates switch exactly twice:
        # accepted..., dropped..., accepted...; a probe between a SIGHUP and its reload_ok
        # may fall on either side of its swap, but no table returns for a packet later.
        switches = [b for (_, _, a), (_, _, b) in zip(fates, fates[1:]) if a != b]
        assert switches == [False, True], f"probe fates switch {switches} in send order"
