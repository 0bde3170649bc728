# SPDX-License-Identifier: MIT
"""libnftables through ctypes: one socket per context, owned tables, the generation."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator

import pytest

from shim.adapters.nftlib import NftContext, delete_table_at, generation
from shim.core.errors import EnvironmentProblem
from shim.lab.netns import NodeSpec, Topology, TopologySpec, in_netns

pytestmark = pytest.mark.netns

OWNED = "table inet sdown { flags owner; chain c { type filter hook input priority 0; }; }"


@pytest.fixture
def ns() -> Iterator[Topology]:
    topo = Topology(TopologySpec(name="lone", description="", nodes=(NodeSpec(name="x"),), links=()),
                    prefix=f"i6nl{os.getpid() % 10000}-")
    topo.up()
    try:
        yield topo
    finally:
        topo.down()


def _tables(topo: Topology) -> str:
    return topo.run("x", "nft", "list", "tables").stdout


class TestNftContext:
    def test_an_owned_table_survives_another_process_flush(self, ns: Topology) -> None:
        """Our context's socket owns the table: `nft flush ruleset` skips it, `nft delete`
        gets EPERM, and it goes when the context closes."""
        with in_netns(ns.ns("x")):
            nft = NftContext()
            nft.run(OWNED)
        try:
            assert ns.run("x", "nft", "flush", "ruleset").returncode == 0
            assert "table inet sdown" in _tables(ns)
            refused = ns.run("x", "nft", "delete", "table", "inet", "sdown")
            assert refused.returncode != 0 and "Operation not permitted" in refused.stderr
        finally:
            nft.close()
        assert "sdown" not in _tables(ns)

    def test_a_forked_child_does_not_keep_the_table_alive(self, ns: Topology) -> None:
        """The child closes its copy of the socket at fork: the parent's close ends the table
        while the child still runs."""
        with in_netns(ns.ns("x")):
            nft = NftContext()
            nft.run(OWNED)
            r, w = os.pipe()
            ready_r, ready_w = os.pipe()
            pid = os.fork()
            if pid == 0:
                os.close(w)
                os.close(ready_r)
                # Code here runs after the at-fork handlers: the child's copy is closed by
                # now. Until then it still holds the socket, and the parent must wait for it.
                os.write(ready_w, b"1")
                os.read(r, 1)  # lives until the parent has looked
                os._exit(0 if not nft.open else 1)
            os.close(r)
            os.close(ready_w)
            assert os.read(ready_r, 1) == b"1"  # bounded: the child writes or dies (EOF)
            os.close(ready_r)
            nft.close()
            left = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout
            os.close(w)
            _, status = os.waitpid(pid, 0)
        assert "sdown" not in left and os.waitstatus_to_exitcode(status) == 0

    def test_a_removal_that_leaves_the_table_says_so(self, ns: Topology) -> None:
        """NftDiversion.remove() raises when the table is still there afterwards (here owned
        by another socket), so a stop logs diversion_remove_failed, not "removed"."""
        from shim.adapters.diversion import NftDiversion, QueueSpec

        spec = QueueSpec(first=0)
        with in_netns(ns.ns("x")):
            other = NftContext()
            other.run(f"table inet {spec.nft_table} {{ flags owner; }}")
            try:
                with pytest.raises(EnvironmentProblem, match=f"removing nft table inet {spec.nft_table}"):
                    NftDiversion(spec).remove()
            finally:
                other.close()
            NftDiversion(spec).remove()  # gone with its owner: nothing to say

    def test_errors_are_one_line(self, ns: Topology) -> None:
        """A refused command raises EnvironmentProblem with the kernel's error line."""
        with in_netns(ns.ns("x")):
            nft = NftContext()
            try:
                with pytest.raises(EnvironmentProblem, match="No such file or directory"):
                    nft.run("list table inet nothere")
            finally:
                nft.close()


class TestGeneration:
    def test_moves_with_commits_and_gates_deletion(self, ns: Topology) -> None:
        """A commit moves the generation; a delete conditional on an old one is refused."""
        with in_netns(ns.ns("x")):
            g0 = generation()
            subprocess.run(["nft", "add", "table", "ip6", "sdgen"], check=True)
            g1 = generation()
            assert g1 != g0 and generation() == g1  # reads do not move it
            assert delete_table_at(10, "sdgen", g0) is False
            assert "sdgen" in subprocess.run(["nft", "list", "tables"], capture_output=True,
                                             text=True).stdout
            assert delete_table_at(10, "sdgen", g1) is True
        assert "sdgen" not in _tables(ns)
