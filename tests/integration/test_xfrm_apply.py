# SPDX-License-Identifier: MIT
"""export xfrm --apply against policies already in place (a real xfrm policy database)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest

from shim.lab.netns import NodeSpec, Topology, TopologySpec

pytestmark = pytest.mark.netns

NS135 = ["dir", "out", "src", "::/0", "dst", "::/0", "proto", "ipv6-icmp", "type", "135", "priority", "1"]


@pytest.fixture
def lone() -> Iterator[Topology]:
    topo = Topology(TopologySpec(name="lone", description="", nodes=(NodeSpec(name="x"),), links=()),
                    prefix="i6xa-")
    topo.up()
    try:
        yield topo
    finally:
        topo.down()


def _apply(topo: Topology) -> subprocess.CompletedProcess[str]:
    return topo.run("x", sys.executable, "-m", "shim", "export", "xfrm", "--apply")


class TestApply:
    def test_existing_allow_is_kept(self, lone: Topology) -> None:
        """An allow already there with the same selector is counted as present, not an error."""
        lone.run("x", "ip", "xfrm", "policy", "add", *NS135, "action", "allow", check=True)
        out = _apply(lone)
        assert out.returncode == 0 and "1 already present" in out.stdout

    def test_existing_block_is_an_error(self, lone: Topology) -> None:
        """A blocking policy with the same selector: exit non-zero, one line, nothing left added."""
        lone.run("x", "ip", "xfrm", "policy", "add", *NS135, "action", "block", check=True)
        out = _apply(lone)
        assert out.returncode != 0 and "does not allow" in out.stderr and "Traceback" not in out.stderr
        policies = lone.run("x", "ip", "xfrm", "policy").stdout
        assert policies.count("dir ") == 1  # only the block; what apply added was removed again
