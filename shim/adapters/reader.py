# SPDX-License-Identifier: MIT
"""The Reader contract every engine implements, and what the engines share.

A Reader binds one NFQUEUE queue and judges its packets with a Judge. The
daemon sees only this contract; the engines (shim.adapters.nfq with a Python
callback, shim.adapters.batched with the loop in C) never import each other.

Invariants:
- a Judge is one value: its table, its decisions, their plan and its on_error,
  so a reload swaps all of them with one assignment (`reader.judge = new`);
- every packet gets exactly one verdict, the plan's or the Judge's on_error;
- reading is bounded per pump(budget), so signals, reloads and watchdog pings
  are handled even under a flood.
"""

from __future__ import annotations

import errno
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Protocol

from shim.adapters.nfnetlink import NFQUEUE_PROC, RECV_SIZE, flags_attrs, packet_id, packet_mark, request
from shim.bindings.engine import encode_verdicts
from shim.bindings.icmp6 import NativeTable
from shim.core.errors import EnvironmentProblem
from shim.core.model import Action, Decision, Verdict, plan_entry
from shim.core.shadow import Shadow

__all__ = ["BudgetSocket", "Judge", "OnDecision", "OnError", "PacketLike", "QueueSocket", "Reader",
           "Stats", "apply_verdict", "bind_error"]


class PacketLike(Protocol):
    """What a reader uses of a queued packet (netfilterqueue.Packet; a fake type-checks too)."""

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
    """Give `verdict` to `pkt`: the one place a Python-side verdict reaches the kernel."""
    if verdict.action is Action.DROP:
        pkt.drop()
        return
    if verdict.action is Action.MARK and verdict.mark is not None:
        pkt.set_mark(verdict.apply_to_mark(pkt.get_mark()))
    pkt.accept()


@dataclass(frozen=True, slots=True)
class Judge:
    """A compiled table ready for the hot path: classify -> index -> decision -> plan entry."""

    classify: Callable[[bytes, int, int, int], int]
    decisions: tuple[Decision, ...]
    # Per decision: (PlanKind, mark value, mask) precomputed so the hot path does no lookups.
    plan: tuple[tuple[int, int, int], ...]
    on_error: Verdict  # the verdict of a packet this Judge cannot judge
    shadow: Shadow | None = None  # a candidate table judged beside this one, never enforced
    table: NativeTable | None = None  # the C table behind classify; the batched engine needs it

    @classmethod
    def build(cls, classify: Callable[[bytes, int, int, int], int],
              decisions: tuple[Decision, ...], shadow: Shadow | None = None, *,
              on_error: Verdict, table: NativeTable | None = None) -> Judge:
        """A Judge with its plan computed from the decisions."""
        return cls(classify=classify, decisions=decisions,
                   plan=tuple(plan_entry(d.verdict) for d in decisions),
                   on_error=on_error, shadow=shadow, table=table)

    def with_decisions(self, decisions: tuple[Decision, ...]) -> Judge:
        """The same table judged with other decisions (e.g. every one logged, for --trace)."""
        return replace(self, decisions=decisions, plan=tuple(plan_entry(d.verdict) for d in decisions))


OnDecision = Callable[[Decision, PacketLike, bytes], None]
OnError = Callable[[BaseException], None]


class Reader(Protocol):
    """What the daemon uses of an engine: one bound queue, judged by a swappable Judge."""

    queue_num: int
    judge: Judge  # swapped between two pumps by a reload: one assignment
    stats: Stats
    on_logged: OnDecision | None
    on_exception: OnError | None

    def bind(self) -> int: ...
    def unbind(self) -> None: ...
    def fileno(self) -> int: ...
    def set_queue_flags(self, *, fail_open: bool) -> None: ...
    def pump(self, budget: int = 256) -> int: ...
    def drain(self, quiet_s: float = 0.05, max_s: float = 2.0) -> int: ...
    def engine_counters(self) -> dict[str, int]: ...


class BudgetSocket:
    """socket-like wrapper: at most `budget` messages per pump (netfilterqueue's run_socket)."""

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


class QueueSocket:
    """What both engines share: the queue's own netlink socket, config messages, drain."""

    def __init__(self, queue_num: int, judge: Judge, *,
                 maxlen: int = 4096, sock_rcvbuf: int = 4 << 20,
                 on_logged: OnDecision | None = None,
                 on_exception: OnError | None = None) -> None:
        self.queue_num = queue_num
        self.judge = judge
        self.stats = Stats()
        self.on_logged = on_logged
        self.on_exception = on_exception
        self._maxlen = maxlen
        self._rcvbuf = sock_rcvbuf
        self._sock: BudgetSocket | None = None
        self._seq = 0

    @property
    def on_error(self) -> Verdict:
        """The current Judge's on_error verdict."""
        return self.judge.on_error

    def pump(self, budget: int = 256) -> int:
        """Judge up to `budget` queued packets without blocking; return how many."""
        raise NotImplementedError

    def engine_counters(self) -> dict[str, int]:
        """Counters of a native engine (none unless the engine keeps some)."""
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

    def _report(self, exc: BaseException) -> None:
        """Hand an error to on_exception; a failure there must not escape into the loop."""
        if self.on_exception is not None:
            try:
                self.on_exception(exc)
            except Exception:  # noqa: BLE001, S110 - already counted; nothing safer to do
                pass
