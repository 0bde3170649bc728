# SPDX-License-Identifier: MIT
"""What the kernel's walk cannot see is diverted and judged.

Crafted with scapy, sent from a through g (the shim) to b and to g itself:
fragments whose first fragment ends inside the extension-header chain, ICMPv6
behind AH, fragmented UDP, and the non-first fragments of a dropped datagram.
Arrival is observed twice: by raw ICMPv6 (or UDP) sockets, which see only what
a stack reassembled and delivered, and by a packet socket on b, which sees
every frame on the wire, fragments included.
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from scapy.layers.inet import TCP, UDP
from scapy.layers.inet6 import ICMPv6EchoRequest, IPv6, IPv6ExtHdrFragment, fragment6
from scapy.layers.ipsec import AH

from shim.daemon.control import query
from shim.bindings.icmp6 import parse
from shim.lab.netns import Topology
from shim.lab.packets import ext_header, fragment_header, icmp6_packet, ipv6_packet
from shim.lab.runner import ShimProcess
from tests.integration.wire import A, B, G_A, Wire

pytestmark = pytest.mark.netns

DSTOPT, FRAG, ICMPV6 = 60, 44, 58
UDP_PORT = 9977


def _big_dstopt() -> bytes:
    """A 1224-octet Destination Options header of five skippable (type 0x1e,
    RFC 4727 experiment) options: no padding, which Linux limits to 7 octets."""
    body = b"".join(bytes([0x1E, 253]) + b"\xaa" * 253 for _ in range(4))
    body += bytes([0x1E, 200]) + b"\xbb" * 200
    hdr = ext_header(DSTOPT, body)
    assert len(hdr) == 1224
    return hdr


def evasive_fragments(dst: str, icmp_type: int, tail: bytes, ident: int) -> list[bytes]:
    """DestOpt(1224) + DestOpt(8) + ICMPv6, fragmented so the first fragment ends
    between the two Destination Options headers: the kernel's walk finds no upper layer."""
    msg = icmp6_packet(A, dst, icmp_type, 0, b"\x00\x07\x00\x01" + tail)[40:]
    first = fragment_header(DSTOPT, 0, True, ident) + _big_dstopt()
    second = fragment_header(DSTOPT, 1224, False, ident) + ext_header(ICMPV6) + msg
    return [ipv6_packet(A, dst, FRAG, first), ipv6_packet(A, dst, FRAG, second)]


def plain_fragments(dst: str, tail: bytes, ident: int) -> list[bytes]:
    """A 2400-octet Echo Request fragmented by scapy: the first fragment carries the
    whole chain (so the kernel's walk finds ICMPv6), the rest say next header 58."""
    pkt = (IPv6(src=A, dst=dst) / IPv6ExtHdrFragment(id=ident)
           / ICMPv6EchoRequest(id=7, seq=1, data=b"\x55" * 2400 + tail))
    return [bytes(f) for f in fragment6(pkt, 1280)]


def _collect(sock: socket.socket, sentinel: bytes, timeout: float, *,
             ethernet: bool = False) -> list[bytes]:
    """What `sock` receives up to the first message containing `sentinel`.

    The sentinel is sent after the packets under test along the same path and queue,
    which keep their order: once it is here, anything of theirs that was let through
    is here too, however slow the machine. Raises AssertionError if it never comes.
    """
    out: list[bytes] = []
    deadline = time.monotonic() + timeout
    sock.settimeout(0.05)
    while time.monotonic() < deadline and len(out) < 10_000:
        try:
            data, addr = sock.recvfrom(65535)
        except TimeoutError:
            continue
        if ethernet:
            if addr[2] == socket.PACKET_OUTGOING:
                continue
            data = data[14:]
        out.append(data)
        if sentinel in data:
            return out
    raise AssertionError(f"the sentinel {sentinel!r} did not arrive within {timeout} s")


def _reply_sentinel(dst: str, tail: bytes) -> bytes:
    """An unsolicited Echo Reply: accepted by the defaults, at g's input and in transit."""
    return icmp6_packet(A, dst, 129, 0, b"\x00\x07\x00\x01" + tail)


class Sniffer:
    """A packet socket on a node: every IPv6 frame it receives, before any stack."""

    def __init__(self, topo: Topology, node: str) -> None:
        self.sock = topo.socket(node, socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x86DD))
        self.sock.settimeout(0.05)

    def until(self, sentinel: bytes, timeout: float = 10.0) -> list[bytes]:
        """IPv6 packets (Ethernet header cut) received up to and including the first
        that contains `sentinel`; bounded in time and count."""
        return _collect(self.sock, sentinel, timeout, ethernet=True)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def sniff_b(three_node: Topology) -> Iterator[Sniffer]:
    s = Sniffer(three_node, "b")
    yield s
    s.close()


def _fragments_with_id(frames: list[bytes], ident: int, *, non_first: bool = False) -> int:
    """Frames whose first header is a Fragment header with this id."""
    n = 0
    for f in frames:
        if len(f) >= 48 and f[6] == FRAG and struct.unpack("!I", f[44:48])[0] == ident:
            offset = struct.unpack("!H", f[42:44])[0] & 0xFFF8
            n += (offset > 0) if non_first else 1
    return n


