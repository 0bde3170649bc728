# SPDX-License-Identifier: MIT
"""The daemon's lifecycle around one queue: start, judge, reload, stop.

Order is the contract (what systemd and the kernel see depends on it); the process
host (shim.daemon.host) writes the parts it shares with the supervisor:
  start: compile config -> check privileges -> choose backend -> bind queue
         -> install diversion -> READY=1
  stop:  STOPPING=1 -> remove diversion -> drain and answer what is queued -> unbind
A reload parses and compiles the new config in a background thread (shim.daemon.reload)
while the loop keeps judging, then the loop swaps one attribute between two
pumps; a config that fails, or any exception, keeps the old table and says why.
"""

from __future__ import annotations

import dataclasses
import os
import select
import socket
import time
from pathlib import Path
from collections.abc import Callable

from shim.config.loader import Config, load_config
from shim.daemon.control import kernel_queue_stats, overload_stats, socket_path
from shim.daemon.compile import Compiled, compile_config
from shim.daemon.host import ProcessHost, check_privileges
from shim.daemon.ifnames import IfNames
from shim.daemon.logs import RateLimiter, get_logger, sink_counters
from shim.core.model import Decision, Hook, restart_only_fields
from shim.bindings.icmp6 import parse
from shim.adapters.engines import reader_class
from shim.adapters.reader import Judge, PacketLike, Reader
from shim.daemon.notify import Notifier
from shim.daemon.reload import Outcome, Reloader, describe
from shim.daemon.sockserve import sync_poller

__all__ = ["RELOAD_TIMEOUT", "Service", "check_privileges"]

# A reload at the config limits (shim.config.MAX_*) takes a few seconds; past this
# it is reported as failed and the old table stays (the thread's result is dropped).
RELOAD_TIMEOUT = 60.0


def _counters(reader: Reader) -> dict[str, int]:
    st = reader.stats
    return {"packets": st.packets, "errors": st.errors, "enobufs": st.enobufs,
            **{f"verdict_{k}": v for k, v in st.by_action.items()}}


def _rule_info(d: Decision) -> dict[str, object]:
    return {"rule": d.rule, "origin": d.origin.value, "priority": d.priority,
            "verdict": d.verdict.action.value, "mark_name": d.verdict.mark_name}


