# SPDX-License-Identifier: MIT
"""A testbed step's raw send fails with one line naming the cause, never a bare OSError."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from shim.core.errors import EnvironmentProblem
from shim.lab import steps
from shim.lab.netns import NodeSpec, Topology, TopologySpec
from shim.lab.packets import icmp6_packet

STAT = ("entries  allocs   destroys hash_grows lookups  hits     res_failed rcv_probes_mcast "
        "rcv_probes_ucast periodic_gc_runs forced_gc_runs unresolved_discards table_fulls\n"
        "00000004 00000287 00000278 00000002   0000017a 000000fa 00000061   00000045         "
        "00000066         0000005b         00000000       00000000            0000000a\n"
        "00000004 0000028a 00000295 00000003   00000164 000000ed 00000094   0000005d         "
        "0000004c         00000000         00000000       00000332            00000001\n")


def test_table_fulls_add_up_over_cpus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stat = tmp_path / "ndisc_cache"
    stat.write_text(STAT)
    monkeypatch.setattr(steps, "NDISC_STATS", str(stat))
    assert steps.neighbour_table_fulls() == 11
    monkeypatch.setattr(steps, "NDISC_STATS", str(tmp_path / "none"))
    assert steps.neighbour_table_fulls() == 0


@pytest.mark.netns
def test_a_failed_send_is_one_line_naming_the_step() -> None:
    """A send the kernel refuses (no route: an interface index the namespace lacks) is not
    retried and fails as an EnvironmentProblem naming the step and the errno."""
    spec = TopologySpec(name="lone", description="", nodes=(NodeSpec(name="x"),), links=())
    with Topology(spec, prefix=f"i6snd{os.getpid() % 10000}-") as topo:
        tx = topo.socket("x", socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_RAW)
        try:
            pkt = icmp6_packet("fe80::1", "ff02::1", 134, 0, bytes(16), 255)
            with pytest.raises(EnvironmentProblem, match=r"^do=ra from x:eth9: sendto to ff02::1 "
                                                         r"failed: \[Errno 101\] "):
                steps._send_raw(tx, pkt, ("ff02::1", 0, 0, 999), "do=ra from x:eth9")
        finally:
            tx.close()
