# SPDX-License-Identifier: MIT
"""Fixtures for packet-path tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from shim.lab.netns import Topology
from tests.integration.wire import Wire


@pytest.fixture
def wire(three_node: Topology) -> Iterator[Callable[..., Wire]]:
    made: list[Wire] = []

    def make(sender: str = "a", listeners: tuple[str, ...] = ("g", "b")) -> Wire:
        w = Wire(three_node, sender, listeners)
        made.append(w)
        return w

    yield make
    for w in made:
        w.close()
