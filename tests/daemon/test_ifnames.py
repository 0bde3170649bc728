# SPDX-License-Identifier: MIT
"""Interface names for log events (shim.daemon.ifnames)."""

from __future__ import annotations

import socket

from shim.daemon.ifnames import IfNames


class TestIfNames:
    def test_zero_is_none_and_loopback_has_its_name(self) -> None:
        """Index 0 (no interface) is None; a real index gives the kernel's name."""
        names = IfNames()
        assert names.name(0) is None
        lo = socket.if_nametoindex("lo")
        assert names.name(lo) == "lo"

    def test_unknown_index_is_labelled_not_raised(self) -> None:
        """An index no interface has reads ifindex:N."""
        assert IfNames().name(2**31 - 7) == f"ifindex:{2**31 - 7}"

    def test_cached_until_ttl_then_looked_up_again(self) -> None:
        """One lookup per index per ttl: a renamed interface shows its new name after ttl."""
        now = [0.0]
        calls: list[int] = []
        current = {5: "eth0"}

        def lookup(i: int) -> str:
            calls.append(i)
            return current[i]

        names = IfNames(ttl=10.0, lookup=lookup, clock=lambda: now[0])
        assert [names.name(5), names.name(5)] == ["eth0", "eth0"] and calls == [5]
        current[5] = "wan0"
        now[0] = 9.0
        assert names.name(5) == "eth0"
        now[0] = 10.5
        assert names.name(5) == "wan0" and calls == [5, 5]

    def test_bounded(self) -> None:
        """The cache never holds more than max_entries names."""
        names = IfNames(max_entries=4, lookup=str)
        for i in range(1, 50):
            names.name(i)
        assert len(names._cache) <= 4
