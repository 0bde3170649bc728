# SPDX-License-Identifier: MIT
"""The batched NFQUEUE engine (`[engine] kind = "batched"`): the packet loop runs in C.

Python binds and configures the queue on its own AF_NETLINK socket (plain
nfnetlink_queue config messages), then each pump() is ONE call into
native/engine.c, which receives many messages per recvmmsg, parses and
classifies each packet and sends the verdicts in batches, GIL released.

Invariants:
- every packet gets exactly one verdict, given in C: the plan's, or on_error;
- the Judge is read once per pump; a reload swaps it between two pumps, and
  its C plan is rebuilt then, never per packet;
- logged decisions (and, in shadow mode, a bounded sample of packets) come
  back through a bounded ring and are handled here, after their verdicts;
- the reader has QueueReader's interface and Stats, so the service cannot tell.
"""

from __future__ import annotations

import errno
import os
import socket
import struct

from shim.model import Action, Verdict
from shim.native import NativeEngine, NativePlan, NativeTable, encode_verdicts
from shim.nfq import (
    Judge,
    OnDecision,
    OnError,
    QueueReader,
    Stats,
    _BudgetSocket,
    bind_error,
)

__all__ = ["BatchedReader", "config_message"]

NETLINK_NETFILTER = 12
_NFQ_CONFIG = (3 << 8) | 2  # NFNL_SUBSYS_QUEUE << 8 | NFQNL_MSG_CONFIG
_CMD, _PARAMS, _MAXLEN, _MASK, _FLAGS = 1, 2, 3, 4, 5  # NFQA_CFG_*
_BIND, _UNBIND = 1, 2  # NFQNL_CFG_CMD_*
_COPY_PACKET = 2
_F_FAIL_OPEN = 1
_NFQ_PACKET = 3 << 8  # NFQNL_MSG_PACKET
_SLOT = 65536 + 4096
_REQUEST, _ACK = 1, 4
_KIND = {Action.ACCEPT: 0, Action.DROP: 1, Action.MARK: 2}


def _attr(kind: int, data: bytes) -> bytes:
    return struct.pack("=HH", 4 + len(data), kind) + data + b"\0" * (-len(data) % 4)


def config_message(queue_num: int, attrs: bytes, seq: int = 0) -> bytes:
    """One NFQNL_MSG_CONFIG request for `queue_num` asking for an ack."""
    body = struct.pack("=BBH", socket.AF_UNSPEC, 0, socket.htons(queue_num)) + attrs
    return struct.pack("=IHHII", 16 + len(body), _NFQ_CONFIG, _REQUEST | _ACK, seq, 0) + body


def _plan_entry(v: Verdict) -> tuple[int, int, int]:
    return (_KIND[v.action], v.mark or 0, v.mask) if v.action is Action.MARK else (_KIND[v.action], 0, 0)


