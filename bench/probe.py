# SPDX-License-Identifier: MIT
"""Round-trip prober: `python -m bench.probe DST COUNT INTERVAL_S` (run in the sender namespace).

Sends COUNT Echo Requests to DST, one every INTERVAL_S, each waiting (at most
0.2 s) for its reply, and prints {"rtt_us": [...], "lost": N} as one JSON line.
Bounded: COUNT * (INTERVAL_S + 0.2) seconds at most.
"""

from __future__ import annotations

import json
import socket
import struct
import sys
import time

__all__ = ["main"]


def main(argv: list[str]) -> int:
    dst, count, interval = argv[0], int(argv[1]), float(argv[2])
    s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
    s.settimeout(0.2)
    ident, rtts, lost = 0x7072, [], 0
    for seq in range(count):
        t0 = time.perf_counter()
        s.sendto(struct.pack("!BBHHH", 128, 0, 0, ident, seq) + b"probe", (dst, 0))
        got = False
        while not got:
            try:
                data = s.recv(2048)
            except TimeoutError:
                break
            if len(data) >= 8 and data[0] == 129 and struct.unpack("!HH", data[4:8]) == (ident, seq):
                rtts.append((time.perf_counter() - t0) * 1e6)
                got = True
        lost += not got
        time.sleep(max(0.0, interval - (time.perf_counter() - t0)))
    print(json.dumps({"rtt_us": [round(x, 1) for x in rtts], "lost": lost}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
