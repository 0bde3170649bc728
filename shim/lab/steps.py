# SPDX-License-Identifier: MIT
"""The step kinds of testbed scenarios: act on a topology, observe the kernel.

Each step is fn(run, args, within) -> (label, observation), `run` being the
RunContext of one run (its topology, the charons the scenario started, the
run's capture file); STEPS maps a scenario's `do = "..."` to (required keys,
optional keys, fn). Observations are plain strings a scenario's `expect`
compares with. Bounded in time.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import struct
import re
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from shim.core.errors import ConfigError
from shim.lab.netns import Topology
from shim.lab.packets import ext_header, fragment_header, icmp6_packet, ipv6_packet
from shim.lab.strongswan import Charon

__all__ = ["POLLED", "STEPS", "RunContext", "router_advert"]


class RunContext:
    """What one run's steps act on: the topology, the run's charons and capture."""

    def __init__(self, topo: Topology, *, charons: dict[str, Charon] | None = None,
                 capture: Path | None = None, capture_where: str = "") -> None:
        self.topo = topo
        self.charons = charons if charons is not None else {}
        self.capture = capture              # the pcap tcpdump writes during the run, if any
        self.capture_where = capture_where  # node:ifname it listens on
        self.t0: float | None = None        # monotonic time the run's first step began

    def since_start(self) -> str:
        return f"t+{time.monotonic() - self.t0:.1f} s" if self.t0 is not None else "t+?"

    def charon(self, node: str) -> Charon:
        if node not in self.charons:
            raise ConfigError(f"no charon runs on {node} in this scenario ([swanctl] nodes)")
        return self.charons[node]


# --- steps: fn(run, args, within) -> (label, observation) --------------------------

def _wait(run: RunContext, a: dict[str, Any], within: float) -> tuple[str, str]:
    time.sleep(min(float(a["seconds"]), 30.0))
    return f"wait {a['seconds']}s", "done"


def _udp(run: RunContext, a: dict[str, Any], within: float) -> tuple[str, str]:
    port, size, count = int(a["port"]), int(a.get("size", 64)), min(int(a.get("count", 3)), 10)
    tag = b"icmp6-shim testbed " + os.urandom(4).hex().encode()
    rx = run.topo.socket(str(a["to"]), socket.AF_INET6, socket.SOCK_DGRAM)
    tx = run.topo.socket(str(a["from"]), socket.AF_INET6, socket.SOCK_DGRAM)
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


def _ping(run: RunContext, a: dict[str, Any], within: float) -> tuple[str, str]:
    size = ["-s", str(int(a["size"]))] if "size" in a else []
    proc = run.topo.run(str(a["from"]), "ping", "-6", "-c", "1", "-W", str(max(int(within), 1)),
                        *size, str(a["addr"]), timeout=within + 10)
    sized = f" ({int(a['size'])} octets of data)" if size else ""
    return f"ping {a['from']} -> {a['addr']}{sized}", "ok" if proc.returncode == 0 else "fail"


def _neighbor(run: RunContext, a: dict[str, Any], within: float) -> tuple[str, str]:
    state = run.topo.neighbor_state(str(a["node"]), str(a["addr"]))
    return f"{a['node']}'s neighbour entry for {a['addr']}", state or "none"


def _route_mtu(run: RunContext, a: dict[str, Any], within: float) -> tuple[str, str]:
    words = run.topo.run(str(a["node"]), "ip", "-6", "route", "get", str(a["addr"])).stdout.split()
    mtu = words[words.index("mtu") + 1] if "mtu" in words[:-1] else "none"
    return f"{a['node']}: ip -6 route get {a['addr']}: path MTU", mtu


def _address(run: RunContext, a: dict[str, Any], within: float) -> tuple[str, str]:
    net = ipaddress.IPv6Network(str(a["prefix"]))
    words = run.topo.run(str(a["node"]), "ip", "-6", "-o", "addr", "show").stdout.split()
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


def _ra(run: RunContext, a: dict[str, Any], within: float) -> tuple[str, str]:
    node, dev = str(a["from"]), str(a["dev"])
    src = str(a.get("src", "link-local"))
    src = run.topo.link_local(node, dev) if src == "link-local" else src
    disguise = str(a.get("disguise", "none"))
    if disguise not in ("none", "dstopt", "fragments"):
        raise ConfigError(f"do=ra: disguise must be none, dstopt or fragments, not {disguise!r}")
    tx = run.topo.socket(node, socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_RAW)
    try:
        for pkt in router_advert(src, str(a["prefix"]), disguise):
            tx.sendto(pkt, ("ff02::1", 0, 0, run.topo.ifindex(node, dev)))
    finally:
        tx.close()
    return f"RA for {a['prefix']} from {node} ({src}), disguise {disguise}", "sent"


def _swanctl(run: RunContext, a: dict[str, Any], within: float) -> tuple[str, str]:
    """The node's charon's IKE_SAs (`swanctl --list-sas`), reduced to one word."""
    node = str(a["node"])
    sas = [s for s in run.charon(node).sas() if "conn" not in a or s.name == str(a["conn"])]
    up = [s for s in sas if s.state == "ESTABLISHED"]
    installed = [(s.name, c) for s in up for c in s.children if c[1] == "INSTALLED"]
    if installed:
        observed = "established"
    elif up:
        observed = "ike-only"
    else:
        observed = "connecting" if sas else "none"
    shown = "; ".join(f"{s.name} {s.state}" + "".join(f", {c[0]} {c[1]} {c[2]}" for c in s.children)
                      for s in sas) or "no IKE_SA"
    return f"{node}: swanctl --list-sas: {shown} ({run.since_start()})", observed


def _charon_log(run: RunContext, a: dict[str, Any], within: float) -> tuple[str, str]:
    """Whether the node's charon logged a line matching `grep` (a regular expression)."""
    node = str(a["node"])
    try:
        pattern = re.compile(str(a["grep"]))
    except re.error as exc:
        raise ConfigError(f"do=charon_log: grep {a['grep']!r}: {exc}") from None
    hits = [line for line in run.charon(node).log_lines() if pattern.search(line)]
    shown = f"{len(hits)} line(s), first: {hits[0].strip()}" if hits else "no line"
    return f"{node}'s charon log /{a['grep']}/: {shown}", "found" if hits else "absent"


