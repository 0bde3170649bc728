# SPDX-License-Identifier: MIT
"""Shared fixtures: privilege gating, netns topologies, config dirs, the shim as a process."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from shim.adapters.nfnetlink import NFQUEUE_PROC
from shim.lab.netns import Topology, load_topology
from shim.lab.runner import ShimProcess, time_scale

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
# Set by vm/guest/lane.sh: the stock-kernel lane, where every backend must run (no skips).
IN_VM_LANE = os.environ.get("ICMP6_SHIM_VM_LANE", "") == "1"
VM_LANE = "the stock-kernel VM lane (vm/run.sh, `make test-vm`)"


def netns_unavailable() -> str | None:
    """Why network-namespace tests cannot run here, or None."""
    if os.geteuid() != 0:
        return "needs root"
    for tool in ("ip", "nft", "ip6tables"):
        if shutil.which(tool) is None:
            return f"needs {tool}"
    if not nfnetlink_queue_available():
        return "needs nfnetlink_queue in the kernel (built in or loadable)"
    return None


def nfnetlink_queue_available() -> bool:
    """True when the kernel has nfnetlink_queue, loaded or loadable.

    NFQUEUE_PROC exists only while the module is loaded; the shim loads it on demand (its
    first bind does, nfnetlink-subsys-3), so a stock kernel that has not bound a queue yet
    must not count as lacking it: load it as the product would, then look again.
    """
    if os.path.exists(NFQUEUE_PROC):
        return True
    if shutil.which("modprobe") is not None:
        subprocess.run(["modprobe", "-q", "nfnetlink_queue"], capture_output=True, timeout=30,
                       check=False)
    return os.path.exists(NFQUEUE_PROC)


def pytest_runtest_setup(item: pytest.Item) -> None:
    """netns tests skip on a developer machine that cannot run them; under CI they fail."""
    if "netns" not in item.keywords:
        return
    why = netns_unavailable()
    if why is None:
        return
    if IN_CI:
        pytest.fail(f"CI=true: this netns test must run but cannot: {why}", pytrace=False)
    pytest.skip(why)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test that takes the `backend` fixture is a backend case (`-m backend`)."""
    for item in items:
        if "backend" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.backend)
            callspec = getattr(item, "callspec", None)
            if callspec is not None and "backend" in callspec.params:
                item.user_properties.append(("backend", str(callspec.params["backend"])))


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """With ICMP6_SHIM_BACKEND_REPORT=FILE, one line per backend case: outcome, backend, id.

    vm/guest/lane.sh counts them: the lane fails unless cases of every backend passed, which
    is what lets a host whose kernel refuses one skip it under CI=true.
    """
    path = os.environ.get("ICMP6_SHIM_BACKEND_REPORT")
    backend = dict(report.user_properties).get("backend")
    if not path or backend is None:
        return
    if report.when == "call" or report.outcome != "passed":  # a setup skip is the outcome
        with open(path, "a", encoding="utf-8") as f:
            f.write(f"{report.outcome} {backend} {report.nodeid}\n")


@pytest.fixture(scope="module")
def three_node() -> Iterator[Topology]:
    """host a -- gateway g -- host b, torn down even when a test fails."""
    topo = Topology(load_topology("three-node"), prefix=f"i6t{os.getpid() % 10000}-")
    topo.up()
    try:
        yield topo
    finally:
        topo.down()


ENGINES = ("netfilterqueue", "batched")


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> str:
    """The NFQUEUE engine a test runs with: every config_dir test runs once per engine."""
    return str(request.param)


# The diversion backends a netns test that lays a diversion runs with, as the engines are.
BACKENDS = ("nft", "iptables")

# What each backend asks of the kernel, tried in a namespace of the probe's own: the nft
# queue expression (a kernel without nft_queue refuses the table) and the xtables NFQUEUE
# target through ip6tables (iptables-nft on Debian). Asked of the kernel directly, not
# through the product's own probe, so `auto`'s choice can be checked against it.
_NFT_PROBE = ("table inet i6probe {\n chain c {\n  type filter hook input priority 0;\n"
              "  meta l4proto ipv6-icmp queue num 0 bypass\n }\n}\n")
_IPT_PROBE = ("ip6tables", "-t", "mangle", "-A", "INPUT", "-p", "ipv6-icmp",
              "-j", "NFQUEUE", "--queue-num", "0", "--queue-bypass")


