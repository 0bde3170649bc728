# SPDX-License-Identifier: MIT
"""The policy core: model, errors, ICMPv6 names, the draft's defaults, rules and
their one total order, decisions, lint and coverage analysis, the xfrm derivation.

Pure: values in, values out; no I/O, no logging, no globals. Imports nothing
else of shim (enforced by import-linter, see pyproject.toml).
"""

__all__: list[str] = []
