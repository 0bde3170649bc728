# SPDX-License-Identifier: MIT
"""The sd_notify client against a datagram socket the test binds as NOTIFY_SOCKET."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from shim.daemon.notify import Notifier


@pytest.fixture
def manager(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    """A bound unix datagram socket standing in for systemd, and its path."""
    path = str(tmp_path / "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(5.0)  # a message that never comes fails the test instead of hanging it
    yield sock, path
    sock.close()


def received(sock: socket.socket) -> dict[str, str]:
    """One datagram as its KEY=VALUE fields."""
    text = sock.recv(4096).decode()
    return dict(line.split("=", 1) for line in text.split("\n"))


class TestNotifier:
    """Each state is one datagram of newline-separated KEY=VALUE pairs."""

    def test_every_state_arrives_as_its_fields(self, manager: tuple[socket.socket, str]) -> None:
        """READY carries STATUS; STATUS, WATCHDOG and STOPPING are their own datagrams."""
        sock, path = manager
        n = Notifier({"NOTIFY_SOCKET": path})
        assert n.ready("judging 12 rules") is True
        assert received(sock) == {"READY": "1", "STATUS": "judging 12 rules"}
        assert n.status("reload failed") is True
        assert received(sock) == {"STATUS": "reload failed"}
        assert n.watchdog() is True
        assert received(sock) == {"WATCHDOG": "1"}
        assert n.stopping() is True
        assert received(sock) == {"STOPPING": "1"}
        n.close()

    def test_reloading_carries_the_monotonic_clock(self, manager: tuple[socket.socket, str]) -> None:
        """RELOADING=1 comes with MONOTONIC_USEC, the clock systemd compares it with."""
        sock, path = manager
        n = Notifier({"NOTIFY_SOCKET": path})
        before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        assert n.reloading() is True
        after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        fields = received(sock)
        assert fields["RELOADING"] == "1" and before <= int(fields["MONOTONIC_USEC"]) <= after
        n.close()

    def test_abstract_socket_name(self) -> None:
        """'@name' is the abstract socket name, as systemd writes it."""
        name = f"icmp6-shim-test-notify-{os.getpid()}"
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind("\0" + name)
        sock.settimeout(5.0)
        try:
            n = Notifier({"NOTIFY_SOCKET": "@" + name})
            assert n.status("up") is True
            assert received(sock) == {"STATUS": "up"}
            n.close()
        finally:
            sock.close()

    def test_a_full_socket_drops_status_instead_of_blocking(
            self, manager: tuple[socket.socket, str]) -> None:
        """Nobody reading: STATUS and WATCHDOG are dropped and counted, never waited for."""
        _sock, path = manager
        n = Notifier({"NOTIFY_SOCKET": path})
        results = []
        for i in range(10_000):  # the receive queue holds a few datagrams (net.unix.max_dgram_qlen)
            results.append(n.status(f"status {i} " + "x" * 200))
            if not results[-1]:
                break
        assert results[0] is True and results[-1] is False
        assert n.dropped == 1
        # Non-blocking, not a short wait: a wait would be seen only as a slower test.
        assert n._sock is not None and n._sock.gettimeout() == 0.0
        assert n.watchdog() is False and n.dropped == 2
        n.close()

    def test_no_manager_is_a_no_op(self) -> None:
        """Without NOTIFY_SOCKET every call returns False and nothing is opened."""
        n = Notifier({})
        assert n.ready("x") is False and n.watchdog() is False and n.stopping() is False
        assert n.dropped == 0
        n.close()

    def test_a_gone_manager_is_not_an_error(self, tmp_path: Path) -> None:
        """A socket path nobody binds: False, not an exception, and not counted as a drop."""
        n = Notifier({"NOTIFY_SOCKET": str(tmp_path / "nobody")})
        assert n.ready("x") is False and n.dropped == 0
        n.close()

    @pytest.mark.parametrize(("env", "interval"), [
        ({"WATCHDOG_USEC": "4000000"}, 2.0),
        ({"WATCHDOG_USEC": "4000000", "WATCHDOG_PID": str(os.getpid())}, 2.0),
        ({"WATCHDOG_USEC": "4000000", "WATCHDOG_PID": "1"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({}, None),
    ])
    def test_watchdog_interval_is_half_the_period_for_this_process(
            self, env: dict[str, str], interval: float | None) -> None:
        """WATCHDOG_USEC/2 when WATCHDOG_PID is absent or ours; no watchdog otherwise."""
        assert Notifier(env).watchdog_interval == interval
