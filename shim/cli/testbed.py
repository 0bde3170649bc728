# SPDX-License-Identifier: MIT
"""CLI commands of the lab: `testbed {up,down,status,run,attack}` and `demo`.

`testbed up NAME` builds topology NAME in namespaces named i6tb-NAME-NODE and
leaves them; `status` finds them again from `ip netns list` (names starting with
i6tb-), `down` removes of those only the ones whose owner record (shim.lab.owners)
says the testbed made them and nobody else still runs them.
"""

from __future__ import annotations

import argparse
import os
import subprocess
from importlib import resources
from pathlib import Path

from shim.cli.common import AddCommand, require_root
from shim.core.errors import EnvironmentProblem, ShimError
from shim.lab import owners
from shim.lab.owners import process

__all__ = ["add_commands", "testbed_namespaces"]


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


def cmd_up(args: argparse.Namespace) -> int:
    from shim.lab.netns import Topology, load_topology
    from shim.lab.testbed import NS_PREFIX

    require_root("the testbed builds network namespaces")
    spec = load_topology(args.name)
    prefix = f"{NS_PREFIX}{spec.name}-"
    if any(ns.startswith(prefix) for ns in testbed_namespaces()):
        raise ShimError(f"topology {spec.name} is already up: run `icmp6-shim testbed down "
                        f"{spec.name}` first")
    # `up` exits at once: the namespaces belong to whoever ran it (a shell, a test) while
    # that lives, and to anyone once it has gone (see cmd_down).
    topo = Topology(spec, prefix=prefix, owner=process(os.getppid())).up()
    print(f"up: {spec.name}: {spec.description}")
    for node in spec.nodes:
        print(f"  {node.name}: ip netns exec {topo.ns(node.name)} ...")
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    from shim.lab.testbed import NS_PREFIX

    require_root("the testbed builds network namespaces")
    prefix = f"{NS_PREFIX}{args.name}-" if args.name else NS_PREFIX
    gone, kept = [], []
    for ns in (ns for ns in testbed_namespaces() if ns.startswith(prefix)):
        why = _not_ours(ns)
        if why is None:
            gone.append(ns)
        else:
            kept.append(ns)
            print(f"left alone: {ns}: {why}")
    for ns in gone:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)
        owners.forget(ns)
    left = [ns for ns in testbed_namespaces() if ns in gone]
    if gone:
        print("removed: " + ", ".join(gone))
    elif not kept:
        print("nothing of the testbed was up")
    if left:
        raise EnvironmentProblem(f"could not remove: {', '.join(left)}")
    return 0


def _not_ours(ns: str) -> str | None:
    """Why `testbed down`, run from here, must leave namespace `ns`; None to remove it.

    Ours: the testbed recorded making it and its owner is gone, or is this command or the
    process that ran it (the shell or test that ran `testbed up`).
    """
    owner = owners.owner_of(ns)
    if owner is None:
        return (f"no owner record in {owners.OWNER_DIR}: not made by this testbed "
                f"(remove it with `ip netns del {ns}` if you know it is yours)")
    if owner.alive() and owner not in (process(os.getpid()), process(os.getppid())):
        return f"in use by its owner, pid {owner.pid}, still running"
    return None


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


def cmd_demo(args: argparse.Namespace) -> int:
    from shim.lab.demo import run_demo

    cfg = args.config or ("config" if Path("config").is_dir() else None)
    return run_demo(Path(cfg) if cfg else None)


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
    sp = add("demo", cmd_demo, "build a 3-node testbed, run the shim on the gateway, show verdicts")
    sp.add_argument("--config")
