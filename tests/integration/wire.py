# SPDX-License-Identifier: MIT
"""Addresses of the three-node topology, and the Wire the tests send and listen with."""

from shim.lab.wire import Wire

__all__ = ["A", "B", "G_A", "G_B", "Wire"]

A, G_A, G_B, B = "2001:db8:1::a", "2001:db8:1::1", "2001:db8:2::1", "2001:db8:2::b"
