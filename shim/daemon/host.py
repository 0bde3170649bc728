# SPDX-License-Identifier: MIT
"""The process host: everything a daemon process owns around its work, written once.

A `Service` (one queue, judged in-process) and a `Supervisor` (N worker processes)
differ only in their work. The rest is here: the backend choice and the diversion,
the control and metrics servers, sd_notify, the signals and the start and stop order.

Invariants:
- start: choose the backend -> the work binds (a queue, or N workers) -> open the
  servers -> install the diversion -> READY=1. Nothing is diverted before a reader
  is bound, and a failure before the install leaves nothing installed.
- stop: STOPPING=1 -> close the servers -> remove the diversion (kept after a crash
  with fail_open = false, so the kernel drops what nobody judges) -> stop the work
  (drain and unbind, or stop the workers). The diversion goes first: what is still
  queued is answered, and nothing new is diverted into a queue about to close.
- only a diversion this process installed is removed: a second instance that fails
  to bind never removes the first one's rules.
- the loop's per-turn and once-a-second housekeeping is `tick`: watchdog pings, the
  STATUS line, the servers' pending work.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from shim.adapters.diversion import (Diversion, DiversionCounters, QueueSpec, budget_spec,
                                     choose_backend)
from shim.core.errors import EnvironmentProblem
from shim.core.model import Settings
from shim.daemon.control import ControlServer
from shim.daemon.guard import DiversionGuard
from shim.daemon.logs import get_logger
from shim.daemon.metrics import MetricsServer, MetricsSettings
from shim.daemon.notify import Notifier
from shim.daemon.reload import describe
from shim.daemon.rulecounters import CachedCounters

__all__ = ["STATUS_EVERY", "Flags", "ProcessHost", "check_privileges", "die_with_parent",
           "queue_spec"]

STATUS_EVERY = 2.0  # seconds between STATUS lines: systemctl status is read by people
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
CAP_NET_ADMIN = 12  # <linux/capability.h>


def check_privileges() -> None:
    """Raise EnvironmentProblem unless this process holds CAP_NET_ADMIN."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            caps = next(int(line.split()[1], 16) for line in f if line.startswith("CapEff:"))
    except (OSError, StopIteration, ValueError):
        caps = -1 if os.geteuid() == 0 else 0
    if not caps & (1 << CAP_NET_ADMIN):
        raise EnvironmentProblem(
            "CAP_NET_ADMIN is required to bind NFQUEUE and install the diversion; "
            "run as root (sudo icmp6-shim run) or under the systemd unit"
        )


def die_with_parent(parent: int, sig: int = signal.SIGTERM) -> bool:
    """Have the kernel send `sig` to this process when its parent dies.

    Call it first thing in a forked child. The parent may die before the call; then
    no signal ever comes, so the result says whether `parent` is still the parent.

    Returns:
        False when the parent is already gone (the caller should exit).

    Raises:
        OSError: prctl refused (not Linux).
    """
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, ctypes.c_ulong(sig), ctypes.c_ulong(0), ctypes.c_ulong(0),
                  ctypes.c_ulong(0)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(PR_SET_PDEATHSIG): {os.strerror(err)}")
    return os.getppid() == parent


def queue_spec(s: Settings) -> QueueSpec:
    """The queues the diversion feeds, from the settings (all workers' queues)."""
    return QueueSpec(first=s.queue_num, count=s.workers, fail_open=s.fail_open,
                     hooks=s.hooks, priority=s.chain_priority, budget=budget_spec(s))


@dataclass(slots=True)
class Flags:
    """What the signal handlers ask of the loop (set in the handler, read each turn)."""

    reload: bool = False
    stop: bool = False


