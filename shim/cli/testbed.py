# SPDX-License-Identifier: MIT
"""CLI commands of the testbed: `testbed {up,down,status,run}` and `export xfrm`.

`testbed up NAME` builds topology NAME in namespaces named i6tb-NAME-NODE and
leaves them; `down` and `status` find them again from `ip netns list` (only
names starting with i6tb-, which only the testbed creates).
"""

from __future__ import annotations

import argparse
import os
import subprocess
from collections.abc import Callable
from importlib import resources
from pathlib import Path

from shim.core.errors import ConfigError, EnvironmentProblem, ShimError

__all__ = ["add_commands", "check_plot", "plot_verdicts", "testbed_namespaces", "verdict_key"]

AddCommand = Callable[[str, Callable[[argparse.Namespace], int], str], argparse.ArgumentParser]


def _topologies() -> list[str]:
    folder = resources.files("shim.lab").joinpath("data/topologies")
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".toml"))


def testbed_namespaces() -> list[str]:
    """Every namespace of the testbed (name starting with i6tb-), sorted."""
    from shim.lab.testbed import NS_PREFIX

    try:
        out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                             timeout=30).stdout
    except FileNotFoundError as exc:
        raise EnvironmentProblem("'ip' is not installed; install the Debian package iproute2") from exc
    return sorted(line.split()[0] for line in out.splitlines()
                  if line.strip() and line.split()[0].startswith(NS_PREFIX))


def _root() -> None:
    if os.geteuid() != 0:
        raise EnvironmentProblem("the testbed builds network namespaces: run it as root")


def cmd_up(args: argparse.Namespace) -> int:
    from shim.lab.netns import Topology, load_topology
    from shim.lab.testbed import NS_PREFIX

    _root()
    spec = load_topology(args.name)
    prefix = f"{NS_PREFIX}{spec.name}-"
    if any(ns.startswith(prefix) for ns in testbed_namespaces()):
        raise ShimError(f"topology {spec.name} is already up: run `icmp6-shim testbed down "
                        f"{spec.name}` first")
    topo = Topology(spec, prefix=prefix).up()
    print(f"up: {spec.name}: {spec.description}")
    for node in spec.nodes:
        print(f"  {node.name}: ip netns exec {topo.ns(node.name)} ...")
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    from shim.lab.testbed import NS_PREFIX

    _root()
    prefix = f"{NS_PREFIX}{args.name}-" if args.name else NS_PREFIX
    gone = [ns for ns in testbed_namespaces() if ns.startswith(prefix)]
    for ns in gone:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)
    left = [ns for ns in testbed_namespaces() if ns in gone]
    print("removed: " + ", ".join(gone) if gone else "nothing of the testbed was up")
    if left:
        raise EnvironmentProblem(f"could not remove: {', '.join(left)}")
    return 0


def cmd_attack(args: argparse.Namespace) -> int:
    from shim.lab.adversarial_run import run_suite

    only: str | None = args.only
    failed = run_suite(select=(lambda a: only in a.name) if only else None, json_path=args.json)
    return 1 if failed else 0


