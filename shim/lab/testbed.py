# SPDX-License-Identifier: MIT
"""Scenario engine of `icmp6-shim testbed run`: experiments as data files.

A scenario (shim/lab/data/scenarios/NAME.toml, schema in docs/testbed.md) names a
topology, xfrm policies (and ESP SAs) per node, the nodes the shim runs on, the
nodes a strongSwan charon runs on, two or more runs (e.g. "without" the shim,
"with" it on its defaults) and steps. Every run builds the topology afresh,
performs the steps, compares each observation with what the scenario expects
for that run, and removes everything it made (try/finally). Loops are bounded
in count and time. A scenario with SAs (or IKE) needs a kernel with ESP; on
one without, it stops before building anything, in one line.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
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
from shim.lab.radvd import Radvd
from shim.lab.runner import ShimProcess, time_scale
from shim.lab.steps import POLLED, STEPS, RunContext
from shim.lab.strongswan import Charon, esp_unavailable, make_ca, make_psk

__all__ = ["NS_PREFIX", "Run", "Scenario", "Step", "list_scenarios", "load_scenario", "run_scenario"]

NS_PREFIX = "i6tb-"
_KEYS = {"name", "description", "topology", "capture", "shim", "xfrm", "xfrm_state", "swanctl",
         "radvd", "runs", "step"}
_KEY_REF = re.compile(r"\{key:([A-Za-z0-9_-]+)\}")  # a per-run random 20-octet key (AES-GCM)
# charon log lines shown in a run's output: what IKE did, and why it failed.
_IKE_EVENTS = re.compile(r"^(?!.*\[(?:ENC|NET)\]).*(?:acquire|initiating|established|retransmit|"
                         r"giving up|failed|installed|unable|error|NO_PROPOSAL|authentication)",
                         re.IGNORECASE)
_MAX_RUNS, _MAX_STEPS = 4, 64


@dataclass(frozen=True, slots=True, kw_only=True)
class Run:
    name: str
    shim: bool
    config: str          # the run's icmp6-shim.toml text ("" = built-in defaults)
    export_xfrm: bool    # apply `export xfrm` of that config on the shim's nodes
    swanctl: tuple[str, ...] = ()  # [swanctl.extra] fragments added to every charon's config


@dataclass(frozen=True, slots=True, kw_only=True)
class Swanctl:
    """strongSwan in a scenario: one charon per node, its swanctl.conf, how peers authenticate."""

    nodes: tuple[str, ...]
    conf: tuple[tuple[str, str], ...]                     # (node, swanctl.conf text)
    extra: tuple[tuple[str, tuple[tuple[str, str], ...]], ...]  # (name, ((node, text), ...))
    auth: str                                             # psk | pubkey
    bits: int                                             # RSA key size for pubkey


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
    states: tuple[tuple[str, tuple[str, ...]], ...] = ()  # (node, `ip xfrm state add` args)
    swanctl: Swanctl | None = None
    radvd: tuple[str, str] | None = None             # (node, radvd.conf text)

    @property
    def needs_esp(self) -> bool:
        """SAs need the kernel's ESP transform: real ones here, or charon's."""
        return bool(self.states) or self.swanctl is not None


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
    state_sets: list[tuple[str, tuple[str, ...]]] = []
    for i, item in enumerate(doc.get("xfrm_state", [])):
        w = f"{where}: [[xfrm_state]] #{i + 1}"
        if not isinstance(item, dict) or set(item) - {"nodes", "states"}:
            raise ConfigError(f"{w}: keys are nodes, states")
        sts = _strings(item.get("states", []), f"{w} states")
        try:
            [shlex.split(st) for st in sts]
        except ValueError as exc:
            raise ConfigError(f"{w} states: {exc}") from None
        for node in _strings(item.get("nodes", []), f"{w} nodes"):
            state_sets.append((node, sts))
    swanctl = _swanctl(doc, where) if "swanctl" in doc else None
    radvd = None
    if "radvd" in doc:
        spec = _table(doc, "radvd", where)
        if set(spec) != {"node", "conf"} or not all(isinstance(v, str) and v for v in spec.values()):
            raise ConfigError(f"{where}: [radvd] needs node and conf (radvd.conf text)")
        radvd = (str(spec["node"]), str(spec["conf"]))
    runs = []
    for rname, spec in _table(doc, "runs", where).items():
        w = f"{where}: [runs.{rname}]"
        if not isinstance(spec, dict) or set(spec) - {"shim", "config", "export_xfrm", "swanctl"}:
            raise ConfigError(f"{w}: keys are shim, config, export_xfrm, swanctl")
        on = spec.get("shim", False) is True
        extra = _strings(spec["swanctl"], f"{w} swanctl") if spec.get("swanctl") else ()
        known = {name for name, _ in swanctl.extra} if swanctl else set()
        if set(extra) - known:
            raise ConfigError(f"{w}: swanctl names {', '.join(sorted(set(extra) - known))}, not in "
                              f"[swanctl.extra] ({', '.join(sorted(known)) or 'none'})")
        runs.append(Run(name=rname, shim=on, config=str(spec.get("config", "")),
                        export_xfrm=spec.get("export_xfrm", on) is True, swanctl=extra))
    if any(r.shim for r in runs) and not shim_nodes:
        raise ConfigError(f"{where}: a run has shim = true but [shim] nodes is empty")
    if not 1 <= len(runs) <= _MAX_RUNS:
        raise ConfigError(f"{where}: between 1 and {_MAX_RUNS} [runs.NAME] tables are needed")
    steps = [_step(s, f"{where}: [[step]] #{i + 1}", {r.name for r in runs})
             for i, s in enumerate(doc.get("step", []))]
    if not 1 <= len(steps) <= _MAX_STEPS:
        raise ConfigError(f"{where}: between 1 and {_MAX_STEPS} [[step]] tables are needed")
    used = set(shim_nodes if any(r.shim for r in runs) else ()) | {n for n, _ in xfrm_sets}
    used |= {n for n, _ in state_sets} | set(swanctl.nodes if swanctl else ())
    used |= {radvd[0]} if radvd else set()
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
                    capture=str(capture) if capture is not None else None,
                    states=tuple(state_sets), swanctl=swanctl, radvd=radvd)


def _per_node(value: object, nodes: tuple[str, ...], where: str) -> tuple[tuple[str, str], ...]:
    """A swanctl.conf text for every node: one string for all, or a table node -> string."""
    if isinstance(value, str):
        return tuple((n, value) for n in nodes)
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise ConfigError(f"{where}: a string, or a table node = string")
    if set(value) - set(nodes):
        raise ConfigError(f"{where}: {', '.join(sorted(set(value) - set(nodes)))} not in "
                          "[swanctl] nodes")
    return tuple((n, str(value.get(n, ""))) for n in nodes)


def _swanctl(doc: dict[str, Any], where: str) -> Swanctl:
    w = f"{where}: [swanctl]"
    spec = _table(doc, "swanctl", where)
    if set(spec) - {"nodes", "conf", "extra", "auth", "bits"}:
        raise ConfigError(f"{w}: keys are nodes, conf, extra, auth, bits")
    nodes = _strings(spec.get("nodes", []), f"{w} nodes")
    auth = spec.get("auth", "psk")
    if auth not in ("psk", "pubkey"):
        raise ConfigError(f"{w}: auth must be psk or pubkey, not {auth!r}")
    bits = spec.get("bits", 2048)
    if not isinstance(bits, int) or bits not in (2048, 3072, 4096):
        raise ConfigError(f"{w}: bits must be 2048, 3072 or 4096")
    conf = _per_node(spec.get("conf", ""), nodes, f"{w} conf")
    if not all(text.strip() for _, text in conf):
        raise ConfigError(f"{w} conf: every node of [swanctl] nodes needs a swanctl.conf")
    extra = spec.get("extra", {})
    if not isinstance(extra, dict):
        raise ConfigError(f"{w} extra: a table name = swanctl.conf text (or node = text)")
    fragments = tuple((k, _per_node(v, nodes, f"{w} extra.{k}")) for k, v in extra.items())
    return Swanctl(nodes=nodes, conf=conf, auth=str(auth), bits=bits, extra=fragments)


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
    deadline = time.monotonic() + 5 * time_scale()
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


def _charons(sc: Scenario, run: Run, topo: Topology, base: Path) -> dict[str, Charon]:
    """The run's charons, configured (not started): per-run PSK or certificates."""
    spec = sc.swanctl
    if spec is None:
        return {}
    psk = make_psk() if spec.auth == "psk" else None
    ca = base / "pki" if spec.auth == "pubkey" else None
    if ca is not None:
        make_ca(ca, spec.nodes, bits=spec.bits)
    extra = dict(spec.extra)
    made = {}
    for node, text in spec.conf:
        conf = text + "".join("\n" + dict(extra[name])[node] for name in run.swanctl)
        made[node] = Charon(netns=topo.ns(node), workdir=base / f"charon-{node}",
                            swanctl_conf=conf, psk=psk, ca=ca, node=node)
    return made


