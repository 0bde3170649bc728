# SPDX-License-Identifier: MIT
"""`make demo`: the packet path end to end on the default config.

Builds host A - gateway G - host B in network namespaces, runs the shim on G,
sends one labelled message of each kind the draft's section 6 table names
(plus a few hostile ones), and prints for each what was sent, the verdict the
shim gave (from its own decision log) and whether the message arrived
(read on a raw ICMPv6 socket at the receiver). Removes everything it made.
"""

from __future__ import annotations

import os
import socket
import struct
from dataclasses import dataclass
from pathlib import Path

from shim.core.errors import ShimError
from shim.lab.netns import Topology, load_topology
from shim.lab.packets import ext_header, fragment_header, icmp6_packet
from shim.lab.runner import ShimProcess
from shim.lab.wire import Wire

__all__ = ["Probe", "probes", "run_demo", "send_and_observe", "verdict_text"]

A, G_A, G_B, B = "2001:db8:1::a", "2001:db8:1::1", "2001:db8:2::1", "2001:db8:2::b"


@dataclass(frozen=True, slots=True)
class Probe:
    label: str
    to: str              # receiving node: "g" (input hook) or "b" (forwarded by g)
    packet: bytes
    multicast_if: str | None = None  # sent to a link-scope multicast group on a's eth0


def _invoking(src: str, dst: str) -> bytes:
    """The start of an invoking packet, as an ICMPv6 error carries it."""
    return icmp6_packet(src, dst, 128, 0, b"\x00\x01\x00\x01demo")[:48]


def _solicited(addr: str) -> str:
    import ipaddress

    low = ipaddress.IPv6Address(addr).packed[-3:]
    return str(ipaddress.IPv6Address(bytes.fromhex("ff0200000000000000000001ff") + low))


def probes(a_ll: str, g_ll: str) -> list[Probe]:
    """The demo's messages: the draft's twelve rows, to the gateway and through it."""
    tag = b"\x00\x2a\x00\x01demo-tag"
    ns_body = bytes(4) + socket.inet_pton(socket.AF_INET6, G_A)
    na_body = b"\x60\x00\x00\x00" + socket.inet_pton(socket.AF_INET6, A)
    redirect_body = bytes(4) + socket.inet_pton(socket.AF_INET6, g_ll) + socket.inet_pton(socket.AF_INET6, B)
    ra_body = struct.pack("!BBHII", 64, 0, 0, 0, 0)
    return [
        Probe("Echo Request A->B", "b", icmp6_packet(A, B, 128, 0, tag)),
        Probe("Echo Reply A->B", "b", icmp6_packet(A, B, 129, 0, tag)),
        Probe("Dest Unreachable A->B", "b", icmp6_packet(A, B, 1, 4, bytes(4) + _invoking(B, A))),
        Probe("Packet Too Big A->B", "b", icmp6_packet(A, B, 2, 0, struct.pack("!I", 1280) + _invoking(B, A))),
        Probe("Time Exceeded A->B", "b", icmp6_packet(A, B, 3, 0, bytes(4) + _invoking(B, A))),
        Probe("Parameter Problem A->B", "b", icmp6_packet(A, B, 4, 0, struct.pack("!I", 6) + _invoking(B, A))),
        Probe("Router Renumbering A->B", "b", icmp6_packet(A, B, 138, 0, bytes(12))),
        Probe("Neighbour Solicit A->B (forwarded)", "b", icmp6_packet(A, B, 135, 0, ns_body, 255)),
        Probe("Echo Request A->G", "g", icmp6_packet(A, G_A, 128, 0, tag)),
        Probe("Packet Too Big A->G", "g", icmp6_packet(A, G_A, 2, 0, struct.pack("!I", 1400) + _invoking(G_A, A))),
        Probe("Neighbour Solicit A->G", "g", icmp6_packet(A, _solicited(G_A), 135, 0, ns_body, 255), "eth0"),
        Probe("Neighbour Advert A->G", "g", icmp6_packet(a_ll, G_A, 136, 0, na_body, 255)),
        Probe("Router Solicit A->G", "g", icmp6_packet(a_ll, "ff02::2", 133, 0, bytes(4), 255), "eth0"),
        Probe("Router Advert A->G", "g", icmp6_packet(a_ll, "ff02::1", 134, 0, ra_body, 255), "eth0"),
        Probe("Redirect A->G", "g", icmp6_packet(a_ll, G_A, 137, 0, redirect_body, 255)),
        Probe("hostile: NS with hop limit 64", "g", icmp6_packet(A, G_A, 135, 0, ns_body, 64)),
        Probe("RA behind Dest. Options (parsed through)", "g",
              icmp6_packet(a_ll, "ff02::1", 134, 0, ra_body, 255, ext=((60, ext_header(0)),)), "eth0"),
        Probe("hostile: RA in a fragment without its header chain", "g",
              icmp6_packet(a_ll, "ff02::1", 134, 0, ra_body, 255,
                           ext=((60, ext_header(0, bytes(206))), (44, fragment_header(0, more=True)))), "eth0"),
    ]


