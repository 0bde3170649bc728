# SPDX-License-Identifier: MIT
"""A bounded, non-blocking request/reply server served from the daemon's own poll loop.

Used by the control socket (`stats`) and the metrics endpoint. No threads: the
loop asks `interest()` which descriptors to poll and calls `serve()` once per
turn; every step is non-blocking and bounded, so a client, slow or hostile,
costs the packet loop a few system calls per turn and never a wait. Limits:
- at most `max_connections` open at once; while full the listeners are not
  polled (the kernel's backlog holds or refuses the rest, at no cost to us);
- a deadline per connection from its accept: past it, it is closed, whatever
  state it is in (a half-sent request, a reader that stopped reading);
- a request-size bound; an overlong request is closed unanswered;
- replies are written incrementally as the socket takes them (never `sendall`
  on a non-blocking socket, which fails midway once the buffer is full).

`bind_unix` never unlinks a live socket: it connects first, and only a socket
nobody answers on (a crashed run's leftover) is replaced.
"""

from __future__ import annotations

import errno
import os
import select
import socket
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from shim.core.errors import EnvironmentProblem

__all__ = ["Limits", "ReplyServer", "bind_unix", "recv_to_eof", "sync_poller"]

_ACCEPTS_PER_TURN = 64  # a flood of connects costs at most this many accepts per loop turn
_SEND_PER_TURN = 1 << 20  # bytes written to one connection per turn: big replies cannot hog a turn


@dataclass(frozen=True, slots=True)
class Limits:
    """The bounds of one server."""

    max_connections: int = 8
    deadline: float = 5.0       # seconds from accept to close, whatever the state
    max_request: int = 4096     # bytes of request read before the reply is made


@dataclass(slots=True)
class _Conn:
    sock: socket.socket
    deadline: float
    request: bytearray = field(default_factory=bytearray)
    reply: memoryview | None = None  # set once the request is complete; written incrementally


def bind_unix(path: str, mode: int, *, group: int | None = None, what: str = "socket",
              backlog: int = 16) -> tuple[socket.socket, tuple[int, int]]:
    """Bind a listening unix socket at `path`, refusing to replace a live one.

    Returns the socket and the (st_dev, st_ino) of the file bound, so the owner
    unlinks only its own file at close.

    Raises:
        EnvironmentProblem: someone answers on `path`, it is not a socket, or it cannot be made.
    """
    directory = os.path.dirname(path) or "."
    try:
        # A directory we create is 0755: the socket's own mode is the access check (Linux
        # checks write permission on the socket inode at connect).
        os.makedirs(directory, mode=0o755, exist_ok=True)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            st = None
        if st is not None:
            if not stat.S_ISSOCK(st.st_mode):
                raise EnvironmentProblem(f"{what} {path} exists and is not a socket; "
                                         "remove it or choose another path")
            if _answers(path):
                raise EnvironmentProblem(f"{what} {path} is in use by a running process "
                                         "(another icmp6-shim instance?); stop it or choose "
                                         "another path")
            os.unlink(path)  # nobody listens: a stale socket of an earlier run
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            # Bind under a umask that leaves the socket no wider than `mode` from the start.
            old = os.umask(0o777 & ~mode)
            try:
                sock.bind(path)
            finally:
                os.umask(old)
            if group is not None:
                os.chown(path, -1, group)
            os.chmod(path, mode)
            st = os.lstat(path)
            sock.listen(backlog)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
    except OSError as exc:
        raise EnvironmentProblem(f"cannot create the {what} {path}: {exc.strerror or exc}") from exc
    return sock, (st.st_dev, st.st_ino)


