# SPDX-License-Identifier: MIT
"""The netfilterqueue engine (`[engine] kind = "netfilterqueue"`): a Python callback per packet.

The only importer of `netfilterqueue`. Invariants (beside the Reader
contract's, shim.adapters.reader):
- every packet handed to the callback gets exactly one verdict: the plan's,
  or the Judge's on_error verdict if anything at all goes wrong first;
- the Judge is read once per packet from one attribute, and swapped only
  between packets, so no packet sees a half-built table.
"""

from __future__ import annotations

import errno
import os
import socket

from shim.adapters.nfnetlink import params_attrs
from shim.adapters.reader import BudgetSocket, Judge, OnDecision, OnError, PacketLike, QueueSocket, apply_verdict, bind_error
from shim.core.model import PlanKind, mark_after

__all__ = ["QueueReader"]


class QueueReader(QueueSocket):
    """One bound NFQUEUE queue judged by a swappable Judge, one callback per packet."""

    def __init__(self, queue_num: int, judge: Judge, *,
                 maxlen: int = 4096, sock_rcvbuf: int = 4 << 20,
                 on_logged: OnDecision | None = None,
                 on_exception: OnError | None = None) -> None:
        super().__init__(queue_num, judge, maxlen=maxlen, sock_rcvbuf=sock_rcvbuf,
                         on_logged=on_logged, on_exception=on_exception)
        self._nfq: object | None = None

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
        self._sock = BudgetSocket(sock, self.stats)
        try:
            # netfilterqueue caps the copy range at 4016 octets: ask for whole packets.
            self._configure(params_attrs())
        except OSError as exc:
            self.unbind()
            raise bind_error(self.queue_num, exc) from exc
        return fd

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
        judge = self.judge  # one read: a reload swaps the whole Judge between packets
        try:
            payload = pkt.get_payload()
            index = judge.classify(payload, pkt.hook, pkt.indev, pkt.outdev)
            kind, value, mask = judge.plan[index]
        except Exception as exc:  # noqa: BLE001 - any failure gets the on_error verdict
            stats.errors += 1
            apply_verdict(pkt, judge.on_error)
            self._report(exc)
            return
        # Verdict first, bookkeeping after: a failure below can never cost a verdict.
        if kind == PlanKind.ACCEPT:
            pkt.accept()
            stats.by_action["accept"] += 1
        elif kind == PlanKind.DROP:
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
