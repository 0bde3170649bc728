# SPDX-License-Identifier: MIT
"""`workers = N`: N worker processes, one queue each, behind one diversion.

The supervisor owns the diversion (flows hashed over the N queues),
the control socket and the notify socket, through the same process host
(shim.daemon.host) as a single Service; each worker is a Service bound to
one queue that reports a snapshot every 0.25 s over a pipe. Invariants:
- READY=1 only once every worker has bound its queue and the diversion is in;
- WATCHDOG=1 only while every worker's reports are fresh (loop health, not a timer);
- a worker silent for STALE_AFTER seconds is stuck: killed and restarted;
- a worker that dies is logged, counted and restarted (bounded back-off);
- stop: remove the diversion first, then let each worker drain and unbind.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import select
import signal
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shim.config.loader import Config, load_config
from shim.daemon.control import kernel_queue_stats, overload_stats, socket_path
from shim.daemon.compile import compile_config
from shim.core.errors import ShimError
from shim.daemon.host import ProcessHost, check_privileges, die_with_parent
from shim.daemon.logs import get_logger, sink_counters
from shim.daemon.notify import Notifier
from shim.daemon.reload import Outcome, Reloader, describe
from shim.daemon.service import RELOAD_TIMEOUT, Service
from shim.daemon.sockserve import sync_poller

__all__ = ["Supervisor", "run_daemon"]

_CTX = multiprocessing.get_context("fork")
STALE_AFTER = 2.0  # seconds without a report (8 report periods) before a worker counts as stuck
# Seconds a worker has from its fork to its first report (compile and bind): generous, since
# a table at the config limits takes seconds to build and the workers build theirs at once.
START_WITHIN = 60.0


def _worker_main(config_dir: Path | None, config: Config, queue_num: int, trace: bool,
                 reports: Any, parent: int) -> None:
    """Body of a worker process: one Service without diversion or control socket.

    Reports go through a bounded queue with put_nowait: a stalled supervisor
    costs the worker dropped reports, never a blocked packet loop.
    A worker never outlives its supervisor (`parent`): the kernel sends it SIGTERM
    when the supervisor dies, even by SIGKILL, and each report checks the parent
    too. It then stops as on any SIGTERM (drain, unbind) and leaves the diversion
    to the kernel's queue bypass, which follows fail_open: unjudged traffic passes
    with fail_open = true and is dropped with false, as after the supervisor's own
    crash. It never removes the diversion itself: by then a new instance may own
    the same names.
    """

    def report(snap: dict[str, object]) -> None:
        if os.getppid() != parent:
            os.kill(os.getpid(), signal.SIGTERM)  # the supervisor is gone: the same stop
            return
        try:
            reports.put_nowait(("snapshot", snap))
        except queue.Full:
            pass

    # Until its Service takes them over, the supervisor's handlers (copied by fork) would
    # swallow a stop: SIGTERM kills, SIGHUP waits. Blocked, not ignored: a reload forwarded
    # while this worker still compiles stays pending, and ProcessHost.signals() unblocks it
    # once its own handler is in place, so the worker reloads instead of serving the old
    # table while the supervisor reports the new one.
    signal.set_wakeup_fd(-1)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGHUP})
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)  # blocked: pending, never acted on here
    if not die_with_parent(parent):
        os._exit(1)  # the supervisor died before prctl took effect: nothing is bound yet
    os.setpgrp()  # a terminal's Ctrl-C reaches the supervisor only: it decides the stop order
    try:
        service = Service(config_dir, config=config, notifier=Notifier({}), queue_num=queue_num,
                          manage_diversion=False, trace=trace, control_socket="",
                          report=report)
        rc = service.run()
    except ShimError as exc:
        reports.put(("error", str(exc)), timeout=2)
        rc = exc.exit_code
    except Exception as exc:  # noqa: BLE001 - one line, not multiprocessing's traceback
        # The loop has logged `crashed` already; the supervisor restarts the worker.
        reports.put(("error", f"worker crashed: {describe(exc)}"), timeout=2)
        rc = 70  # EX_SOFTWARE
    reports.close()
    if os.getppid() == parent:
        reports.join_thread()  # os._exit skips the feeder thread's flush: wait for it here
    else:
        reports.cancel_join_thread()  # nobody reads the pipe any more: a flush could block
    os._exit(rc)


@dataclass(slots=True)
class _Worker:
    queue: int
    proc: Any = None
    reports: Any = None  # multiprocessing.Queue of (kind, payload) from the worker
    last_report: float = 0.0
    snapshot: dict[str, Any] = field(default_factory=dict)
    restarts: int = 0
    bound: bool = False


class Supervisor:
    """Runs N workers behind one diversion."""

    def __init__(self, config_dir: Path | None, *, trace: bool = False,
                 control_socket: str | None = None, notifier: Notifier | None = None,
                 config: Config | None = None) -> None:
        self.config_dir = config_dir
        self.trace = trace
        self.notifier = notifier or Notifier()
        self.log = get_logger()
        # Compiled once here so a bad table fails before any worker starts.
        self.config = compile_config(config or load_config(config_dir)).config
        self.settings = self.config.settings
        s = self.settings
        self.workers = [_Worker(queue=s.queue_num + i) for i in range(s.workers)]
        self.control_path = (control_socket if control_socket is not None
                             else socket_path(s.control_socket, s.queue_num))
        self.host = ProcessHost(s, notifier=self.notifier, control_path=self.control_path,
                                snapshot=self.snapshot, status=self.status_line)
        self.worker_failures = 0
        self.reloads = 0
        self.reload_failures = 0
        self.last_reload_error: str | None = None
        # Validated in a thread: this loop keeps serving reports, watchdog and control.
        self._reloader: Reloader[Config] = Reloader(self._validate, timeout=RELOAD_TIMEOUT,
                                                    on_start=self.notifier.reloading)
        self.started = time.monotonic()

    def _spawn(self, w: _Worker) -> None:
        w.reports = _CTX.Queue(maxsize=8)
        w.proc = _CTX.Process(target=_worker_main, args=(self.config_dir, self.config, w.queue, self.trace, w.reports,
                                                        os.getpid()),
                              name=f"icmp6-shim-worker-{w.queue}", daemon=False)
        w.proc.start()
        w.bound, w.last_report = False, time.monotonic()

    def _receive(self, w: _Worker) -> None:
        for _ in range(64):  # bounded: the queue holds 8, a worker refills it 4 times a second
            try:
                kind, payload = w.reports.get_nowait()
            except (queue.Empty, EOFError, OSError):
                return
            if kind == "snapshot":
                w.snapshot, w.last_report, w.bound = payload, time.monotonic(), True
            elif kind == "error":
                self.log.error("worker_error", queue=w.queue, error=payload)

    def run(self) -> int:
        """Start the workers behind one diversion, serve until SIGTERM/SIGINT, stop in order."""
        return self.host.run(self._start, self._loop, self._shutdown)

    def _start(self) -> None:
        check_privileges()
        self.host.choose_backend()
        for w in self.workers:
            self._spawn(w)
        self._wait_bound(timeout=START_WITHIN)
        if self.host.flags.stop:
            return  # asked to stop while the workers started: nothing to install; the loop ends
        self.host.open_servers()
        self.host.install(workers=self.settings.workers)
        self.log.info("ready", workers=self.settings.workers)
        self.host.ready()

    def _wait_bound(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self.host.flags.stop:
            for w in self.workers:
                self._receive(w)
                if w.proc is not None and not w.proc.is_alive():
                    raise ShimError(f"worker for queue {w.queue} failed to start "
                                    f"(exit {w.proc.exitcode}); see the log above")
            if all(w.bound for w in self.workers):
                return
            time.sleep(0.05)
        if self.host.flags.stop:
            return
        raise ShimError(f"workers did not bind their queues within {timeout:.0f}s")

    def _loop(self, wake: socket.socket) -> None:
        poller = select.poll()
        registered: dict[int, int] = {}
        while not self.host.flags.stop:
            # Reports are polled each turn (0.25 s at most late); only a signal and the control
            # and metrics servers wake us, the servers only for what they wait on.
            sync_poller(poller, registered, {wake.fileno(): select.POLLIN, **self.host.wanted()})
            for fd, _ev in poller.poll(250):
                if fd == wake.fileno():
                    try:
                        wake.recv(512)
                    except BlockingIOError:
                        pass
            for w in self.workers:
                self._receive(w)
                if self.host.flags.stop or w.proc is None:
                    continue
                if not w.proc.is_alive():
                    self._restart(w)
                elif time.monotonic() - w.last_report > (STALE_AFTER if w.bound else START_WITHIN):
                    # Alive but its loop is stuck, or a restarted worker never got as far as
                    # its first report: its share of the flows gets no verdicts.
                    self.log.error("worker_stuck", queue=w.queue, bound=w.bound,
                                   silent_s=round(time.monotonic() - w.last_report, 1))
                    w.proc.kill()
                    w.proc.join(5)
                    self._restart(w)
            if self.host.take_reload():
                self._reloader.request()
            outcome = self._reloader.poll()
            if outcome is not None:
                self._forward_reload(outcome)
            now = time.monotonic()
            self.host.tick(now, healthy=all(now - w.last_report < STALE_AFTER for w in self.workers))

    def _restart(self, w: _Worker) -> None:
        self.worker_failures += 1
        w.restarts += 1
        code = w.proc.exitcode if w.proc is not None else None
        self.log.error("worker_died", queue=w.queue, exit_code=code, restarts=w.restarts)
        time.sleep(min(0.1 * w.restarts, 2.0))  # bounded back-off against a crash loop
        self._spawn(w)

    def _validate(self) -> Config:
        """The reload thread's work: read and compile once here, for one error line."""
        return compile_config(load_config(self.config_dir)).config

    def _forward_reload(self, outcome: Outcome[Config]) -> None:
        """A valid config: every worker reloads it (in its own reload thread); else keep all."""
        if outcome.value is None:
            self.reload_failures += 1
            self.last_reload_error = outcome.error
            self.log.error("reload_failed", error=outcome.error, seconds=round(outcome.seconds, 3))
            self.host.reload_failed(outcome.error or "")
            return
        # A worker restarted from now on starts from this version, not the one at start.
        self.config = outcome.value
        for w in self.workers:
            if w.proc is not None and w.proc.is_alive():
                os.kill(w.proc.pid, signal.SIGHUP)
        self.reloads += 1
        self.last_reload_error = None
        self.log.info("reload_ok", workers=len(self.workers), reloads=self.reloads,
                      seconds=round(outcome.seconds, 3))
        self.host.ready()

    def _shutdown(self, keep_diversion: bool = False) -> None:
        self.host.stop(self._stop_workers, keep_diversion=keep_diversion)

    def _stop_workers(self) -> None:
        """The work's part of the stop: each worker drains and unbinds (SIGTERM), bounded."""
        for w in self.workers:
            if w.proc is not None and w.proc.is_alive():
                os.kill(w.proc.pid, signal.SIGTERM)
        for w in self.workers:
            if w.proc is not None:
                w.proc.join(15)
                if w.proc.is_alive():
                    w.proc.kill()
                    w.proc.join(5)
        if any(w.proc is not None for w in self.workers):  # nothing started: nothing stopped
            self.log.info("stopped", **{k: v for k, v in self.snapshot().items()
                                        if k in ("packets", "errors", "worker_failures")})

    def snapshot(self) -> dict[str, object]:
        """Counters summed over the workers' latest reports."""
        # Cached, read in a thread: the tools' fork and dump never run in the packet loop.
        div = self.host.rule_counters.get() if self.host.rule_counters is not None else None
        kernel = kernel_queue_stats([w.queue for w in self.workers])
        total: dict[str, Any] = {"packets": 0, "errors": 0, "enobufs": 0, "non_icmpv6": 0,
                                 "verdicts": {}, "types": {}, "fragments": {}, "rules": {}}
        for w in self.workers:
            snap = w.snapshot
            for key in ("packets", "errors", "enobufs", "non_icmpv6"):
                total[key] += int(snap.get(key, 0))
            for key in ("verdicts", "types", "fragments"):
                for k, v in snap.get(key, {}).items():
                    total[key][k] = total[key].get(k, 0) + v
            for r in snap.get("rules", []):
                cur = total["rules"].setdefault(r["rule"], dict(r, hits=0))
                cur["hits"] += r["hits"]
        return {
            "pid": os.getpid(), "uptime_s": round(time.monotonic() - self.started, 1),
            "config": str(self.config_dir) if self.config_dir else None,
            "backend": self.host.backend_name, "queues": [w.queue for w in self.workers],
            "diversion": self.host.guard_snapshot(),
            "reloads": self.reloads, "reload_failures": self.reload_failures,
            "last_reload_error": self.last_reload_error or next(
                (f"queue {w.queue}: {w.snapshot['last_reload_error']}" for w in self.workers
                 if w.snapshot.get("last_reload_error")), None),
            "worker_failures": self.worker_failures,
            "workers": [{"queue": w.queue, "pid": w.proc.pid if w.proc else None,
                         "restarts": w.restarts, "packets": w.snapshot.get("packets", 0),
                         "reloads": w.snapshot.get("reloads", 0),
                         "last_reload_error": w.snapshot.get("last_reload_error")}
                        for w in self.workers],
            **{k: total[k] for k in ("packets", "errors", "enobufs", "verdicts", "types",
                                     "non_icmpv6", "fragments")},
            "log": self._log_counters(),
            "shadow": _shadow_total([w.snapshot.get("shadow") for w in self.workers]),
            "rules": list(total["rules"].values()),
            "kernel": kernel,
            # judged None: the workers' reports lag the rule counter (see overload_stats).
            "overload": overload_stats(div, kernel, None, queue_fail_open=self.settings.queue_fail_open,
                                       over_budget=self.settings.budget_verdict),
        }

    def _log_counters(self) -> dict[str, object]:
        """The supervisor's sink, with the workers' write errors and lost lines added."""
        own = sink_counters()
        out = dict(own)
        for key in ("failures", "dropped"):
            total = own.get(key, 0)
            n = total if isinstance(total, int) else 0
            for w in self.workers:
                theirs = w.snapshot.get("log", {}).get(key, 0)
                n += theirs if isinstance(theirs, int) else 0
            out[key] = n
        return out

    def status_line(self) -> str:
        snap = self.snapshot()
        v = snap["verdicts"]
        assert isinstance(v, dict)
        line = (f"{len(self.workers)} workers: {snap['packets']} packets, {v.get('accept', 0)} accept, "
                f"{v.get('drop', 0)} drop, {v.get('mark', 0)} mark, {self.reloads} reloads, "
                f"{self.worker_failures} worker failures")
        if snap["last_reload_error"]:
            line += f"; last reload failed, old table kept: {snap['last_reload_error']}"
        line += self.host.guard_status()
        return line[:400]


