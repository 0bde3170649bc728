# SPDX-License-Identifier: MIT
"""What the CLI's command groups share: the config directory, hook names, hex input, `add`."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path

from shim.core.errors import ConfigError, EnvironmentProblem, UsageError
from shim.core.model import Hook

__all__ = ["AddCommand", "DEFAULT_CONFIG", "HOOKS", "config_dir", "hook_named", "parse_hex", "require_root"]

DEFAULT_CONFIG = Path("/etc/icmp6-shim")
_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")
HOOKS = ("prerouting", "input", "forward", "output", "postrouting")
# The parser's `add(name, func, help)`: each command group registers its subcommands with it.
AddCommand = Callable[[str, Callable[[argparse.Namespace], int], str], argparse.ArgumentParser]


def config_dir(arg: str | None) -> Path | None:
    """The --config directory, or /etc/icmp6-shim if present, or None (built-in settings)."""
    if arg is not None:
        path = Path(arg)
        if not path.is_dir():
            raise ConfigError(f"{arg}: not a directory (expected a config directory "
                              "holding icmp6-shim.toml and rules.d/)")
        return path
    return DEFAULT_CONFIG if DEFAULT_CONFIG.is_dir() else None


def hook_named(name: str) -> Hook:
    """The Hook of a --hook choice."""
    return Hook[name.upper()]


def parse_hex(text: str) -> bytes:
    """The bytes of --hex (whitespace, colons and a 0x prefix allowed)."""
    cleaned = "".join(text.split()).removeprefix("0x").replace(":", "")
    bad = next((i for i, c in enumerate(cleaned) if c not in _HEX_DIGITS), None)
    if bad is not None:
        raise UsageError(f"--hex: {cleaned[bad]!r} at position {bad + 1} is not a hex digit "
                         "(0-9, a-f; spaces and colons between octets are allowed)")
    if len(cleaned) % 2:
        raise UsageError(f"--hex: {len(cleaned)} hex digits: an octet needs two, "
                         "so the count must be even")
    return bytes.fromhex(cleaned)


def require_root(why: str) -> None:
    """EnvironmentProblem (exit 3) unless root; `why` says what needs it."""
    if os.geteuid() != 0:
        raise EnvironmentProblem(f"{why}: run it as root")