def _answers(path: str) -> bool:
    """True if a process accepts connections on the unix socket at `path`."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC) as probe:
        probe.settimeout(1.0)
        try:
            probe.connect(path)
        except (ConnectionRefusedError, FileNotFoundError):
            return False
        except BlockingIOError:  # EAGAIN: a listener whose backlog is full is alive
            return True
        except OSError as exc:
            # EACCES and the like: someone else's socket we may not even probe; not ours to remove.
            return exc.errno != errno.ECONNREFUSED
        return True


def unlink_if_ours(path: str, ident: tuple[int, int]) -> None:
    """Remove `path` only if it is still the file we bound (not a successor's socket)."""
    try:
        st = os.lstat(path)
        if (st.st_dev, st.st_ino) == ident:
            os.unlink(path)
    except OSError:
        pass


class ReplyServer:
    """Serves one reply per connection, made by `respond(request)`.

    `complete(request)` says when a request has been read fully; for a server
    that reads nothing (the control socket) it is always true.
    """

    def __init__(self, listeners: list[socket.socket], respond: Callable[[bytes], bytes],
                 complete: Callable[[bytes], bool], limits: Limits,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.listeners = listeners
        self.respond = respond
        self.complete = complete
        self.limits = limits
        self.clock = clock
        self.conns: dict[int, _Conn] = {}
        self.counters = {"accepted": 0, "answered": 0, "timed_out": 0, "too_large": 0, "failed": 0}

    def interest(self) -> dict[int, int]:
        """fd -> poll events this server waits for now."""
        want: dict[int, int] = {}
        if len(self.conns) < self.limits.max_connections:
            for lsock in self.listeners:
                want[lsock.fileno()] = select.POLLIN
        for fd, c in self.conns.items():
            want[fd] = select.POLLOUT if c.reply is not None else select.POLLIN
        return want

    def serve(self) -> None:
        """One bounded, non-blocking pass: accept, read, answer, write, expire."""
        now = self.clock()
        self._accept(now)
        for fd in list(self.conns):
            c = self.conns[fd]
            if now >= c.deadline:
                self.counters["timed_out"] += 1
                self._close(fd)
                continue
            if c.reply is None:
                self._read(fd, c)
            if fd in self.conns and c.reply is not None:
                self._write(fd, c)

    def _accept(self, now: float) -> None:
        for lsock in self.listeners:
            for _ in range(_ACCEPTS_PER_TURN):
                if len(self.conns) >= self.limits.max_connections:
                    return
                try:
                    conn, _ = lsock.accept()
                except (BlockingIOError, InterruptedError):
                    break
                except OSError:  # ECONNABORTED, EMFILE: try again next turn
                    break
                conn.setblocking(False)
                self.counters["accepted"] += 1
                c = _Conn(conn, now + self.limits.deadline)
                self.conns[conn.fileno()] = c
                if self.complete(b""):
                    self._answer(conn.fileno(), c)

    def _read(self, fd: int, c: _Conn) -> None:
        try:
            data = c.sock.recv(self.limits.max_request + 1 - len(c.request))
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.counters["failed"] += 1
            self._close(fd)
            return
        if not data:  # the client gave up before finishing its request
            self._close(fd)
            return
        c.request += data
        if self.complete(bytes(c.request)):
            self._answer(fd, c)
        elif len(c.request) > self.limits.max_request:
            self.counters["too_large"] += 1
            self._close(fd)

    def _answer(self, fd: int, c: _Conn) -> None:
        try:
            c.reply = memoryview(self.respond(bytes(c.request)))
        except Exception:  # noqa: BLE001 - a failing reply closes one connection, never the loop
            self.counters["failed"] += 1
            self._close(fd)

    def _write(self, fd: int, c: _Conn) -> None:
        assert c.reply is not None
        sent_now = 0
        while c.reply and sent_now < _SEND_PER_TURN:
            try:
                n = c.sock.send(c.reply[:_SEND_PER_TURN - sent_now])
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # the client went away
                self.counters["failed"] += 1
                self._close(fd)
                return
            c.reply = c.reply[n:]
            sent_now += n
        if not c.reply:
            self.counters["answered"] += 1
            self._close(fd)

    def _close(self, fd: int) -> None:
        c = self.conns.pop(fd)
        try:
            c.sock.close()
        except OSError:
            pass

    def close(self) -> None:
        for fd in list(self.conns):
            self._close(fd)
        for lsock in self.listeners:
            lsock.close()


def sync_poller(poller: select.poll, registered: dict[int, int], wanted: dict[int, int]) -> None:
    """Make `poller` watch exactly `wanted` (fd -> events); `registered` tracks what it has."""
    for fd in [fd for fd in registered if fd not in wanted]:
        poller.unregister(fd)
        del registered[fd]
    for fd, ev in wanted.items():
        if fd not in registered:
            poller.register(fd, ev)
        elif registered[fd] != ev:
            poller.modify(fd, ev)
        registered[fd] = ev


def recv_to_eof(s: socket.socket, deadline: float, limit: int) -> bytes | None:
    """The client side: read until the server closes, the whole answer by `deadline`
    (time.monotonic), not each read. None if it exceeds `limit` bytes.

    Raises:
        TimeoutError: the deadline passed first.
    """
    chunks: list[bytes] = []
    size = 0
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError
        s.settimeout(left)
        chunk = s.recv(1 << 20)
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
