# SPDX-License-Identifier: MIT
"""CLI commands for the running daemon: `run`, `stats`, `metrics`, `cleanup`."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, cast

from shim.cli.common import AddCommand, config_dir
from shim.core.errors import ShimError

__all__ = ["add_commands", "cmd_run"]


def cmd_run(args: argparse.Namespace) -> int:
    from shim.config.loader import load_config
    from shim.daemon.logs import configure
    from shim.daemon.supervisor import run_daemon

    cfg_dir = config_dir(args.config)
    config = load_config(cfg_dir)
    configure(args.log_format or config.settings.log_format, config.settings.log_level, stream=sys.stdout)
    return run_daemon(cfg_dir, config, trace=args.trace, control_socket=args.control_socket)


def cmd_stats(args: argparse.Namespace) -> int:
    from shim.config.loader import control_address
    from shim.daemon.control import query, socket_path

    problem = None
    if args.socket:
        path = args.socket
    else:
        # Not load_config: the daemon answers from the table it kept, whatever the files
        # say now, and a failed reload is exactly when an operator asks.
        addr = control_address(config_dir(args.config))
        path, problem = socket_path(addr.control_socket, addr.queue_num), addr.problem
    try:
        snap = query(path, timeout=args.timeout)
    except ShimError as exc:
        if problem is None:
            raise
        raise ShimError(f"{exc}; the default was tried because {problem}") from None
    if args.json:
        print(json.dumps(snap, indent=2))
    else:
        print(_stats_text(snap))
    return 0


def _stats_text(snap: dict[str, object]) -> str:
    v = snap.get("verdicts") or {}
    assert isinstance(v, dict)
    lines = [f"pid {snap.get('pid')}, up {snap.get('uptime_s')} s, backend {snap.get('backend')}, "
             f"queues {snap.get('queues')}, config {snap.get('config')}",
             f"packets {snap.get('packets')}: accept {v.get('accept', 0)}, drop {v.get('drop', 0)}, "
             f"mark {v.get('mark', 0)}; errors {snap.get('errors')}, socket overruns {snap.get('enobufs')}",
             f"reloads {snap.get('reloads')} (failed {snap.get('reload_failures')})"
             + (f"; last reload failed, old table kept: {snap['last_reload_error']}"
                if snap.get("last_reload_error") else "")]
    log = cast(dict[str, object], snap.get("log") or {})
    if log.get("failures") or log.get("dropped"):
        lines.append(f"log: now to {log.get('sink')}, {log.get('failures')} write errors, "
                     f"{log.get('dropped')} lines lost")
    frags = cast(dict[str, int], snap.get("fragments") or {})
    if "non_icmpv6" in snap or frags:
        lines.append(f"not ICMPv6 (accepted unjudged): {snap.get('non_icmpv6', 0)}; non-first "
                     f"fragments: {frags.get('followed', 0)} followed their first fragment, "
                     f"{frags.get('unknown', 0)} of no remembered datagram")
    eng = cast(dict[str, int], snap.get("engine") or {})
    if eng.get("send_errors") or eng.get("verdicts_lost") or eng.get("nl_errors"):
        lines.append(f"engine: {eng.get('send_errors', 0)} failed sends, {eng.get('verdicts_lost', 0)} "
                     f"verdicts lost, {eng.get('nl_errors', 0)} refused by the kernel"
                     + (", batching off" if eng.get("no_batch") else ""))
    for k in cast(list[dict[str, int]], snap.get("kernel") or []):
        lines.append(f"kernel queue {k['queue']}: waiting {k['queue_total']}, queue drops "
                     f"{k['queue_dropped']}, user drops {k['user_dropped']}")
    lines += _overload_text(cast(dict[str, Any], snap.get("overload") or {}))
    types = snap.get("types") or {}
    assert isinstance(types, dict)
    if types:
        lines.append("by ICMPv6 type: " + ", ".join(f"{t}={n}" for t, n in sorted(
            types.items(), key=lambda kv: int(kv[0]) if kv[0].isdigit() else 999)))
    lines += _shadow_text(cast(dict[str, Any] | None, snap.get("shadow")))
    lines.append("rule hits:")
    for r in cast(list[dict[str, Any]], snap.get("rules") or []):
        if r["hits"]:
            lines.append(f"  {r['hits']:>10}  {r['rule']} ({r['origin']}, {r['verdict']})")
    return "\n".join(lines)


def _shadow_text(shadow: dict[str, Any] | None) -> list[str]:
    """The shadow candidate's results: how many packets it judged, where it differed."""
    if not shadow:
        return []
    lines = [f"shadow {shadow.get('file')}: {shadow.get('evaluated', 0)} packets judged, "
             f"{shadow.get('differences', 0)} with another verdict"]
    lines += [f"  {p['packets']:>10}  enforced {p['enforced']}, shadow {p['shadow']}"
              for p in shadow.get("pairs") or []]
    return lines


def _overload_text(o: dict[str, Any]) -> list[str]:
    """The overload causes, one line; nothing for a daemon that does not report them."""
    if not o:
        return []
    budget = cast(dict[str, int], o.get("budget") or {})
    verb = "accepted unjudged" if o.get("over_budget") == "accept" else "dropped"
    cut = ", ".join(f"{k} {n}" for k, n in sorted(budget.items())) or "none"
    fail_open = o.get("fail_open_accepts")
    return [f"overload: over budget {verb}: {cut}; queue full drops {o.get('queue_full_drops', 0)}, "
            f"socket full drops {o.get('socket_full_drops', 0)}, fail-open accepts "
            f"{'unknown' if fail_open is None else f'at least {fail_open}' if fail_open else 0}"]


