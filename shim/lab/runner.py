# SPDX-License-Identifier: MIT
"""Run the daemon as a child process and observe it as systemd would.

Used by the demo, the testbed and the integration tests: the child gets a
NOTIFY_SOCKET we read (READY=1, STATUS=..., WATCHDOG=1) and writes JSON log
lines on stdout that we collect in a thread. Every wait is bounded.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from shim.core.errors import ShimError

__all__ = ["ShimProcess", "TIME_SCALE_ENV", "time_scale"]

# The source tree's root (shim/lab/runner.py -> ../../..): `python -m shim` runs from there,
# so a checkout that is not installed still finds its package.
_REPO = Path(__file__).resolve().parents[2]

# One factor for every bounded wait of the lab and the tests: under emulation (the VM lane
# runs a TCG guest, ~5-10x slower) an interpreter start alone can take seconds, so the
# waits stretch; what is asserted never changes.
TIME_SCALE_ENV = "ICMP6_SHIM_TIME_SCALE"


def time_scale() -> float:
    """The factor for bounded waits from $ICMP6_SHIM_TIME_SCALE (1 when unset; 1 to 100)."""
    raw = os.environ.get(TIME_SCALE_ENV, "").strip()
    if not raw:
        return 1.0
    try:
        value = float(raw)
    except ValueError:
        raise ShimError(f"{TIME_SCALE_ENV}={raw!r}: not a number") from None
    if not 1.0 <= value <= 100.0:
        raise ShimError(f"{TIME_SCALE_ENV}={raw!r}: must be between 1 and 100")
    return value


class ShimProcess:
    """`icmp6-shim run` in a network namespace (or the current one), observed."""

    def __init__(self, config_dir: Path | None, *, netns: str | None = None,
                 extra: tuple[str, ...] = ("--trace",), watchdog_usec: int | None = None,
                 stdout: int | None = None) -> None:
        self.config_dir = config_dir
        self.stdout = stdout  # a file descriptor for the child's stdout instead of our reader
        self.netns = netns
        self.extra = extra
        self.watchdog_usec = watchdog_usec
        self.proc: subprocess.Popen[str] | None = None
        self.notifications: list[dict[str, str]] = []
        self._unseen: list[dict[str, str]] = []  # received, not yet passed by wait_notify
        self.events: list[dict[str, object]] = []
        self.stderr_lines: list[str] = []
        self._events_q: queue.Queue[dict[str, object]] = queue.Queue()
        self._notify_q: queue.Queue[bytes] = queue.Queue()
        self._tmp = tempfile.TemporaryDirectory(prefix="icmp6-shim-notify-")
        self._notify_path = os.path.join(self._tmp.name, "notify.sock")
        self.control_socket = os.path.join(self._tmp.name, "control", "control.sock")
        self._notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._notify.bind(self._notify_path)
        self._notify.settimeout(0.1)

    def argv(self) -> list[str]:
        cmd = [sys.executable, "-m", "shim", "run", "--log-format", "json",
               "--control-socket", self.control_socket, *self.extra]
        if self.config_dir is not None:
            # Absolute: a relative path means the caller's directory, not the child's cwd.
            cmd += ["--config", str(Path(self.config_dir).resolve())]
        return (["ip", "netns", "exec", self.netns] if self.netns else []) + cmd

    def start(self) -> ShimProcess:
        env = dict(os.environ, NOTIFY_SOCKET=self._notify_path, PYTHONUNBUFFERED="1")
        if self.watchdog_usec:
            env["WATCHDOG_USEC"] = str(self.watchdog_usec)
        env.pop("WATCHDOG_PID", None)
        self.proc = subprocess.Popen(self.argv(),
                                     stdout=subprocess.PIPE if self.stdout is None else self.stdout,
                                     stderr=subprocess.PIPE,
                                     text=True, env=env, cwd=_REPO)
        if self.stdout is None:
            threading.Thread(target=self._read_stdout, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()
        threading.Thread(target=self._read_notify, daemon=True).start()
        return self

    def _read_notify(self) -> None:
        """Drain the notify socket as systemd does, so the child never finds it full."""
        while self.proc is not None and self.proc.poll() is None:
            try:
                data = self._notify.recv(4096)
            except (TimeoutError, BlockingIOError):
                continue
            except OSError:
                return
            self._notify_q.put(data)

    def _read_stdout(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                event = {"event": "raw", "line": line.rstrip()}
            self.events.append(event)
            self._events_q.put(event)

    def _read_stderr(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr_lines.append(line.rstrip())

    def poll_notify(self, timeout: float = 0.0) -> list[dict[str, str]]:
        """Collect notify messages that arrived (waiting up to `timeout` for one)."""
        got: list[dict[str, str]] = []
        deadline = time.monotonic() + timeout
        while True:
            try:
                data = self._notify_q.get(timeout=max(0.0, min(0.1, deadline - time.monotonic())))
            except queue.Empty:
                if time.monotonic() >= deadline or got:
                    break
                continue
            msg = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
            got.append(msg)
            self.notifications.append(msg)
            self._unseen.append(msg)
        return got

    def wait_notify(self, key: str, value: str | None = None, timeout: float = 15.0) -> dict[str, str]:
        """Wait (bounded, scaled by time_scale()) for a notify message carrying key (=value)."""
        timeout *= time_scale()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.poll_notify(0.2)
            while self._unseen:
                msg = self._unseen.pop(0)
                if key in msg and (value is None or msg[key] == value):
                    return msg
            if self.proc is not None and self.proc.poll() is not None:
                raise ShimError(f"shim exited with {self.proc.returncode}: {self.stderr_tail()}")
        raise ShimError(f"no {key}={value or '*'} from the shim within {timeout}s: {self.stderr_tail()}")

    def wait_ready(self, timeout: float = 20.0) -> None:
        self.wait_notify("READY", "1", timeout)

    def next_event(self, name: str, timeout: float = 3.0, **match: object) -> dict[str, object] | None:
        """The next log event called `name` whose keys equal `match` (bounded, scaled wait)."""
        deadline = time.monotonic() + timeout * time_scale()
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            try:
                ev = self._events_q.get(timeout=left)
            except queue.Empty:
                return None
            if ev.get("event") == name and all(ev.get(k) == v for k, v in match.items()):
                return ev

    def signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            # `ip netns exec` execs the target, so the pid is the shim's own.
            os.kill(self.proc.pid, sig)

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM, wait (bounded), SIGKILL as a last resort; returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout * time_scale())
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode

    def close(self) -> None:
        self.stop()
        self._notify.close()
        self._tmp.cleanup()

    def stderr_tail(self, n: int = 5) -> str:
        time.sleep(0.05)
        return " | ".join(self.stderr_lines[-n:]) or "(no stderr)"

    def __enter__(self) -> ShimProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
