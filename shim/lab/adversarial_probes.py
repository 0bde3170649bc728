# SPDX-License-Identifier: MIT
"""What the adversarial suite sends and how it counts: crafted evasions and two counters.

Crafted packets are built with shim.lab.packets (IPv6 header first, checksums valid),
each carrying a marker in its ICMPv6 body so the victim's counter counts only
the row's own packets. Counters:
- RawCounter: a raw ICMPv6 socket in the victim's namespace: what reached its
  ICMPv6 layer (after the kernel's reassembly and input filtering);
- Tcpdump: a BPF filter on one interface and direction, counted by the kernel
  (tcpdump's "received by filter"), for floods a Python socket could not keep up with.
Every wait is bounded; a counter is stopped (and its process reaped) in stop().
"""

from __future__ import annotations

import ipaddress
import os
import re
import select
import signal
import socket
import struct
import subprocess
import threading
import time

from shim.core.errors import EnvironmentProblem
from shim.lab.netns import Topology
from shim.lab.packets import ext_header, fragment_header, icmp6_packet, ipv6_packet

__all__ = ["CRAFTS", "RawCounter", "Tcpdump", "craft", "marker_body"]

_DSTOPT, _FRAG, _AH, _ICMPV6 = 60, 44, 51, 58


def marker_body(marker: bytes, ident: int, seq: int) -> bytes:
    """An Echo-style body: identifier, sequence number, then the marker."""
    return struct.pack("!HH", ident & 0xFFFF, seq & 0xFFFF) + marker


def _dstopt(octets: int) -> bytes:
    """A Destination Options header of exactly `octets` (8n) octets of skippable options.

    Unknown options of type 0x1e (action 00: skip), at most 250 octets each: Linux
    refuses PadN longer than 7 octets, and counts at most 8 non-pad options.
    """
    left, body = octets - 2, b""
    while left > 7:  # at most 5 options for 1224 octets
        n = min(left, 252)
        body, left = body + bytes([0x1E, n - 2]) + bytes(n - 2), left - n
    if left == 1:
        body += b"\0"  # Pad1
    elif left:
        body += bytes([1, left - 2]) + bytes(left - 2)  # PadN
    raw = ext_header(0, body)
    assert len(raw) == octets, (len(raw), octets)
    return raw


def _fragment(whole: bytes, cut: int, ident: int, first_next: int) -> list[bytes]:
    """Split a datagram (no extension header before the fragmentable part) at `cut` octets."""
    src, dst = str(ipaddress.IPv6Address(whole[8:24])), str(ipaddress.IPv6Address(whole[24:40]))
    payload, hop = whole[40:], whole[7]
    return [ipv6_packet(src, dst, _FRAG, fragment_header(first_next, 0, True, ident) + payload[:cut], hop),
            ipv6_packet(src, dst, _FRAG, fragment_header(first_next, cut, False, ident) + payload[cut:], hop)]


def _plain(src: str, dst: str, icmp_type: int, body: bytes, ident: int) -> list[bytes]:
    return [icmp6_packet(src, dst, icmp_type, 0, body, 255)]


def _frag_dstopt(src: str, dst: str, icmp_type: int, body: bytes, ident: int) -> list[bytes]:
    """DestOpt(1224) + DestOpt(8) + ICMPv6, the first fragment ending between the two headers.

    Neither fragment shows the kernel's header walk an ICMPv6 header: the first ends
    before it, the second says "next header: Destination Options".
    """
    whole = icmp6_packet(src, dst, icmp_type, 0, body, 255,
                         ext=((_DSTOPT, _dstopt(1224)), (_DSTOPT, _dstopt(8))))
    return _fragment(whole, 1224, ident, _DSTOPT)


