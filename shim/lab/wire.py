# SPDX-License-Identifier: MIT
"""Send crafted packets from one namespace, watch them arrive in others.

Used by the demo and the packet-path tests: a raw IPv6 sender (IPPROTO_RAW,
the packet carries its own IPv6 header) on one node and raw ICMPv6 listeners
on others. Every wait is bounded.
"""

from __future__ import annotations

import socket
import time

from shim.lab.netns import Topology
from shim.lab.runner import time_scale

__all__ = ["Wire"]


class Wire:
    """A raw sender on one node and raw ICMPv6 listeners on others."""

    def __init__(self, topo: Topology, sender: str, listeners: tuple[str, ...]) -> None:
        self.topo = topo
        self.tx = topo.socket(sender, socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_RAW)
        self.rx = {n: topo.socket(n, socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
                   for n in listeners}
        self.sender = sender

    def send(self, packet: bytes, scope_if: str | None = None) -> None:
        """Send one IPv6 packet; `scope_if` names the interface for a link-scope destination."""
        dst = socket.inet_ntop(socket.AF_INET6, packet[24:40])
        scope = self.topo.ifindex(self.sender, scope_if) if scope_if else 0
        self.tx.sendto(packet, (dst, 0, 0, scope))

    def flush(self) -> None:
        """Forget everything that arrived so far (a raw socket buffer holds ~200 messages)."""
        for s in self.rx.values():
            s.setblocking(False)
            try:
                while s.recv(65535):
                    pass
            except BlockingIOError:
                pass

    def arrived(self, node: str, tail: bytes, timeout: float = 1.0, *, contains: bool = False,
                icmp_type: int | None = None) -> int:
        """How many ICMPv6 messages ending in (or containing) `tail` reached `node` within timeout.

        The window is scaled by time_scale(): a longer window can only see more, so an
        `== 1` stays as strict (a duplicate still shows) and a `== 0` gets stricter.

        Args:
            icmp_type: count only messages of this type. An error quoting a packet that
                carried `tail` ends in it too (e.g. the Destination Unreachable a router
                sends back, seconds later, for a reply to a spoofed source it cannot resolve).
        """
        sock, count = self.rx[node], 0
        deadline = time.monotonic() + timeout * time_scale()
        sock.settimeout(0.05)
        while time.monotonic() < deadline:
            try:
                data = sock.recv(65535)
                if icmp_type is not None and data[:1] != bytes([icmp_type]):
                    continue
                if (tail in data) if contains else data.endswith(tail):
                    count += 1
            except TimeoutError:
                continue
        return count

    def close(self) -> None:
        for s in (self.tx, *self.rx.values()):
            s.close()


