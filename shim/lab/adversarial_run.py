# SPDX-License-Identifier: MIT
"""The live run of the adversarial suite: `icmp6-shim testbed attack`, `make test-adversarial`.

Builds the suite's topology (namespaces i6adv<pid>-NODE), pins every neighbour entry
(so ND adds no packets to what the shim judges), starts the daemon on G as a child
with the suite's config, runs each attack in turn (shim.lab.adversarial rows) and
measures sent, judged, reached. The daemon is asked through its CLI (`stats`,
`explain`), never imported. Everything is removed in a finally; every wait is bounded.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from shim.lab.adversarial import Attack, Result, Suite, format_table, judge, load_suite
from shim.lab.adversarial_probes import RawCounter, Tcpdump, craft, marker_body
from shim.core.errors import EnvironmentProblem
from shim.lab.netns import Topology, load_topology
from shim.lab.packets import icmp6_packet
from shim.lab.runner import ShimProcess

__all__ = ["run_suite"]

_SETTLE = 0.5     # seconds for the last packets to cross G before the counters stop
_MAIN_FILE = "icmp6-shim.toml"


def _shim_cli(*args: str, netns: str | None = None, timeout: float = 20) -> dict[str, Any]:
    """Run `icmp6-shim ARGS --json` as a child (in netns); its JSON answer, or {} on failure."""
    argv = [sys.executable, "-m", "shim", *args, "--json"]
    try:
        proc = subprocess.run((["ip", "netns", "exec", netns] if netns else []) + argv,
                              capture_output=True, text=True, timeout=timeout)
        answer: dict[str, Any] = json.loads(proc.stdout) if proc.returncode == 0 else {}
    except (subprocess.TimeoutExpired, json.JSONDecodeError):
        return {}
    return answer


def _pin_neighbours(topo: Topology) -> None:
    """Permanent neighbour entries for every peer's global and link-local address."""
    for link in topo.spec.links:
        ends = list(zip(link.ends, link.addresses))
        for ((node, ifname), _), ((peer, pif), paddr) in (ends, ends[::-1]):
            out = topo.run(peer, "ip", "-j", "link", "show", "dev", pif).stdout
            mac = json.loads(out)[0]["address"]
            for addr in [paddr.split("/")[0]] if paddr else []:
                topo.run(node, "ip", "-6", "neigh", "replace", addr, "lladdr", mac, "dev", ifname,
                         "nud", "permanent")
            topo.run(node, "ip", "-6", "neigh", "replace", topo.link_local(peer, pif), "lladdr",
                     mac, "dev", ifname, "nud", "permanent")


class _Bed:
    """The live testbed of one run: topology, config, the shim on G."""

    def __init__(self, topo: Topology, suite: Suite, config_dir: Path, shim: ShimProcess) -> None:
        self.topo, self.suite, self.config_dir, self.shim = topo, suite, config_dir, shim
        self.attacker = suite.addresses["a"]
        self._explained: dict[tuple[str, int, str, str], tuple[bool, str]] = {}

    def stats(self) -> dict[str, Any]:
        return _shim_cli("stats", "--socket", self.shim.control_socket)

    def policy(self, attack: Attack, src: str, dst: str) -> tuple[bool, str]:
        """(allowed, rule): the policy's decision for the undisguised message, by `explain`."""
        assert attack.icmp_type is not None
        key = (attack.victim, attack.icmp_type, src, dst)
        if key not in self._explained:
            where = self.suite.victims[attack.victim]
            body = marker_body(b"plain", 0, 0) + bytes(16)  # long enough for an RA's fields
            pkt = icmp6_packet(src.split("%")[0], dst, attack.icmp_type, 0, body, 255)
            args = ["explain", "--hex", pkt.hex(), "--config", str(self.config_dir),
                    "--hook", where["hook"], "--iif", where["iif"]]
            args += ["--oif", where["oif"]] if "oif" in where else []
            decision = _shim_cli(*args, netns=self.topo.ns("g")).get("decision")
            if not isinstance(decision, dict):
                raise EnvironmentProblem(f"icmp6-shim explain failed for {attack.name!r}")
            self._explained[key] = (decision["verdict"] != "drop", str(decision["rule"]))
        return self._explained[key]