def _ah(src: str, dst: str, icmp_type: int, body: bytes, ident: int) -> list[bytes]:
    """ICMPv6 behind an Authentication Header (24 octets: SPI, sequence, a zero 96-bit ICV)."""
    ah = struct.pack("!BBHII", _ICMPV6, 24 // 4 - 2, 0, 0x1000 + ident % 0xFFFF, ident) + bytes(12)
    return [icmp6_packet(src, dst, icmp_type, 0, body, 64, ext=((_AH, ah),))]


def _overlap(src: str, dst: str, icmp_type: int, body: bytes, ident: int) -> list[bytes]:
    """An Echo Reply (accepted in transit) overwritten by an overlapping `icmp_type` fragment.

    First fragment: DestOpt(8) + an Echo Reply; second, at offset 8 (non-first, so not
    parsed as ICMPv6 by anyone), the message of `icmp_type`: a keep-last reassembly
    would deliver it. RFC 5722: the receiver drops the whole datagram.
    """
    reply = icmp6_packet(src, dst, 129, 0, body, 64, ext=((_DSTOPT, _dstopt(8)),))[40:]
    attack = icmp6_packet(src, dst, icmp_type, 0, body, 64, ext=((_DSTOPT, _dstopt(8)),))[40:]
    return [ipv6_packet(src, dst, _FRAG, fragment_header(_DSTOPT, 0, True, ident) + reply[:16], 64),
            ipv6_packet(src, dst, _FRAG, fragment_header(_DSTOPT, 8, False, ident) + attack[8:], 64)]


CRAFTS = {"plain": _plain, "frag-dstopt": _frag_dstopt, "ah": _ah, "overlap": _overlap}


def craft(kind: str, src: str, dst: str, icmp_type: int, body: bytes, ident: int) -> list[bytes]:
    """The packets (IPv6 header first) of one crafted datagram of `kind` (a CRAFTS key)."""
    return CRAFTS[kind](src, dst, icmp_type, body, ident)


class RawCounter:
    """Counts ICMPv6 messages of some types, carrying a marker, that reach a node's stack."""

    def __init__(self, topo: Topology, node: str, types: tuple[int, ...], marker: bytes,
                 sources: tuple[str, ...]) -> None:
        self.sock = topo.socket(node, socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
        self.sock.setblocking(False)
        self.types, self.marker = types, marker
        self.sources = {ipaddress.IPv6Address(s) for s in sources}
        self.count = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _matches(self, data: bytes, src: str) -> bool:
        if not data or data[0] not in self.types:
            return False
        if self.sources and ipaddress.IPv6Address(src.split("%")[0]) not in self.sources:
            return False
        return not self.marker or self.marker in data

    def _loop(self) -> None:
        while not self._stop.is_set():
            if not select.select([self.sock], [], [], 0.1)[0]:
                continue
            for _ in range(1024):  # bounded burst, then look at the stop flag again
                try:
                    data, addr = self.sock.recvfrom(65535)
                except (BlockingIOError, OSError):
                    break
                self.count += self._matches(data, addr[0])

    def stop(self) -> int:
        """Stop counting (bounded wait for the reader) and return the count."""
        self._stop.set()
        self._thread.join(2.0)
        self.sock.close()
        return self.count


class Tcpdump:
    """tcpdump with a BPF filter on node:ifname, one direction; the kernel does the counting."""

    def __init__(self, topo: Topology, node: str, ifname: str, direction: str, bpf: str) -> None:
        self.proc = topo.popen(node, "tcpdump", "-n", "-p", "-i", ifname, "-Q", direction,
                               "-B", "16384", "-w", "/dev/null", bpf,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        assert self.proc.stderr is not None
        os.set_blocking(self.proc.stderr.fileno(), False)
        self._err = b""
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and self.proc.poll() is None:  # bounded
            self._err += self.proc.stderr.read() or b""
            if b"listening" in self._err:
                return
            time.sleep(0.05)
        self.proc.kill()
        self.proc.wait(5)
        raise EnvironmentProblem(f"tcpdump did not start in {node} on {ifname} with filter "
                                 f"{bpf!r}: {self._err.decode(errors='replace').strip()}")

    def stop(self) -> int:
        """Stop tcpdump (SIGINT, bounded) and return the packets its filter matched."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        assert self.proc.stderr is not None
        os.set_blocking(self.proc.stderr.fileno(), True)
        self._err += self.proc.stderr.read() or b""
        found = re.search(rb"(\d+) packets? received by filter", self._err)
        if found is None:
            raise EnvironmentProblem("tcpdump gave no count: "
                                     + self._err.decode(errors="replace").strip()[-200:])
        return int(found.group(1))
