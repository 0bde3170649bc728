# SPDX-License-Identifier: MIT
"""The only importer of the cffi module shim._icmp6: one module per C header
(icmp6 for native/icmp6.h, engine for native/engine.h). cffi's untyped
objects stay here; everything leaving is a typed value.

Imports shim.core only.
"""

__all__: list[str] = []
