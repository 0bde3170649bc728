# SPDX-License-Identifier: MIT
"""Router discovery under "protect everything" with a real router daemon (radvd).

Scenario ra-ipsec run by run: host h requires ESP for all but IKE; the kernel's
own outcome (h's addresses) and the wire (the RA arrives in both runs) are
asserted. Needs no ESP: runs on any kernel with xfrm policies.
"""

from __future__ import annotations

import os
import subprocess

import pytest

from shim.lab.testbed import NS_PREFIX, load_scenario, run_once

pytestmark = pytest.mark.netns


def _observe(run: str) -> tuple[dict[str, list[str]], list[str]]:
    sc = load_scenario("ra-ipsec")
    lines: list[str] = []
    seen = run_once(sc, next(r for r in sc.runs if r.name == run), out=lines.append)
    assert not [line for line in lines if line.endswith("UNEXPECTED")], "\n".join(lines)
    found: dict[str, list[str]] = {}
    for step, observed, _ok in seen:
        found.setdefault(step.kind, []).append(observed)
    mine = f"{NS_PREFIX}s{os.getpid() % 10000}-"
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert not [line for line in out.splitlines() if line.startswith(mine)]
    return found, lines


def test_without_shim_the_ra_arrives_but_slaac_never_happens() -> None:
    got, lines = _observe("without")
    assert got["wire"] == ["seen"] and got["address"] == ["absent", "absent"]
    assert any("radvd on r said" in line and "started" in line for line in lines)


def test_with_shim_the_ra_bypasses_and_slaac_configures() -> None:
    got, lines = _observe("with")
    assert got["address"] == ["configured", "configured"]
    assert any("judged" in line and "nd-router-advert" in line for line in lines), "\n".join(lines)
