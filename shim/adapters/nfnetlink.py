# SPDX-License-Identifier: MIT
"""nfnetlink_queue configuration messages, shared by both NFQUEUE readers.

Plain NFQNL_MSG_CONFIG requests written on the socket that owns the queue (the
kernel takes config for a queue only from its owner's port id), each asking for
an ack that is read back before going on, so a failure is seen. A packet the
kernel queues while we wait for an ack is handed to `on_packet`, which must give
it a verdict: none is left unanswered.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from collections.abc import Callable

__all__ = [
    "COPY_RANGE",
    "FLAG_FAIL_OPEN",
    "NETLINK_NETFILTER",
    "NFQUEUE_PROC",
    "attr",
    "bind_attrs",
    "config_message",
    "flags_attrs",
    "packet_id",
    "packet_mark",
    "params_attrs",
    "request",
    "unbind_attrs",
]

NETLINK_NETFILTER = 12
NFQUEUE_PROC = "/proc/net/netfilter/nfnetlink_queue"  # exists while the module is loaded
_NFQ_CONFIG = (3 << 8) | 2  # NFNL_SUBSYS_QUEUE << 8 | NFQNL_MSG_CONFIG
NFQ_PACKET = 3 << 8         # NFQNL_MSG_PACKET
_CMD, _PARAMS, _MAXLEN, _MASK, _FLAGS = 1, 2, 3, 4, 5  # NFQA_CFG_*
_BIND, _UNBIND = 1, 2       # NFQNL_CFG_CMD_*
_COPY_PACKET = 2
FLAG_FAIL_OPEN = 1          # NFQA_CFG_F_FAIL_OPEN
COPY_RANGE = 0xFFFF         # the kernel caps it at 0xffff less an attribute header
_REQUEST, _ACK = 1, 4
_NLMSG_ERROR = 2
RECV_SIZE = 65536 + 4096    # one whole packet message at the largest copy range


def attr(kind: int, data: bytes) -> bytes:
    """One netlink attribute, padded to 4 octets."""
    return struct.pack("=HH", 4 + len(data), kind) + data + b"\0" * (-len(data) % 4)


def config_message(queue_num: int, attrs: bytes, seq: int = 0) -> bytes:
    """One NFQNL_MSG_CONFIG request for `queue_num` asking for an ack."""
    body = struct.pack("=BBH", socket.AF_UNSPEC, 0, socket.htons(queue_num)) + attrs
    return struct.pack("=IHHII", 16 + len(body), _NFQ_CONFIG, _REQUEST | _ACK, seq, 0) + body


def bind_attrs(maxlen: int) -> bytes:
    """Bind, copy whole packets, and the queue length, in one message."""
    return (attr(_CMD, struct.pack("!BBH", _BIND, 0, socket.AF_INET6))
            + params_attrs() + attr(_MAXLEN, struct.pack("!I", maxlen)))


def params_attrs() -> bytes:
    """Copy mode packet with the largest copy range: a packet is never cut."""
    return attr(_PARAMS, struct.pack("!IB", COPY_RANGE, _COPY_PACKET))


def flags_attrs(fail_open: bool) -> bytes:
    """Set or clear NFQA_CFG_F_FAIL_OPEN (what the kernel does when the queue is full)."""
    return (attr(_FLAGS, struct.pack("!I", FLAG_FAIL_OPEN if fail_open else 0))
            + attr(_MASK, struct.pack("!I", FLAG_FAIL_OPEN)))


def unbind_attrs() -> bytes:
    return attr(_CMD, struct.pack("!BBH", _UNBIND, 0, socket.AF_INET6))


def _u32_attr(msg: bytes, want: int, min_len: int) -> int | None:
    """The first big-endian u32 of attribute `want` of one packet message, if present."""
    off = 20
    while off + 4 <= len(msg):
        alen, kind = struct.unpack_from("=HH", msg, off)
        if alen < 4:
            return None
        if kind & 0x3FFF == want and alen >= min_len and off + 8 <= len(msg):
            return int(struct.unpack_from("!I", msg, off + 4)[0])
        off += (alen + 3) & ~3
    return None


def packet_id(msg: bytes) -> int | None:
    """The packet id of one NFQNL_MSG_PACKET message (NFQA_PACKET_HDR), if present."""
    return _u32_attr(msg, 1, 11)


def packet_mark(msg: bytes) -> int:
    """The mark the packet carries (NFQA_MARK), 0 if the message has none."""
    return _u32_attr(msg, 3, 8) or 0


def request(sock: socket.socket, queue_num: int, attrs: bytes, seq: int,
            on_packet: Callable[[bytes], None], timeout: float = 2.0) -> None:
    """Send one config message and wait (bounded) for its ack.

    Raises:
        OSError: the kernel refused (errno from its answer), or no answer in time.
    """
    was = sock.gettimeout()
    sock.settimeout(timeout)
    try:
        sock.send(config_message(queue_num, attrs, seq))
        for _ in range(1024):  # bounded: acks come within a few messages
            try:
                reply = sock.recv(RECV_SIZE)
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:  # the kernel lost messages: the ack may follow
                    continue
                raise
            off = 0
            while off + 16 <= len(reply):
                length, kind, _flags, rseq = struct.unpack_from("=IHHI", reply, off)
                if length < 16:
                    break
                if kind == _NLMSG_ERROR and rseq == seq and off + 20 <= len(reply):
                    (err,) = struct.unpack_from("=i", reply, off + 16)
                    if err:
                        raise OSError(-err, os.strerror(-err))
                    return
                if kind == NFQ_PACKET:
                    on_packet(reply[off:off + length])
                off += (length + 3) & ~3
        raise OSError(0, "no ack from nfnetlink_queue")
    finally:
        sock.settimeout(was)