def cmd_metrics(args: argparse.Namespace) -> int:
    from shim.config.loader import load_config
    from shim.daemon.metrics import scrape_unix

    path = args.socket or load_config(config_dir(args.config)).settings.metrics_socket
    if not path:
        raise ShimError("no [metrics] socket in the config: pass --socket PATH")
    sys.stdout.write(scrape_unix(path, timeout=args.timeout))
    return 0


def cmd_cleanup(args: argparse.Namespace) -> int:
    from shim.config.loader import load_config
    from shim.adapters.diversion import NOT_REMOVED, cleanup_all, cleanup_instance
    from shim.daemon.host import check_privileges

    check_privileges()
    kept = _fail_closed_after_failure(args.config) if args.unless_failed_closed else None
    if kept is not None:
        print(f"kept the diversion: {kept}")
        return 0
    if args.all:
        found = cleanup_all()
    else:
        # The instance is its first queue; an unreadable config is an error (exit 2), never a
        # guess that could remove another running instance's diversion.
        if args.queue is not None:
            queue, queues = args.queue, range(args.queue, args.queue + 1)
        else:
            settings = load_config(config_dir(args.config)).settings
            queue, queues = settings.queue_num, range(settings.queue_num,
                                                      settings.queue_num + settings.workers)
        running = _bound(queues)
        if running is not None:
            # A process reads the instance's queue: it is running, and the diversion is its
            # own (e.g. a second start failed at the bind and systemd runs ExecStopPost).
            print(f"kept the diversion: {running}")
            return 0 if args.unless_failed_closed else 1
        found = cleanup_instance(queue)
    print("removed: " + ", ".join(found) if found else "nothing of icmp6-shim was installed")
    # Something found and left (an owned table of a running instance, a refused batch):
    # not clean, so not 0; the list above says what and why.
    return 1 if any(NOT_REMOVED in item for item in found) else 0


def _bound(queues: range) -> str | None:
    """Which of `queues` a process holds bound now (the kernel's list), or None."""
    from shim.daemon.control import kernel_queue_stats

    rows = kernel_queue_stats(queues)
    if not rows:
        return None
    held = ", ".join(f"queue {r['queue']} (netlink port {r['peer_portid']})" for r in rows)
    return f"{held} is bound by a running process: its diversion is that instance's"


def _fail_closed_after_failure(config: str | None) -> str | None:
    """Why ExecStopPost must keep the diversion, or None to remove it.

    systemd gives ExecStopPost $SERVICE_RESULT ("success" after a clean stop) and
    $EXIT_CODE / $EXIT_STATUS. After a failure with [queue] fail_open = false the
    diversion stays, so the kernel drops diverted ICMPv6 (nobody reads the queue)
    until the next start replaces it; a config that cannot be read keeps it too,
    since then nobody knows that fail_open allows traffic through.
    """
    from shim.config.loader import load_config

    result = os.environ.get("SERVICE_RESULT", "")
    if result in ("", "success"):
        return None
    how = (f"SERVICE_RESULT={result} EXIT_CODE={os.environ.get('EXIT_CODE', '')} "
           f"EXIT_STATUS={os.environ.get('EXIT_STATUS', '')}")
    try:
        fail_open = load_config(config_dir(config)).settings.fail_open
    except ShimError as exc:
        return f"the service failed ({how}) and its config cannot be read ({exc}): fail-closed"
    if fail_open:
        return None
    return (f"the service failed ({how}) with [queue] fail_open = false: the kernel drops "
            "diverted ICMPv6 until the next start")


def add_commands(add: AddCommand) -> None:
    """Register this module's subcommands through the CLI's `add` helper."""
    sp = add("run", cmd_run, "run the enforcing daemon in the foreground")
    sp.add_argument("--config", help="config directory (default /etc/icmp6-shim if present)")
    sp.add_argument("--trace", action="store_true", help="log every decision (rate-limited)")
    sp.add_argument("--log-format", choices=("auto", "json", "console"))
    sp.add_argument("--control-socket", help="override [control] socket (empty: none)")
    sp = add("stats", cmd_stats, "counters of the running daemon (via its control socket)")
    sp.add_argument("--config")
    sp.add_argument("--socket", help="control socket path (default: from the config)")
    sp.add_argument("--json", action="store_true")
    sp.add_argument("--timeout", type=float, default=10.0, help="seconds for the whole answer")
    sp = add("metrics", cmd_metrics, "print the Prometheus text of the running daemon "
             "(from [metrics] socket; for node_exporter's textfile collector)")
    sp.add_argument("--config")
    sp.add_argument("--socket", help="metrics socket path (default: [metrics] socket)")
    sp.add_argument("--timeout", type=float, default=5.0, help="seconds for the whole answer")
    sp = add("cleanup", cmd_cleanup, "remove diversion rules left by a crashed run of this "
             "instance (its [queue] num), or of every instance with --all")
    sp.add_argument("--config")
    sp.add_argument("--queue", type=int, help="the instance's first queue (default: [queue] num)")
    sp.add_argument("--all", action="store_true",
                    help="every instance's leftovers in this network namespace")
    sp.add_argument("--unless-failed-closed", action="store_true",
                    help="for ExecStopPost: keep the diversion when the service failed "
                         "($SERVICE_RESULT) and [queue] fail_open is false")
