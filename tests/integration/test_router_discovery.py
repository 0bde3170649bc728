# SPDX-License-Identifier: MIT
"""Router discovery under "protect everything" with a real router daemon (radvd).

Scenario ra-ipsec run by run: host h requires ESP for all but IKE; the kernel's
own outcome (h's addresses) and the wire (the RA arrives in both runs) are
asserted. Needs no ESP: runs on any kernel with xfrm policies.
"""

from __future__ import annotations

import pytest

from tests.integration.scenarios import observe

pytestmark = pytest.mark.netns


def test_without_shim_the_ra_arrives_but_slaac_never_happens() -> None:
    got, lines = observe("ra-ipsec", "without")
    assert got["wire"] == ["seen"] and got["address"] == ["absent", "absent"]
    assert any("radvd on r said" in line and "started" in line for line in lines)


def test_with_shim_the_ra_bypasses_and_slaac_configures() -> None:
    got, lines = observe("ra-ipsec", "with")
    assert got["address"] == ["configured", "configured"]
    assert any("judged" in line and "nd-router-advert" in line for line in lines), "\n".join(lines)