@pytest.fixture(scope="session")
def kernel_backends() -> dict[str, str | None]:
    """Backend name -> None when this kernel takes its diversion, else the kernel's refusal."""
    why = netns_unavailable()
    if why is not None:
        return {name: why for name in BACKENDS}
    ns = f"i6tp{os.getpid() % 100000}"
    subprocess.run(["ip", "netns", "add", ns], check=True, capture_output=True, timeout=30)
    try:
        exe = ("ip", "netns", "exec", ns)
        nft = subprocess.run([*exe, "nft", "-f", "-"], input=_NFT_PROBE, text=True,
                             capture_output=True, timeout=30, check=False)
        ipt = subprocess.run([*exe, *_IPT_PROBE], text=True, capture_output=True, timeout=30,
                             check=False)
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30, check=False)

    def refusal(proc: subprocess.CompletedProcess[str]) -> str | None:
        if proc.returncode == 0:
            return None
        lines = proc.stderr.strip().splitlines()
        return lines[0] if lines else f"exit status {proc.returncode}"

    return {"nft": refusal(nft), "iptables": refusal(ipt)}


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, kernel_backends: dict[str, str | None]) -> str:
    """The diversion backend a test runs with; `config_dir` writes it into the config.

    A backend this kernel refuses skips here with the kernel's reason: the stock-kernel lane
    runs it, and there a refusal fails the test, and the lane fails unless backend cases of
    both backends passed (vm/guest/lane.sh), so under CI=true no case is silently absent.
    """
    name = str(request.param)
    why = kernel_backends[name]
    if why is not None:
        if IN_VM_LANE:
            pytest.fail(f"the stock-kernel lane must run the {name} backend: {why}", pytrace=False)
        pytest.skip(f"this kernel refuses the {name} backend's queue rule ({why}); "
                    f"{VM_LANE} runs this case")
    return name


def _with_backend(text: str, backend: str) -> str:
    """`text` with `[diversion] backend` set, unless it already chooses one."""
    if "backend =" in text:
        return text
    if "[diversion]" in text:
        return text.replace("[diversion]\n", f'[diversion]\nbackend = "{backend}"\n', 1)
    return text + f'\n[diversion]\nbackend = "{backend}"\n'


@pytest.fixture
def config_dir(request: pytest.FixtureRequest, tmp_path: Path, engine: str) -> Callable[[str], Path]:
    """Write a config directory whose main file holds `text`; returns its path.

    Unless `text` has its own [engine] section, `[engine] kind` is the `engine` fixture's.
    In a test that takes the `backend` fixture, `[diversion] backend` is that backend's
    (unless `text` chooses one); elsewhere the config's default (`auto`) stands.
    """
    backend = request.getfixturevalue("backend") if "backend" in request.fixturenames else None

    def make(text: str, dropins: dict[str, str] | None = None) -> Path:
        d = tmp_path / f"cfg{len(list(tmp_path.iterdir()))}"
        (d / "rules.d").mkdir(parents=True)
        if "[engine]" not in text:
            text += f'\n[engine]\nkind = "{engine}"\n'
        if backend is not None:
            text = _with_backend(text, backend)
        (d / "icmp6-shim.toml").write_text(text)
        for name, body in (dropins or {}).items():
            (d / "rules.d" / name).write_text(body)
        return d

    return make


def _chosen_backend(proc: ShimProcess, timeout: float = 5.0) -> str | None:
    """The backend of the shim's `backend_chosen` event (logged before READY; the reader
    thread may still be behind, so wait for it, bounded)."""
    deadline = time.monotonic() + timeout * time_scale()
    while time.monotonic() < deadline:
        ev = next((e for e in list(proc.events) if e.get("event") == "backend_chosen"), None)
        if ev is not None:
            return str(ev.get("backend"))
        time.sleep(0.05)
    return None


@pytest.fixture
def shim_on(request: pytest.FixtureRequest) -> Iterator[Callable[..., ShimProcess]]:
    """Start the shim in a namespace and wait for READY; always stopped afterwards."""
    started: list[ShimProcess] = []
    backend = request.getfixturevalue("backend") if "backend" in request.fixturenames else None

    def start(netns: str, config: Path | None, **kw: object) -> ShimProcess:
        proc = ShimProcess(config, netns=netns, **kw)  # type: ignore[arg-type]
        started.append(proc)
        proc.start()
        proc.wait_ready()
        if backend is not None:  # a backend case proves it ran with the backend it names
            chosen = _chosen_backend(proc)
            assert chosen == backend, f"asked for backend {backend}, the shim chose {chosen}"
        return proc

    yield start
    for proc in started:
        proc.close()
