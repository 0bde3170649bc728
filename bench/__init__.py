# SPDX-License-Identifier: MIT
"""`make bench`: throughput of the shim against baselines (see docs/performance.md)."""

__all__: list[str] = []
