# SPDX-License-Identifier: MIT
"""The four testbed scenarios against a real kernel, with and without the shim.

Each test runs one scenario file run by run and asserts the kernel's own
outcome (neighbour cache state, ping result, route MTU, address configured,
datagram received), not only the engine's verdict on it.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from shim.lab.testbed import NS_PREFIX, load_scenario, run_once

pytestmark = pytest.mark.netns

REPO = Path(__file__).resolve().parents[2]


def _observe(name: str, run: str) -> dict[str, list[str]]:
    """Run one run of a scenario; {step kind: [observations in order]}; all as expected."""
    sc = load_scenario(name)
    lines: list[str] = []
    seen = run_once(sc, next(r for r in sc.runs if r.name == run), out=lines.append)
    unexpected = [line for line in lines if line.endswith("UNEXPECTED")]
    assert not unexpected, "\n".join(lines)
    found: dict[str, list[str]] = {}
    for step, observed, _ok in seen:
        found.setdefault(step.kind, []).append(observed)
    return found


def _no_leftovers() -> None:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert not [line for line in out.splitlines() if line.startswith(f"{NS_PREFIX}s")]


class TestDeadlock:
    def test_without_shim_nd_fails_and_ike_is_lost(self) -> None:
        got = _observe("deadlock", "without")
        assert got["udp"] == ["lost"]
        assert got["neighbor"][0] in ("INCOMPLETE", "FAILED")
        assert got["ping"] == ["fail"]
        _no_leftovers()

    def test_with_shim_nd_resolves_ike_arrives_echo_still_protected(self) -> None:
        got = _observe("deadlock", "with")
        assert got["udp"] == ["received"]
        assert got["neighbor"][0] in ("REACHABLE", "STALE", "DELAY", "PROBE")
        assert got["ping"] == ["fail"]  # Echo MAY use IKE: still held to the IPsec policy
        _no_leftovers()


class TestPmtu:
    def test_without_shim_ptb_is_dropped(self) -> None:
        got = _observe("pmtu", "without")
        assert got["route_mtu"] == ["none"] and got["udp"] == ["lost"]

    def test_with_shim_ptb_lowers_the_path_mtu(self) -> None:
        got = _observe("pmtu", "with")
        assert got["route_mtu"] == ["1280"] and got["udp"] == ["received"]


class TestOverride:
    def test_defaults_keep_echo_under_ipsec(self) -> None:
        got = _observe("override", "default")
        assert got["udp"] == ["received"] and got["ping"] == ["fail"]

    def test_user_rule_lets_echo_bypass(self) -> None:
        got = _observe("override", "rule")
        assert got["ping"] == ["ok"]

    def test_without_shim_nothing_passes(self) -> None:
        got = _observe("override", "without")
        assert got["udp"] == ["lost"] and got["ping"] == ["fail"]


class TestRaGuard:
    def test_without_shim_the_disguised_rogue_ra_configures_an_address(self) -> None:
        got = _observe("ra-guard", "without")
        assert got["address"] == ["configured", "configured", "absent"]

    def test_with_shim_only_the_routers_ra_configures(self) -> None:
        got = _observe("ra-guard", "with")
        assert got["address"] == ["configured", "absent", "absent"]
        _no_leftovers()


def test_cli_run_exit_code_and_capture(tmp_path: Path) -> None:
    """`testbed run NAME --capture` exits 0 and leaves a capture `replay` can read."""
    cap = tmp_path / "dl.pcap"
    proc = subprocess.run([sys.executable, "-m", "shim", "testbed", "run", "deadlock", "--run", "with",
                           "--capture", str(cap)], capture_output=True, text=True, timeout=120,
                          cwd=REPO)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "as expected" in proc.stdout
    pcap = tmp_path / "dl-with.pcap"
    replay = subprocess.run([sys.executable, "-m", "shim", "replay", str(pcap)],
                            capture_output=True, text=True, timeout=60, cwd=REPO)
    assert replay.returncode == 0 and "nd-neighbor-solicit" in replay.stdout, replay.stderr
    _no_leftovers()


def test_up_status_down() -> None:
    run = [sys.executable, "-m", "shim", "testbed"]
    subprocess.run([*run, "down", "two-hosts"], capture_output=True, timeout=60, cwd=REPO)
    try:
        up = subprocess.run([*run, "up", "two-hosts"], capture_output=True, text=True, timeout=60,
                            cwd=REPO)
        assert up.returncode == 0, up.stderr
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
