# SPDX-License-Identifier: MIT
"""CLI commands of the testbed (`testbed`, `export`): filled in by the testbed work."""

from __future__ import annotations

import argparse
from collections.abc import Callable

__all__ = ["add_commands"]

AddCommand = Callable[[str, Callable[[argparse.Namespace], int], str], argparse.ArgumentParser]


def add_commands(add: AddCommand) -> None:
    """Register this module's subcommands through the CLI's `add` helper."""
