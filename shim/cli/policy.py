# SPDX-License-Identifier: MIT
"""CLI commands on a policy, offline: `check`, `rules`, `explain`, `replay`, `export xfrm`."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

from shim.cli.common import HOOKS, AddCommand, config_dir, hook_named, parse_hex, require_root
from shim.core.errors import ConfigError, ShimError

if TYPE_CHECKING:
    from shim.adapters.pcap import Record
    from shim.core.model import Hook, PacketView
    from shim.daemon.compile import Compiled

__all__ = ["add_commands"]


def cmd_check(args: argparse.Namespace) -> int:
    from shim.config.loader import load_config
    from shim.daemon.compile import compile_config
    from shim.cli.analysis import check_warnings

    cfg_dir = config_dir(args.config)
    config = load_config(cfg_dir)
    try:
        compiled = compile_config(config)
        warnings = check_warnings(compiled.table)
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

    config = load_config(config_dir(args.config))
    table = build_table(config.settings, config.rules)
    print(format_table(table))
    return 0


def _packet_json(view: object) -> dict[str, object]:
    return dataclasses.asdict(view)  # type: ignore[call-overload, no-any-return]


def cmd_explain(args: argparse.Namespace) -> int:
    from shim.config.loader import load_config
    from shim.daemon.compile import compile_config, ifindex
    from shim.bindings.icmp6 import parse
    from shim.core.explain import describe_verdict, explain

    data = parse_hex(args.hex)
    compiled = compile_config(load_config(config_dir(args.config)))
    view = parse(data, compiled.config.settings.ext_limit)
    hook = hook_named(args.hook)
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
        print(_explain_text(view, result, args.hook,
                            describe_verdict(compiled.table.decisions[native_index].verdict)))
    return 0


def _field_text(value: object) -> str:
    """A parser field for people: no Python reprs (None, (), True) in text output."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, tuple):
        return ", ".join(_field_text(v) for v in value) if value else "none"
    return str(value)


def _explain_text(view: object, result: dict[str, object], hook: str, verdict: str) -> str:
    fields = _packet_json(view)
    lines = ["packet:"]
    lines += [f"  {k}: {_field_text(v)}" for k, v in fields.items()]
    d = result["decision"]
    assert isinstance(d, dict)
    lines += [f"decision at hook {hook}: {verdict}",
              f"  rule: {d['rule']} ({d['origin']}, priority {d['priority']})",
              f"  why: {d.get('description', '')}",
              f"  citation: {d.get('citation', '')}"]
    over = result.get("overridden") or d.get("overridden") or []
    if over:
        lines.append("  also matched, overridden (lower in the order):")
        lines += [f"    - {o}" for o in over]  # type: ignore[union-attr]
    return "\n".join(lines)


class _ReplayDiffError(ShimError):
    """replay --diff could not compare: exit 2, as diff(1) does on trouble."""

    exit_code = 2


def cmd_replay(args: argparse.Namespace) -> int:
    """Judge a capture; with --diff exit 0 (no verdict differs), 1 (some do) or 2 (error)."""
    try:
        return _replay(args)
    except ShimError as exc:
        if args.diff and exc.exit_code != 2:
            raise _ReplayDiffError(str(exc)) from exc
        raise


def _decision_json(compiled: Compiled, rec: Record, view: PacketView, hook: Hook,
                   index: int, follows: bool) -> dict[str, object]:
    """The decision object of replay --json, `overridden` filled in as explain does."""
    from shim.core.explain import explain

    d = compiled.table.decisions[index]
    if follows or rec.packet is None:  # decided by its first fragment's walk: nothing overridden
        return d.as_json()
    result = explain(view, compiled.table, hook,
                     matches=compiled.native.all_matches(rec.packet, int(hook), 0, 0))
    decision = result["decision"]
    assert isinstance(decision, dict)
    if decision["rule"] != d.rule:
        raise ShimError(f"internal error: packet {rec.index}: C matcher chose {d.rule}, "
                        f"the rule walk {decision['rule']}")
    return decision


