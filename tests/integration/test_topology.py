# SPDX-License-Identifier: MIT
"""A topology is usable when `up()` returns: every link end can carry a packet at once.

Before, `up()` waited for any link-local address on a node and went on silently when the
wait ran out; a gateway's second interface could still be without carrier, so the kernel
dropped the first packets (or the Neighbor Solicitation they waited on) and a test that
sent one packet on a brand-new topology was flaky under load.
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from shim.core.errors import EnvironmentProblem
from shim.lab.netns import LinkSpec, NodeSpec, Topology, TopologySpec, load_topology

pytestmark = pytest.mark.netns

TOPOLOGIES = ("three-node", "router-host", "gateway-small-mtu", "two-hosts")


def _namespaces() -> str:
    return subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=30).stdout


@pytest.mark.parametrize("name", TOPOLOGIES)
def test_every_link_end_is_up_with_a_final_link_local_address(name: str) -> None:
    """Right after up(): operstate UP, a link-local address, nothing tentative, on each end."""
    with Topology(load_topology(name), prefix=f"i6rdy{os.getpid() % 10000}-") as topo:
        for link in topo.spec.links:
            for node, ifname in link.ends:
                out = subprocess.run(["ip", "-n", topo.ns(node), "-j", "-6", "addr", "show", "dev",
                                      ifname], capture_output=True, text=True, timeout=30).stdout
                dev = json.loads(out)[0]
                assert dev["operstate"] == "UP", (node, ifname, dev)
                addrs = dev["addr_info"]
                assert any(a["scope"] == "link" for a in addrs), (node, ifname, addrs)
                assert not [a for a in addrs if a.get("tentative")], (node, ifname, addrs)


def test_a_link_that_never_gets_ready_is_an_error_and_nothing_is_left() -> None:
    """A link IPv6 cannot run on (MTU below 1280) never gets ready: up() says which end and
    why, bounded, and removes what it made."""
    prefix = f"i6nrd{os.getpid() % 10000}-"
    spec = TopologySpec(name="no-ipv6", description="", nodes=(NodeSpec(name="p"), NodeSpec(name="q")),
                        links=(LinkSpec(ends=(("p", "eth0"), ("q", "eth0")), addresses=(None, None),
                                        mtu=1200),))
    with pytest.raises(EnvironmentProblem, match=r"topology no-ipv6: links not ready .*"
                                                 r"p:eth0 has no IPv6 \(disabled, or an MTU below 1280\)"):
        Topology(spec, prefix=prefix).up()
    assert prefix not in _namespaces()


def test_a_namespace_removed_under_a_run_is_named_not_a_bare_oserror() -> None:
    """Entering a namespace another process is removing (unmounted, not yet unlinked: the
    window `ip netns del` leaves, in which setns answers EINVAL) or has removed is one line
    naming it: what a scenario step met when a `testbed down` took every i6tb- namespace."""
    from shim.lab.netns import in_netns

    name = f"i6gone{os.getpid() % 10000}"
    path = f"/run/netns/{name}"
    os.makedirs("/run/netns", exist_ok=True)
    with open(path, "x", encoding="ascii"):  # what `ip netns del` leaves between its two steps
        pass
    try:
        with pytest.raises(EnvironmentProblem, match=rf"^network namespace {name} is being "
                                                     r"removed by another process"):
            with in_netns(name):
                pass
    finally:
        os.unlink(path)
    with pytest.raises(EnvironmentProblem, match=rf"^network namespace {name} does not exist"):
        with in_netns(name):
            pass
