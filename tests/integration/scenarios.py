# SPDX-License-Identifier: MIT
"""One run of a testbed scenario as the scenario tests observe it, and the checks that it
left nothing behind."""

from __future__ import annotations

import os
import subprocess

import pytest

from shim.lab.owners import OWNER_DIR
from shim.lab.strongswan import esp_unavailable
from shim.lab.testbed import NS_PREFIX, load_scenario, run_once

__all__ = ["need_esp", "no_leftovers", "observe"]


def observe(name: str, run: str) -> tuple[dict[str, list[str]], list[str]]:
    """Run `run` of scenario `name`: ({step kind: [observations in order]}, output lines).

    Fails the test if any step's outcome was not the expected one, or if the run left a
    namespace or owner record of this process behind.
    """
    sc = load_scenario(name)
    lines: list[str] = []
    seen = run_once(sc, next(r for r in sc.runs if r.name == run), out=lines.append)
    unexpected = [line for line in lines if line.endswith("UNEXPECTED")]
    assert not unexpected, "\n".join(lines)
    found: dict[str, list[str]] = {}
    for step, observed, _ok in seen:
        found.setdefault(step.kind, []).append(observed)
    no_leftovers()
    return found, lines


def no_leftovers(pid: int | None = None) -> None:
    """No namespace nor owner record of the runs of process `pid` (default: this one) is left.

    Only that process's: other runs on the machine (another user's suite) may have
    scenario namespaces up at the same moment, which are none of this test's business.
    """
    ours = f"{NS_PREFIX}s{(os.getpid() if pid is None else pid) % 10000}-"  # run_once's prefix
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                         timeout=30).stdout
    assert not [line for line in out.splitlines() if line.startswith(ours)]
    assert not list(OWNER_DIR.glob(f"{ours}*"))


def need_esp() -> None:
    """Skip where the kernel has no ESP transform (the stock-kernel lane runs these)."""
    why = esp_unavailable()
    if why is not None:
        pytest.skip(why)
