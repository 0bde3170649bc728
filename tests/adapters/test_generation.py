# SPDX-License-Identifier: MIT
"""NFT_MSG_GETGEN's answer is matched to its request (pure: a scripted socket)."""

from __future__ import annotations

import struct

from shim.adapters import nftlib
from shim.adapters.nftlib import generation


def _newgen(seq: int, gen: int) -> bytes:
    """An NFT_MSG_NEWGEN message: nlmsghdr, nfgenmsg, one NFTA_GEN_ID attribute."""
    attr = struct.pack("=HH", 8, nftlib._NFTA_GEN_ID) + struct.pack("!I", gen)
    body = struct.pack("=BBH", 0, 0, 0) + attr
    return struct.pack("=IHHII", 16 + len(body), nftlib._NEWGEN, 0, seq, 0) + body


class _Scripted:
    """Answers the request it is sent with the messages `script(seq)` gives, one per recv."""

    def __init__(self, script: object) -> None:
        self.script = script
        self.replies: list[bytes] = []

    def settimeout(self, _t: float) -> None:
        pass

    def send(self, data: bytes) -> int:
        seq = struct.unpack_from("=IHHI", data)[3]
        self.replies = list(self.script(seq))  # type: ignore[operator]
        return len(data)

    def recv(self, _n: int) -> bytes:
        return self.replies.pop(0)


def test_a_late_answer_to_an_earlier_request_is_skipped() -> None:
    """A kept socket may hold the answer to a request that timed out: not this one's."""
    sock = _Scripted(lambda seq: [_newgen((seq - 1) & 0xFFFFFFFF, 7), _newgen(seq, 9)])
    assert generation(sock) == 9  # type: ignore[arg-type]


def test_both_in_one_datagram() -> None:
    sock = _Scripted(lambda seq: [_newgen((seq + 1) & 0xFFFFFFFF, 7) + _newgen(seq, 11)])
    assert generation(sock) == 11  # type: ignore[arg-type]
