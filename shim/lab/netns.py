# SPDX-License-Identifier: MIT
"""Network-namespace topologies for tests, the demo and the testbed.

A topology is data (shim/lab/data/topologies/*.toml): nodes, veth links, addresses,
routes. Invariants:
- only namespaces this object created are touched, all named with its prefix;
- down() removes them all and is safe to call twice or after a failed up();
- only 2001:db8::/32, fd00::/8 and fe80::/10 addresses are accepted.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import ipaddress
import json
import os
import socket
import subprocess
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources

from shim.core.errors import ConfigError, EnvironmentProblem
from shim.lab import owners
from shim.lab.owners import Owner
from shim.lab.runner import time_scale

__all__ = ["Topology", "TopologySpec", "in_netns", "load_topology"]

CLONE_NEWNET = 0x40000000
_ALLOWED = [ipaddress.ip_network(n) for n in ("2001:db8::/32", "fd00::/8", "fe80::/10")]


@dataclass(frozen=True, slots=True, kw_only=True)
class LinkSpec:
    ends: tuple[tuple[str, str], tuple[str, str]]  # (node, ifname) pairs
    addresses: tuple[str | None, str | None]
    mtu: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeSpec:
    name: str
    forwarding: bool = False
    routes: tuple[str, ...] = ()
    sysctls: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class TopologySpec:
    name: str
    description: str
    nodes: tuple[NodeSpec, ...]
    links: tuple[LinkSpec, ...]


def _check_addr(text: str, where: str) -> str:
    iface = ipaddress.ip_interface(text)
    if iface.version != 6 or not any(iface.network.subnet_of(n) for n in _ALLOWED):  # type: ignore[arg-type]
        raise ConfigError(f"{where}: {text} is outside 2001:db8::/32, fd00::/8 and fe80::/10")
    return text


def load_topology(name: str) -> TopologySpec:
    """Read a topology by name from shim/lab/data/topologies/.

    Raises:
        ConfigError: unknown name or malformed file.
    """
    try:
        text = resources.files("shim.lab").joinpath(f"data/topologies/{name}.toml").read_text()
    except (FileNotFoundError, OSError) as exc:
        raise ConfigError(f"unknown topology {name!r}") from exc
    doc = tomllib.loads(text)
    nodes = tuple(
        NodeSpec(name=n, forwarding=bool(v.get("forwarding", False)),
                 routes=tuple(v.get("routes", ())),
                 sysctls=tuple((k, str(x)) for k, x in v.get("sysctls", {}).items()))
        for n, v in doc.get("nodes", {}).items()
    )
    links = []
    for i, link in enumerate(doc.get("links", [])):
        ends = tuple(tuple(e.split(":", 1)) for e in link["ends"])
        addrs = tuple(link.get("addresses", [None, None]))
        for a in addrs:
            if a:
                _check_addr(a, f"topology {name} link {i}")
        links.append(LinkSpec(ends=ends, addresses=addrs, mtu=link.get("mtu")))  # type: ignore[arg-type]
    return TopologySpec(name=doc.get("name", name), description=doc.get("description", ""),
                        nodes=nodes, links=tuple(links))


def _libc_setns(fd: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


@contextlib.contextmanager
def in_netns(netns: str) -> Iterator[None]:
    """Run the body (this thread only) inside network namespace `netns`.

    Sockets created inside stay in that namespace after the block ends.
    """
    here = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        there = os.open(f"/run/netns/{netns}", os.O_RDONLY)
    except FileNotFoundError as exc:
        os.close(here)
        raise EnvironmentProblem(f"network namespace {netns} does not exist (removed by "
                                 "another process?)") from exc
    try:
        try:
            _libc_setns(there)
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise
            # `ip netns del` unmounts the name, then unlinks it: in between the file opens
            # but is no namespace (EINVAL). That is the namespace going away under us.
            raise EnvironmentProblem(f"network namespace {netns} is being removed by another "
                                     "process (setns: Invalid argument)") from exc
        try:
            yield
        finally:
            _libc_setns(here)
    finally:
        os.close(here)
        os.close(there)


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    try:
        proc = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    except FileNotFoundError as exc:
        raise EnvironmentProblem("'ip' is not installed; install the Debian package iproute2") from exc
    if check and proc.returncode != 0:
        raise EnvironmentProblem(f"ip {' '.join(args)}: {proc.stderr.strip()}")
    return proc


class Topology:
    """A live instance of a TopologySpec, its namespaces named `<prefix><node>`."""

    def __init__(self, spec: TopologySpec, prefix: str | None = None, *,
                 owner: Owner | None = None) -> None:
        """`owner`: record it as the maker of each namespace (shim.lab.owners), which is
        what lets `testbed down` tell this topology's namespaces from anyone else's."""
        self.spec = spec
        self.prefix = prefix or f"i6s{os.getpid() % 100000}-"
        self.owner = owner
        self.created: list[str] = []

    def ns(self, node: str) -> str:
        return f"{self.prefix}{node}"

    def up(self) -> Topology:
        """Create namespaces, links, addresses and routes; on failure remove all."""
        if os.geteuid() != 0:
            raise EnvironmentProblem("building network namespaces needs root")
        try:
            self._up()
        except BaseException:
            self.down()
            raise
        return self

    def _up(self) -> None:
        for node in self.spec.nodes:
            _ip("netns", "add", self.ns(node.name))
            self.created.append(self.ns(node.name))
            if self.owner is not None:
                owners.record(self.ns(node.name), self.owner)
            self.sysctl(node.name, "net.ipv6.conf.all.forwarding", "1" if node.forwarding else "0")
            self.sysctl(node.name, "net.ipv6.conf.default.accept_dad", "0")
            self.sysctl(node.name, "net.ipv6.conf.default.accept_ra", "0")
            for key, value in node.sysctls:
                self.sysctl(node.name, key, value)
            _ip("-n", self.ns(node.name), "link", "set", "lo", "up")
        for i, link in enumerate(self.spec.links):
            (na, ia), (nb, ib) = link.ends
            tmp_a, tmp_b = f"i6s{os.getpid() % 10000}x{i}a", f"i6s{os.getpid() % 10000}x{i}b"
            _ip("link", "add", tmp_a, "type", "veth", "peer", "name", tmp_b)
            try:
                self._place(link, ((tmp_a, na, ia, link.addresses[0]), (tmp_b, nb, ib, link.addresses[1])))
            except BaseException:
                _ip("link", "del", tmp_a, check=False)  # still in the root namespace: remove it
                raise
        for node in self.spec.nodes:
            for route in node.routes:
                _ip("-n", self.ns(node.name), "-6", "route", "add", *route.split())
        self._wait_link_local()

    def _place(self, link: LinkSpec, ends: tuple[tuple[str, str, str, str | None], ...]) -> None:
        """Move both ends of a new veth pair into their namespaces and configure them."""
        for tmp, name, ifname, addr in ends:
            netns = self.ns(name)
            _ip("link", "set", tmp, "netns", netns)
            _ip("-n", netns, "link", "set", tmp, "name", ifname)
            self.sysctl(name, f"net.ipv6.conf.{ifname}.accept_dad", "0")
            if link.mtu:
                _ip("-n", netns, "link", "set", ifname, "mtu", str(link.mtu))
            if addr:
                _ip("-n", netns, "addr", "add", addr, "dev", ifname, "nodad")
            _ip("-n", netns, "link", "set", ifname, "up")

    def _wait_link_local(self, timeout: float = 5.0) -> None:
        """Wait (bounded, scaled) until every linked interface can carry packets; else raise.

        A veth's carrier, and with it its qdisc and link-local address, comes up
        asynchronously (linkwatch may delay it up to a second, more under load); until then
        the kernel drops what is sent on it, so a test's first packet, or the Neighbor
        Solicitation it waits on, would be lost. Ready means operstate UP, a link-local
        address, and no address still tentative, on each end of each link: not merely some
        link-local address somewhere on the node.
        """
        deadline = time.monotonic() + timeout * time_scale()
        pending = [(node, ifname) for link in self.spec.links for node, ifname in link.ends]
        while pending:
            pending = [end for end in pending if self._not_ready(*end) is not None]
            if not pending:
                return
            if time.monotonic() >= deadline:
                why = "; ".join(f"{n}:{i} {self._not_ready(n, i)}" for n, i in pending)
                raise EnvironmentProblem(f"topology {self.spec.name}: links not ready after "
                                         f"{timeout * time_scale():.0f} s: {why}")
            time.sleep(0.05)

    def _not_ready(self, node: str, ifname: str) -> str | None:
        """Why interface `ifname` of `node` cannot carry packets yet, or None."""
        out = _ip("-n", self.ns(node), "-j", "-6", "addr", "show", "dev", ifname, check=False).stdout
        try:
            dev = json.loads(out)[0]
        except (ValueError, IndexError):
            exists = _ip("-n", self.ns(node), "link", "show", "dev", ifname, check=False).returncode == 0
            return "has no IPv6 (disabled, or an MTU below 1280)" if exists else "is missing"
        if dev.get("operstate") != "UP":
            return f"is {dev.get('operstate', 'not up')}"
        addrs = dev.get("addr_info", [])
        if not any(a.get("scope") == "link" for a in addrs):
            return "has no link-local address yet"
        tentative = [a["local"] for a in addrs if a.get("tentative") or a.get("dadfailed")]
        return f"has tentative {', '.join(tentative)}" if tentative else None

    def down(self) -> None:
        """Remove every namespace this topology created (their veths go with them)."""
        for name in reversed(self.created):
            _ip("netns", "del", name, check=False)
            if self.owner is not None:
                owners.forget(name)
        self.created.clear()

    def sysctl(self, node: str, key: str, value: str) -> None:
        path = "/proc/sys/" + key.replace(".", "/")
        with in_netns(self.ns(node)):
            with open(path, "w", encoding="ascii") as f:
                f.write(value)

    def run(self, node: str, *argv: str, timeout: float = 30, check: bool = False,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """Run a command inside a node's namespace and wait for it."""
        return subprocess.run(["ip", "netns", "exec", self.ns(node), *argv], capture_output=True,
                              text=True, timeout=timeout, check=check, env=env)

    def popen(self, node: str, *argv: str, **kw: object) -> subprocess.Popen[bytes]:
        """Start a command inside a node's namespace."""
        proc: subprocess.Popen[bytes] = subprocess.Popen(  # type: ignore[call-overload]
            ["ip", "netns", "exec", self.ns(node), *argv], **kw)
        return proc

    def socket(self, node: str, family: int, kind: int, proto: int = 0) -> socket.socket:
        """A socket living in a node's namespace."""
        with in_netns(self.ns(node)):
            return socket.socket(family, kind, proto)

    def ifindex(self, node: str, ifname: str) -> int:
        with in_netns(self.ns(node)):
            return socket.if_nametoindex(ifname)

    def link_local(self, node: str, ifname: str) -> str:
        out = _ip("-n", self.ns(node), "-6", "-o", "addr", "show", "dev", ifname, "scope", "link").stdout
        for word in out.split():
            if word.startswith("fe80"):
                return word.split("/")[0]
        raise EnvironmentProblem(f"{node}:{ifname} has no link-local address")

    def neighbor_state(self, node: str, addr: str) -> str | None:
        out = _ip("-n", self.ns(node), "-6", "neigh", "show", addr).stdout.split()
        return out[-1] if out else None

    def __enter__(self) -> Topology:
        return self.up()

    def __exit__(self, *exc: object) -> None:
        self.down()
