# SPDX-License-Identifier: MIT
"""A bounded ICMPv6 flood from the namespace it runs in (fair under flood: budgets per link).

    python -m tests.integration.flood SRC DST TYPE SIZE COUNT SECONDS [RATE]

Sends prebuilt ICMPv6 messages (type TYPE, SIZE octets of body) from SRC to DST
through a raw socket, as fast as the socket takes them (or paced at RATE packets a
second), until COUNT are sent or SECONDS pass; prints how many it sent. A full socket
buffer (ENOBUFS) counts as not sent.
"""

from __future__ import annotations

import socket
import struct
import sys
import time

from shim.lab.packets import icmp6_packet


def flood(src: str, dst: str, icmp_type: int, size: int, count: int, seconds: float,
          rate: float = 0.0) -> int:
    """Send at most `count` packets for at most `seconds` (at `rate` pps, 0: flat out);
    return how many went out."""
    # 64 distinct packets (identifier/sequence differ). Large ones cost the shim most: the
    # whole packet is copied to it and parsed.
    packets = [icmp6_packet(src, dst, icmp_type, 0, struct.pack("!HH", 0x1616, i)
                            + b"\x00" * max(0, size - 4)) for i in range(64)]
    sock = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_RAW)
    t0 = time.monotonic()
    sent, deadline = 0, t0 + seconds
    try:
        for i in range(count):
            if i % 1024 == 0 and time.monotonic() > deadline:
                break
            if rate and i % 64 == 0:  # paced in bursts of 64: sleep until this burst is due
                time.sleep(max(0.0, t0 + i / rate - time.monotonic()))
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
    print(flood(a[0], a[1], int(a[2]), int(a[3]), int(a[4]), float(a[5]),
                float(a[6]) if len(a) > 6 else 0.0))