class BatchedReader(QueueReader):
    """One bound NFQUEUE queue judged in C by the Judge's NativeTable."""

    def __init__(self, queue_num: int, judge: Judge, on_error: Verdict, *,
                 maxlen: int = 4096, sock_rcvbuf: int = 4 << 20,
                 on_logged: OnDecision | None = None,
                 on_exception: OnError | None = None) -> None:
        super().__init__(queue_num, judge, on_error, maxlen=maxlen, sock_rcvbuf=sock_rcvbuf,
                         on_logged=on_logged, on_exception=on_exception)
        self._engine: NativeEngine | None = None
        self._last: dict[str, int] = {}
        self._planned: tuple[Judge, NativeTable | None, NativePlan | None] | None = None
        self._seq = 0

    # -- lifecycle -------------------------------------------------------------
    def bind(self) -> int:
        """Open a netlink socket, bind the queue (copy packet, range 0xffff, maxlen).

        Raises:
            EnvironmentProblem: no privilege, no nfnetlink_queue, or queue taken.
        """
        try:
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        except OSError as exc:
            raise bind_error(self.queue_num, exc) from exc
        try:
            sock.bind((0, 0))
            for opt in (33, socket.SO_RCVBUF):  # SO_RCVBUFFORCE (root) goes past rmem_max
                try:
                    sock.setsockopt(socket.SOL_SOCKET, opt, self._rcvbuf)
                    break
                except OSError:
                    continue
            # One message: the kernel binds, then applies copy mode and maxlen, then acks.
            self._request(sock, _attr(_CMD, struct.pack("!BBH", _BIND, 0, socket.AF_INET6))
                          + _attr(_PARAMS, struct.pack("!IB", 0xFFFF, _COPY_PACKET))
                          + _attr(_MAXLEN, struct.pack("!I", self._maxlen)))
        except OSError as exc:
            sock.close()
            raise bind_error(self.queue_num, exc) from exc
        sock.setblocking(False)
        self._sock = _BudgetSocket(sock, self.stats)
        self._last = {}
        self._engine = NativeEngine(sock.fileno(), self.queue_num, _plan_entry(self.on_error))
        return sock.fileno()

    def _request(self, sock: socket.socket, attrs: bytes) -> None:
        """Send one config message and wait (bounded) for its ack; raise OSError on a nack.

        A packet queued meanwhile gets the on_error verdict: none is left unanswered.
        """
        self._seq += 1
        sock.settimeout(2.0)
        sock.send(config_message(self.queue_num, attrs, self._seq))
        while True:
            reply = sock.recv(_SLOT)
            off = 0
            while off + 20 <= len(reply):
                length, kind, _flags, seq = struct.unpack_from("=IHHI", reply, off)
                if kind == 2 and seq == self._seq:  # NLMSG_ERROR: error 0 is the ack
                    (err,) = struct.unpack_from("=i", reply, off + 16)
                    if err:
                        raise OSError(-err, os.strerror(-err))
                    return
                if kind == _NFQ_PACKET:
                    self._answer_early(sock, reply[off:off + length])
                off += max((length + 3) & ~3, 16)

    def _answer_early(self, sock: socket.socket, msg: bytes) -> None:
        """Give on_error to a packet that arrived while configuring (rare: before the diversion)."""
        off = 20
        while off + 4 <= len(msg):
            alen, kind = struct.unpack_from("=HH", msg, off)
            if alen < 4:
                return
            if kind & 0x3FFF == 1 and alen >= 11:  # NFQA_PACKET_HDR: packet id first
                (pid,) = struct.unpack_from("!I", msg, off + 4)
                kind_, value, mask = _plan_entry(self.on_error)
                mark = value & mask if kind_ == 2 else None  # no old mark read: rare path
                sock.send(encode_verdicts([(pid, 0 if kind_ == 1 else 1, mark)], self.queue_num))
                self.stats.packets += 1
                self.stats.errors += 1
                return
            off += (alen + 3) & ~3

    def set_queue_flags(self, *, fail_open: bool) -> None:
        """Set or clear NFQA_CFG_F_FAIL_OPEN on the bound queue."""
        if self._sock is None:
            return
        flag = struct.pack("!I", _F_FAIL_OPEN if fail_open else 0)
        self._sock.sock.setblocking(True)
        try:
            self._request(self._sock.sock, _attr(_FLAGS, flag)
                          + _attr(_MASK, struct.pack("!I", _F_FAIL_OPEN)))
        finally:
            self._sock.sock.setblocking(False)

    def unbind(self) -> None:
        """Unbind the queue (best effort) and close the socket."""
        if self._sock is not None:
            try:
                self._sock.sock.send(config_message(
                    self.queue_num, _attr(_CMD, struct.pack("!BBH", _UNBIND, 0, socket.AF_INET6))))
            except OSError:
                pass
            self._sock.sock.close()
            self._sock = None
        self._engine = None

    # -- the loop ----------------------------------------------------------------
    def _plan(self, judge: Judge) -> tuple[NativeTable | None, NativePlan | None]:
        """The C table and plan of `judge`, rebuilt only when the Judge changed."""
        if self._planned is not None and self._planned[0] is judge:
            return self._planned[1], self._planned[2]
        table = getattr(judge.classify, "__self__", None)
        native = table if isinstance(table, NativeTable) else None
        logged = [d.log or judge.shadow is not None for d in judge.decisions]
        plan = NativePlan(judge.plan, logged) if native is not None else None
        if native is None and self.on_exception is not None:
            self.on_exception(TypeError("the Judge has no NativeTable: every packet gets on_error"))
        self._planned = (judge, native, plan)
        return native, plan

    def pump(self, budget: int = 256) -> int:
        """Judge up to `budget` queued packets in C without blocking; return how many."""
        if self._engine is None:
            return 0
        judge = self.judge  # one read per pump: a reload swaps it between two calls
        table, plan = self._plan(judge)
        try:
            done = self._engine.pump(table, plan, budget)
        except OSError as exc:
            if exc.errno != errno.ENOBUFS:
                raise
            done = 0
        self._sync(self._engine.counters())
        for index, pkt in self._engine.take_logs():
            decision = judge.decisions[index]
            try:
                if judge.shadow is not None:
                    judge.shadow.observe(pkt.payload, pkt.hook, pkt.indev, pkt.outdev, decision)
                if decision.log and self.on_logged is not None:
                    self.on_logged(decision, pkt, pkt.payload)
            except Exception as exc:  # noqa: BLE001 - logging never costs the loop
                self.stats.errors += 1
                if self.on_exception is not None:
                    self.on_exception(exc)
        return done

    def _sync(self, c: dict[str, int]) -> None:
        """Add what the C counters gained since the last pump to Stats."""
        st: Stats = self.stats
        last = self._last
        st.packets += c["packets"] - last.get("packets", 0)
        st.errors += c["errors"] - last.get("errors", 0)
        st.enobufs += c["enobufs"] - last.get("enobufs", 0)
        for action in ("accept", "drop", "mark"):
            st.by_action[action] += c[action] - last.get(action, 0)
        self._last = c

    def engine_counters(self) -> dict[str, int]:
        """Every C counter (recv/send calls, verdict messages, log drops...), for the bench."""
        return self._engine.counters() if self._engine is not None else {}
