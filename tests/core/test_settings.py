# SPDX-License-Identifier: MIT
"""Which settings a reload applies and which wait for a restart (marked on Settings' fields)."""

from __future__ import annotations

import dataclasses

from shim.core.model import Settings, restart_only_fields

# Written out on purpose: a new setting fails this test until it is put on one side. These shape
# the queue, the diversion (and its budgets), the engine or the process (logging, bound sockets).
RESTART_ONLY = frozenset({
    "queue_num", "workers", "fail_open", "queue_maxlen", "queue_fail_open", "sock_rcvbuf",
    "engine", "backend", "hooks", "chain_priority", "log_level", "log_format",
    "control_socket", "metrics_socket", "metrics_group", "prometheus",
    "metrics_max_connections", "metrics_timeout",
    "budget", "budget_nd_rate", "budget_error_rate", "budget_other_rate",
    "budget_headers_rate", "budget_verdict", "budget_interfaces",
})
# These a reload swaps in with the new table.
RELOADABLE = frozenset({"no_match", "on_error", "marks", "ext_limit", "log_rate", "shadow"})


def test_every_setting_is_on_one_side() -> None:
    """Each Settings field is either restart-only or reloadable, never both, never neither."""
    names = {f.name for f in dataclasses.fields(Settings)}
    assert not RESTART_ONLY & RELOADABLE
    assert names == RESTART_ONLY | RELOADABLE, (
        f"unclassified: {sorted(names - RESTART_ONLY - RELOADABLE)}, "
        f"gone: {sorted((RESTART_ONLY | RELOADABLE) - names)}")


def test_the_marks_are_the_restart_only_settings() -> None:
    """restart_only_fields() lists exactly the fields marked restart, in declaration order."""
    marked = restart_only_fields()
    assert set(marked) == RESTART_ONLY and len(marked) == len(RESTART_ONLY)
    order = [f.name for f in dataclasses.fields(Settings)]
    assert list(marked) == [n for n in order if n in RESTART_ONLY]