def _replay(args: argparse.Namespace) -> int:
    from shim.config.loader import load_config
    from shim.daemon.compile import compile_config
    from shim.bindings.icmp6 import parse
    from shim.adapters.pcap import read_packets

    compiled = compile_config(load_config(config_dir(args.config)))
    other = compile_config(load_config(config_dir(args.diff))) if args.diff else None
    hook = hook_named(args.hook)
    changed: Counter[str] = Counter()
    tally: Counter[tuple[str, str]] = Counter()  # --plot: (type, verdict (origin)) -> packets
    if args.plot:
        from shim.cli.plot import check_plot, plot_verdicts, verdict_key

        check_plot()
    total = 0
    try:
        f = open(args.file, "rb")
    except OSError as exc:
        raise ShimError(f"{args.file}: {exc.strerror}") from exc
    with f:
        for rec in read_packets(f):
            total += 1
            where = {"index": rec.index, "timestamp": rec.timestamp, "hook": args.hook}
            if rec.packet is None:
                if args.json:
                    print(json.dumps({**where, "skipped": rec.skipped}))
                else:
                    print(f"{rec.index}: skipped ({rec.skipped})")
                continue
            view = parse(rec.packet, compiled.config.settings.ext_limit)
            index = compiled.native.classify(rec.packet, hook, 0, 0)
            d = compiled.table.decisions[index]
            # A non-first fragment of a datagram seen earlier in the file gets its first
            # fragment's decision (as on the packet path); say so, the rule is not its own.
            follows = compiled.native.last_fate() == "followed"
            if args.plot:
                tally[verdict_key(view, d)] += 1
            if other is not None:
                i2 = other.native.classify(rec.packet, hook, 0, 0)
                d2 = other.table.decisions[i2]
                if d2.verdict == d.verdict:
                    continue
                changed[f"type {view.icmpv6_type}" if view.icmpv6_type is not None
                        else "no ICMPv6 header"] += 1
                if args.json:
                    follows2 = other.native.last_fate() == "followed"
                    print(json.dumps({**where, **_packet_json(view),
                                      "decision": _decision_json(compiled, rec, view, hook, index, follows),
                                      "other": _decision_json(other, rec, view, hook, i2, follows2)}))
                else:
                    print(f"{rec.index}: {_describe(view)}: {_short(d)} -> {_short(d2)}")
                continue
            if args.json:
                print(json.dumps({**where, **_packet_json(view),
                                  "decision": _decision_json(compiled, rec, view, hook, index, follows),
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
    # As diff(1): 1 when some verdict differs, so scripts can gate a config change on it.
    return 1 if changed else 0


def _short(d: object) -> str:
    v = d.verdict  # type: ignore[attr-defined]
    mark = f":{v.mark_name or hex(v.mark)}" if v.mark is not None else ""
    return f"{v.action.value}{mark} [{d.rule}]"  # type: ignore[attr-defined]


def _describe(v: PacketView) -> str:
    """One packet on one line, without Python reprs (a missing field is "-")."""
    base = f"{v.src or '-'} -> {v.dst or '-'}"
    if v.icmpv6_type is None and v.frag_status == "non_first":
        return f"{base} non-first fragment id {v.frag_id or 0:#x}"
    if v.icmpv6_type is None:
        return f"{base} no ICMPv6 header " + (f"(upper layer {v.upper_layer})"
                                              if v.upper_layer is not None else "(no upper layer found)")
    flags = ",".join(v.malformed)
    return f"{base} type {v.icmpv6_type} code {v.icmpv6_code}" + (f" malformed={flags}" if flags else "")


def cmd_export(args: argparse.Namespace) -> int:
    from shim.config.loader import load_config
    from shim.core.rules import build_table
    from shim.adapters.xfrm import apply, remove
    from shim.core.xfrm import derive_policies, render

    if args.what != "xfrm":
        raise ConfigError(f"export: unknown target {args.what!r} (known: xfrm)")
    cfg: Path | None = None
    if args.config is not None:
        cfg = Path(args.config)
        if not cfg.is_dir():
            raise ConfigError(f"{args.config}: not a directory")
    elif Path("/etc/icmp6-shim").is_dir():
        cfg = Path("/etc/icmp6-shim")
    config = load_config(cfg)
    table = build_table(config.settings, config.rules)
    policies, notes = derive_policies(table, priority=args.priority, mark_name=args.mark)
    mark = table.settings.mark(args.mark)
    print(render(policies, notes, source=str(cfg or "built-in defaults"),
                 mark_text=f"{mark.value:#x}/{mark.mask:#x}"), end="")
    if args.apply or args.remove:
        require_root(f"export xfrm --{'apply' if args.apply else 'remove'} changes this "
                     "namespace's xfrm policies (CAP_NET_ADMIN)")
    if args.apply:
        added = apply(policies)
        print(f"# applied: {len(added)} added, {len(policies) - len(added)} already present")
    if args.remove:
        print(f"# removed: {remove(policies)} of {len(policies)}")
    return 0


def _priority(text: str) -> int:
    try:
        value = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 <= value <= 0xFFFFFFFF:
        raise argparse.ArgumentTypeError(f"{value} is not within 0..4294967295")
    return value


def add_commands(add: AddCommand) -> None:
    """Register this module's subcommands through the CLI's `add` helper."""
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
    sp = add("export", cmd_export, "print (and apply/remove) the xfrm policies for the marks")
    sp.add_argument("what", choices=("xfrm",))
    sp.add_argument("--config", help="config directory (default /etc/icmp6-shim if present)")
    sp.add_argument("--priority", type=_priority, default=1,
                    help="xfrm priority of the allow policies (lower wins; default 1)")
    sp.add_argument("--mark", default="bypass", help="the mark to export (default bypass)")
    group = sp.add_mutually_exclusive_group()
    group.add_argument("--apply", action="store_true", help="add them in this namespace")
    group.add_argument("--remove", action="store_true", help="delete them in this namespace")