def cmd_status(args: argparse.Namespace) -> int:
    from shim.lab.testbed import NS_PREFIX

    names = testbed_namespaces()
    if not names:
        print("testbed: nothing up")
        return 0
    for ns in names:
        rest = ns[len(NS_PREFIX):]
        topo = next((t for t in _topologies() if rest.startswith(f"{t}-")), None)
        label = f"topology {topo}, node {rest[len(topo) + 1:]}" if topo else "scenario run"
        addrs = subprocess.run(["ip", "-n", ns, "-br", "-6", "addr", "show"], capture_output=True,
                               text=True, timeout=30).stdout.strip().splitlines()
        pols = subprocess.run(["ip", "-n", ns, "xfrm", "policy"], capture_output=True, text=True,
                              timeout=30).stdout.count("\tdir ")
        print(f"{ns} ({label}): {pols} xfrm policies")
        for line in addrs:
            if not line.startswith("lo "):
                print(f"  {' '.join(line.split())}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from shim.lab.testbed import load_scenario, run_scenario

    if args.name == "list":
        from shim.lab.testbed import list_scenarios

        for name in list_scenarios():
            print(f"{name}: {load_scenario(name).description}")
        return 0
    scenario = load_scenario(args.name)
    return 0 if run_scenario(scenario, only=args.run, capture=args.capture) == 0 else 1


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
        _root()
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


# --- `replay --plot` -----------------------------------------------------------

def check_plot() -> None:
    """Raise ShimError (one line) unless matplotlib can be imported."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ShimError("--plot needs matplotlib: pip install 'icmp6-shim[plot]'") from None


def verdict_key(view: object, decision: object) -> tuple[str, str]:
    """(ICMPv6 type label, "verdict (default|user|settings)") of one judged packet."""
    from shim.core.icmp6_types import type_name

    t = getattr(view, "icmpv6_type")
    v = getattr(decision, "verdict")
    mark = f":{v.mark_name or hex(v.mark)}" if v.mark is not None else ""
    label = f"{t} {type_name(t)}" if t is not None else "no ICMPv6"
    return label, f"{v.action.value}{mark} ({getattr(decision, 'origin').value})"


def plot_verdicts(tally: dict[tuple[str, str], int], path: str, title: str = "") -> None:
    """Stacked bars: packets per ICMPv6 type, split by verdict and origin; PNG at path."""
    check_plot()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    types = sorted({t for t, _ in tally}, key=lambda s: (not s[0].isdigit(), int(s.split()[0])
                                                        if s[0].isdigit() else 0, s))
    kinds = sorted({k for _, k in tally}, key=lambda k: ("(user)" not in k, k))
    fig, ax = plt.subplots(figsize=(max(6.0, 0.7 * len(types) + 2), 4.5))
    bottom = [0] * len(types)
    for kind in kinds:
        heights = [tally.get((t, kind), 0) for t in types]
        ax.bar(types, heights, bottom=bottom, label=kind,
               hatch="//" if "(user)" in kind else None)
        bottom = [b + h for b, h in zip(bottom, heights)]
    ax.set_ylabel("packets")
    ax.set_title(title or "icmp6-shim replay: verdicts per ICMPv6 type (hatched: user rule)")
    ax.tick_params(axis="x", labelrotation=60)
    if tally:
        ax.legend(fontsize="small")
    fig.tight_layout()
    try:
        fig.savefig(path, format="png")
    except OSError as exc:
        raise ShimError(f"--plot {path}: {exc.strerror}") from None
    finally:
        plt.close(fig)


def add_commands(add: AddCommand) -> None:
    """Register this module's subcommands through the CLI's `add` helper."""
    sp = add("testbed", lambda a: int(a.testbed_func(a)),
             "network-namespace testbed: topologies and scenarios (docs/testbed.md)")
    sub = sp.add_subparsers(dest="testbed_command", required=True)
    p = sub.add_parser("up", help="build a topology (left up until `down`)")
    p.add_argument("name", help=f"topology: {', '.join(_topologies())}")
    p.set_defaults(testbed_func=cmd_up)
    p = sub.add_parser("down", help="remove a topology, or every testbed namespace")
    p.add_argument("name", nargs="?")
    p.set_defaults(testbed_func=cmd_down)
    p = sub.add_parser("status", help="show the testbed namespaces, addresses, xfrm policies")
    p.set_defaults(testbed_func=cmd_status)
    p = sub.add_parser("run", help="run a scenario with and without the shim; exit 0 when "
                                   "every observation is the expected one")
    p.add_argument("name", help="scenario name, a .toml path, or `list`")
    p.add_argument("--run", help="only this run of the scenario (e.g. with, without)")
    p.add_argument("--capture", metavar="FILE",
                   help="write each run's traffic to FILE-RUN.pcap (tcpdump in the namespace)")
    p.set_defaults(testbed_func=cmd_run)
    p = sub.add_parser("attack", help="the adversarial suite: THC-IPv6 tools and crafted evasions "
                                      "against the shim on a gateway; exit 1 unless every row is ok")
    p.add_argument("--only", metavar="TEXT", help="only the attacks whose name contains TEXT")
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON to FILE")
    p.set_defaults(testbed_func=cmd_attack)
    sp = add("export", cmd_export, "print (and apply/remove) the xfrm policies for the marks")
    sp.add_argument("what", choices=("xfrm",))
    sp.add_argument("--config", help="config directory (default /etc/icmp6-shim if present)")
    sp.add_argument("--priority", type=_priority, default=1,
                    help="xfrm priority of the allow policies (lower wins; default 1)")
    sp.add_argument("--mark", default="bypass", help="the mark to export (default bypass)")
    group = sp.add_mutually_exclusive_group()
    group.add_argument("--apply", action="store_true", help="add them in this namespace")
    group.add_argument("--remove", action="store_true", help="delete them in this namespace")
