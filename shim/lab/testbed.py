# SPDX-License-Identifier: MIT
"""Scenario engine of `icmp6-shim testbed run`: experiments as data files.

A scenario (shim/lab/data/scenarios/NAME.toml, schema in docs/testbed.md) names a
topology, xfrm policies per node, the nodes the shim runs on, two or more
runs (e.g. "without" the shim, "with" it on its defaults) and steps. Every
run builds the topology afresh, performs the steps, compares each
observation with what the scenario expects for that run, and removes
everything it made (try/finally). Loops are bounded in count and time.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import tempfile
import time
import tomllib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from shim.adapters.xfrm import apply as apply_xfrm
from shim.core.xfrm import derive_policies
from shim.config.loader import MAIN_FILE, load_config
from shim.core.errors import ConfigError, EnvironmentProblem
from shim.lab.netns import Topology, load_topology
from shim.lab.owners import process
from shim.core.rules import build_table
from shim.lab.runner import ShimProcess
from shim.lab.steps import POLLED, STEPS

__all__ = ["NS_PREFIX", "Run", "Scenario", "Step", "list_scenarios", "load_scenario", "run_scenario"]

NS_PREFIX = "i6tb-"
_KEYS = {"name", "description", "topology", "capture", "shim", "xfrm", "runs", "step"}
_MAX_RUNS, _MAX_STEPS = 4, 64


@dataclass(frozen=True, slots=True, kw_only=True)
class Run:
    name: str
    shim: bool
    config: str          # the run's icmp6-shim.toml text ("" = built-in defaults)
    export_xfrm: bool    # apply `export xfrm` of that config on the shim's nodes


@dataclass(frozen=True, slots=True, kw_only=True)
class Step:
    kind: str
    args: dict[str, Any]
    expect: dict[str, tuple[str, ...]]  # run name -> acceptable observations
    within: float                       # checks poll (bounded) until a match or this time


@dataclass(frozen=True, slots=True, kw_only=True)
class Scenario:
    name: str
    description: str
    topology: str
    shim_nodes: tuple[str, ...]
    xfrm: tuple[tuple[str, tuple[str, ...]], ...]  # (node, `ip xfrm policy add` argument strings)
    runs: tuple[Run, ...]
    steps: tuple[Step, ...]
    capture: str | None                             # "node:ifname" tcpdump listens on


def list_scenarios() -> list[str]:
    folder = resources.files("shim.lab").joinpath("data/scenarios")
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".toml"))


def _table(doc: dict[str, Any], key: str, where: str) -> dict[str, Any]:
    value = doc.get(key, {})
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: [{key}] must be a table")
    return value


def _strings(value: object, where: str) -> tuple[str, ...]:
    items = value if isinstance(value, list) else [value]
    if not items or not all(isinstance(i, str) and i for i in items):
        raise ConfigError(f"{where}: expected a string or a list of strings, got {value!r}")
    return tuple(items)


def load_scenario(name: str) -> Scenario:
    """Read a scenario by name (shim/lab/data/scenarios) or from a .toml path.

    Raises:
        ConfigError: unknown name, bad TOML or a schema error (named by key).
    """
    try:
        if name.endswith(".toml"):
            text, where = Path(name).read_text(), name
        else:
            where = f"scenario {name}"
            text = resources.files("shim.lab").joinpath(f"data/scenarios/{name}.toml").read_text()
        doc = tomllib.loads(text)
    except (FileNotFoundError, OSError):
        raise ConfigError(f"unknown scenario {name!r} (known: {', '.join(list_scenarios())})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where}: invalid TOML: {exc}") from None
    return _parse(doc, where, name)


def _parse(doc: dict[str, Any], where: str, name: str) -> Scenario:
    for key in doc:
        if key not in _KEYS:
            raise ConfigError(f"{where}: unknown key {key!r} (known: {', '.join(sorted(_KEYS))})")
    topo = load_topology(str(doc.get("topology", "")))
    nodes = {n.name for n in topo.nodes}
    shim = _table(doc, "shim", where)
    if set(shim) - {"nodes"}:
        raise ConfigError(f"{where}: [shim] has one key, nodes")
    shim_nodes = _strings(shim["nodes"], f"{where}: [shim] nodes") if shim.get("nodes") else ()
    xfrm_sets: list[tuple[str, tuple[str, ...]]] = []
    for i, item in enumerate(doc.get("xfrm", [])):
        w = f"{where}: [[xfrm]] #{i + 1}"
        dirs = _strings(item.get("dirs", [""]) or [""], f"{w} dirs") if "dirs" in item else ("",)
        pols = _strings(item.get("policies", []), f"{w} policies")
        try:
            [shlex.split(p) for p in pols]
        except ValueError as exc:
            raise ConfigError(f"{w} policies: {exc}") from None
        for node in _strings(item.get("nodes", []), f"{w} nodes"):
            xfrm_sets.append((node, tuple(f"dir {d} {p}" if d else p for p in pols for d in dirs)))
    runs = []
    for rname, spec in _table(doc, "runs", where).items():
        w = f"{where}: [runs.{rname}]"
        if not isinstance(spec, dict) or set(spec) - {"shim", "config", "export_xfrm"}:
            raise ConfigError(f"{w}: keys are shim, config, export_xfrm")
        on = spec.get("shim", False) is True
        runs.append(Run(name=rname, shim=on, config=str(spec.get("config", "")),
                        export_xfrm=spec.get("export_xfrm", on) is True))
    if any(r.shim for r in runs) and not shim_nodes:
        raise ConfigError(f"{where}: a run has shim = true but [shim] nodes is empty")
    if not 1 <= len(runs) <= _MAX_RUNS:
        raise ConfigError(f"{where}: between 1 and {_MAX_RUNS} [runs.NAME] tables are needed")
    steps = [_step(s, f"{where}: [[step]] #{i + 1}", {r.name for r in runs})
             for i, s in enumerate(doc.get("step", []))]
    if not 1 <= len(steps) <= _MAX_STEPS:
        raise ConfigError(f"{where}: between 1 and {_MAX_STEPS} [[step]] tables are needed")
    used = set(shim_nodes if any(r.shim for r in runs) else ()) | {n for n, _ in xfrm_sets}
    used |= {str(s.args[k]) for s in steps for k in ("node", "from", "to") if k in s.args}
    capture = doc.get("capture")
    if capture is not None:
        used.add(str(capture).split(":")[0])
    if used - nodes:
        raise ConfigError(f"{where}: node(s) {', '.join(sorted(used - nodes))} are not in "
                          f"topology {topo.name} ({', '.join(sorted(nodes))})")
    for r in runs:
        _check_config(r, where)
    return Scenario(name=str(doc.get("name", name)), description=str(doc.get("description", "")),
                    topology=topo.name, shim_nodes=shim_nodes, xfrm=tuple(xfrm_sets),
                    runs=tuple(runs), steps=tuple(steps),
                    capture=str(capture) if capture is not None else None)


def _step(item: object, where: str, runs: set[str]) -> Step:
    if not isinstance(item, dict) or item.get("do") not in STEPS:
        raise ConfigError(f"{where}: 'do' must be one of {', '.join(sorted(STEPS))}")
    kind, (required, optional, _fn) = str(item["do"]), STEPS[str(item["do"])]
    args = {k: v for k, v in item.items() if k not in ("do", "expect", "within")}
    missing, unknown = set(required) - set(args), set(args) - set(required) - set(optional)
    if missing or unknown:
        raise ConfigError(f"{where}: do={kind}: missing {sorted(missing)} unknown {sorted(unknown)}"
                          f" (keys: {', '.join(required + optional)})")
    for key in ("seconds", "port", "size", "count"):
        if key in args and (not isinstance(args[key], (int, float)) or not 0 <= args[key] <= 65535):
            raise ConfigError(f"{where}: {key} must be a number 0..65535, got {args[key]!r}")
    expect = item.get("expect", {})
    if not isinstance(expect, dict) or set(expect) - runs:
        raise ConfigError(f"{where}: expect must map run names ({', '.join(sorted(runs))}) "
                          "to a value or list of values")
    within = item.get("within", 3.0)
    if not isinstance(within, (int, float)) or not 0 <= within <= 30:
        raise ConfigError(f"{where}: within must be 0..30 seconds")
    return Step(kind=kind, args=args, within=float(within),
                expect={k: _strings(v, f"{where}: expect.{k}") for k, v in expect.items()})


def _check_config(run: Run, where: str) -> None:
    with tempfile.TemporaryDirectory(prefix="icmp6-tb-check-") as d:
        Path(d, MAIN_FILE).write_text(run.config)
        try:
            load_config(Path(d))
        except ConfigError as exc:
            raise ConfigError(f"{where}: [runs.{run.name}] config: "
                              f"{str(exc).replace(str(Path(d, MAIN_FILE)), 'inline')}") from None


def _capture_path(base: str, run: str) -> str:
    p = Path(base)
    return str(p.with_name(f"{p.stem}-{run}{p.suffix or '.pcap'}"))


def _start_capture(topo: Topology, where: str, path: str) -> subprocess.Popen[bytes]:
    node, _, ifname = where.partition(":")
    proc = topo.popen(node, "tcpdump", "-U", "--immediate-mode", "-n", "-i", ifname or "any", "-w", path, "ip6",
                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    os.set_blocking(proc.stderr.fileno(), False)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and proc.poll() is None:  # bounded: wait for "listening"
        if b"listening" in (proc.stderr.read() or b""):
            return proc
        time.sleep(0.05)
    proc.kill()
    raise EnvironmentProblem(f"tcpdump did not start in {node} (is tcpdump installed?)")


def _stop_capture(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def run_once(sc: Scenario, run: Run, *, out: Callable[[str], None],
             capture: str | None = None) -> list[tuple[Step, str, bool | None]]:
    """One run of a scenario: (step, observation, as expected or None) for each step."""
    topo = Topology(load_topology(sc.topology), prefix=f"{NS_PREFIX}s{os.getpid() % 10000}-",
                    owner=process(os.getpid()))
    shims: list[ShimProcess] = []
    tmp = tempfile.TemporaryDirectory(prefix="icmp6-tb-")
    cap: subprocess.Popen[bytes] | None = None
    observed: list[tuple[Step, str, bool | None]] = []
    try:
        topo.up()
        for node, policies in sc.xfrm:
            for pol in policies:
                proc = topo.run(node, "ip", "xfrm", "policy", "add", *shlex.split(pol))
                if proc.returncode != 0:
                    raise ConfigError(f"scenario {sc.name}: node {node}: ip xfrm policy add {pol}: "
                                      f"{proc.stderr.strip()}")
        if capture and sc.capture:
            cap = _start_capture(topo, sc.capture, capture)
        if run.shim:
            Path(tmp.name, MAIN_FILE).write_text(run.config)
            config = load_config(Path(tmp.name))
            for node in sc.shim_nodes:
                shim = ShimProcess(Path(tmp.name), netns=topo.ns(node))
                shims.append(shim)
                shim.start()
                shim.wait_ready()
                if run.export_xfrm:
                    exported, _ = derive_policies(build_table(config.settings, config.rules))
                    added = apply_xfrm(exported, topo.ns(node))
                    out(f"  [{run.name}] shim ready on {node}; exported xfrm policies: {len(added)}")
        for step in sc.steps:
            observed.append((step, *_do_step(topo, step, run.name, out)))
        for node, shim in zip(sc.shim_nodes, shims):
            rules = Counter(str(e.get("rule")) for e in shim.events if e.get("event") == "verdict")
            seen = ", ".join(f"{r} x{n}" for r, n in sorted(rules.items())) or "none"
            out(f"  [{run.name}] shim on {node} judged: {seen}")
    finally:
        # Each step on its own: one failing must not keep the namespaces from going.
        try:
            if cap is not None:
                _stop_capture(cap)
                out(f"  [{run.name}] capture written to {capture}")
        except Exception:  # noqa: BLE001, S110 - cleanup goes on
            pass
        for shim in shims:
            try:
                shim.close()
            except Exception:  # noqa: BLE001, S110
                pass
        try:
            topo.down()  # deleting the namespaces takes their xfrm policies with them
        finally:
            tmp.cleanup()
    return observed


def _do_step(topo: Topology, step: Step, run: str,
             out: Callable[[str], None]) -> tuple[str, bool | None]:
    fn = STEPS[step.kind][2]
    wanted = step.expect.get(run)
    deadline = time.monotonic() + step.within
    label, observed = fn(topo, step.args, step.within)
    while wanted and observed not in wanted and time.monotonic() < deadline and step.kind in POLLED:
        time.sleep(0.2)
        label, observed = fn(topo, step.args, step.within)
    if wanted is None:
        out(f"  [{run}] {label}: {observed}")
        return observed, None
    ok = observed in wanted
    out(f"  [{run}] {label}: {observed} (expected {' or '.join(wanted)}) "
        f"{'ok' if ok else 'UNEXPECTED'}")
    return observed, ok


def run_scenario(sc: Scenario, *, only: str | None = None, capture: str | None = None,
                 out: Callable[[str], None] = print) -> int:
    """Run every run of a scenario (or `only` one); returns the number of unmet expectations."""
    if os.geteuid() != 0:
        raise EnvironmentProblem("the testbed builds network namespaces: run it as root")
    runs = [r for r in sc.runs if only is None or r.name == only]
    if not runs:
        raise ConfigError(f"scenario {sc.name} has no run {only!r} "
                          f"(runs: {', '.join(r.name for r in sc.runs)})")
    out(f"scenario {sc.name}: {sc.description}")
    failures = 0
    for run in runs:
        where = "shim on " + ", ".join(sc.shim_nodes) if run.shim else "no shim"
        out(f"run {run.name!r} ({where}, topology {sc.topology}):")
        seen = run_once(sc, run, out=out,
                        capture=_capture_path(capture, run.name) if capture else None)
        failures += sum(1 for _s, _o, ok in seen if ok is False)
    out(f"scenario {sc.name}: {'as expected' if failures == 0 else f'{failures} unexpected'}")
    return failures
