# SPDX-License-Identifier: MIT
"""icmp6-shim: a userspace enforcing shim for ICMPv6 policy behind NFQUEUE."""

__all__ = ["__version__"]

__version__ = "0.1.0"
