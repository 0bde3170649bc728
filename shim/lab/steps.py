# SPDX-License-Identifier: MIT
"""The step kinds of testbed scenarios: act on a topology, observe the kernel.

Each step is fn(topology, args, within) -> (label, observation); STEPS maps a
scenario's `do = "..."` to (required keys, optional keys, fn). Observations
are plain strings a scenario's `expect` compares with. Bounded in time.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import struct
import time
from collections.abc import Callable
from typing import Any

from shim.core.errors import ConfigError
from shim.lab.netns import Topology
from shim.lab.packets import ext_header, fragment_header, icmp6_packet, ipv6_packet

__all__ = ["POLLED", "STEPS", "router_advert"]


# --- steps: fn(topology, args, within) -> (label, observation) ---------------------

def _wait(topo: Topology, a: dict[str, Any], within: float) -> tuple[str, str]:
    time.sleep(min(float(a["seconds"]), 30.0))
    return f"wait {a['seconds']}s", "done"


def _udp(topo: Topology, a: dict[str, Any], within: float) -> tuple[str, str]:
    port, size, count = int(a["port"]), int(a.get("size", 64)), min(int(a.get("count", 3)), 10)
    tag = b"icmp6-shim testbed " + os.urandom(4).hex().encode()
    rx = topo.socket(str(a["to"]), socket.AF_INET6, socket.SOCK_DGRAM)
    tx = topo.socket(str(a["from"]), socket.AF_INET6, socket.SOCK_DGRAM)
    got = False
    try:
        rx.bind(("::", port))
        rx.settimeout(0.1)
        deadline = time.monotonic() + max(within, 0.5 * count)
        for i in range(count):
            try:
                tx.sendto(tag + bytes(max(size - len(tag), 0)), (str(a["addr"]), port))
            except OSError:
                pass  # e.g. EMSGSIZE after a PMTU change: the next datagram is sized anew
            end = time.monotonic() + (0.5 if i + 1 < count else max(deadline - time.monotonic(), 0))
            while not got and time.monotonic() < end:
                try:
                    got = rx.recv(65535).startswith(tag)
                except TimeoutError:
                    continue
            if got:
                break
    finally:
        rx.close()
        tx.close()
    return (f"UDP {size} octets {a['from']} -> {a['addr']} port {port}, received by a socket on "
            f"{a['to']}", "received" if got else "lost")


def _ping(topo: Topology, a: dict[str, Any], within: float) -> tuple[str, str]:
    proc = topo.run(str(a["from"]), "ping", "-6", "-c", "1", "-W", str(max(int(within), 1)),
                    str(a["addr"]), timeout=within + 10)
    return f"ping {a['from']} -> {a['addr']}", "ok" if proc.returncode == 0 else "fail"


def _neighbor(topo: Topology, a: dict[str, Any], within: float) -> tuple[str, str]:
    state = topo.neighbor_state(str(a["node"]), str(a["addr"]))
    return f"{a['node']}'s neighbour entry for {a['addr']}", state or "none"


def _route_mtu(topo: Topology, a: dict[str, Any], within: float) -> tuple[str, str]:
    words = topo.run(str(a["node"]), "ip", "-6", "route", "get", str(a["addr"])).stdout.split()
    mtu = words[words.index("mtu") + 1] if "mtu" in words[:-1] else "none"
    return f"{a['node']}: ip -6 route get {a['addr']}: path MTU", mtu


def _address(topo: Topology, a: dict[str, Any], within: float) -> tuple[str, str]:
    net = ipaddress.IPv6Network(str(a["prefix"]))
    words = topo.run(str(a["node"]), "ip", "-6", "-o", "addr", "show").stdout.split()
    found = any(w.split("/")[0].count(":") and ipaddress.IPv6Address(w.split("/")[0]) in net
                for w in words if "/" in w and ":" in w)
    return f"{a['node']} has an address in {net}", "configured" if found else "absent"


def router_advert(src: str, prefix: str, disguise: str = "none") -> list[bytes]:
    """An RA carrying one autonomous Prefix Information option, as packets to send.

    disguise: "none"; "dstopt" (behind a Destination Options header, RFC 7113
    §3); "fragments" (a large Destination Options header pushes the ICMPv6
    header into the second fragment, RFC 7113 §3).
    """
    net = ipaddress.IPv6Network(prefix)
    pio = struct.pack("!BBBBIII", 3, 4, net.prefixlen, 0xC0, 3600, 1800, 0) + net.network_address.packed
    body = struct.pack("!BBHII", 64, 0, 0, 0, 0) + pio
    if disguise == "none":
        return [icmp6_packet(src, "ff02::1", 134, 0, body, 255)]
    if disguise == "dstopt":
        return [icmp6_packet(src, "ff02::1", 134, 0, body, 255, ext=((60, ext_header(0)),))]
    # 4 skippable options (type 0x1e) of 250 octets + PadN(4): a 1016-octet header.
    opts = b"".join(bytes([0x1E, 250]) + bytes(250) for _ in range(4)) + bytes([1, 4, 0, 0, 0, 0])
    whole = icmp6_packet(src, "ff02::1", 134, 0, body, 255, ext=((60, ext_header(0, opts)),))
    payload, cut = whole[40:], 512
    return [ipv6_packet(src, "ff02::1", 44, fragment_header(60, 0, True, 7) + payload[:cut], 255),
            ipv6_packet(src, "ff02::1", 44, fragment_header(60, cut, False, 7) + payload[cut:], 255)]


def _ra(topo: Topology, a: dict[str, Any], within: float) -> tuple[str, str]:
    node, dev = str(a["from"]), str(a["dev"])
    src = str(a.get("src", "link-local"))
    src = topo.link_local(node, dev) if src == "link-local" else src
    disguise = str(a.get("disguise", "none"))
    if disguise not in ("none", "dstopt", "fragments"):
        raise ConfigError(f"do=ra: disguise must be none, dstopt or fragments, not {disguise!r}")
    tx = topo.socket(node, socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_RAW)
    try:
        for pkt in router_advert(src, str(a["prefix"]), disguise):
            tx.sendto(pkt, ("ff02::1", 0, 0, topo.ifindex(node, dev)))
    finally:
        tx.close()
    return f"RA for {a['prefix']} from {node} ({src}), disguise {disguise}", "sent"


Fn = Callable[[Topology, dict[str, Any], float], tuple[str, str]]
STEPS: dict[str, tuple[tuple[str, ...], tuple[str, ...], Fn]] = {
    "wait": (("seconds",), (), _wait),
    "udp": (("from", "to", "addr", "port"), ("size", "count"), _udp),
    "ping": (("from", "addr"), (), _ping),
    "neighbor": (("node", "addr"), (), _neighbor),
    "route_mtu": (("node", "addr"), (), _route_mtu),
    "address": (("node", "prefix"), (), _address),
    "ra": (("from", "dev", "prefix"), ("src", "disguise"), _ra),
}
POLLED = ("neighbor", "route_mtu", "address")
