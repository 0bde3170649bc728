# SPDX-License-Identifier: MIT
"""Shared fixtures: privilege gating, netns topologies, config dirs, the shim as a process."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from shim.adapters.nfnetlink import NFQUEUE_PROC
from shim.lab.netns import Topology, load_topology
from shim.lab.runner import ShimProcess

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


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


@pytest.fixture
def config_dir(tmp_path: Path, engine: str) -> Callable[[str], Path]:
    """Write a config directory whose main file holds `text`; returns its path.

    Unless `text` has its own [engine] section, `[engine] kind` is the `engine` fixture's.
    """

    def make(text: str, dropins: dict[str, str] | None = None) -> Path:
        d = tmp_path / f"cfg{len(list(tmp_path.iterdir()))}"
        (d / "rules.d").mkdir(parents=True)
        if "[engine]" not in text:
            text += f'\n[engine]\nkind = "{engine}"\n'
        (d / "icmp6-shim.toml").write_text(text)
        for name, body in (dropins or {}).items():
            (d / "rules.d" / name).write_text(body)
        return d

    return make


@pytest.fixture
def shim_on(request: pytest.FixtureRequest) -> Iterator[Callable[..., ShimProcess]]:
    """Start the shim in a namespace and wait for READY; always stopped afterwards."""
    started: list[ShimProcess] = []

    def start(netns: str, config: Path | None, **kw: object) -> ShimProcess:
        proc = ShimProcess(config, netns=netns, **kw)  # type: ignore[arg-type]
        started.append(proc)
        proc.start()
        proc.wait_ready()
        return proc

    yield start
    for proc in started:
        proc.close()
