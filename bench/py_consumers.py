# SPDX-License-Identifier: MIT
"""Python baseline consumers: `python -m bench.py_consumers {nfq,scapy} QUEUE MAXLEN RCVBUF`.

- nfq:   netfilterqueue, one callback per packet, accept-all (the Python ceiling);
- scapy: the same callback dissecting each packet with scapy and walking a small
         naive rule list (type, hop limit) before accepting: the "obvious" design.
Both run until SIGTERM and print {"packets": N} as one JSON line.
"""

from __future__ import annotations

import json
import signal
import socket
import sys
from typing import Any

__all__ = ["main"]

_count = 0


def _accept(pkt: Any) -> None:
    global _count
    _count += 1
    pkt.accept()


def _scapy_callback() -> Any:
    from scapy.layers.inet6 import IPv6

    rules = [(t, 255 if t in (133, 134, 135, 136, 137) else None) for t in range(128, 160)]

    def judge(pkt: Any) -> None:
        global _count
        _count += 1
        p = IPv6(pkt.get_payload())
        layer = p.payload
        while layer is not None and layer.name != "NoPayload" and not hasattr(layer, "type"):
            layer = layer.payload
        icmp_type = getattr(layer, "type", None)
        for rule_type, hop in rules:
            if icmp_type == rule_type and (hop is None or p.hlim == hop):
                break
        pkt.accept()

    return judge


def main(argv: list[str]) -> int:
    from netfilterqueue import NetfilterQueue

    kind, queue, maxlen, rcvbuf = argv[0], int(argv[1]), int(argv[2]), int(argv[3])
    nfq = NetfilterQueue(af=socket.AF_INET6)
    nfq.bind(queue, _accept if kind == "nfq" else _scapy_callback(), max_len=maxlen,
             range=0xFFFF, sock_len=rcvbuf)
    sock = socket.socket(fileno=nfq.get_fd())
    stop = False

    def on_term(_sig: int, _frame: Any) -> None:
        nonlocal stop
        stop = True
        sock.settimeout(0.01)

    signal.signal(signal.SIGTERM, on_term)
    print("bound", file=sys.stderr, flush=True)
    sock.settimeout(0.2)
    while not stop:
        try:
            nfq.run_socket(sock)
        except (TimeoutError, OSError):
            continue
    print(json.dumps({"packets": _count}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
