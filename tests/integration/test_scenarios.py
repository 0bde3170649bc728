# SPDX-License-Identifier: MIT
"""The four testbed scenarios against a real kernel, with and without the shim.

Each test runs one scenario file run by run and asserts the kernel's own
outcome (neighbour cache state, ping result, route MTU, address configured,
datagram received), not only the engine's verdict on it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from shim.lab.testbed import NS_PREFIX
from tests.integration.scenarios import no_leftovers, observe

pytestmark = pytest.mark.netns

REPO = Path(__file__).resolve().parents[2]


class TestDeadlock:
    def test_without_shim_nd_fails_and_ike_is_lost(self) -> None:
        got, _ = observe("deadlock", "without")
        assert got["udp"] == ["lost"]
        assert got["neighbor"][0] in ("INCOMPLETE", "FAILED")
        assert got["ping"] == ["fail"]

    def test_with_shim_nd_resolves_ike_arrives_echo_still_protected(self) -> None:
        got, _ = observe("deadlock", "with")
        assert got["udp"] == ["received"]
        assert got["neighbor"][0] in ("REACHABLE", "STALE", "DELAY", "PROBE")
        assert got["ping"] == ["fail"]  # Echo MAY use IKE: still held to the IPsec policy


class TestPmtu:
    def test_without_shim_ptb_is_dropped(self) -> None:
        got, _ = observe("pmtu", "without")
        assert got["route_mtu"] == ["none"] and got["udp"] == ["lost"]

    def test_with_shim_ptb_lowers_the_path_mtu(self) -> None:
        got, _ = observe("pmtu", "with")
        assert got["route_mtu"] == ["1280"] and got["udp"] == ["received"]


class TestOverride:
    def test_defaults_keep_echo_under_ipsec(self) -> None:
        got, _ = observe("override", "default")
        assert got["udp"] == ["received"] and got["ping"] == ["fail"]

    def test_user_rule_lets_echo_bypass(self) -> None:
        got, _ = observe("override", "rule")
        assert got["ping"] == ["ok"]

    def test_without_shim_nothing_passes(self) -> None:
        got, _ = observe("override", "without")
        assert got["udp"] == ["lost"] and got["ping"] == ["fail"]


class TestRaGuard:
    def test_without_shim_the_disguised_rogue_ra_configures_an_address(self) -> None:
        got, _ = observe("ra-guard", "without")
        assert got["address"] == ["configured", "configured", "absent"]

    def test_with_shim_only_the_routers_ra_configures(self) -> None:
        got, _ = observe("ra-guard", "with")
        assert got["address"] == ["configured", "absent", "absent"]


def test_cli_run_exit_code_and_capture(tmp_path: Path) -> None:
    """`testbed run NAME --capture` exits 0 and leaves a capture `replay` can read."""
    cap = tmp_path / "dl.pcap"
    with subprocess.Popen([sys.executable, "-m", "shim", "testbed", "run", "deadlock", "--run",
                           "with", "--capture", str(cap)], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, cwd=REPO) as proc:
        try:
            stdout, stderr = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()  # SIGKILL: its namespaces stay, which no_leftovers then reports
            raise
    assert proc.returncode == 0, stdout + stderr
    assert "as expected" in stdout
    pcap = tmp_path / "dl-with.pcap"
    replay = subprocess.run([sys.executable, "-m", "shim", "replay", str(pcap)],
                            capture_output=True, text=True, timeout=60, cwd=REPO)
    assert replay.returncode == 0 and "nd-neighbor-solicit" in replay.stdout, replay.stderr
    no_leftovers(proc.pid)


def test_up_status_down() -> None:
    run = [sys.executable, "-m", "shim", "testbed"]
    subprocess.run([*run, "down", "two-hosts"], capture_output=True, timeout=60, cwd=REPO)
    try:
        up = subprocess.run([*run, "up", "two-hosts"], capture_output=True, text=True, timeout=60,
                            cwd=REPO)
        assert up.returncode == 0, up.stderr
        from shim.lab import owners  # `up` exits: the namespaces belong to who ran it, us

        assert owners.owner_of(f"{NS_PREFIX}two-hosts-a") == owners.process(os.getpid())
        status = subprocess.run([*run, "status"], capture_output=True, text=True, timeout=60,
                                cwd=REPO).stdout
        assert f"{NS_PREFIX}two-hosts-a" in status and "2001:db8:1::a/64" in status
        again = subprocess.run([*run, "up", "two-hosts"], capture_output=True, text=True,
                               timeout=60, cwd=REPO)
        assert again.returncode != 0 and again.stderr.count("\n") == 1
    finally:
        down = subprocess.run([*run, "down", "two-hosts"], capture_output=True, text=True,
                              timeout=60, cwd=REPO)
    assert down.returncode == 0
    names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert f"{NS_PREFIX}two-hosts-" not in names


def test_down_removes_only_what_the_testbed_made_and_nobody_runs() -> None:
    """`testbed down` (named or not) leaves a namespace without an owner record and one whose
    owner still runs and is not the caller; it removes one whose owner has gone, and the
    live owner's once that owner ends."""
    from shim.lab import owners

    run = [sys.executable, "-m", "shim", "testbed", "down"]
    tag = f"zz{os.getpid() % 10000}"
    foreign, busy, dead = (f"{NS_PREFIX}{tag}-{n}" for n in ("foreign", "busy", "dead"))
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        for ns in (foreign, busy, dead):
            subprocess.run(["ip", "netns", "add", ns], check=True, timeout=30)
        live = owners.process(sleeper.pid)
        assert live is not None
        owners.record(busy, live)
        owners.record(dead, owners.Owner(live.pid, live.start + 1))  # its pid, another process

        out = subprocess.run(run, capture_output=True, text=True, timeout=60, cwd=REPO)
        assert out.returncode == 0, out.stderr
        assert f"left alone: {foreign}: no owner record" in out.stdout
        assert f"left alone: {busy}: in use by its owner, pid {sleeper.pid}" in out.stdout
        names = _netns_names()
        assert foreign in names and busy in names and dead not in names, out.stdout
        assert owners.owner_of(dead) is None

        sleeper.kill()
        sleeper.wait(10)
        out = subprocess.run([*run, tag], capture_output=True, text=True, timeout=60, cwd=REPO)
        assert out.returncode == 0 and f"removed: {busy}" in out.stdout, out.stdout + out.stderr
        assert busy not in _netns_names() and foreign in _netns_names()
    finally:
        sleeper.kill()
        sleeper.wait(10)
        for ns in (foreign, busy, dead):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)
            owners.forget(ns)


def _netns_names() -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=30).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]
