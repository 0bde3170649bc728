# SPDX-License-Identifier: MIT
"""The exceptions the shim raises on purpose; each carries a message for people."""

__all__ = ["ConfigError", "EnvironmentProblem", "ShimError", "UsageError"]


class ShimError(Exception):
    """Base: the CLI prints str(exc) on one line and exits non-zero."""

    exit_code = 1


class ConfigError(ShimError):
    """A configuration file is wrong: each message names file, rule and key.

    One error may carry several problems (every bad rule of a file, so a user
    fixes them in one round); str() joins them on one line for logs and
    STATUS, `problems` keeps them apart for the CLI.
    """

    exit_code = 2

    def __init__(self, *problems: str) -> None:
        super().__init__("; ".join(problems))
        self.problems: tuple[str, ...] = problems


class EnvironmentProblem(ShimError):
    """The host cannot run the shim: not root, missing tool, missing kernel feature, queue busy."""

    exit_code = 3


class UsageError(ShimError):
    """A command-line argument is wrong (as argparse's own errors, exit 2)."""

    exit_code = 2
