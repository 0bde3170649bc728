# SPDX-License-Identifier: MIT
"""icmp6-shim: a userspace enforcing shim for ICMPv6 policy behind NFQUEUE."""

from importlib import metadata

__all__ = ["__version__"]

try:
    # One source of truth: the version in pyproject.toml, as installed.
    __version__ = metadata.version("icmp6-shim")
except metadata.PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"