def _wire(run: RunContext, a: dict[str, Any], within: float) -> tuple[str, str]:
    """Packets matching a BPF `filter` in the run's capture so far (the scenario's `capture`)."""
    if run.capture is None:
        raise ConfigError("do=wire needs the scenario's `capture` key (node:ifname)")
    proc = subprocess.run(["tcpdump", "-n", "-r", str(run.capture), str(a["filter"])],
                          capture_output=True, text=True, timeout=30)
    if proc.returncode != 0 and "truncated" not in proc.stderr and "no such" not in proc.stderr:
        raise ConfigError(f"do=wire: tcpdump filter {a['filter']!r}: {proc.stderr.strip()[-200:]}")
    lines = proc.stdout.splitlines()
    first = f", first: {' '.join(lines[0].split()[1:])[:120]}" if lines else ""
    return (f"packets matching '{a['filter']}' on {run.capture_where} so far: {len(lines)}{first}",
            "seen" if lines else "none")


Fn = Callable[[RunContext, dict[str, Any], float], tuple[str, str]]
STEPS: dict[str, tuple[tuple[str, ...], tuple[str, ...], Fn]] = {
    "wait": (("seconds",), (), _wait),
    "udp": (("from", "to", "addr", "port"), ("size", "count"), _udp),
    "ping": (("from", "addr"), ("size",), _ping),
    "neighbor": (("node", "addr"), (), _neighbor),
    "route_mtu": (("node", "addr"), (), _route_mtu),
    "address": (("node", "prefix"), (), _address),
    "ra": (("from", "dev", "prefix"), ("src", "disguise"), _ra),
    "swanctl": (("node",), ("conn",), _swanctl),
    "charon_log": (("node", "grep"), (), _charon_log),
    "wire": (("filter",), (), _wire),
}
POLLED = ("neighbor", "route_mtu", "address", "swanctl", "charon_log", "wire")
