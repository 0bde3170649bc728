# SPDX-License-Identifier: MIT
"""The exceptions the shim raises on purpose; each carries a message for people."""

__all__ = ["ConfigError", "EnvironmentProblem", "ShimError"]


class ShimError(Exception):
    """Base: the CLI prints str(exc) on one line and exits non-zero."""

    exit_code = 1


class ConfigError(ShimError):
    """A configuration file is wrong: message names file, rule and key."""

    exit_code = 2


class EnvironmentProblem(ShimError):
    """The host cannot run the shim: not root, missing tool, missing kernel feature, queue busy."""

    exit_code = 3