def _hits(shim: ShimProcess, rule: str) -> int:
    snap = query(shim.control_socket)
    return sum(int(r["hits"]) for r in snap["rules"] if r["rule"] == rule)  # type: ignore[attr-defined, index]


class TestEvasionsAreJudged:
    def test_fragmented_ping_with_chain_split_gets_no_reply_from_g(
        self, three_node: Topology, shim_on: Callable[..., ShimProcess],
        config_dir: Callable[..., Path], wire: Callable[..., Wire], backend: str,
    ) -> None:
        """The evasion: neither fragment names ICMPv6 to the kernel's walk.
        Both are judged now: the first lacks the chain (RFC 7112) and is dropped, the
        second follows it; g neither delivers the Echo Request nor replies."""
        cfg = config_dir('[[rule]]\nname = "no-pings"\ntype = "echo-request"\n'
                         'verdict = "drop"\n')
        shim = shim_on(three_node.ns("g"), cfg)
        w = wire("a", ("g",))
        w.flush()
        for frag in evasive_fragments(G_A, 128, b"split-chain-to-g", 0x5101):
            w.send(frag)
        w.send(_reply_sentinel(G_A, b"sentinel-g"))
        delivered = _collect(w.rx["g"], b"sentinel-g", 10.0)
        assert not [m for m in delivered if b"split-chain-to-g" in m]  # so g cannot reply
        first = shim.next_event("verdict", hook="input", rule="hardening-incomplete-chain")
        assert first is not None and first["verdict"] == "drop"
        snap = query(shim.control_socket)
        assert snap["fragments"]["followed"] >= 1  # type: ignore[index]

    def test_fragmented_transit_drop_types_never_reach_b(
        self, three_node: Topology, shim_on: Callable[..., ShimProcess],
        config_dir: Callable[..., Path], wire: Callable[..., Wire], sniff_b: Sniffer,
        backend: str,
    ) -> None:
        """Node Information, Router Renumbering, experimental and reserved types behind
        the split chain: no fragment of them reaches b's wire, nothing its stack."""
        shim = shim_on(three_node.ns("g"), config_dir(""))
        w = wire("a", ("b",))
        w.flush()
        types = (139, 138, 200, 255)
        for t in types:
            for frag in evasive_fragments(B, t, b"transit-%d" % t, 0x5200 + t):
                w.send(frag)
        w.send(_reply_sentinel(B, b"sentinel-b"))
        frames = sniff_b.until(b"sentinel-b")
        delivered = _collect(w.rx["b"], b"sentinel-b", 10.0)
        for t in types:
            assert _fragments_with_id(frames, 0x5200 + t) == 0, f"type {t}"
            assert not [m for m in delivered if b"transit-%d" % t in m], f"type {t}"
        assert _hits(shim, "hardening-incomplete-chain") >= 2 * len(types)

    def test_icmpv6_behind_ah_is_judged_other_ah_traffic_passes(
        self, three_node: Topology, shim_on: Callable[..., ShimProcess],
        config_dir: Callable[..., Path], wire: Callable[..., Wire], sniff_b: Sniffer,
        backend: str,
    ) -> None:
        """An Echo Request behind AH meets the rule dropping Echo Requests to b; TCP
        behind AH is not ICMPv6 and passes, counted as such."""
        cfg = config_dir('[[rule]]\nname = "no-echo-to-b"\n'
                         f'type = "echo-request"\ndst = "{B}/128"\n'
                         'verdict = "drop"\n')
        shim = shim_on(three_node.ns("g"), cfg)
        w = wire("a", ())
        # 24 octets of AH: payloadlen counts 4-octet words minus 2 (RFC 4302 §2.2).
        ah = dict(spi=0x100, seq=1, icv=b"\0" * 12, payloadlen=4)
        echo = IPv6(src=A, dst=B) / AH(nh=ICMPV6, **ah) / ICMPv6EchoRequest(data=b"ah-echo-marker")
        tcp = IPv6(src=A, dst=B) / AH(nh=6, **ah) / TCP(dport=9) / b"ah-tcp-marker"
        assert parse(bytes(echo)).icmpv6_type == 128 and parse(bytes(tcp)).upper_layer == 6
        w.send(bytes(echo))
        w.send(bytes(tcp))  # the sentinel: not ICMPv6, so it passes
        frames = sniff_b.until(b"ah-tcp-marker")
        assert sum(1 for f in frames if b"ah-echo-marker" in f) == 0
        ev = shim.next_event("verdict", rule="no-echo-to-b", icmp6_type=128)
        assert ev is not None and ev["verdict"] == "drop"
        assert query(shim.control_socket)["non_icmpv6"] >= 1  # type: ignore[operator]

    def test_fragmented_udp_arrives_and_is_counted_not_judged(
        self, three_node: Topology, shim_on: Callable[..., ShimProcess],
        config_dir: Callable[..., Path], wire: Callable[..., Wire], backend: str,
    ) -> None:
        """Fragmented UDP is queued (every fragment is) but no rule meets it: a user
        rule naming only the source must not drop it. Its fragments count as non-ICMPv6."""
        cfg = config_dir('[[rule]]\nname = "from-a"\n'
                         f'src = "{A}/128"\nverdict = "drop"\n')
        shim = shim_on(three_node.ns("g"), cfg)
        rx = three_node.socket("b", socket.AF_INET6, socket.SOCK_DGRAM)
        try:
            rx.bind((B, UDP_PORT))
            rx.settimeout(10.0)
            w = wire("a", ())
            pkt = (IPv6(src=A, dst=B) / IPv6ExtHdrFragment(id=0x5301)
                   / UDP(sport=4000, dport=UDP_PORT) / (b"\x33" * 3000 + b"udp-end"))
            frags = [bytes(f) for f in fragment6(pkt, 1280)]
            assert len(frags) == 3
            for frag in frags:
                w.send(frag)
            data = rx.recv(65535)
            assert data.endswith(b"udp-end") and len(data) == 3007
        finally:
            rx.close()
        snap = query(shim.control_socket)
        assert snap["non_icmpv6"] == len(frags)
        assert _hits(shim, "from-a") == 0

    def test_non_first_fragments_follow_a_dropped_first_fragment(
        self, three_node: Topology, shim_on: Callable[..., ShimProcess],
        config_dir: Callable[..., Path], wire: Callable[..., Wire], sniff_b: Sniffer,
        backend: str,
    ) -> None:
        """A rule drops the first fragment of an Echo Request to b: the other fragments
        are dropped too instead of crossing g alone. An accepted fragmented Echo
        Request (to g) is delivered whole: following never drops what was accepted."""
        cfg = config_dir('[[rule]]\nname = "no-echo-to-b"\n'
                         f'type = "echo-request"\ndst = "{B}/128"\n'
                         'verdict = "drop"\n')
        shim = shim_on(three_node.ns("g"), cfg)
        w = wire("a", ("g",))
        w.flush()
        dropped = plain_fragments(B, b"frag-to-b", 0x5401)
        accepted = plain_fragments(G_A, b"frag-to-g", 0x5402)
        assert len(dropped) == len(accepted) == 2
        for frag in dropped + accepted:
            w.send(frag)
        w.send(_reply_sentinel(B, b"sentinel-b"))
        frames = sniff_b.until(b"sentinel-b")
        assert _fragments_with_id(frames, 0x5401) == 0
        assert w.arrived("g", b"frag-to-g", timeout=5.0) == 1
        assert _hits(shim, "no-echo-to-b") == 2
        snap = query(shim.control_socket)
        assert snap["fragments"]["followed"] == 2  # type: ignore[index]

    def test_icmpv6_behind_headers_the_kernel_does_not_walk_is_judged(
        self, three_node: Topology, shim_on: Callable[..., ShimProcess],
        config_dir: Callable[..., Path], wire: Callable[..., Wire], sniff_b: Sniffer,
        backend: str,
    ) -> None:
        """Behind an experimental extension header (253, RFC 4727) or a Mobility header,
        the kernel's walk sees upper layer 253 / 135; the shim's parser walks on to the
        Echo Request, which the rule drops."""
        cfg = config_dir('[[rule]]\nname = "no-echo-to-b"\n'
                         f'type = "echo-request"\ndst = "{B}/128"\n'
                         'verdict = "drop"\n')
        shim = shim_on(three_node.ns("g"), cfg)
        w = wire("a", ())
        for proto in (253, 135):
            echo = icmp6_packet(A, B, 128, 0, b"\x00\x07\x00\x01hidden-%d" % proto,
                                ext=((proto, ext_header(ICMPV6)),))
            assert parse(echo).icmpv6_type == 128 and parse(echo).ext_headers == (proto,)
            w.send(echo)
        w.send(_reply_sentinel(B, b"sentinel-b"))
        frames = sniff_b.until(b"sentinel-b")
        assert not [f for f in frames if b"hidden-" in f]
        assert _hits(shim, "no-echo-to-b") == 2

    def test_a_packet_whose_header_walk_fails_never_reaches_b(
        self, three_node: Topology, shim_on: Callable[..., ShimProcess],
        config_dir: Callable[..., Path], wire: Callable[..., Wire], sniff_b: Sniffer,
        backend: str,
    ) -> None:
        """A Destination Options header longer than the packet, announcing another one:
        the kernel's walk fails. nft queues it (last line) and the shim drops it as
        malformed; the xtables -m frag match drops it first on the iptables backend
        (README: not queued even so). Either way it does not cross g."""
        shim = shim_on(three_node.ns("g"), config_dir(""))
        w = wire("a", ())
        bad = ipv6_packet(A, B, DSTOPT, bytes([DSTOPT, 2]) + b"\x01\x04\0\0\0\0walk-fails")
        assert "ext_header_overrun" in parse(bad).malformed
        w.send(bad)
        w.send(_reply_sentinel(B, b"sentinel-b"))
        frames = sniff_b.until(b"sentinel-b")
        assert not [f for f in frames if b"walk-fails" in f]
        assert _hits(shim, "hardening-malformed") == (1 if backend == "nft" else 0)
