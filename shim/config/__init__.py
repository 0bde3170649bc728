# SPDX-License-Identifier: MIT
"""The only reader of configuration files, and the value parsers it uses.

Imports shim.core only.
"""

__all__: list[str] = []
