# SPDX-License-Identifier: MIT
"""Local control socket: `icmp6-shim stats` asks the running daemon for its counters.

A unix stream socket, mode 0600 (root or the service's own user only), one
per instance: the default path names the queue and the network namespace.
Protocol: the client connects; the daemon answers one JSON object and closes;
the client reads to EOF. The server never blocks the packet loop: it is a
shim.daemon.sockserve.ReplyServer polled from the loop, writing as the socket takes it.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Callable

from shim.adapters.diversion import DiversionCounters
from shim.core.errors import EnvironmentProblem, ShimError
from shim.adapters.nfnetlink import NFQUEUE_PROC
from shim.daemon.sockserve import Limits, ReplyServer, bind_unix, recv_to_eof, unlink_if_ours

__all__ = ["MAX_REPLY", "RUN_DIR", "ControlServer", "default_socket_path", "kernel_queue_stats",
           "overload_stats", "query", "socket_path"]

RUN_DIR = "/run/icmp6-shim"  # the unit's RuntimeDirectory
MAX_REPLY = 256 << 20  # bytes a stats reply may have: far above 10,000 rules (~1.5 MB)

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


def default_socket_path(queue: int, run_dir: str = RUN_DIR) -> str:
    """The control socket of the instance on `queue` in this network namespace.

    Two instances differ by queue within a namespace (a queue has one reader) and
    by namespace on one host, whose /run they share: the path names both, so no
    default ever collides. `stats` run in the same namespace finds the same path.
    """
    try:
        net = f"-net{os.stat('/proc/self/ns/net').st_ino}"
    except OSError:
        net = ""  # no /proc: one namespace is all we can tell apart
    return os.path.join(run_dir, f"control-q{queue}{net}.sock")


def socket_path(configured: str | None, queue: int) -> str:
    """[control] socket if set, else the per-instance default."""
    return configured if configured is not None else default_socket_path(queue)


class ControlServer:
    """Answers stats requests with snapshot() as JSON, from the daemon's poll loop.

    The reply is made at accept and written as the socket takes it (a 10,000-rule
    snapshot is ~1.5 MB, several socket buffers): bounded connections, a deadline
    each, nothing waits on a slow client.
    """

    def __init__(self, path: str, snapshot: Callable[[], dict[str, object]],
                 limits: Limits = Limits(max_connections=8, deadline=10.0, max_request=0)) -> None:
        self.path = path
        self.snapshot = snapshot
        # Mode 0600: root or the service's own user only. A live socket (another
        # instance's) is never replaced: bind_unix refuses with EnvironmentProblem.
        try:
            sock, self._ident = bind_unix(path, 0o600, what="control socket")
        except EnvironmentProblem as exc:
            raise EnvironmentProblem(f"{exc}; set [control] socket to another path") from None
        self.sock = sock
        self.server = ReplyServer([sock], self._reply, lambda _req: True, limits)

    def _reply(self, _request: bytes) -> bytes:
        return json.dumps(self.snapshot()).encode() + b"\n"

    def fileno(self) -> int:
        return self.sock.fileno()

    def interest(self) -> dict[int, int]:
        return self.server.interest()

    def serve_pending(self) -> None:
        """One bounded, non-blocking pass over the listener and the open connections."""
        self.server.serve()

    def close(self) -> None:
        self.server.close()
        unlink_if_ours(self.path, self._ident)


def query(path: str, timeout: float = 10.0, max_reply: int = MAX_REPLY) -> dict[str, object]:
    """Ask a running daemon for its stats: read to EOF, within `timeout` in all.

    Raises:
        ShimError: no daemon listens there, permission is denied, the answer is
            late, too large or not JSON.
    """
    deadline = time.monotonic() + timeout
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC) as s:
            s.settimeout(timeout)
            s.connect(path)
            data = recv_to_eof(s, deadline, max_reply)
    except FileNotFoundError as exc:
        raise ShimError(f"no daemon is running (no control socket at {path})") from exc
    except PermissionError as exc:
        raise ShimError(f"permission denied on {path}: run as root") from exc
    except TimeoutError as exc:
        raise ShimError(f"the daemon at {path} did not answer within {timeout:g} s") from exc
    except ConnectionRefusedError as exc:
        raise ShimError(f"no daemon is running (a stale control socket at {path})") from exc
    except OSError as exc:
        raise ShimError(f"cannot reach the daemon at {path}: {exc.strerror or exc}") from exc
    if data is None:
        raise ShimError(f"the daemon at {path} sent more than {max_reply} bytes")
    try:
        result: dict[str, object] = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ShimError(f"the daemon at {path} sent an unreadable answer "
                        f"({len(data)} bytes)") from exc
    if not isinstance(result, dict):
        raise ShimError(f"the daemon at {path} sent an unreadable answer (not an object)")
    return result