class Service:
    """One worker: one queue, one diversion (unless a supervisor owns it)."""

    def __init__(self, config_dir: Path | None, *, notifier: Notifier | None = None,
                 queue_num: int | None = None, manage_diversion: bool = True,
                 trace: bool = False, control_socket: str | None = None,
                 report: Callable[[dict[str, object]], None] | None = None,
                 config: Config | None = None) -> None:
        self.config_dir = config_dir
        self.trace = trace
        self.report = report
        self.notifier = notifier or Notifier()
        self.log = get_logger()
        # `config`, when given, is what the caller already read: one version of the files.
        self.compiled: Compiled = compile_config(config or load_config(config_dir))
        self._shadow_log_limit = RateLimiter(10.0)
        if self.compiled.shadow is not None:
            self.compiled.shadow.on_diff = self._log_shadow
        self.settings = self.compiled.config.settings
        self.queue_num = self.settings.queue_num if queue_num is None else queue_num
        self.manage_diversion = manage_diversion
        self.reloads = 0
        self.reload_failures = 0
        self.last_reload_error: str | None = None
        self.reader: Reader | None = None
        # Tracing logs every decision, still bounded: a flood must not flood the journal.
        self._pkt_log_limit = RateLimiter(max(self.settings.log_rate, 1000.0) if trace
                                          else self.settings.log_rate)
        self._err_log_limit = RateLimiter(1.0, burst=5)
        self._ifnames = IfNames()
        self.started = time.monotonic()
        self.control_path = (control_socket if control_socket is not None
                             else socket_path(self.settings.control_socket, self.queue_num))
        # A supervisor's worker (report given) leaves the metrics endpoint to the supervisor.
        self.host = ProcessHost(self.settings, notifier=self.notifier, control_path=self.control_path,
                                snapshot=self.snapshot, status=self.status_line,
                                manage_diversion=manage_diversion, serve_metrics=report is None)
        # Rule hits of tables swapped out by reloads, by rule name: counters survive reloads.
        self._past_hits: dict[str, int] = {}
        self._past_rules: dict[str, dict[str, object]] = {}  # rules no longer in the table
        self._past_types = [0] * 256
        self._reloader: Reloader[Compiled] = Reloader(self._load, timeout=RELOAD_TIMEOUT,
                                                      on_start=self._reload_started)
        self._packets_at_reload = 0

    # -- start -----------------------------------------------------------------
    def start(self) -> None:
        """Bind the queue, then divert into it. Raises ShimError on any failure,
        leaving nothing installed."""
        check_privileges()
        s = self.settings
        self.host.choose_backend()
        self.reader = reader_class(s.engine)(
            self.queue_num, self._judge(self.compiled), maxlen=s.queue_maxlen,
            sock_rcvbuf=s.sock_rcvbuf, on_logged=self._log_packet, on_exception=self._log_error,
        )
        self.reader.bind()
        self.log.info("queue_bound", queue=self.queue_num)
        try:
            self.reader.set_queue_flags(fail_open=s.queue_fail_open)
            self.host.open_servers()
            self.host.install()
        except BaseException:
            self.host.close_servers()
            self.reader.unbind()
            raise

    # -- run -------------------------------------------------------------------
    def run(self) -> int:
        """Start, serve until SIGTERM/SIGINT, stop in order. Returns an exit code."""
        return self.host.run(self._start_ready, self._loop, self.stop)

    def _start_ready(self) -> None:
        self.start()
        self.log.info("ready", rules=len(self.compiled.table.rules), config=str(self.config_dir),
                      engine=self.settings.engine)
        self.host.ready()

    def _loop(self, wake: socket.socket) -> None:
        assert self.reader is not None
        poller = select.poll()
        registered: dict[int, int] = {}
        fixed = {self.reader.fileno(): select.POLLIN, wake.fileno(): select.POLLIN}
        wd = self.notifier.watchdog_interval
        tick = min(0.5, wd) if wd else 0.5
        last_report = 0.0
        while not self.host.flags.stop:
            sync_poller(poller, registered, {**fixed, **self.host.wanted()})
            for fd, _ev in poller.poll(tick * 1000):
                if fd == wake.fileno():
                    try:
                        wake.recv(512)
                    except BlockingIOError:
                        pass
            # Bounded per iteration, so reload/stop/watchdog are served under a flood.
            self.reader.pump(512)
            if self.host.take_reload():
                self._reloader.request()  # parsed in a thread: this loop keeps judging
            outcome = self._reloader.poll()
            if outcome is not None:
                self._finish_reload(outcome)
            now = time.monotonic()
            self.host.tick(now)
            if self.report is not None and now - last_report >= 0.25:
                self.report(self.snapshot())  # also the supervisor's heartbeat
                last_report = now

    def _judge(self, compiled: Compiled) -> Judge:
        """The compiled Judge, with every decision logged when tracing."""
        if not self.trace:
            return compiled.judge
        return compiled.judge.with_decisions(
            tuple(dataclasses.replace(d, log=True) for d in compiled.judge.decisions))

    # -- reload ----------------------------------------------------------------
    def _load(self) -> Compiled:
        """The reload's work, run in the reload thread: read and compile, touch nothing."""
        return compile_config(load_config(self.config_dir))

    def _reload_started(self) -> None:
        self._packets_at_reload = self.counters().get("packets", 0)
        self.notifier.reloading()

    def reload(self, timeout: float = RELOAD_TIMEOUT) -> bool:
        """Reload now and wait for it (the loop itself never waits: it polls the Reloader)."""
        self._reloader.request()
        outcome = self._reloader.wait(timeout)
        return outcome is not None and self._finish_reload(outcome)

    def _finish_reload(self, outcome: Outcome[Compiled]) -> bool:
        """Swap in a finished table, or keep the old one; either way say so. Never raises."""
        error = outcome.error
        if outcome.value is not None:
            try:
                self._swap(outcome.value)
            except Exception as exc:  # noqa: BLE001 - nothing swapped yet: the old table stays
                error = describe(exc)
        judged = self.counters().get("packets", 0) - self._packets_at_reload
        if error is not None:
            self.reload_failures += 1
            self.last_reload_error = error
            self.log.error("reload_failed", error=error, kept_rules=len(self.compiled.table.rules),
                           seconds=round(outcome.seconds, 3), judged_during=judged)
            self.host.reload_failed(error)
            return False
        changed = self._restart_needed(self.compiled)
        self.log.info("reload_ok", rules=len(self.compiled.table.rules), reloads=self.reloads,
                      seconds=round(outcome.seconds, 3), judged_during=judged,
                      **({"not_applied": changed} if changed else {}))
        self.host.ready()
        return True

    def _swap(self, new: Compiled) -> None:
        """Everything that can fail first, then the assignments (the swap proper)."""
        shadow = new.shadow
        if shadow is not None:
            shadow.on_diff = self._log_shadow
            if self.compiled.shadow is not None and self.compiled.shadow.source == shadow.source:
                shadow.adopt_counts(self.compiled.shadow)
        judge = self._judge(new)
        past_hits, past_rules = dict(self._past_hits), dict(self._past_rules)
        for decision, hits in zip(self.compiled.table.decisions, self.compiled.native.hits()):
            past_hits[decision.rule] = past_hits.get(decision.rule, 0) + hits
            past_rules[decision.rule] = _rule_info(decision)
        past_types = [a + b for a, b in zip(self._past_types, self.compiled.native.type_hits())]
        # Restart-only keys stay as started (listed in not_applied); the rest follow the new file.
        settings = dataclasses.replace(new.config.settings,
                                       **{k: getattr(self.settings, k) for k in restart_only_fields()})
        self._past_hits, self._past_rules, self._past_types = past_hits, past_rules, past_types
        self.compiled = new
        if self.reader is not None:
            self.reader.judge = judge  # the swap: one assignment (table, plan, on_error), between two pumps
        self.settings = settings
        self._pkt_log_limit.rate = (max(settings.log_rate, 1000.0) if self.trace
                                    else settings.log_rate)
        self.reloads += 1
        self.last_reload_error = None

    def _restart_needed(self, new: Compiled) -> list[str]:
        """Settings a reload cannot change in place: they shape the queue, the diversion,
        the engine or the process. Everything else (rules, marks, verdicts, log rate,
        parser limit, shadow) takes effect at the swap. The fields are marked in Settings."""
        old, cur = self.settings, new.config.settings
        return [k for k in restart_only_fields() if getattr(old, k) != getattr(cur, k)]

    # -- stop ------------------------------------------------------------------
    def stop(self, keep_diversion: bool = False) -> None:
        """Remove the diversion (unless kept: a fail-closed crash), answer what is queued,
        unbind. Safe to call twice."""
        self.host.stop(self._stop_reader, keep_diversion=keep_diversion)

    def _stop_reader(self) -> None:
        """The work's part of the stop: drain (answer what is queued), unbind."""
        if self.reader is not None:
            reader, self.reader, drained = self.reader, None, 0
            try:
                drained = reader.drain()
            except Exception as exc:  # noqa: BLE001
                self.log.error("drain_failed", error=repr(exc))
            finally:
                reader.unbind()
            self.log.info("stopped", drained=drained, **_counters(reader))

    # -- observability ------------------------------------------------------------
    def counters(self) -> dict[str, int]:
        return _counters(self.reader) if self.reader is not None else {}

    def snapshot(self) -> dict[str, object]:
        """Everything `icmp6-shim stats` shows, as plain JSON values."""
        # Rule counters, then the kernel's, then ours: the order overload_stats relies on.
        # Cached, read in a thread: the tools' fork and dump never run in the packet loop.
        div = self.host.rule_counters.get() if self.host.rule_counters is not None else None
        kernel = kernel_queue_stats([self.queue_num])
        c = self.counters()
        table = self.compiled.table
        hits = self.compiled.native.hits()
        rules = [dict(_rule_info(d), hits=n + self._past_hits.get(d.rule, 0))
                 for d, n in zip(table.decisions, hits)]
        current = {d.rule for d in table.decisions}
        # Rules a reload removed keep their counts, marked as no longer in the table.
        rules += [dict(info, hits=self._past_hits[name], in_table=False)
                  for name, info in self._past_rules.items() if name not in current]
        return {
            "pid": os.getpid(), "uptime_s": round(time.monotonic() - self.started, 1),
            "config": str(self.config_dir) if self.config_dir else None,
            "backend": self.host.backend_name, "queues": [self.queue_num],
            "diversion": self.host.guard_snapshot(),
            "reloads": self.reloads, "reload_failures": self.reload_failures,
            "last_reload_error": self.last_reload_error,
            "packets": c.get("packets", 0), "errors": c.get("errors", 0),
            "enobufs": c.get("enobufs", 0),
            # Log write failures are the sink's, never packet errors: the verdict stands.
            "log": sink_counters(),
            "verdicts": {k.removeprefix("verdict_"): v for k, v in c.items() if k.startswith("verdict_")},
            # Traffic of other protocols the wide diversion queues (fragments, AH): accepted
            # without a rule walk; and what the fragment fate table did (this table only).
            "non_icmpv6": hits[len(table.rules) + 1] + self._past_hits.get(table.non_icmpv6.rule, 0),
            "fragments": self.compiled.native.fate_counters(),
            "types": {str(t): n + p for t, (n, p) in enumerate(zip(self.compiled.native.type_hits(),
                                                                   self._past_types)) if n + p},
            "rules": rules,
            "kernel": kernel,
            "overload": overload_stats(div, kernel, c.get("packets", 0) if self.reader else None,
                                       queue_fail_open=self.settings.queue_fail_open,
                                       over_budget=self.settings.budget_verdict),
            "shadow": self.compiled.shadow.snapshot() if self.compiled.shadow else None,
            # The batched engine's own counters: send_errors, verdicts_lost, no_batch, ...
            "engine": self.reader.engine_counters() if self.reader is not None else {},
        }

    def status_line(self) -> str:
        c = self.counters()
        line = (f"queue {self.queue_num}: {c.get('packets', 0)} packets, "
                f"{c.get('verdict_accept', 0)} accept, {c.get('verdict_drop', 0)} drop, "
                f"{c.get('verdict_mark', 0)} mark, {c.get('errors', 0)} errors, "
                f"{self.reloads} reloads")
        # Stays in STATUS until a reload succeeds: the old table is still the one enforced.
        if self.last_reload_error is not None:
            line += f"; last reload failed, old table kept: {self.last_reload_error}"
        line += self.host.guard_status()
        return line[:400]

    def _log_packet(self, decision: Decision, pkt: PacketLike, payload: bytes) -> None:
        if self._pkt_log_limit.allow():
            view = parse(payload, self.settings.ext_limit)
            self.log.info("verdict", verdict=decision.verdict.action.value,
                          mark=decision.verdict.mark, rule=decision.rule,
                          origin=decision.origin.value, hook=Hook(pkt.hook).name.lower(),
                          icmp6_type=view.icmpv6_type, icmp6_code=view.icmpv6_code,
                          src=view.src, dst=view.dst, indev=self._ifnames.name(pkt.indev),
                          outdev=self._ifnames.name(pkt.outdev),
                          suppressed=self._pkt_log_limit.suppressed)

    def _log_shadow(self, enforced: Decision, candidate: Decision, payload: bytes, hook: int) -> None:
        if self._shadow_log_limit.allow():
            view = parse(payload, self.settings.ext_limit)
            self.log.info("shadow_diff", enforced=enforced.rule,
                          enforced_verdict=enforced.verdict.action.value,
                          shadow=candidate.rule, shadow_verdict=candidate.verdict.action.value,
                          hook=Hook(hook).name.lower(), icmp6_type=view.icmpv6_type,
                          src=view.src, dst=view.dst, suppressed=self._shadow_log_limit.suppressed)

    def _log_error(self, exc: BaseException) -> None:
        if self._err_log_limit.allow():
            self.log.error("packet_error", error=repr(exc), on_error=self.settings.on_error.action.value,
                           suppressed=self._err_log_limit.suppressed)
