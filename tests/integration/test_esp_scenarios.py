# SPDX-License-Identifier: MIT
"""The deadlock and PMTU scenarios with real ESP SAs (AES-GCM, RFC 4106, transport mode).

Asserted against the kernel and the wire: the protected Echo Request crosses
as ESP (protocol 50 in a tcpdump capture), ND and the Packet Too Big pass by
the shim's mark, and without the shim the deadlock and the PMTU black hole
are real. Needs the kernel's ESP transform: on a kernel without it (the
development VM) these skip with the kernel's refusal as the reason; the
stock-kernel lane (`make test-vm`) runs them.
"""

from __future__ import annotations

import pytest

from tests.integration.scenarios import need_esp, observe

pytestmark = pytest.mark.netns


@pytest.fixture(scope="module", autouse=True)
def _esp() -> None:
    need_esp()


class TestDeadlockEsp:
    def test_without_shim_nd_fails_so_nothing_crosses(self) -> None:
        got, _ = observe("deadlock-esp", "without")
        assert got["udp"] == ["lost"] and got["neighbor"][0] in ("INCOMPLETE", "FAILED")
        assert got["ping"] == ["fail"] and got["wire"] == ["none", "none"]

    def test_with_shim_nd_by_mark_and_echo_as_esp(self) -> None:
        got, _ = observe("deadlock-esp", "with")
        assert got["udp"] == ["received"] and got["neighbor"][0] in ("REACHABLE", "STALE", "DELAY", "PROBE")
        # the Echo Request went as ESP, never as cleartext ICMPv6 type 128
        assert got["ping"] == ["ok"] and got["wire"] == ["seen", "none"]


class TestPmtuEsp:
    def test_without_shim_the_ptb_is_dropped_and_large_esp_is_lost(self) -> None:
        got, _ = observe("pmtu-esp", "without")
        assert got["ping"][0] == "ok" and got["wire"][0] == "seen"  # the SAs work
        assert got["route_mtu"] == ["none"] and got["ping"][2] == "fail" and got["wire"][1] == "none"

    def test_with_shim_the_ptb_passes_and_esp_is_fragmented(self) -> None:
        got, _ = observe("pmtu-esp", "with")
        assert got["route_mtu"] == ["1280"] and got["ping"][2] == "ok" and got["wire"] == ["seen", "seen"]
