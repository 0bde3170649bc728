# SPDX-License-Identifier: MIT
"""The process host (shim.daemon.host): start and stop order, crash handling, signals.

Runs without root: the servers are real unix sockets in tmp_path, the notify
socket is a datagram socket the test binds, and the diversion is a stand-in
that records when it is called and what was already done by then.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from shim.adapters.diversion import DiversionCounters
from shim.core.errors import ShimError
from shim.core.model import Settings
from shim.daemon import host as host_module
from shim.daemon.host import ProcessHost
from shim.daemon.notify import Notifier

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def manager(tmp_path: Path) -> Iterator[socket.socket]:
    """A bound unix datagram socket standing in for systemd's notify socket."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify"))
    sock.setblocking(False)
    yield sock
    sock.close()


def states(sock: socket.socket) -> list[str]:
    """The state keys (READY, STOPPING, ...) of every datagram received so far, in order."""
    out = []
    while True:
        try:
            msg = sock.recv(4096).decode()
        except BlockingIOError:
            return out
        out += [line.split("=", 1)[0] for line in msg.split("\n") if line.split("=", 1)[0] != "STATUS"
                and not line.startswith("MONOTONIC_USEC")]


@dataclass
class FakeDiversion:
    """A diversion that notes, when removed, what the host had already done."""

    control: Path
    manager: socket.socket
    name: str = "fake"
    fail: bool = False
    events: list[str] = field(default_factory=list)

    def install(self) -> None:
        self.events.append("install")

    def remove(self) -> None:
        self.events += states(self.manager)  # STOPPING must have been sent already
        self.events.append("control open" if self.control.exists() else "control closed")
        self.events.append("remove")
        if self.fail:
            raise RuntimeError("nft went away")

    def counters(self) -> DiversionCounters | None:
        return None


def make(tmp_path: Path, manager: socket.socket, monkeypatch: pytest.MonkeyPatch,
         *, fail_open: bool = True, fail_remove: bool = False) -> tuple[ProcessHost, FakeDiversion]:
    """A host with a real control socket and notifier, and the fake diversion as its backend."""
    control = tmp_path / "control.sock"
    fake = FakeDiversion(control, manager, fail=fail_remove)
    monkeypatch.setattr(host_module, "choose_backend", lambda _b, _spec: (fake, "test"))
    h = ProcessHost(Settings(fail_open=fail_open),
                    notifier=Notifier({"NOTIFY_SOCKET": str(tmp_path / "notify")}),
                    control_path=str(control), snapshot=lambda: {"ok": True},
                    status=lambda: "fine")
    return h, fake


def started(h: ProcessHost) -> None:
    """The start sequence a Service or Supervisor runs, without the work."""
    h.choose_backend()
    h.open_servers()
    h.install()
    h.ready()


