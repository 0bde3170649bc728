# SPDX-License-Identifier: MIT
"""Local control socket: `icmp6-shim stats` asks the running daemon for its counters.

A unix stream socket, mode 0600 in a 0700 directory (root or the service's
own user only). Protocol: the client connects; the daemon answers one JSON
object and closes. The server never blocks the packet loop:
it is polled non-blocking and each answer is small.
"""

from __future__ import annotations

import json
import os
import socket
import stat
from collections.abc import Callable
from pathlib import Path

from shim.diversion import DiversionCounters
from shim.errors import EnvironmentProblem, ShimError
from shim.nfnetlink import NFQUEUE_PROC

__all__ = ["ControlServer", "kernel_queue_stats", "overload_stats", "query"]

_KQ_FIELDS = ("queue", "peer_portid", "queue_total", "copy_mode", "copy_range",
              "queue_dropped", "user_dropped", "id_sequence")


def kernel_queue_stats(queues: range | list[int], text: str | None = None) -> list[dict[str, int]]:
    """The kernel's own counters for our queues (queue drops, user drops, backlog)."""
    if text is None:
        try:
            with open(NFQUEUE_PROC, encoding="ascii") as f:
                text = f.read()
        except OSError:
            return []
    rows = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= len(_KQ_FIELDS) and parts[0].isdigit() and int(parts[0]) in queues:
            rows.append(dict(zip(_KQ_FIELDS, (int(p) for p in parts[: len(_KQ_FIELDS)]))))
    return rows


def overload_stats(rules: DiversionCounters | None, kernel: list[dict[str, int]], judged: int | None,
                   *, queue_fail_open: bool, over_budget: str) -> dict[str, object]:
    """What overload did, by cause: budget rules (drops, or unjudged accepts with
    over_budget = "accept"), a full queue (queue_dropped) or socket (user_dropped), and the
    kernel's fail-open accepts.

    The kernel counts no fail-open accept (NFQA_CFG_F_FAIL_OPEN reinjects the packet with
    NF_ACCEPT and counts nothing; it then skips the rest of our chain, so no rule after the
    queue rule sees it either). They are what reached the queue rule and was neither judged,
    dropped nor is still waiting. Read in that order (rule counter first, `judged` last), every
    error makes the result smaller: it is a lower bound, exact once the queue is idle. None
    when `judged` is unknown (workers > 1: the supervisor's counts are up to 0.25 s old, which
    would overstate it) or the rule counters are unreadable.
    """
    dropped = sum(k["queue_dropped"] for k in kernel)
    user = sum(k["user_dropped"] for k in kernel)
    waiting = sum(k["queue_total"] for k in kernel)
    fail_open: int | None = 0
    if queue_fail_open:
        fail_open = (None if rules is None or judged is None
                     else max(0, rules.queued - judged - dropped - user - waiting))
    return {
        "over_budget": over_budget,
        "budget": dict(rules.budget) if rules else {},
        "budget_by_interface": dict(rules.by_interface) if rules else {},
        "queued": rules.queued if rules else None,
        "queue_full_drops": dropped,
        "socket_full_drops": user,
        "fail_open_accepts": fail_open,
    }


class ControlServer:
    """Answers stats requests with snapshot() as JSON."""

    def __init__(self, path: str, snapshot: Callable[[], dict[str, object]]) -> None:
        self.path = path
        self.snapshot = snapshot
        directory = Path(path).parent
        try:
            # A directory we create is 0700; an existing one keeps its mode (under systemd,
            # RuntimeDirectoryMode=0700 makes /run/icmp6-shim so).
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            try:
                if stat.S_ISSOCK(os.lstat(path).st_mode):
                    os.unlink(path)  # a stale socket of an earlier run; never another kind of file
            except FileNotFoundError:
                pass
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
            self.sock.bind(path)
            os.chmod(path, 0o600)
        except OSError as exc:
            raise EnvironmentProblem(f"cannot create the control socket {path}: {exc.strerror}; "
                                     "set [control] socket to a writable path") from exc
        self.sock.listen(8)
        self.sock.setblocking(False)

    def fileno(self) -> int:
        return self.sock.fileno()

    def serve_pending(self) -> int:
        """Answer every waiting client; never blocks for long (0.2 s per client at most)."""
        served = 0
        while True:
            try:
                conn, _ = self.sock.accept()
            except BlockingIOError:
                return served
            with conn:
                # The request is not read: answering cannot wait on a slow client. The answer
                # fits the socket buffer; a client that cannot take it all loses it.
                conn.setblocking(False)
                try:
                    conn.sendall(json.dumps(self.snapshot()).encode() + b"\n")
                except OSError:
                    pass
            served += 1

    def close(self) -> None:
        self.sock.close()
        try:
            os.unlink(self.path)
        except OSError:
            pass


def query(path: str, timeout: float = 5.0) -> dict[str, object]:
    """Ask a running daemon for its stats.

    Raises:
        ShimError: no daemon listens there, or permission is denied.
    """
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(path)
            chunks = []
            while chunk := s.recv(65536):
                chunks.append(chunk)
    except FileNotFoundError as exc:
        raise ShimError(f"no daemon is running (no control socket at {path})") from exc
    except PermissionError as exc:
        raise ShimError(f"permission denied on {path}: run as root") from exc
    except OSError as exc:
        raise ShimError(f"cannot reach the daemon at {path}: {exc.strerror or exc}") from exc
    try:
        result: dict[str, object] = json.loads(b"".join(chunks))
    except json.JSONDecodeError as exc:
        raise ShimError(f"the daemon at {path} sent an unreadable answer") from exc
    return result
