# SPDX-License-Identifier: MIT
"""The engine registry: `[engine] kind` -> the Reader class that implements it.

Adding an engine: a module in shim/adapters implementing the Reader contract
(shim.adapters.reader), its name in shim.core.model.ENGINE_KINDS (which the
config reader accepts), and its entry here; tests/adapters/test_engines.py
fails while the two lists differ.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Protocol

from shim.adapters.batched import BatchedReader
from shim.adapters.nfq import QueueReader
from shim.adapters.reader import Judge, OnDecision, OnError, Reader

__all__ = ["ENGINES", "ReaderClass", "reader_class"]


class ReaderClass(Protocol):
    """How the daemon constructs a Reader of any engine."""

    def __call__(self, queue_num: int, judge: Judge, *, maxlen: int = ..., sock_rcvbuf: int = ...,
                 on_logged: OnDecision | None = ..., on_exception: OnError | None = ...) -> Reader: ...


ENGINES: Mapping[str, ReaderClass] = MappingProxyType({
    "batched": BatchedReader,  # the packet loop in C (native/engine.c)
    "netfilterqueue": QueueReader,  # a Python callback per packet
})


def reader_class(engine: str) -> ReaderClass:
    """The Reader class of a configured engine.

    Raises:
        KeyError: no such engine (the config reader only lets ENGINE_KINDS through).
    """
    return ENGINES[engine]