def _add_states(sc: Scenario, topo: Topology) -> None:
    """`ip xfrm state add` per node; {key:NAME} is one fresh random key per run and NAME."""
    keys: dict[str, str] = {}

    def key(m: re.Match[str]) -> str:
        return keys.setdefault(m[1], "0x" + os.urandom(20).hex())

    for node, states in sc.states:
        for st in states:
            argv = shlex.split(_KEY_REF.sub(key, st))
            proc = topo.run(node, "ip", "xfrm", "state", "add", *argv)
            if proc.returncode != 0:
                raise EnvironmentProblem(f"scenario {sc.name}: node {node}: ip xfrm state add "
                                         f"{_KEY_REF.sub('KEY', st)}: {proc.stderr.strip()}")


def _report_charon(node: str, charon: Charon, run: str, out: Callable[[str], None],
                   keep: str | None) -> None:
    lines = charon.log_lines()
    events = [line for line in lines if _IKE_EVENTS.search(line)]
    out(f"  [{run}] charon on {node}: {len(lines)} log lines; IKE events:")
    for line in events[:14]:
        out(f"  [{run}]   {node} | {line.strip()}")
    if len(events) > 14:
        out(f"  [{run}]   {node} | ... {len(events) - 14} more")
    if keep:
        shutil.copy(charon.log_path, keep)
        out(f"  [{run}] charon log of {node} written to {keep}")


