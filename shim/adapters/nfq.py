# SPDX-License-Identifier: MIT
"""NFQUEUE adapter: bind a queue, judge each packet, give exactly one verdict.

The only importer of `netfilterqueue`. Invariants:
- every packet handed to the callback gets exactly one verdict: the table's,
  or the configured on_error verdict if anything at all goes wrong first;
- the judged table is read once per packet from one attribute, and swapped
  only between packets, so no packet sees a half-built table;
- reading is bounded per call (`pump`), so signals, reloads and watchdog
  pings are handled even under a flood.
"""

from __future__ import annotations

import errno
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from shim.core.errors import EnvironmentProblem
from shim.core.model import Action, Decision, Verdict, mark_after
from shim.bindings.engine import encode_verdicts
from shim.adapters.nfnetlink import NFQUEUE_PROC, RECV_SIZE, flags_attrs, packet_id, packet_mark, params_attrs, request
from shim.core.shadow import Shadow

__all__ = ["Judge", "PacketLike", "QueueReader", "Stats", "apply_verdict"]

_ACCEPT, _DROP, _MARK = 0, 1, 2
_KIND = {Action.ACCEPT: _ACCEPT, Action.DROP: _DROP, Action.MARK: _MARK}


class PacketLike(Protocol):
    """What the callback uses of netfilterqueue.Packet (a fake type-checks too)."""

    hook: int
    indev: int
    outdev: int

    def get_payload(self) -> bytes: ...
    def get_mark(self) -> int: ...
    def set_mark(self, mark: int) -> None: ...
    def accept(self) -> None: ...
    def drop(self) -> None: ...


@dataclass(slots=True)
class Stats:
    """Counters of one reader; the service aggregates and exports them."""

    packets: int = 0
    errors: int = 0
    enobufs: int = 0
    by_action: dict[str, int] = field(default_factory=lambda: {"accept": 0, "drop": 0, "mark": 0})


def apply_verdict(pkt: PacketLike, verdict: Verdict) -> None:
    """Give `verdict` to `pkt`: the one place a verdict reaches the kernel."""
    if verdict.action is Action.DROP:
        pkt.drop()
        return
    if verdict.action is Action.MARK and verdict.mark is not None:
        pkt.set_mark(verdict.apply_to_mark(pkt.get_mark()))
    pkt.accept()


@dataclass(frozen=True, slots=True)
class Judge:
    """A compiled table ready for the hot path: classify -> index -> decision."""

    classify: Callable[[bytes, int, int, int], int]
    decisions: tuple[Decision, ...]
    # Per decision: (kind, mark value, mask) precomputed so the callback does no lookups.
    plan: tuple[tuple[int, int, int], ...]
    shadow: Shadow | None = None  # a candidate table judged beside this one, never enforced

    @classmethod
    def build(cls, classify: Callable[[bytes, int, int, int], int],
              decisions: tuple[Decision, ...], shadow: Shadow | None = None) -> Judge:
        plan = tuple(
            (_KIND[d.verdict.action], d.verdict.mark or 0, d.verdict.mask) for d in decisions
        )
        return cls(classify=classify, decisions=decisions, plan=plan, shadow=shadow)


class _BudgetSocket:
    """socket-like wrapper for run_socket(): at most `budget` messages per pump."""

    __slots__ = ("sock", "budget", "stats")

    def __init__(self, sock: socket.socket, stats: Stats) -> None:
        self.sock = sock
        self.budget = 0
        self.stats = stats

    def recv(self, size: int) -> bytes:
        if self.budget <= 0:
            raise BlockingIOError(errno.EAGAIN, "budget spent")
        self.budget -= 1
        try:
            # netfilterqueue asks for 4096 octets; a packet message at our copy range is
            # bigger, and a cut message would be dropped unanswered by libnetfilter_queue.
            return self.sock.recv(max(size, RECV_SIZE))
        except OSError as exc:
            if exc.errno == errno.ENOBUFS:
                # The kernel dropped messages for us: count, then keep reading.
                self.stats.enobufs += 1
            raise


def bind_error(queue_num: int, exc: OSError) -> EnvironmentProblem:
    """Why binding failed, in words: no kernel support, no privilege, or a busy queue."""
    if not os.path.exists(NFQUEUE_PROC):
        return EnvironmentProblem(
            f"the kernel has no nfnetlink_queue support ({NFQUEUE_PROC} is missing); "
            "load it with 'modprobe nfnetlink_queue'")
    return EnvironmentProblem(
        f"cannot bind NFQUEUE queue {queue_num}: another process holds it, or "
        f"CAP_NET_ADMIN is missing ({exc}); stop that process or pick another [queue] num")


OnDecision = Callable[[Decision, PacketLike, bytes], None]
OnError = Callable[[BaseException], None]


