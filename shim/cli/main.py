# SPDX-License-Identifier: MIT
"""Command line: the composition root. Parses arguments, wires adapters, maps errors to exits.

Every failure the shim expects is a ShimError and ends as one line on stderr
and a non-zero exit; an unexpected exception is reported on one line too
(set ICMP6_SHIM_DEBUG=1 for the traceback).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

from shim import __version__
from shim.core.errors import ConfigError, ShimError
from shim.core.model import Hook

__all__ = ["main"]

DEFAULT_CONFIG = Path("/etc/icmp6-shim")
HOOKS = ("prerouting", "input", "forward", "output", "postrouting")


def _config_dir(arg: str | None) -> Path | None:
    if arg is not None:
        path = Path(arg)
        if not path.is_dir():
            raise ConfigError(f"{arg}: not a directory (expected a config directory "
                              "holding icmp6-shim.toml and rules.d/)")
        return path
    return DEFAULT_CONFIG if DEFAULT_CONFIG.is_dir() else None


def _hook(name: str) -> Hook:
    return Hook[name.upper()]


def _parse_hex(text: str) -> bytes:
    cleaned = "".join(text.split()).removeprefix("0x").replace(":", "")
    try:
        return bytes.fromhex(cleaned)
    except ValueError as exc:
        raise ShimError(f"--hex: not a hex string ({exc})") from exc


# -- commands -------------------------------------------------------------------
def cmd_run(args: argparse.Namespace) -> int:
    from shim.config.loader import load_config
    from shim.daemon.logs import configure
    from shim.daemon.supervisor import run_daemon

    cfg_dir = _config_dir(args.config)
    config = load_config(cfg_dir)
    configure(args.log_format or config.settings.log_format, config.settings.log_level, stream=sys.stdout)
    return run_daemon(cfg_dir, config, trace=args.trace, control_socket=args.control_socket)


def cmd_stats(args: argparse.Namespace) -> int:
    from shim.config.loader import load_config
    from shim.daemon.control import query, socket_path

    if args.socket:
        path = args.socket
    else:
        settings = load_config(_config_dir(args.config)).settings
        path = socket_path(settings.control_socket, settings.queue_num)
    snap = query(path, timeout=args.timeout)
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
    lines.append("rule hits:")
    for r in cast(list[dict[str, Any]], snap.get("rules") or []):
        if r["hits"]:
            lines.append(f"  {r['hits']:>10}  {r['rule']} ({r['origin']}, {r['verdict']})")
    return "\n".join(lines)


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

    path = args.socket or load_config(_config_dir(args.config)).settings.metrics_socket
    if not path:
        raise ShimError("no [metrics] socket in the config: pass --socket PATH")
    sys.stdout.write(scrape_unix(path, timeout=args.timeout))
    return 0


def cmd_cleanup(args: argparse.Namespace) -> int:
    from shim.config.loader import load_config
    from shim.adapters.diversion import cleanup_all, cleanup_instance
    from shim.daemon.service import check_privileges

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
        queue = args.queue if args.queue is not None else \
            load_config(_config_dir(args.config)).settings.queue_num
        found = cleanup_instance(queue)
    print("removed: " + ", ".join(found) if found else "nothing of icmp6-shim was installed")
    return 0


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
        fail_open = load_config(_config_dir(config)).settings.fail_open
    except ShimError as exc:
        return f"the service failed ({how}) and its config cannot be read ({exc}): fail-closed"
    if fail_open:
        return None
    return (f"the service failed ({how}) with [queue] fail_open = false: the kernel drops "
            "diverted ICMPv6 until the next start")


def cmd_check(args: argparse.Namespace) -> int:
    from shim.config.loader import load_config
    from shim.daemon.compile import compile_config
    from shim.core.explain import lint

    cfg_dir = _config_dir(args.config)
    config = load_config(cfg_dir)
    try:
        compiled = compile_config(config)
        warnings = lint(compiled.table)
    except ShimError:
        raise
    except Exception as exc:  # noqa: BLE001 - check never crashes: one line, exit 2
        raise ConfigError(f"{cfg_dir or 'built-in settings'}: cannot compile the rules: "
                          f"{type(exc).__name__}: {exc}") from None
    for w in warnings:
        print(f"warning: {w}")
    n_user = sum(1 for r in compiled.table.rules if r.origin.value == "user")
    print(f"ok: {cfg_dir or 'built-in settings'}: {len(compiled.table.rules)} rules "
          f"({n_user} user), {len(warnings)} warning{'' if len(warnings) == 1 else 's'}")
    return 0


def cmd_rules(args: argparse.Namespace) -> int:
    from shim.config.loader import load_config
    from shim.core.explain import format_table
    from shim.core.rules import build_table

    config = load_config(_config_dir(args.config))
    table = build_table(config.settings, config.rules)
    print(format_table(table))
    return 0


def _packet_json(view: object) -> dict[str, object]:
    return dataclasses.asdict(view)  # type: ignore[call-overload, no-any-return]


def cmd_explain(args: argparse.Namespace) -> int:
    from shim.config.loader import load_config
    from shim.daemon.compile import compile_config, ifindex
    from shim.bindings.icmp6 import parse
    from shim.core.explain import explain

    data = _parse_hex(args.hex)
    compiled = compile_config(load_config(_config_dir(args.config)))
    view = parse(data, compiled.config.settings.ext_limit)
    hook = _hook(args.hook)
    indev = ifindex(args.iif) if args.iif else 0
    outdev = ifindex(args.oif) if args.oif else 0
    result = explain(view, compiled.table, hook, indev, outdev, ifindex=ifindex)
    native_index = compiled.native.classify(data, hook, indev, outdev)
    native_rule = compiled.table.decisions[native_index].rule
    if native_rule != result["decision"]["rule"]:  # type: ignore[index]
        raise ShimError(f"internal error: C matcher chose {native_rule}, Python matcher "
                        f"{result['decision']['rule']}")  # type: ignore[index]
    if args.json:
        print(json.dumps({**_packet_json(view), "hook": args.hook, **result}, indent=2))
    else:
        print(_explain_text(view, result, args.hook))
    return 0


def _explain_text(view: object, result: dict[str, object], hook: str) -> str:
    fields = _packet_json(view)
    lines = ["packet:"]
    lines += [f"  {k}: {v}" for k, v in fields.items()]
    d = result["decision"]
    assert isinstance(d, dict)
    mark = f" mark {d['mark']:#x} ({d['mark_name']})" if d.get("mark") is not None else ""
    lines += [f"decision at hook {hook}: {d['verdict']}{mark}",
              f"  rule: {d['rule']} ({d['origin']}, priority {d['priority']})",
              f"  why: {d.get('description', '')}",
              f"  citation: {d.get('citation', '')}"]
    over = result.get("overridden") or d.get("overridden") or []
    if over:
        lines.append("  also matched, overridden (lower in the order):")
        lines += [f"    - {o}" for o in over]  # type: ignore[union-attr]
    return "\n".join(lines)


def cmd_replay(args: argparse.Namespace) -> int:
    from shim.config.loader import load_config
    from shim.daemon.compile import compile_config
    from shim.bindings.icmp6 import parse
    from shim.adapters.pcap import read_packets

    compiled = compile_config(load_config(_config_dir(args.config)))
    other = compile_config(load_config(_config_dir(args.diff))) if args.diff else None
    hook = _hook(args.hook)
    changed: Counter[str] = Counter()
    tally: Counter[tuple[str, str]] = Counter()  # --plot: (type, verdict (origin)) -> packets
    if args.plot:
        from shim.cli.testbed import check_plot, plot_verdicts, verdict_key

        check_plot()
    total = 0
    try:
        f = open(args.file, "rb")
    except OSError as exc:
        raise ShimError(f"{args.file}: {exc.strerror}") from exc
    with f:
        for rec in read_packets(f):
            total += 1
            if rec.packet is None:
                if args.json:
                    print(json.dumps({"index": rec.index, "skipped": rec.skipped}))
                else:
                    print(f"{rec.index}: skipped ({rec.skipped})")
                continue
            view = parse(rec.packet, compiled.config.settings.ext_limit)
            d = compiled.table.decisions[compiled.native.classify(rec.packet, hook, 0, 0)]
            # A non-first fragment of a datagram seen earlier in the file gets its first
            # fragment's decision (as on the packet path); say so, the rule is not its own.
            follows = compiled.native.last_fate() == "followed"
            if args.plot:
                tally[verdict_key(view, d)] += 1
            if other is not None:
                d2 = other.table.decisions[other.native.classify(rec.packet, hook, 0, 0)]
                if d2.verdict == d.verdict:
                    continue
                changed[f"type {view.icmpv6_type}"] += 1
                if args.json:
                    print(json.dumps({"index": rec.index, **_packet_json(view),
                                      "decision": d.as_json(), "other": d2.as_json()}))
                else:
                    print(f"{rec.index}: type {view.icmpv6_type} code {view.icmpv6_code} "
                          f"{view.src} -> {view.dst}: {_short(d)} -> {_short(d2)}")
                continue
            if args.json:
                print(json.dumps({"index": rec.index, **_packet_json(view), "decision": d.as_json(),
                                  "follows_first_fragment": follows}))
            else:
                print(f"{rec.index}: {_describe(view)}: {_short(d)}"
                      + (" (as its first fragment)" if follows else ""))
    if other is not None:
        print(f"# {sum(changed.values())} of {total} packets change verdict", file=sys.stderr)
        for k, v in sorted(changed.items()):
            print(f"#   {k}: {v}", file=sys.stderr)
    if args.plot:
        plot_verdicts(tally, args.plot)
        print(f"# plot of {sum(tally.values())} packets written to {args.plot}", file=sys.stderr)
    if args.counters:
        hits = compiled.native.hits()
        for d, n in zip(compiled.table.decisions, hits):
            if n:
                print(f"# {n:8d}  {d.rule}", file=sys.stderr)
    return 0


def _short(d: object) -> str:
    v = d.verdict  # type: ignore[attr-defined]
    mark = f":{v.mark_name or hex(v.mark)}" if v.mark is not None else ""
    return f"{v.action.value}{mark} [{d.rule}]"  # type: ignore[attr-defined]


def _describe(view: object) -> str:
    v = view
    t = getattr(v, "icmpv6_type")
    base = f"{getattr(v, 'src')} -> {getattr(v, 'dst')}"
    if t is None and getattr(v, "frag_status") == "non_first":
        return f"{base} non-first fragment id {getattr(v, 'frag_id'):#x}"
    if t is None:
        return f"{base} no ICMPv6 header (upper layer {getattr(v, 'upper_layer')})"
    flags = ",".join(getattr(v, "malformed"))
    return f"{base} type {t} code {getattr(v, 'icmpv6_code')}" + (f" malformed={flags}" if flags else "")


def cmd_demo(args: argparse.Namespace) -> int:
    from shim.lab.demo import run_demo

    cfg = args.config or ("config" if Path("config").is_dir() else None)
    return run_demo(Path(cfg) if cfg else None)


# -- wiring -------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="icmp6-shim",
        description="ICMPv6 policy enforcement behind NFQUEUE, with the defaults of "
                    "draft-arkko-icmpv6-ike-effects and user rules above them.")
    p.add_argument("--version", action="version", version=f"icmp6-shim {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    def add(name: str, func: object, help_: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help_, description=help_)
        sp.set_defaults(func=func)
        return sp

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
    sp = add("check", cmd_check, "validate a configuration and lint its rules")
    sp.add_argument("--config")
    sp = add("rules", cmd_rules, "print the merged effective rule table, in order")
    sp.add_argument("--config")
    sp = add("explain", cmd_explain, "parse one packet and explain its decision")
    sp.add_argument("--hex", required=True, help="the packet, IPv6 header first, as hex")
    sp.add_argument("--config")
    sp.add_argument("--hook", choices=HOOKS, default="input")
    sp.add_argument("--iif", help="input interface name")
    sp.add_argument("--oif", help="output interface name")
    sp.add_argument("--json", action="store_true")
    sp = add("replay", cmd_replay, "judge every packet of a pcap/pcapng file")
    sp.add_argument("file")
    sp.add_argument("--config")
    sp.add_argument("--diff", metavar="OTHER_CONFIG", help="show packets whose verdict differs")
    sp.add_argument("--hook", choices=HOOKS, default="input")
    sp.add_argument("--json", action="store_true")
    sp.add_argument("--counters", action="store_true", help="rule hit counts for the capture")
    sp.add_argument("--plot", metavar="PNG", help="stacked bars of verdicts per ICMPv6 type "
                    "(default vs user rule); needs matplotlib (extra 'plot')")
    from shim.cli.testbed import add_commands

    add_commands(add)
    sp = add("demo", cmd_demo, "build a 3-node testbed, run the shim on the gateway, show verdicts")
    sp.add_argument("--config")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `icmp6-shim` console script."""
    args = build_parser().parse_args(argv)
    try:
        rc: int = args.func(args)
        return rc
    except ShimError as exc:
        print(f"icmp6-shim: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        if args.func is not cmd_run:
            return 0  # `icmp6-shim rules | head`: the reader is done, so are we
        # The daemon never ends quietly: a broken pipe there is a failure (systemd restarts it).
        print("icmp6-shim: internal error: BrokenPipeError", file=sys.stderr)
        return 70
    except Exception as exc:  # noqa: BLE001 - last line of defence: one line, no traceback
        if os.environ.get("ICMP6_SHIM_DEBUG"):
            raise
        print(f"icmp6-shim: internal error: {type(exc).__name__}: {exc} "
              "(set ICMP6_SHIM_DEBUG=1 for a traceback)", file=sys.stderr)
        return 70
