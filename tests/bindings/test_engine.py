# SPDX-License-Identifier: MIT
"""The batched engine's C loop (native/engine.c) against a fake netlink peer.

A SOCK_DGRAM socketpair stands in for the nfnetlink socket: the test writes
NFQNL_MSG_PACKET messages on one end, engine_pump() reads and answers on the
other, and the test decodes the verdict messages it got back.
"""

from __future__ import annotations

import socket
import struct

import pytest

from bench.frames import icmp6_packet
from shim.core.model import NativeRule
from shim.bindings.engine import NativeEngine, NativePlan, encode_verdicts
from shim.bindings.icmp6 import NativeTable

__all__: list[str] = []

ACCEPT, DROP, MARK = 0, 1, 2
NF_DROP, NF_ACCEPT = 0, 1
ECHO = icmp6_packet("2001:db8:1::a", "2001:db8:2::b", 128, 0, b"\0\1\0\1")
REPLY = icmp6_packet("2001:db8:2::b", "2001:db8:1::a", 129, 0, b"\0\1\0\1")
FORWARD = 2


def nla(kind: int, data: bytes) -> bytes:
    return struct.pack("=HH", 4 + len(data), kind) + data + b"\0" * (-len(data) % 4)


def packet_msg(pid: int, payload: bytes | None, mark: int | None = None, hook: int = FORWARD) -> bytes:
    """An NFQNL_MSG_PACKET netlink message as the kernel writes it."""
    attrs = nla(1, struct.pack("!IHB", pid, 0x86DD, hook))
    if mark is not None:
        attrs += nla(3, struct.pack("!I", mark))
    if payload is not None:
        attrs += nla(10, payload)
    body = struct.pack("=BBH", socket.AF_INET6, 0, socket.htons(0)) + attrs
    return struct.pack("=IHHII", 16 + len(body), 3 << 8, 0, 0, 0) + body


def decode(data: bytes) -> list[tuple[str, int, int, int | None]]:
    """Verdict messages -> (kind, verdict, id, mark or None)."""
    out, off = [], 0
    while off + 16 <= len(data):
        length, kind = struct.unpack_from("=IH", data, off)
        verdict, pid = struct.unpack_from("!II", data, off + 24)
        mark = struct.unpack_from("!I", data, off + 36)[0] if length >= 40 else None
        out.append(({(3 << 8) | 1: "one", (3 << 8) | 3: "batch"}[kind], verdict, pid, mark))
        off += length
    return out


def table() -> NativeTable:
    """rule 0: echo request -> mark; anything else: no match (index 1)."""
    rule = NativeRule(types=frozenset({128}))
    return NativeTable([rule], bytes([8] * 256), bytes([8] * 256), 16)


@pytest.fixture
def pair() -> tuple[socket.socket, socket.socket]:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    b.settimeout(1.0)
    return a, b


class TestEncodeVerdicts:
    """engine_encode_verdicts merges only contiguous equal runs."""

    def test_contiguous_equal_run_is_one_batch(self) -> None:
        """Ids 5..8, all accept: one batch verdict for id 8."""
        assert decode(encode_verdicts([(i, NF_ACCEPT, None) for i in range(5, 9)], 0)) == [
            ("batch", NF_ACCEPT, 8, None)]

    def test_gap_verdict_and_mark_changes_split_runs(self) -> None:
        """A gap in ids, a different verdict or a different mark each end a run."""
        v = [(1, NF_ACCEPT, None), (2, NF_ACCEPT, None), (4, NF_ACCEPT, None), (5, NF_DROP, None),
             (6, NF_ACCEPT, 7), (7, NF_ACCEPT, 7), (8, NF_ACCEPT, 9)]
        assert decode(encode_verdicts(v, 3)) == [
            ("batch", NF_ACCEPT, 2, None), ("one", NF_ACCEPT, 4, None), ("one", NF_DROP, 5, None),
            ("batch", NF_ACCEPT, 7, 7), ("one", NF_ACCEPT, 8, 9)]

    def test_queue_number_is_big_endian_res_id(self) -> None:
        """nfgenmsg.res_id carries the queue number in network order."""
        assert encode_verdicts([(1, NF_ACCEPT, None)], 0x1234)[18:20] == b"\x12\x34"


