# SPDX-License-Identifier: MIT
"""The engine registry: every configurable engine has a Reader, and nothing else does."""

from __future__ import annotations

import inspect

from shim.adapters.engines import ENGINES, reader_class
from shim.adapters.reader import QueueSocket, Reader
from shim.core.model import ENGINE_KINDS, Settings

__all__: list[str] = []


class TestEngines:
    def test_every_engine_kind_has_a_reader(self) -> None:
        """The config's engine names and the registry's keys are the same set."""
        assert set(ENGINES) == set(ENGINE_KINDS)
        assert Settings().engine in ENGINES

    def test_readers_share_the_base_not_each_other(self) -> None:
        """Each engine derives from QueueSocket and from no other engine."""
        for name, cls in ENGINES.items():
            assert isinstance(cls, type) and issubclass(cls, QueueSocket), name
            others = [c for n, c in ENGINES.items() if n != name]
            assert not any(isinstance(o, type) and issubclass(cls, o) for o in others), name

    def test_readers_have_the_contract(self) -> None:
        """Every method of the Reader protocol is implemented with the same parameters."""
        wanted = {n: inspect.signature(getattr(Reader, n)) for n in
                  ("bind", "unbind", "fileno", "set_queue_flags", "pump", "drain", "engine_counters")}
        for name in ENGINES:
            cls = reader_class(name)
            for method, sig in wanted.items():
                assert inspect.signature(getattr(cls, method)) == sig, (name, method)