class TestStopOrder:
    """STOPPING, then the servers, then the diversion, then the work."""

    def test_stop_order(self, tmp_path: Path, manager: socket.socket,
                        monkeypatch: pytest.MonkeyPatch) -> None:
        """The diversion is removed after STOPPING and the control socket's close, before the work stops."""
        h, fake = make(tmp_path, manager, monkeypatch)
        started(h)
        assert fake.events == ["install"] and fake.control.exists()
        assert states(manager) == ["READY"]
        h.stop(lambda: fake.events.append("work stopped"))
        assert fake.events == ["install", "STOPPING", "control closed", "remove", "work stopped"]
        assert h.diversion is None and not fake.control.exists()

    def test_a_second_stop_removes_nothing_twice(self, tmp_path: Path, manager: socket.socket,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
        """Stop is safe to call twice: the diversion is removed once, the work asked twice."""
        h, fake = make(tmp_path, manager, monkeypatch)
        started(h)
        h.stop(lambda: fake.events.append("work stopped"))
        h.stop(lambda: fake.events.append("work stopped"))
        assert fake.events.count("remove") == 1 and fake.events.count("work stopped") == 2

    def test_kept_diversion_is_not_removed_and_said(self, tmp_path: Path, manager: socket.socket,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
        """keep_diversion: no remove, a diversion_kept error, and the work still stops."""
        h, fake = make(tmp_path, manager, monkeypatch, fail_open=False)
        started(h)
        with capture_logs() as logs:
            h.stop(lambda: fake.events.append("work stopped"), keep_diversion=True)
        assert "remove" not in fake.events and fake.events[-1] == "work stopped"
        assert [e["event"] for e in logs] == ["diversion_kept"]

    def test_a_failing_remove_still_stops_the_work(self, tmp_path: Path, manager: socket.socket,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
        """The remove's exception is logged; the work drains and unbinds all the same."""
        h, fake = make(tmp_path, manager, monkeypatch, fail_remove=True)
        started(h)
        with capture_logs() as logs:
            h.stop(lambda: fake.events.append("work stopped"))
        assert fake.events[-2:] == ["remove", "work stopped"]
        assert logs[0]["event"] == "diversion_remove_failed" and "nft went away" in logs[0]["error"]

    def test_nothing_installed_nothing_removed(self, tmp_path: Path, manager: socket.socket,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
        """A backend chosen but never installed (the bind failed) is not removed at stop."""
        h, fake = make(tmp_path, manager, monkeypatch)
        h.choose_backend()
        h.stop(lambda: fake.events.append("work stopped"))
        assert fake.events == ["work stopped"]
        h.install()  # the choice was dropped at stop: a late install does nothing
        assert fake.events == ["work stopped"]


class TestRun:
    """run(): start, loop, and a stop that follows fail_open after a crash."""

    @pytest.mark.parametrize(("fail_open", "kept"), [(True, False), (False, True)])
    def test_a_crash_follows_fail_open(self, tmp_path: Path, manager: socket.socket,
                                       monkeypatch: pytest.MonkeyPatch, fail_open: bool,
                                       kept: bool) -> None:
        """An exception from the loop is logged as crashed, re-raised, and the stop keeps the
        diversion only when fail-closed."""
        h, fake = make(tmp_path, manager, monkeypatch, fail_open=fail_open)
        asked: list[bool] = []

        def loop(_wake: socket.socket) -> None:
            raise RuntimeError("injected")

        with capture_logs() as logs, pytest.raises(RuntimeError, match="injected"):
            h.run(lambda: started(h), loop, asked.append)
        assert asked == [kept]
        assert logs[-1]["event"] == "crashed" and "injected" in logs[-1]["error"]

    def test_a_failed_start_stops_without_keeping(self, tmp_path: Path, manager: socket.socket,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
        """A ShimError in start is no crash: the stop runs with keep_diversion False."""
        h, _fake = make(tmp_path, manager, monkeypatch, fail_open=False)
        asked: list[bool] = []

        def start() -> None:
            raise ShimError("cannot bind")

        with pytest.raises(ShimError, match="cannot bind"):
            h.run(start, lambda _w: None, asked.append)
        assert asked == [False]

    def test_sighup_then_sigterm_reach_the_loop(self, tmp_path: Path, manager: socket.socket,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
        """SIGHUP sets the reload flag and SIGTERM the stop flag, each waking the wake socket."""
        h, _fake = make(tmp_path, manager, monkeypatch)
        seen: list[str] = []

        def loop(wake: socket.socket) -> None:
            os.kill(os.getpid(), signal.SIGHUP)
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(100):  # bounded: the handlers run between bytecodes
                if h.flags.stop:
                    break
                time.sleep(0.01)
            seen.append(f"reload={h.take_reload()} again={h.take_reload()} stop={h.flags.stop}")
            seen.append(f"woken={len(wake.recv(64)) > 0}")

        before = signal.getsignal(signal.SIGTERM)
        assert h.run(lambda: None, loop, lambda _keep: None) == 0
        assert seen == ["reload=True again=False stop=True", "woken=True"]
        assert signal.getsignal(signal.SIGTERM) is before  # the old handlers are back


    def test_a_sighup_held_back_before_start_reaches_the_loop(self, tmp_path: Path,
                                                             manager: socket.socket,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
        """A worker starts with SIGHUP blocked (a reload forwarded while it compiles): once
        the host's handler is in, the pending signal is a reload, not lost."""
        h, _fake = make(tmp_path, manager, monkeypatch)
        seen: list[bool] = []

        def loop(_wake: socket.socket) -> None:
            for _ in range(100):  # bounded: the handler runs between bytecodes
                if h.flags.reload:
                    break
                time.sleep(0.01)
            seen.append(h.take_reload())

        old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGHUP})
        try:
            # To this thread: a process-directed signal goes to any thread that does not
            # block it (the suite may have others); a worker is one thread at that point.
            signal.pthread_kill(threading.get_ident(), signal.SIGHUP)  # pending: nobody acts on it yet
            assert signal.SIGHUP in signal.sigpending()
            assert h.run(lambda: None, loop, lambda _keep: None) == 0
        finally:
            signal.sigtimedwait({signal.SIGHUP}, 0)  # if still pending (the failing case)
            signal.pthread_sigmask(signal.SIG_SETMASK, old)
        assert seen == [True]


class TestTick:
    """The loop's housekeeping: watchdog only while healthy, STATUS at most every 2 s."""

    def test_watchdog_only_while_healthy(self, tmp_path: Path, manager: socket.socket) -> None:
        """An unhealthy turn sends no WATCHDOG; a healthy one does; STATUS comes once."""
        env = {"NOTIFY_SOCKET": str(tmp_path / "notify"), "WATCHDOG_USEC": "400000"}
        h = ProcessHost(Settings(), notifier=Notifier(env), control_path="",
                        snapshot=dict, status=lambda: "fine")
        h.tick(100.0, healthy=False)
        assert states(manager) == []  # STATUS only (filtered out), no WATCHDOG
        h.tick(100.5, healthy=True)
        h.tick(100.52, healthy=True)  # within the ping spacing: no second ping
        assert states(manager) == ["WATCHDOG"]


class TestDieWithParent:
    """A child that asked for it gets SIGTERM when its parent dies, even by SIGKILL."""

    def test_the_grandchild_dies_with_its_parent(self, tmp_path: Path) -> None:
        """The middle process is SIGKILLed; the grandchild that called die_with_parent exits."""
        pidfile = tmp_path / "pid"
        code = (
            "import os, signal, sys, time\n"
            "from shim.daemon.host import die_with_parent\n"
            "parent = os.getpid()\n"
            "pid = os.fork()\n"
            "if pid == 0:\n"
            "    assert die_with_parent(parent)\n"
            f"    open({str(pidfile)!r}, 'w').write(str(os.getpid()))\n"
            "    time.sleep(60)\n"
            "    os._exit(0)\n"
            "time.sleep(60)\n"
        )
        middle = subprocess.Popen([sys.executable, "-c", code], cwd=REPO)
        try:
            for _ in range(200):
                if pidfile.exists() and pidfile.read_text():
                    break
                time.sleep(0.05)
            child = int(pidfile.read_text())
            assert _alive(child)
            middle.kill()
            middle.wait(10)
            for _ in range(200):
                if not _alive(child):
                    break
                time.sleep(0.05)
            assert not _alive(child)
        finally:
            middle.kill()
            middle.wait(10)

    def test_an_orphan_is_told(self) -> None:
        """Asked with a pid that is not the parent (it died first), the answer is False."""
        code = ("import os\nfrom shim.daemon.host import die_with_parent\n"
                "print(die_with_parent(os.getppid()), die_with_parent(os.getppid() + 999999))\n")
        out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                             text=True, timeout=60)
        assert out.stdout.split() == ["True", "False"], out.stderr


def _alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie counts as gone: it holds no socket any more)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