class TestPump:
    """engine_pump: one verdict per packet, plan applied, errors answered with on_error."""

    def run(self, pair: tuple[socket.socket, socket.socket], msgs: list[bytes],
            plan: list[tuple[int, int, int]], log: list[bool] | None = None,
            on_error: tuple[int, int, int] = (ACCEPT, 0, 0)) -> tuple[NativeEngine, list]:
        engine_end, peer = pair
        for m in msgs:
            peer.send(m)
        e = NativeEngine(engine_end.fileno(), 0, on_error)
        done = e.pump(table(), NativePlan(plan, log or [False] * len(plan)), 1000)
        got = []
        while True:
            try:
                peer.settimeout(0.05)
                got += decode(peer.recv(65536))
            except TimeoutError:
                break
        assert done == e.counters()["packets"]
        return e, got

    def test_marks_use_the_old_mark_and_runs_batch(self, pair: tuple[socket.socket, socket.socket]) -> None:
        """Echo gets (old & ~mask) | value; equal marks batch, the reply falls to no-match accept."""
        msgs = [packet_msg(1, ECHO, 0x100), packet_msg(2, ECHO, 0x100), packet_msg(3, REPLY),
                packet_msg(4, ECHO, 0x200)]
        e, got = self.run(pair, msgs, [(MARK, 0x2, 0xFF), (ACCEPT, 0, 0)])
        assert got == [("batch", NF_ACCEPT, 2, 0x102), ("one", NF_ACCEPT, 3, None),
                       ("one", NF_ACCEPT, 4, 0x202)]
        c = e.counters()
        assert (c["packets"], c["mark"], c["accept"], c["errors"]) == (4, 3, 1, 0)

    def test_malformed_gets_on_error_and_idless_gets_nothing(
            self, pair: tuple[socket.socket, socket.socket]) -> None:
        """No payload -> on_error (drop here); no packet header -> counted, nothing to answer."""
        no_id = packet_msg(9, ECHO)[:16] + packet_msg(9, ECHO)[16:20]
        no_id = struct.pack("=I", len(no_id)) + no_id[4:]
        msgs = [packet_msg(1, None), no_id, packet_msg(2, ECHO)]
        e, got = self.run(pair, msgs, [(ACCEPT, 0, 0), (ACCEPT, 0, 0)], on_error=(DROP, 0, 0))
        assert got == [("one", NF_DROP, 1, None), ("one", NF_ACCEPT, 2, None)]
        assert e.counters()["errors"] == 2

    def test_truncated_and_garbage_messages_never_lose_a_verdict(
            self, pair: tuple[socket.socket, socket.socket]) -> None:
        """A message cut short still gets on_error; a bad attribute length too."""
        cut = packet_msg(5, ECHO)[:40]
        bad = bytearray(packet_msg(6, ECHO))
        bad[32:34] = struct.pack("=H", 2)  # the attribute after the header claims length 2
        _, got = self.run(pair, [cut, bytes(bad)], [(ACCEPT, 0, 0), (ACCEPT, 0, 0)],
                          on_error=(DROP, 0, 0))
        assert got == [("batch", NF_DROP, 6, None)]  # ids 5 and 6, one contiguous run

    def test_logged_decisions_come_back_through_the_ring(
            self, pair: tuple[socket.socket, socket.socket]) -> None:
        """A rule with log=true returns (index, packet copy) after the verdict."""
        e, _ = self.run(pair, [packet_msg(1, ECHO), packet_msg(2, REPLY)],
                          [(ACCEPT, 0, 0), (ACCEPT, 0, 0)], log=[True, False])
        logs = e.take_logs()
        assert [(i, p.payload, p.hook) for i, p in logs] == [(0, ECHO, FORWARD)]
        assert e.take_logs() == []

    def test_no_table_means_on_error_for_all(self, pair: tuple[socket.socket, socket.socket]) -> None:
        """Without a table every packet still gets exactly one verdict: on_error."""
        engine_end, peer = pair
        peer.send(packet_msg(1, ECHO))
        e = NativeEngine(engine_end.fileno(), 0, (DROP, 0, 0))
        assert e.pump(None, None, 10) == 1
        assert decode(peer.recv(4096)) == [("one", NF_DROP, 1, None)]

    def test_type_hits_are_counted_in_c(self, pair: tuple[socket.socket, socket.socket]) -> None:
        """NativeTable.type_hits() sees what the engine classified."""
        engine_end, peer = pair
        t = table()
        for i in range(3):
            peer.send(packet_msg(i + 1, ECHO))
        NativeEngine(engine_end.fileno(), 0, (ACCEPT, 0, 0)).pump(
            t, NativePlan([(ACCEPT, 0, 0)] * 2, [False] * 2), 10)
        assert t.type_hits()[128] == 3
        assert t.hits() == [3, 0, 0]


class TestUndeliverable:
    """A verdict that cannot be sent must never be replaced by a later batch's verdict."""

    def test_idless_message_turns_batching_off(self, pair: tuple[socket.socket, socket.socket]) -> None:
        """After a packet that cannot be answered, equal consecutive verdicts go out one by one."""
        engine_end, peer = pair
        no_id = packet_msg(9, ECHO)[:16] + packet_msg(9, ECHO)[16:20]
        no_id = struct.pack("=I", len(no_id)) + no_id[4:]
        for m in (no_id, packet_msg(10, ECHO), packet_msg(11, ECHO)):
            peer.send(m)
        e = NativeEngine(engine_end.fileno(), 0, (ACCEPT, 0, 0))
        e.pump(table(), NativePlan([(ACCEPT, 0, 0), (ACCEPT, 0, 0)], [False, False]), 100)
        peer.settimeout(0.2)
        got = decode(peer.recv(65536))  # one send(): both messages in one datagram
        assert got == [("one", NF_ACCEPT, 10, None), ("one", NF_ACCEPT, 11, None)]
        assert e.counters()["no_batch"] == 1

    def test_failed_send_is_counted_and_turns_batching_off(self) -> None:
        """When no send can deliver, the loss is counted and no batch follows it."""
        engine_end, peer = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            for pid in (20, 21):
                peer.send(packet_msg(pid, ECHO))
            peer.shutdown(socket.SHUT_RD)  # every verdict send now fails (EPIPE)
            e = NativeEngine(engine_end.fileno(), 0, (ACCEPT, 0, 0))
            done = e.pump(table(), NativePlan([(ACCEPT, 0, 0), (ACCEPT, 0, 0)], [False, False]), 100)
            c = e.counters()
            assert done == 2 and c["verdicts_lost"] == 2 and c["no_batch"] == 1 and c["send_errors"] >= 1
        finally:
            engine_end.close()
            peer.close()


class TestPlanKinds:
    def test_plan_kinds_equal_the_c_constants(self) -> None:
        """PlanKind has the values of engine.h's ENGINE_ACCEPT/DROP/MARK, one each."""
        from shim._icmp6 import lib
        from shim.core.model import PlanKind

        assert {k.name: int(getattr(lib, "ENGINE_" + k.name)) for k in PlanKind} == \
            {k.name: k.value for k in PlanKind}
        assert len({int(k) for k in PlanKind}) == len(PlanKind) == 3