def run_once(sc: Scenario, run: Run, *, out: Callable[[str], None],
             capture: str | None = None) -> list[tuple[Step, str, bool | None]]:
    """One run of a scenario: (step, observation, as expected or None) for each step."""
    topo = Topology(load_topology(sc.topology), prefix=f"{NS_PREFIX}s{os.getpid() % 10000}-",
                    owner=process(os.getpid()))
    shims: list[ShimProcess] = []
    charons: dict[str, Charon] = {}
    radvd: Radvd | None = None
    tmp = tempfile.TemporaryDirectory(prefix="icmp6-tb-")
    cap: subprocess.Popen[bytes] | None = None
    observed: list[tuple[Step, str, bool | None]] = []
    # A `wire` step reads the run's own capture: one is made even without --capture.
    pcap = capture or (str(Path(tmp.name, "run.pcap"))
                       if sc.capture and any(s.kind == "wire" for s in sc.steps) else None)
    try:
        topo.up()
        for node, policies in sc.xfrm:
            for pol in policies:
                proc = topo.run(node, "ip", "xfrm", "policy", "add", *shlex.split(pol))
                if proc.returncode != 0:
                    raise ConfigError(f"scenario {sc.name}: node {node}: ip xfrm policy add {pol}: "
                                      f"{proc.stderr.strip()}")
        _add_states(sc, topo)
        if pcap and sc.capture:
            cap = _start_capture(topo, sc.capture, pcap)
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
        if sc.radvd is not None:
            radvd = Radvd(netns=topo.ns(sc.radvd[0]), workdir=Path(tmp.name, "radvd"),
                          conf=sc.radvd[1])
            radvd.start()
            out(f"  [{run.name}] radvd ready on {sc.radvd[0]}")
        charons = _charons(sc, run, topo, Path(tmp.name))
        for node, charon in charons.items():
            charon.start()
            extra = f" + {', '.join(run.swanctl)}" if run.swanctl else ""
            out(f"  [{run.name}] charon ready on {node} (swanctl.conf: scenario's{extra}; "
                f"auth {sc.swanctl.auth if sc.swanctl else ''})")
        ctx = RunContext(topo, charons=charons, capture_where=sc.capture or "",
                         capture=Path(pcap) if cap is not None and pcap else None)
        for step in sc.steps:
            if ctx.t0 is None:
                ctx.t0 = time.monotonic()
            observed.append((step, *_do_step(ctx, step, run.name, out)))
        for node, shim in zip(sc.shim_nodes, shims):
            rules = Counter(str(e.get("rule")) for e in shim.events if e.get("event") == "verdict")
            seen = ", ".join(f"{r} x{n}" for r, n in sorted(rules.items())) or "none"
            out(f"  [{run.name}] shim on {node} judged: {seen}")
        if radvd is not None and sc.radvd is not None:
            said = [line for line in radvd.log_lines() if not re.search(r"polling|timer_handler", line)]
            out(f"  [{run.name}] radvd on {sc.radvd[0]} said: " + " / ".join(
                line.split(": ", 1)[-1] for line in said[-6:]))
        for node, charon in charons.items():
            _report_charon(node, charon, run.name, out,
                           _capture_path(capture, f"charon-{node}").replace(".pcap", ".log")
                           if capture else None)
    finally:
        # Each step on its own: one failing must not keep the namespaces from going.
        daemons: list[Charon | Radvd] = [*charons.values(), *([radvd] if radvd else [])]
        for daemon in daemons:
            try:
                daemon.stop()
            except Exception:  # noqa: BLE001, S110 - cleanup goes on
                pass
        try:
            if cap is not None:
                _stop_capture(cap)
                if capture:
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


def _do_step(ctx: RunContext, step: Step, run: str,
             out: Callable[[str], None]) -> tuple[str, bool | None]:
    fn = STEPS[step.kind][2]
    wanted = step.expect.get(run)
    deadline = time.monotonic() + step.within
    label, observed = fn(ctx, step.args, step.within)
    while wanted and observed not in wanted and time.monotonic() < deadline and step.kind in POLLED:
        time.sleep(0.2)
        label, observed = fn(ctx, step.args, step.within)
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
    if sc.needs_esp and (why := esp_unavailable()) is not None:
        raise EnvironmentProblem(f"scenario {sc.name} needs ESP SAs: {why}")
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
