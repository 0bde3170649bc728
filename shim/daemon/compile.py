# SPDX-License-Identifier: MIT
"""Compile a loaded configuration into what the packet path runs.

Config -> RuleTable (pure Python, ordered, explained) -> NativeTable (the flat
C table) -> Judge (classify function + one Decision per rule index). Building
is all-or-nothing: a failure raises before anything running is touched.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass

from shim.config.loader import Config
from shim.core.errors import ConfigError
from shim.core.model import NO_IFINDEX
from shim.bindings.icmp6 import CLASSIFIER_MAX_BYTES, NativeTable, TableTooLarge
from shim.adapters.reader import Judge
from shim.core.rules import RuleTable, build_table
from shim.core.shadow import Shadow

__all__ = ["MAX_CLASSIFIER_BYTES", "Compiled", "compile_config", "ifindex"]

def ifindex(name: str) -> int:
    """Interface name -> index, or NO_IFINDEX (never matches) when it does not exist (yet).

    Resolved when the table is compiled: an interface created or renamed later is
    seen after the next reload.
    """
    try:
        return socket.if_nametoindex(name)
    except OSError:
        return NO_IFINDEX


@dataclass(frozen=True, slots=True)
class Compiled:
    """Everything compiled from one configuration, swapped as one value."""

    config: Config
    table: RuleTable
    native: NativeTable
    judge: Judge
    shadow: Shadow | None = None


def compile_config(config: Config) -> Compiled:
    """Build the rule table, its C form and the Judge.

    Raises:
        ConfigError: the rules do not form a valid table, or their compiled
            classifier would exceed its memory limit.
    """
    table = build_table(config.settings, config.rules)
    native = _native(table, config.settings.ext_limit,
                     config.files[0] if config.files else "the built-in config")
    shadow = None
    if config.shadow_rules is not None:
        candidate = build_table(config.settings, config.rules + config.shadow_rules)
        shadow = Shadow(classify=_native(candidate, config.settings.ext_limit,
                                         str(config.settings.shadow)).classify,
                        decisions=candidate.decisions, source=str(config.settings.shadow))
    return Compiled(config=config, table=table, native=native,
                    judge=Judge.build(native.classify, table.decisions, shadow,
                                       on_error=config.settings.on_error, table=native),
                    shadow=shadow)


# Datagrams whose first fragment's decision the packet path remembers, so their other
# fragments get the same verdict and mark: 4096 slots of 60 octets, 240 KiB per table.
FATE_SLOTS = 4096


# Memory one table's compiled classifier may hold, read at each compile.
MAX_CLASSIFIER_BYTES = CLASSIFIER_MAX_BYTES


def _native(table: RuleTable, ext_limit: int, source: object) -> NativeTable:
    """The C table with its compiled classifier; a classifier over its limit is a ConfigError."""
    max_bytes = MAX_CLASSIFIER_BYTES
    try:
        return NativeTable(table.native_rules(ifindex), table.type_role, table.type_ike,
                           ext_limit, fate_slots=FATE_SLOTS, max_bytes=max_bytes)
    except TableTooLarge as exc:
        raise ConfigError(f"{source}: {exc} (limit {max_bytes >> 20} MiB); "
                          f"split or merge rules that share a prefix") from exc
