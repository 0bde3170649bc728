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
- the reader implements the Reader contract (shim.adapters.reader), so the
  service cannot tell the engines apart.
"""

from __future__ import annotations

import errno
import socket

from shim.adapters.nfnetlink import NETLINK_NETFILTER, bind_attrs, config_message, unbind_attrs
from shim.adapters.reader import BudgetSocket, Judge, OnDecision, OnError, QueueSocket, Stats, bind_error
from shim.bindings.engine import NativeEngine, NativePlan
from shim.bindings.icmp6 import NativeTable
from shim.core.model import Verdict, plan_entry

__all__ = ["BatchedReader"]


class BatchedReader(QueueSocket):
    """One bound NFQUEUE queue judged in C by the Judge's NativeTable."""

    def __init__(self, queue_num: int, judge: Judge, *,
                 maxlen: int = 4096, sock_rcvbuf: int = 4 << 20,
                 on_logged: OnDecision | None = None,
                 on_exception: OnError | None = None) -> None:
        super().__init__(queue_num, judge, maxlen=maxlen, sock_rcvbuf=sock_rcvbuf,
                         on_logged=on_logged, on_exception=on_exception)
        self._engine: NativeEngine | None = None
        self._last: dict[str, int] = {}
        self._planned: tuple[Judge, NativeTable | None, NativePlan | None] | None = None
        self._on_error_set: Verdict | None = None

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
            sock.setblocking(False)
            self._sock = BudgetSocket(sock, self.stats)
            # One message: the kernel binds, then applies copy mode and maxlen, then acks.
            self._configure(bind_attrs(self._maxlen))
        except OSError as exc:
            sock.close()
            self._sock = None
            raise bind_error(self.queue_num, exc) from exc
        self._last = {}
        self._engine = NativeEngine(sock.fileno(), self.queue_num, plan_entry(self.on_error))
        self._on_error_set = self.on_error
        return sock.fileno()

    def unbind(self) -> None:
        """Unbind the queue (best effort) and close the socket."""
        if self._sock is not None:
            try:
                self._sock.sock.send(config_message(self.queue_num, unbind_attrs()))
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
        native = judge.table
        logged = [d.log for d in judge.decisions]
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
        if self.on_error is not self._on_error_set:  # a reload may change on_error too
            self._engine.set_on_error(plan_entry(self.on_error))
            self._on_error_set = self.on_error
        done = 0
        try:
            done = self._engine.pump(table, plan, budget)
        except OSError as exc:
            if exc.errno != errno.ENOBUFS:
                raise
        finally:
            # Decisions logged in this pump belong to this pump's Judge, whatever happened.
            self._sync(self._engine.counters())
            self._handle_logs(judge)
        return done

    def _handle_logs(self, judge: Judge) -> None:
        assert self._engine is not None
        for index, pkt in self._engine.take_logs():
            try:
                decision = judge.decisions[index]
                if decision.log and self.on_logged is not None:
                    self.on_logged(decision, pkt, pkt.payload)
            except Exception as exc:  # noqa: BLE001 - logging never costs the loop
                self.stats.errors += 1
                self._report(exc)

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