def _delta(before: dict[str, Any], after: dict[str, Any]) -> tuple[int, dict[str, int]]:
    """Packets the shim judged between two stats snapshots, and hits per rule."""
    if not before or not after:
        return -1, {}
    old = {r["rule"]: r["hits"] for r in before.get("rules", [])}
    hits = {r["rule"]: r["hits"] - old.get(r["rule"], 0) for r in after.get("rules", [])}
    return int(after["packets"]) - int(before["packets"]), {k: v for k, v in hits.items() if v}


def _counter(bed: _Bed, attack: Attack, marker: bytes,
             sources: tuple[str, ...]) -> RawCounter | Tcpdump:
    if attack.reach == "link":
        link = bed.suite.victims[attack.victim]["link"]
        return Tcpdump(bed.topo, attack.victim, link, "in", attack.link_filter)
    assert attack.icmp_type is not None
    return RawCounter(bed.topo, attack.victim, (attack.icmp_type,), marker, sources)


def _send_crafted(bed: _Bed, attack: Attack, src: str, dst: str, marker: bytes) -> int:
    """Send `count` datagrams from A; returns how many left completely."""
    assert attack.send is not None and attack.icmp_type is not None
    scope = bed.topo.ifindex("a", "eth0") if dst.startswith(("fe80", "ff0")) else 0
    tx = bed.topo.socket("a", socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_RAW)
    sent = 0
    try:
        for i in range(attack.count):
            pkts = craft(attack.send, src, dst, attack.icmp_type,
                         marker_body(marker, 0x6164, i) + bytes(16), int.from_bytes(os.urandom(4)))
            try:
                for pkt in pkts:
                    tx.sendto(pkt, (dst, 0, 0, scope))
                sent += 1
            except OSError:
                pass
            time.sleep(0.02)
    finally:
        tx.close()
    return sent


