# SPDX-License-Identifier: MIT
"""The adversarial suite's crafted rows, live: A -- G -- B with the shim on G.

About 20 s, so it runs in `make test`. The whole suite, THC-IPv6 tools and floods
included (about a minute, needs thc-ipv6), is `make test-adversarial`.
"""

from __future__ import annotations

import pytest

from shim.lab.adversarial_run import run_suite

pytestmark = pytest.mark.netns


def test_no_crafted_evasion_reaches_the_victim() -> None:
    """Every crafted row (plain controls, fragments, AH, overlap) meets its expectation."""
    lines: list[str] = []
    failed = run_suite(select=lambda a: a.send is not None, out=lines.append)
    assert failed == 0, "\n".join(lines)