def _shadow_total(shadows: list[Any]) -> dict[str, object] | None:
    """The workers' shadow results added up (each judged its own share of the flows)."""
    mine = [sh for sh in shadows if isinstance(sh, dict)]
    if not mine:
        return None
    pairs: dict[tuple[str, str], int] = {}
    for sh in mine:
        for p in sh.get("pairs", []):
            key = (p["enforced"], p["shadow"])
            pairs[key] = pairs.get(key, 0) + p["packets"]
    top = sorted(pairs.items(), key=lambda kv: -kv[1])[:50]
    return {"file": mine[0].get("file"), "evaluated": sum(sh.get("evaluated", 0) for sh in mine),
            "differences": sum(sh.get("differences", 0) for sh in mine),
            "pairs": [{"enforced": e, "shadow": sh, "packets": n} for (e, sh), n in top]}


def run_daemon(config_dir: Path | None, config: Config, *, trace: bool = False,
               control_socket: str | None = None) -> int:
    """One worker runs in-process; several run under a Supervisor. `config` is the
    version of the files the caller read; reloads read them again."""
    if config.settings.workers == 1:
        return Service(config_dir, config=config, trace=trace, control_socket=control_socket).run()
    return Supervisor(config_dir, config=config, trace=trace, control_socket=control_socket).run()
