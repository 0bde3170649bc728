# SPDX-License-Identifier: MIT
"""Real IKE: strongSwan's charon in each namespace, the draft's deadlock and PMTU cases.

Scenarios ike-deadlock and ike-pmtu, run by run, against the kernel's own state: `swanctl
--list-sas`, charon's log, the neighbour cache, ping, and ESP (protocol 50)
in a tcpdump capture. The failures without the shim need no ESP
and run everywhere; the runs that bring SAs up need the kernel's ESP transform: on a
kernel without it (the development VM) they skip with the kernel's refusal
as the reason, and the stock-kernel lane (`make test-vm`) runs them.
"""

from __future__ import annotations

import pytest

from tests.integration.scenarios import need_esp, observe as _observe

pytestmark = pytest.mark.netns

UP = ("REACHABLE", "STALE", "DELAY", "PROBE")


@pytest.fixture(scope="module")
def esp() -> None:
    need_esp()


class TestIkeDeadlock:
    def test_without_shim_no_ike_sa_and_b_traps_its_own_na(self) -> None:
        got, lines = _observe("ike-deadlock", "without")
        assert got["swanctl"][0] in ("connecting", "none") and got["swanctl"][1] in ("connecting", "none")
        # a gave up; no IKE_SA came up; b's charon got an acquire for its own NA (type 136)
        assert got["charon_log"] == ["found", "absent", "found"]
        assert got["neighbor"][0] in ("INCOMPLETE", "FAILED")
        assert got["ping"][1] == "fail" and got["wire"] == ["none"]
        assert any("retransmit" in line for line in lines), "\n".join(lines)

    @pytest.mark.usefixtures("esp")
    def test_with_shim_defaults_ike_and_child_sa_up_and_echo_crosses_as_esp(self) -> None:
        got, lines = _observe("ike-deadlock", "with")
        assert got["swanctl"] == ["established", "established"]
        assert got["charon_log"] == ["absent", "found", "absent"]
        assert got["neighbor"][0] in UP
        assert got["ping"][1] == "ok" and got["wire"] == ["seen"]
        assert any("shim on b judged" in line and "nd-neighbor" in line for line in lines)

    @pytest.mark.usefixtures("esp")
    def test_strongswan_pass_children_alone_also_resolve_it(self) -> None:
        got, _ = _observe("ike-deadlock", "pass")
        assert got["swanctl"] == ["established", "established"]
        assert got["ping"][1] == "ok" and got["wire"] == ["seen"]

    @pytest.mark.usefixtures("esp")
    def test_shim_and_pass_children_together_do_not_conflict(self) -> None:
        got, lines = _observe("ike-deadlock", "both")
        assert got["swanctl"] == ["established", "established"]
        assert got["ping"][1] == "ok" and got["wire"] == ["seen"]
        assert not any("unable to install" in line for line in lines), "\n".join(lines)


class TestIkePmtu:
    def test_without_shim_ptb_dropped_and_ike_auth_gives_up(self) -> None:
        got, _ = _observe("ike-pmtu", "without")
        assert got["swanctl"][0] in ("connecting", "none")
        assert got["charon_log"] == ["found", "absent"]  # gave up; never established
        assert got["wire"][0] == "seen" and got["route_mtu"] == ["none"]  # PTB came, was dropped
        assert got["ping"][1] == "fail" and got["wire"][1] == "none"

    @pytest.mark.usefixtures("esp")
    def test_with_shim_ptb_lowers_the_mtu_and_ike_auth_completes(self) -> None:
        got, lines = _observe("ike-pmtu", "with")
        assert got["route_mtu"] == ["1280"] and got["swanctl"] == ["established"]
        assert got["ping"][1] == "ok" and got["wire"][1] == "seen"
        assert any("packet-too-big-in" in line for line in lines), "\n".join(lines)