class QueueReader:
    """One bound NFQUEUE queue judged by a swappable Judge."""

    def __init__(self, queue_num: int, judge: Judge, on_error: Verdict, *,
                 maxlen: int = 4096, sock_rcvbuf: int = 4 << 20,
                 on_logged: OnDecision | None = None,
                 on_exception: OnError | None = None) -> None:
        self.queue_num = queue_num
        self.judge = judge
        self.on_error = on_error
        self.stats = Stats()
        self.on_logged = on_logged
        self.on_exception = on_exception
        self._maxlen = maxlen
        self._rcvbuf = sock_rcvbuf
        self._nfq: object | None = None
        self._sock: _BudgetSocket | None = None
        self._seq = 0

    # -- lifecycle -------------------------------------------------------------
    def bind(self) -> int:
        """Bind the queue; return the netlink fd to poll.

        Raises:
            EnvironmentProblem: no privilege, no nfnetlink_queue, or queue taken.
        """
        # Opening the handle is what loads nfnetlink_queue on demand (nfnetlink-subsys-3),
        # so /proc is consulted only to word an error, never before trying.
        from netfilterqueue import NetfilterQueue  # noqa: PLC0415 - the one door

        try:
            nfq = NetfilterQueue(af=socket.AF_INET6)
            nfq.bind(self.queue_num, self._callback, max_len=self._maxlen,
                     range=0xFFFF, sock_len=self._rcvbuf)
        except OSError as exc:
            raise bind_error(self.queue_num, exc) from exc
        self._nfq = nfq
        fd = nfq.get_fd()
        sock = socket.socket(fileno=os.dup(fd))
        sock.setblocking(False)
        self._sock = _BudgetSocket(sock, self.stats)
        try:
            # netfilterqueue caps the copy range at 4016 octets: ask for whole packets.
            self._configure(params_attrs())
        except OSError as exc:
            self.unbind()
            raise bind_error(self.queue_num, exc) from exc
        return fd

    def engine_counters(self) -> dict[str, int]:
        """Counters of a native engine (none here: netfilterqueue keeps no such counters)."""
        return {}

    def fileno(self) -> int:
        """The netlink socket to poll for queued packets."""
        if self._sock is None:
            raise ValueError("queue is not bound")
        return self._sock.sock.fileno()

    def set_queue_flags(self, *, fail_open: bool) -> None:
        """Set or clear NFQA_CFG_F_FAIL_OPEN on the bound queue (netfilterqueue lacks it).

        Raises:
            EnvironmentProblem: the kernel refused.
        """
        try:
            self._configure(flags_attrs(fail_open))
        except OSError as exc:
            raise EnvironmentProblem(f"cannot set the fail-open flag of queue {self.queue_num}: "
                                     f"{exc.strerror or exc}") from exc

    def _configure(self, attrs: bytes) -> None:
        """One acknowledged config message on the queue's own socket."""
        if self._sock is None:
            raise OSError(0, "queue is not bound")
        self._seq += 1
        request(self._sock.sock, self.queue_num, attrs, self._seq, self._answer_early)

    def _answer_early(self, msg: bytes) -> None:
        """Give on_error to a packet queued while a config message waits for its ack."""
        pid = packet_id(msg)
        self.stats.errors += 1
        if pid is None or self._sock is None:
            return
        v = self.on_error
        mark = v.apply_to_mark(packet_mark(msg)) if v.action is Action.MARK else None
        nf_verdict = 0 if v.action is Action.DROP else 1
        self._sock.sock.send(encode_verdicts([(pid, nf_verdict, mark)], self.queue_num))
        self.stats.packets += 1

    def pump(self, budget: int = 256) -> int:
        """Judge up to `budget` queued packets without blocking; return how many."""
        if self._nfq is None or self._sock is None:
            return 0
        before = self.stats.packets
        self._sock.budget = budget
        try:
            self._nfq.run_socket(self._sock)  # type: ignore[attr-defined]
        except OSError as exc:
            if exc.errno != errno.ENOBUFS:
                raise
        return self.stats.packets - before

    def drain(self, quiet_s: float = 0.05, max_s: float = 2.0) -> int:
        """Answer what is still queued: pump until the queue is quiet (bounded)."""
        total, deadline, quiet_since = 0, time.monotonic() + max_s, time.monotonic()
        while time.monotonic() < deadline:
            n = self.pump(4096)
            total += n
            now = time.monotonic()
            if n:
                quiet_since = now
            elif now - quiet_since >= quiet_s:
                break
            else:
                time.sleep(0.005)
        return total

    def unbind(self) -> None:
        if self._nfq is not None:
            self._nfq.unbind()  # type: ignore[attr-defined]
            self._nfq = None
        if self._sock is not None:
            self._sock.sock.close()
            self._sock = None

    # -- the hot path ------------------------------------------------------------
    def _callback(self, pkt: PacketLike) -> None:
        stats = self.stats
        stats.packets += 1
        try:
            judge = self.judge  # one read: a reload swaps the whole Judge between packets
            payload = pkt.get_payload()
            index = judge.classify(payload, pkt.hook, pkt.indev, pkt.outdev)
            kind, value, mask = judge.plan[index]
        except Exception as exc:  # noqa: BLE001 - any failure gets the on_error verdict
            stats.errors += 1
            apply_verdict(pkt, self.on_error)
            self._report(exc)
            return
        # Verdict first, bookkeeping after: a failure below can never cost a verdict.
        if kind == _ACCEPT:
            pkt.accept()
            stats.by_action["accept"] += 1
        elif kind == _DROP:
            pkt.drop()
            stats.by_action["drop"] += 1
        else:
            pkt.set_mark(mark_after(pkt.get_mark(), value, mask))
            pkt.accept()
            stats.by_action["mark"] += 1
        decision = judge.decisions[index]
        if (decision.log and self.on_logged is not None) or judge.shadow is not None:
            try:
                if judge.shadow is not None:
                    judge.shadow.observe(payload, pkt.hook, pkt.indev, pkt.outdev, decision)
                if decision.log and self.on_logged is not None:
                    self.on_logged(decision, pkt, payload)
            except Exception as exc:  # noqa: BLE001
                stats.errors += 1
                self._report(exc)

    def _report(self, exc: BaseException) -> None:
        """Hand an error to on_exception; a failure there must not escape into the loop."""
        if self.on_exception is not None:
            try:
                self.on_exception(exc)
            except Exception:  # noqa: BLE001, S110 - already counted; nothing safer to do
                pass
