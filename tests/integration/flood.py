# SPDX-License-Identifier: MIT
"""A bounded ICMPv6 flood from the namespace it runs in (fair under flood: budgets per link).

    python -m tests.integration.flood SRC DST TYPE SIZE COUNT SECONDS

Sends prebuilt ICMPv6 messages (type TYPE, SIZE octets of body) from SRC to DST
through a raw socket, as fast as the socket takes them, until COUNT are sent or SECONDS pass;
prints how many it sent. A full socket buffer (ENOBUFS) counts as not sent.
"""

from __future__ import annotations

import socket
import struct
import sys
import time

from shim.lab.packets import icmp6_packet


def flood(src: str, dst: str, icmp_type: int, size: int, count: int, seconds: float) -> int:
    """Send at most `count` packets for at most `seconds`; return how many went out."""
    # 64 distinct packets (identifier/sequence differ). Large ones cost the shim most: the
    # whole packet is copied to it and parsed.
    packets = [icmp6_packet(src, dst, icmp_type, 0, struct.pack("!HH", 0x1616, i)
                            + b"\x00" * max(0, size - 4)) for i in range(64)]
    sock = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_RAW)
    sent, deadline = 0, time.monotonic() + seconds
    try:
        for i in range(count):
            if i % 1024 == 0 and time.monotonic() > deadline:
                break
            try:
                sock.sendto(packets[i % 64], (dst, 0))
                sent += 1
            except OSError:
                pass  # ENOBUFS or a transient neighbour miss: the flood goes on
    finally:
        sock.close()
    return sent


if __name__ == "__main__":
    a = sys.argv[1:]
    print(flood(a[0], a[1], int(a[2]), int(a[3]), int(a[4]), float(a[5])))