def _run_tool(bed: _Bed, attack: Attack, during: Callable[[], str] | None = None) -> tuple[str, str]:
    """Run the attack's tool in A, bounded by `timeout`; (its output tail, during()'s result)."""
    proc = bed.topo.popen("a", "timeout", "-k", "2", "-s", "INT", f"{attack.seconds:g}", *attack.run,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    seen = ""
    try:
        if during is not None:
            time.sleep(0.5)  # let the flood start
            seen = during()
            proc.terminate()  # `timeout` passes it on to the tool
        out, _ = proc.communicate(timeout=attack.seconds + 5)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate(timeout=5)
    text = out.decode(errors="replace") if isinstance(out, bytes) else ""
    return " | ".join(text.strip().splitlines()[-3:])[-300:], seen


def _ping(bed: _Bed, spec: dict[str, Any]) -> str:
    count, interval = min(int(spec["count"]), 1000), max(float(spec["interval"]), 0.002)
    proc = bed.topo.run(str(spec["from"]), "ping", "-6", "-q", "-c", str(count), "-i", f"{interval:g}",
                        "-W", "1", str(spec["to"]), timeout=count * interval + 20)
    got = re.search(r"(\d+) packets transmitted, (\d+) received", proc.stdout)
    return f"{got.group(2)}/{got.group(1)}" if got else f"0/{count}"


def _one(bed: _Bed, attack: Attack, index: int) -> Result:
    marker = f"i6adv{index:02d}".encode() + os.urandom(4).hex().encode()
    src = attack.src or bed.attacker
    dst = attack.dst or bed.suite.victims[attack.victim]["addr"]
    crafted = attack.send is not None
    allowed, rule = (bed.policy(attack, src, dst) if attack.expect == "policy" and attack.ping is None
                     else (False, attack.why or "kernel"))
    sent_cap = None if crafted else Tcpdump(bed.topo, "a", "eth0", "out", attack.sent_filter)
    counter = None if attack.ping else _counter(bed, attack, marker if crafted else b"",
                                                (src,) if crafted else ())
    before = bed.stats()
    detail, pings = "", ""
    if crafted:
        sent = _send_crafted(bed, attack, src, dst, marker)
    else:
        detail, pings = _run_tool(bed, attack, (lambda: _ping(bed, attack.ping or {}))
                                  if attack.ping else None)
    time.sleep(_SETTLE)
    judged, rules = _delta(before, bed.stats())
    reached = counter.stop() if counter is not None else 0
    if sent_cap is not None:
        sent = sent_cap.stop()
    if attack.ping is not None:
        ok_n, total = (int(x) for x in pings.split("/"))
        success = 100.0 * ok_n / max(total, 1)
        expected, ok = judge(attack, sent, 0, None, success)
        return Result(attack=attack.name, sent=sent, judged=judged, reached=f"ping {pings} ({success:.1f}%)",
                      expected=expected, ok=ok, rules=rules, detail=detail)
    expected, ok = judge(attack, sent, reached, allowed if attack.expect == "policy" else None)
    return Result(attack=attack.name, sent=sent, judged=judged, reached=str(reached),
                  expected=f"{expected} ({rule})", ok=ok, rules=rules, detail=detail)


def _alive(bed: _Bed) -> Result:
    snap = bed.stats()
    running = bed.shim.proc is not None and bed.shim.proc.poll() is None and bool(snap)
    return Result(attack="shim still running after all attacks", sent=0, judged=int(snap.get("packets", -1)),
                  reached="-", expected="running", ok=running, rules={},
                  detail=f"errors {snap.get('errors')}, verdicts {snap.get('verdicts')}")


def _start(topo: Topology, shim: ShimProcess, tmp: str, out: Callable[[str], None]) -> _Bed:
    topo.up()
    _pin_neighbours(topo)
    suite = load_suite({"ll_a": topo.link_local("a", "eth0")})
    Path(tmp, _MAIN_FILE).write_text(suite.config)
    (Path(tmp) / "rules.d").mkdir()
    shim.start()
    shim.wait_ready()
    out(f"adversarial suite: {suite.description}; shim ready on g ({len(suite.attacks)} attacks)")
    return _Bed(topo, suite, Path(tmp), shim)


def run_suite(*, select: Callable[[Attack], bool] | None = None, json_path: str | None = None,
              out: Callable[[str], None] = print) -> int:
    """Run every attack (or those `select` accepts); prints the table, writes the JSON.

    Returns:
        The number of rows that are not ok (0: all ok).
    Raises:
        EnvironmentProblem: not root, or a tool (tcpdump, atk6-*) is missing.
    """
    if os.geteuid() != 0:
        raise EnvironmentProblem("the adversarial suite builds network namespaces: run it as root")
    suite = load_suite()
    chosen = [a for a in suite.attacks if select is None or select(a)]
    missing = sorted({a.run[0] for a in chosen if a.run} | {"tcpdump"})
    missing = [t for t in missing if not any(Path(d, t).exists() for d in os.get_exec_path())]
    if missing:
        raise EnvironmentProblem(f"missing tools: {', '.join(missing)} (Debian packages thc-ipv6, tcpdump)")
    started, results = time.monotonic(), []
    topo = Topology(load_topology(suite.topology), prefix=f"i6adv{os.getpid() % 10000}-")
    with tempfile.TemporaryDirectory(prefix="icmp6-adv-") as tmp:
        shim = ShimProcess(Path(tmp), netns=topo.ns("g"), extra=())
        try:
            bed = _start(topo, shim, tmp, out)
            for i, attack in enumerate(bed.suite.attacks):
                if select is not None and not select(attack):
                    continue
                results.append(_one(bed, attack, i))
                r = results[-1]
                out(f"  {r.attack}: sent {r.sent}, judged {r.judged}, reached {r.reached}, "
                    f"expected {r.expected}: {'ok' if r.ok else 'FAIL'}")
            results.append(_alive(bed))
        finally:
            try:
                shim.close()
            finally:
                topo.down()  # only the namespaces this run made
    out(format_table(results))
    out(f"runtime {time.monotonic() - started:.0f} s")
    if json_path:
        Path(json_path).write_text(json.dumps({"runtime_s": round(time.monotonic() - started, 1),
                                               "results": [asdict(r) for r in results]}, indent=2))
    return sum(not r.ok for r in results)