def send_and_observe(shim: ShimProcess, probe: Probe, wire: Wire) -> tuple[str, bool]:
    """Send one probe from a; return (verdict text from the shim's log, arrived?)."""
    dst = socket.inet_ntop(socket.AF_INET6, probe.packet[24:40])
    src = socket.inet_ntop(socket.AF_INET6, probe.packet[8:24])
    wire.flush()  # forget what arrived before this probe
    wire.send(probe.packet, probe.multicast_if)
    icmp = probe.packet[-(struct.unpack("!H", probe.packet[4:6])[0]):]
    ev = shim.next_event("verdict", timeout=2.0, src=src, dst=dst)
    verdict = "no verdict seen" if ev is None else verdict_text(ev)
    return verdict, wire.arrived(probe.to, icmp[-8:], timeout=0.5) > 0


def verdict_text(ev: dict[str, object]) -> str:
    """A verdict log event as the demo's table shows it: `mark:0x1 [nd-neighbor-solicit]`."""
    mark = ev.get("mark")
    verdict = f"mark:{mark:#x}" if isinstance(mark, int) else str(ev.get("verdict"))
    return f"{verdict} [{ev.get('rule')}]"


def run_demo(config_dir: Path | None) -> int:
    """Run the demo; returns 0 when every probe got a verdict."""
    if os.geteuid() != 0:
        raise ShimError("the demo builds network namespaces: run it as root (make demo)")
    topo = Topology(load_topology("three-node"), prefix=f"i6demo{os.getpid() % 10000}-")
    with topo:
        wire = Wire(topo, "a", ("g", "b"))
        a_ll, g_ll = topo.link_local("a", "eth0"), topo.link_local("g", "eth0")
        print(f"topology: a ({A}) -- g ({G_A} | {G_B}) -- b ({B}); shim on g, config "
              f"{config_dir or 'built-in'}")
        with ShimProcess(config_dir, netns=topo.ns("g")) as shim:
            shim.wait_ready()
            backend = next((e for e in shim.events if e.get("event") == "backend_chosen"), {})
            ready = next((e for e in shim.events if e.get("event") == "ready"), {})
            print(f"shim ready: engine {ready.get('engine')}, backend {backend.get('backend')} "
                  f"({backend.get('reason')})\n")
            rows = [(p.label, *send_and_observe(shim, p, wire)) for p in probes(a_ll, g_ll)]
            width = max(len(r[0]) for r in rows)
            print(f"{'message':<{width}}  {'verdict [rule]':<58} arrived")
            print("-" * (width + 68))
            for label, verdict, arrived in rows:
                print(f"{label:<{width}}  {verdict:<58} {'yes' if arrived else 'no'}")
            ping = topo.run("a", "ping", "-6", "-c", "1", "-W", "2", B)
            print(f"\nping a -> b through the shim: {'ok' if ping.returncode == 0 else 'failed'}; "
                  f"a's neighbour entry for g: {topo.neighbor_state('a', G_A)}")
            rc = shim.stop()
            print(f"shim stopped (exit {rc})")
        wire.close()
    missing = sum(1 for r in rows if r[1] == "no verdict seen")
    print(f"cleaned up: namespaces {', '.join(topo.ns(n.name) for n in topo.spec.nodes)} removed")
    unexpected = deadlock_before_after()
    return 0 if missing == 0 and unexpected == 0 else 1


def deadlock_before_after() -> int:
    """The draft's section 1 deadlock without and with the shim (testbed scenario `deadlock`)."""
    from shim.lab.testbed import load_scenario, run_scenario

    print("\n--- the draft's deadlock: `icmp6-shim testbed run deadlock` ---")
    return run_scenario(load_scenario("deadlock"))
