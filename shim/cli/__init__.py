# SPDX-License-Identifier: MIT
"""The command line, the composition root: one module per command group, each
registering its subcommands. The only layer that may import every other.
"""

__all__: list[str] = []