class ProcessHost:
    """The diversion, servers, notify socket, signals and stop order of one process."""

    def __init__(self, settings: Settings, *, notifier: Notifier, control_path: str,
                 snapshot: Callable[[], dict[str, object]], status: Callable[[], str],
                 manage_diversion: bool = True, serve_metrics: bool = True) -> None:
        self.settings = settings
        self.notifier = notifier
        self.log = get_logger()
        self.control_path = control_path
        self.snapshot = snapshot
        self.status = status
        self.manage_diversion = manage_diversion
        self.serve_metrics = serve_metrics
        self.spec = queue_spec(settings)
        self.flags = Flags()
        self.backend_name: str | None = None
        self.diversion: Diversion | None = None  # installed by this process: ours to remove
        self.rule_counters: CachedCounters[DiversionCounters] | None = None
        self.guard: DiversionGuard | None = None  # lays the diversion again if it goes
        self.control: ControlServer | None = None
        self.metrics: MetricsServer | None = None
        self._chosen: Diversion | None = None  # chosen, not installed yet
        self._last_ping = self._last_status = self._last_housekeeping = 0.0

    # -- start -------------------------------------------------------------------------
    def choose_backend(self) -> None:
        """Pick the backend (before the work binds: a refusal then costs nothing)."""
        if not self.manage_diversion:
            return
        diversion, why = choose_backend(self.settings.backend, self.spec)
        self.backend_name = diversion.name
        self.log.info("backend_chosen", backend=diversion.name, reason=why)
        self._chosen = diversion

    def open_servers(self) -> None:
        """The control socket and, when configured, the metrics endpoint.

        Opened after the work bound: a second instance fails at its bind, before it
        could touch the first one's socket.
        """
        if self.control_path:
            self.control = ControlServer(self.control_path, self.snapshot)
        metrics = MetricsSettings.of(self.settings)
        if metrics.enabled and self.serve_metrics:
            self.metrics = MetricsServer(metrics, self.snapshot)
            self.log.info("metrics_serving", endpoint=self.metrics.endpoints)
            if metrics.tcp:
                self.log.warning("metrics_tcp_open", endpoint=metrics.tcp,
                                 reason="TCP cannot tell local users apart: every local user "
                                        "can read the counters; prefer [metrics] socket")

    def install(self, **extra: object) -> None:
        """Install the chosen diversion; owned (and removed at stop) from here on."""
        diversion, self._chosen = self._chosen, None
        if diversion is None:
            return
        # Ours before install(): the kernel may have taken the batch when a later step of
        # install() (the baseline listing) fails, and what it took must go at stop too.
        self.diversion = diversion
        diversion.install()
        self.guard = DiversionGuard(diversion, self.log)
        self.rule_counters = CachedCounters(diversion.counters)
        s = self.settings
        self.log.info("diversion_installed", backend=diversion.name,
                      hooks=[h.name.lower() for h in s.hooks],
                      queues=f"{self.spec.first}-{self.spec.last}", fail_open=s.fail_open, **extra)

    # -- run ---------------------------------------------------------------------------
    @contextlib.contextmanager
    def signals(self) -> Iterator[socket.socket]:
        """SIGHUP asks for a reload, SIGTERM/SIGINT for a stop; yields the wake socket
        the loop polls, so a signal ends the wait at once instead of at the timeout."""
        wake_r, wake_w = socket.socketpair()
        wake_r.setblocking(False)
        wake_w.setblocking(False)
        old_fd = signal.set_wakeup_fd(wake_w.fileno(), warn_on_full_buffer=False)
        old = {sig: signal.signal(sig, self._on_signal)
               for sig in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT)}
        # A worker starts with SIGHUP blocked (supervisor.py): a reload asked meanwhile is
        # delivered here, to our handler. Elsewhere nothing is blocked and this is a no-op.
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGHUP})
        try:
            yield wake_r
        finally:
            signal.set_wakeup_fd(old_fd)
            for sig, handler in old.items():
                signal.signal(sig, handler)
            wake_r.close()
            wake_w.close()

    def _on_signal(self, signum: int, _frame: Any) -> None:
        if signum == signal.SIGHUP:
            self.flags.reload = True
        else:
            self.flags.stop = True

    def run(self, start: Callable[[], None], loop: Callable[[socket.socket], None],
            stop: Callable[[bool], None]) -> int:
        """Start, serve until a stop signal, stop in order. Returns an exit code.

        `stop` gets keep_diversion: True after a crash with fail_open = false, so the
        kernel drops what it diverts until the next start instead of letting it through.

        Raises:
            ShimError: start failed (after everything started is stopped again).
            Exception: the loop crashed (logged as `crashed`, after the stop).
        """
        with self.signals() as wake:
            crashed = False
            try:
                start()
                try:
                    loop(wake)
                except Exception as exc:
                    crashed = True
                    self.log.critical("crashed", error=describe(exc))
                    raise
            finally:
                stop(crashed and not self.settings.fail_open)
        return 0

    def ready(self) -> None:
        """READY=1 with the STATUS line: after start, and after each reload's outcome."""
        self.notifier.ready(self.status())

    def reload_failed(self, error: str) -> None:
        """READY=1 again (the old table serves on) with the reason in STATUS."""
        self.notifier.send(wait=True, READY=1, STATUS=f"reload failed, old table kept: {error}"[:200])

    def take_reload(self) -> bool:
        """Whether SIGHUP asked for a reload since the last call."""
        asked, self.flags.reload = self.flags.reload, False
        return asked

    def wanted(self) -> dict[int, int]:
        """The fds the servers wait on this turn (a full server's listener is left out,
        so a connect flood cannot spin the loop)."""
        out: dict[int, int] = {}
        for server in (self.control, self.metrics):
            if server is not None:
                out.update(server.interest())
        return out

    def tick(self, now: float, *, healthy: bool = True) -> None:
        """One loop turn's housekeeping: the watchdog ping (from the loop itself, so a
        wedged loop stops pinging; only while `healthy`), the once-a-second work, and
        the servers' pending requests."""
        wd = self.notifier.watchdog_interval
        if wd and healthy and now - self._last_ping >= wd / 2:
            self.notifier.watchdog()
            self._last_ping = now
        if self.guard is not None:
            self.guard.tick(now)  # rate-limits itself (INTERVAL); never raises
        if now - self._last_housekeeping >= 1.0:
            self._last_housekeeping = now
            self.every_second(now)
        for server in (self.control, self.metrics):
            if server is not None:
                server.serve_pending()

    def every_second(self, now: float) -> None:
        """At most once a second, from the loop: the STATUS line (every STATUS_EVERY s).
        Checks that must run while serving, off the packet path, belong here."""
        if now - self._last_status >= STATUS_EVERY:
            self.notifier.status(self.status())
            self._last_status = now

    def guard_snapshot(self) -> dict[str, object] | None:
        """The guard's counters for `stats` and metrics (None: no diversion of ours)."""
        return self.guard.snapshot() if self.guard is not None else None

    def guard_status(self) -> str:
        """What the STATUS line adds about the diversion (empty while undisturbed)."""
        return self.guard.status() if self.guard is not None else ""

    # -- stop --------------------------------------------------------------------------
    def close_servers(self) -> None:
        """Close the control and metrics servers (unlinking only sockets still ours)."""
        for server in (self.control, self.metrics):
            if server is not None:
                server.close()
        self.control = self.metrics = None

    def stop(self, stop_work: Callable[[], None], keep_diversion: bool = False) -> None:
        """STOPPING=1, close the servers, remove (or keep) the diversion, then stop the
        work, whatever failed before. Safe to call twice."""
        try:
            self.notifier.stopping()
            self.close_servers()
            self._chosen = None
            self.guard = None  # from here on a missing diversion is ours, not a flush
            if self.diversion is not None and keep_diversion:
                self.log.error("diversion_kept", backend=self.diversion.name,
                               reason="crashed with [queue] fail_open = false: the kernel drops "
                                      "diverted ICMPv6 until the next start")
                self.diversion = None
            if self.diversion is not None:
                diversion, self.diversion = self.diversion, None
                try:
                    diversion.remove()
                    self.log.info("diversion_removed", backend=diversion.name)
                except Exception as exc:  # noqa: BLE001 - the work must still drain and unbind
                    self.log.error("diversion_remove_failed", error=str(exc))
        finally:
            stop_work()
