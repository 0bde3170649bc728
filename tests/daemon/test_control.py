# SPDX-License-Identifier: MIT
"""The control socket answers any size, never replaces a live socket, and
has a default path per instance (queue) and per network namespace."""

from __future__ import annotations

import os
import select
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from shim.daemon.control import ControlServer, query
from shim.core.errors import EnvironmentProblem, ShimError


def _big_snapshot(rules: int) -> dict[str, object]:
    return {"pid": 1, "rules": [{"rule": f"rule-{i:05d}", "origin": "user", "priority": i,
                                 "verdict": "drop", "mark_name": None, "hits": i * 7}
                                for i in range(rules)]}


def _serve_while(server: ControlServer, busy: Callable[[], bool], limit_s: float = 20.0) -> None:
    """Run the server as the daemon's loop does (poll what it asks for, then serve) while busy()."""
    deadline = time.monotonic() + limit_s
    while busy() and time.monotonic() < deadline:
        poller = select.poll()
        for fd, ev in server.interest().items():
            poller.register(fd, ev)
        poller.poll(50)
        server.serve_pending()


def _query_in_thread(path: str, **kw: object) -> tuple[threading.Thread, list[object]]:
    out: list[object] = []

    def run() -> None:
        try:
            out.append(query(path, **kw))  # type: ignore[arg-type]
        except ShimError as exc:
            out.append(exc)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, out


class TestReplySize:
    def test_a_reply_many_socket_buffers_long_arrives_whole_every_time(self, tmp_path: Path) -> None:
        """A 20,000-rule snapshot (~2.5 MB, far beyond a unix socket buffer) is read whole, 3 times."""
        snap = _big_snapshot(20_000)
        server = ControlServer(str(tmp_path / "c.sock"), lambda: snap)
        try:
            for _ in range(3):
                t, out = _query_in_thread(server.path)
                _serve_while(server, t.is_alive)
                t.join(5)
                assert out == [snap]
            assert server.server.counters["answered"] == 3
        finally:
            server.close()


def _trickle_server(path: str, payload: bytes, pause: float) -> threading.Thread:
    """A fake daemon that sends `payload` a byte at a time (bounded: len(payload) * pause)."""
    lsock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    lsock.bind(path)
    lsock.listen(1)

    def run() -> None:
        with lsock:
            conn, _ = lsock.accept()
            with conn:
                for b in payload:
                    try:
                        conn.send(bytes([b]))
                    except OSError:
                        return
                    time.sleep(pause)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


class TestQuery:
    def test_the_whole_answer_has_one_deadline(self, tmp_path: Path) -> None:
        """A daemon that trickles bytes forever is given up on after `timeout` in all, not per read."""
        path = str(tmp_path / "slow.sock")
        _trickle_server(path, b"{" + b" " * 400, pause=0.05)  # 20 s of trickling
        t, out = _query_in_thread(path, timeout=1.0)
        t.join(8)
        assert not t.is_alive(), "query kept reading past its timeout"
        assert isinstance(out[0], ShimError) and "did not answer within 1 s" in str(out[0])

    def test_the_answer_size_is_bounded(self, tmp_path: Path) -> None:
        """More than max_reply bytes is refused with a precise error, not read into memory."""
        path = str(tmp_path / "big.sock")
        lsock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        lsock.bind(path)
        lsock.listen(1)

        def run() -> None:
            with lsock:
                conn, _ = lsock.accept()
                with conn:
                    try:
                        conn.sendall(b'{"x": "' + b"a" * 100_000 + b'"}')
                    except OSError:
                        pass

        threading.Thread(target=run, daemon=True).start()
        with pytest.raises(ShimError, match="more than 10000 bytes"):
            query(path, timeout=5.0, max_reply=10_000)


class TestSocketOwnership:
    def test_a_live_socket_is_refused_a_stale_one_replaced(self, tmp_path: Path) -> None:
        """Someone answering on the path: exit-3 error, their socket untouched; nobody: replaced."""
        path = str(tmp_path / "c.sock")
        live = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        live.bind(path)
        live.listen(1)
        with pytest.raises(EnvironmentProblem, match="in use by a running process") as err:
            ControlServer(path, lambda: {})
        assert err.value.exit_code == 3
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as c:
            c.connect(path)  # still the first owner's socket
        live.close()  # the owner died without unlinking: a stale socket is left
        server = ControlServer(path, lambda: {"ok": True})
        try:
            t, out = _query_in_thread(path)
            _serve_while(server, t.is_alive)
            assert out == [{"ok": True}]
        finally:
            server.close()
        assert not os.path.exists(path)

    def test_close_leaves_a_successors_socket_alone(self, tmp_path: Path) -> None:
        """A server that lost its path to a successor does not unlink the successor's socket."""
        path = str(tmp_path / "c.sock")
        first = ControlServer(path, lambda: {})
        os.unlink(path)
        successor = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        successor.bind(path)
        successor.listen(1)
        try:
            first.close()
            assert os.path.exists(path)
        finally:
            successor.close()

    def test_not_a_socket_is_never_removed(self, tmp_path: Path) -> None:
        """A regular file at the path is an error naming it, and it stays."""
        path = tmp_path / "c.sock"
        path.write_text("keep me")
        with pytest.raises(EnvironmentProblem, match="is not a socket"):
            ControlServer(str(path), lambda: {})
        assert path.read_text() == "keep me"


class TestDefaultPath:
    def test_per_queue(self) -> None:
        """Two queues in one namespace: two paths under /run/icmp6-shim."""
        from shim.daemon.control import default_socket_path

        a, b = default_socket_path(0), default_socket_path(1)
        assert a != b and a.startswith("/run/icmp6-shim/") and b.startswith("/run/icmp6-shim/")

    @pytest.mark.netns
    def test_per_network_namespace(self) -> None:
        """The same queue in another network namespace gets another path; `stats` there agrees."""
        from shim.daemon.control import default_socket_path

        code = "from shim.daemon.control import default_socket_path; print(default_socket_path(0))"
        other = subprocess.run(["unshare", "--net", sys.executable, "-c", code], capture_output=True,
                               text=True, timeout=30, cwd=Path(__file__).resolve().parents[2])
        assert other.returncode == 0, other.stderr
        again = subprocess.run(["unshare", "--net", sys.executable, "-c", code], capture_output=True,
                               text=True, timeout=30, cwd=Path(__file__).resolve().parents[2])
        here = default_socket_path(0)
        assert other.stdout.strip() != here and again.stdout.strip() != here
        assert other.stdout.strip() != again.stdout.strip()  # two namespaces, two paths
