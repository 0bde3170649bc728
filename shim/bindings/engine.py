# SPDX-License-Identifier: MIT
"""The door to native/engine.h: the batched NFQUEUE loop in C.

Rule 1: a NativeEngine owns its receive slots, log ring and counters; each
pump() is passed the table and plan to use, so a reload swaps them between
two calls, never during one.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from shim._icmp6 import ffi, lib
from shim.bindings.icmp6 import U32, NativeTable

__all__ = ["COUNTERS", "LoggedPacket", "NativeEngine", "NativePlan", "encode_verdicts"]

_SLOT = 65536 + 4096  # one netlink message: a 0xffff-octet copy plus attributes
_raw_alloc = ffi.new_allocator(should_clear_after_alloc=False)  # untouched pages stay unmapped
COUNTERS: tuple[str, ...] = tuple(name for name, _ in ffi.typeof("struct engine_counters").fields)


class NativePlan:
    """The C verdict plan of one Judge: (kind, value, mask, log) per decision index."""

    __slots__ = ("_plan", "n")

    def __init__(self, plan: Sequence[tuple[int, int, int]], log: Sequence[bool]) -> None:
        """Raises ValueError when the two sequences differ in length or a kind is unknown."""
        if len(plan) != len(log) or any(k not in (0, 1, 2) for k, _, _ in plan):
            raise ValueError("plan and log must be equally long, kinds 0..2")
        self.n = len(plan)
        self._plan = ffi.new("struct engine_plan[]", max(self.n, 1))
        for i, ((kind, value, mask), logged) in enumerate(zip(plan, log)):
            self._plan[i] = {"kind": kind, "log": int(logged), "value": value & U32,
                             "mask": mask & U32}


class LoggedPacket:
    """A logged decision's packet (verdict already given in C): meta plus a payload copy."""

    __slots__ = ("hook", "indev", "mark", "outdev", "payload")

    def __init__(self, hook: int, indev: int, outdev: int, payload: bytes) -> None:
        self.hook, self.indev, self.outdev, self.payload, self.mark = hook, indev, outdev, payload, 0

    def get_payload(self) -> bytes:
        return self.payload

    def get_mark(self) -> int:
        return self.mark

    def set_mark(self, mark: int) -> None:
        raise RuntimeError("the batched engine already gave this packet its verdict")

    def accept(self) -> None:
        raise RuntimeError("the batched engine already gave this packet its verdict")

    drop = accept


class NativeEngine:
    """One struct engine bound to a netlink fd; see native/engine.h."""

    __slots__ = ("_e", "_log", "_pump", "_rx", "_take")

    def __init__(self, fd: int, queue_num: int, on_error: tuple[int, int, int],
                 log_cap: int = 128) -> None:
        """Args: fd of the bound queue socket; on_error as a (kind, value, mask) plan entry."""
        self._e = ffi.new("struct engine *")
        self._rx = _raw_alloc("uint8_t[]", int(lib.ENGINE_BATCH_MAX) * _SLOT)
        self._log = _raw_alloc("struct engine_log_entry[]", max(log_cap, 1))
        self._e.fd, self._e.queue_num = fd, queue_num
        self._e.rx, self._e.slot_size = self._rx, _SLOT
        self._e.log, self._e.log_cap = self._log, max(log_cap, 1)
        self.set_on_error(on_error)
        self._pump, self._take = lib.engine_pump, lib.engine_log_take

    def set_on_error(self, on_error: tuple[int, int, int]) -> None:
        """The verdict for a packet the engine cannot judge, as a (kind, value, mask) entry."""
        kind, value, mask = on_error
        self._e.on_error = {"kind": kind, "log": 0, "value": value & U32, "mask": mask & U32}

    def pump(self, table: NativeTable | None, plan: NativePlan | None, budget: int) -> int:
        """Judge up to `budget` queued packets in C (GIL released); return how many.

        Without a table or plan every packet gets the on_error verdict.

        Raises:
            OSError: the socket failed (other than EAGAIN/EINTR/ENOBUFS).
        """
        t = table.c_table if table is not None else ffi.NULL
        p, n = (plan._plan, plan.n) if plan is not None else (ffi.NULL, 0)
        done: int = self._pump(self._e, t, p, n, max(0, min(budget, U32)))
        if done < 0:
            raise OSError(-done, os.strerror(-done))
        return done

    def counters(self) -> dict[str, int]:
        """The engine counters (struct engine_counters) as a dict."""
        c = self._e.c
        return {name: int(getattr(c, name)) for name in COUNTERS}

    def take_logs(self) -> list[tuple[int, LoggedPacket]]:
        """Empty the log ring: (decision index, packet) of each logged decision."""
        out = []
        while (entry := self._take(self._e)) != ffi.NULL:
            data = bytes(ffi.buffer(entry.data, min(entry.len, int(lib.ENGINE_LOG_SNAP))))
            out.append((int(entry.rule), LoggedPacket(entry.hook, entry.indev, entry.outdev, data)))
        return out


def encode_verdicts(verdicts: Sequence[tuple[int, int, int | None]], queue_num: int) -> bytes:
    """The netlink messages engine.c sends for (id, NF verdict, mark or None) verdicts."""
    v = ffi.new("struct engine_verdict[]", max(len(verdicts), 1))
    for i, (pid, verdict, mark) in enumerate(verdicts):
        v[i] = {"id": pid, "verdict": verdict, "mark": mark or 0, "set_mark": int(mark is not None)}
    cap = max(len(verdicts), 1) * int(lib.ENGINE_MSG_MAX)
    out = ffi.new("uint8_t[]", cap)
    n = lib.engine_encode_verdicts(v, len(verdicts), queue_num, out, cap)
    return bytes(ffi.buffer(out, n))
