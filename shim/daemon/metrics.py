# SPDX-License-Identifier: MIT
"""Prometheus exposition of the daemon's snapshot (off by default), served from its poll loop.

No thread and no HTTP library: a shim.daemon.sockserve.ReplyServer (bounded
connections, a deadline each, a request-size bound, incremental writes) answers
`GET /metrics` with the text format (version 0.0.4), rendered here from the same
snapshot `icmp6-shim stats` shows. The text format is a few lines of code, so
prometheus_client is not needed: its exporter runs a thread per connection
inside the daemon (a connection flood becomes a thread flood) and its registry is
process-global state.

Access: the default transport is a unix socket, mode 0660, group root or
`[metrics] group`; Prometheus reaches it through a proxy or node_exporter's
textfile collector (`icmp6-shim metrics`). A loopback TCP port (`[metrics]
prometheus`) is an explicit opt-in: TCP cannot tell which local user connects,
so every local user can read the counters and hold connections (up to the limit).
"""

from __future__ import annotations

import grp
import math
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from shim.core.errors import EnvironmentProblem, ShimError
from shim.core.model import Settings
from shim.daemon.sockserve import Limits, ReplyServer, bind_unix, recv_to_eof, unlink_if_ours

__all__ = ["MetricsServer", "MetricsSettings", "render", "scrape_unix"]

RENDER_EVERY = 1.0  # seconds a rendered page is reused: N scrapes a second cost one rendering
_OK = b"HTTP/1.0 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n"


@dataclass(frozen=True, slots=True, kw_only=True)
class MetricsSettings:
    """Where and how the endpoint listens ([metrics] in the config)."""

    socket: str | None = None        # unix socket path (the safe transport)
    group: str | None = None         # the unix socket's group; None: the daemon's own (root)
    tcp: str | None = None           # loopback HOST:PORT, opt-in: readable by every local user
    max_connections: int = 8
    timeout: float = 2.0             # seconds a connection may live, from accept to close

    @property
    def enabled(self) -> bool:
        return bool(self.socket or self.tcp)

    @classmethod
    def of(cls, s: Settings) -> MetricsSettings:
        return cls(socket=s.metrics_socket, group=s.metrics_group, tcp=s.prometheus,
                   max_connections=s.metrics_max_connections, timeout=s.metrics_timeout)


# -- text format -------------------------------------------------------------------

def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(v: float) -> str:
    # As prometheus_client writes it: integers as "3.0", specials as +Inf/-Inf/NaN.
    f = float(v)
    if math.isnan(f):
        return "NaN"
    if math.isinf(f):
        return "+Inf" if f > 0 else "-Inf"
    return repr(f)


def _family(lines: list[str], name: str, kind: str, help_: str,
            samples: Iterable[tuple[dict[str, str], float]]) -> None:
    sample = f"{name}_total" if kind == "counter" else name
    lines.append(f"# HELP {sample} {help_}")
    lines.append(f"# TYPE {sample} {kind}")
    for labels, value in samples:
        text = ",".join(f'{k}="{_escape(str(labels[k]))}"' for k in sorted(labels))
        lines.append(f"{sample}{{{text}}} {_number(value)}" if text else f"{sample} {_number(value)}")


def render(snap: dict[str, Any]) -> str:
    """The Prometheus text exposition of a `stats` snapshot."""
    lines: list[str] = []
    _family(lines, "icmp6_shim_packets", "counter", "Packets judged",
            (({"verdict": k}, n) for k, n in (snap.get("verdicts") or {}).items()))
    _family(lines, "icmp6_shim_errors", "counter", "Packets given the on_error verdict",
            [({}, snap.get("errors", 0))])
    _family(lines, "icmp6_shim_reloads", "counter", "Successful reloads", [({}, snap.get("reloads", 0))])
    _family(lines, "icmp6_shim_reload_failures", "counter", "Rejected reloads",
            [({}, snap.get("reload_failures", 0))])
    _family(lines, "icmp6_shim_rule_hits", "counter", "Packets decided by each rule",
            (({"rule": r["rule"], "origin": r["origin"], "verdict": r["verdict"]}, r["hits"])
             for r in snap.get("rules") or []))
    _family(lines, "icmp6_shim_type_packets", "counter", "Packets by ICMPv6 type",
            (({"type": t}, n) for t, n in (snap.get("types") or {}).items()))
    _family(lines, "icmp6_shim_kernel_queue", "gauge", "Kernel NFQUEUE counters",
            (({"queue": str(k["queue"]), "counter": key}, k[key])
             for k in snap.get("kernel") or []
             for key in ("queue_total", "queue_dropped", "user_dropped")))
    overload = snap.get("overload") or {}
    causes = [({"cause": "budget", "class": name}, n)
              for name, n in (overload.get("budget") or {}).items()]
    causes += [({"cause": cause}, overload[key]) for cause, key in
               (("queue_full", "queue_full_drops"), ("socket_full", "socket_full_drops"),
                ("fail_open", "fail_open_accepts")) if overload.get(key) is not None]
    _family(lines, "icmp6_shim_overload_packets", "counter",
            "Packets overload kept from being judged, by cause (budget: cut before the queue, "
            "dropped or accepted unjudged as over_budget says; fail_open: a lower bound)", causes)
    _family(lines, "icmp6_shim_non_icmpv6_packets", "counter",
            "Other traffic diverted for its headers and accepted without a rule walk",
            [({}, snap.get("non_icmpv6", 0))])
    _family(lines, "icmp6_shim_fragments", "counter", "Non-first fragments by fate",
            (({"fate": k}, n) for k, n in (snap.get("fragments") or {}).items()))
    guard = snap.get("diversion") or {}
    _family(lines, "icmp6_shim_diversion_restored", "counter",
            "Times the diversion was found missing or altered (e.g. by a flush) and laid again",
            [({}, guard.get("restored", 0))])
    _family(lines, "icmp6_shim_diversion_restore_failures", "counter",
            "Checks or restores of the diversion that failed", [({}, guard.get("restore_failures", 0))])
    log = snap.get("log") or {}
    _family(lines, "icmp6_shim_log_failures", "counter", "Log writes that failed, lines lost",
            (({"what": k}, log[k]) for k in ("failures", "dropped") if k in log))
    return "\n".join(lines) + "\n"


# -- HTTP, just enough ---------------------------------------------------------------

def _complete(request: bytes) -> bool:
    return b"\r\n\r\n" in request or b"\n\n" in request


def _http(status: str, body: bytes, extra: bytes = b"") -> bytes:
    head = (f"HTTP/1.0 {status}\r\nContent-Type: text/plain; charset=utf-8\r\n".encode() + extra
            if not status.startswith("200") else _OK)
    return head + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body


class MetricsServer:
    """The endpoint: unix socket and/or loopback TCP, polled by the daemon's loop."""

    def __init__(self, settings: MetricsSettings, snapshot: Callable[[], dict[str, Any]],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.snapshot = snapshot
        self.clock = clock
        self._page = b""
        self._rendered_at = -math.inf
        self._unix: tuple[str, tuple[int, int]] | None = None
        listeners: list[socket.socket] = []
        try:
            if settings.socket:
                gid = _gid(settings.group)
                sock, ident = bind_unix(settings.socket, 0o660, group=gid, what="metrics socket")
                listeners.append(sock)
                self._unix = (settings.socket, ident)
            if settings.tcp:
                listeners.append(_listen_tcp(settings.tcp))
        except BaseException:
            for s in listeners:
                s.close()
            if self._unix is not None:
                unlink_if_ours(*self._unix)
            raise
        limits = Limits(max_connections=settings.max_connections, deadline=settings.timeout,
                        max_request=4096)
        self.server = ReplyServer(listeners, self._respond, _complete, limits, clock)

    @property
    def endpoints(self) -> list[str]:
        return [e for e in (self.settings.socket and f"unix:{self.settings.socket}",
                            self.settings.tcp and f"tcp:{self.settings.tcp}") if e]

    def _respond(self, request: bytes) -> bytes:
        line = request.split(b"\n", 1)[0].split()
        if len(line) < 2 or line[0] not in (b"GET", b"HEAD"):
            return _http("405 Method Not Allowed", b"GET /metrics only\n", b"Allow: GET, HEAD\r\n")
        if line[1].split(b"?", 1)[0] not in (b"/metrics", b"/"):
            return _http("404 Not Found", b"try /metrics\n")
        now = self.clock()
        if now - self._rendered_at >= RENDER_EVERY:
            # Bounded: at most one rendering per RENDER_EVERY, however many scrape.
            self._page = _read_snapshot(self.snapshot).encode()
            self._rendered_at = now
        response = _http("200 OK", self._page)
        if line[0] == b"HEAD":
            return response[:response.index(b"\r\n\r\n") + 4]
        return response

    def interest(self) -> dict[int, int]:
        return self.server.interest()

    def serve_pending(self) -> None:
        self.server.serve()

    def close(self) -> None:
        self.server.close()
        if self._unix is not None:
            unlink_if_ours(*self._unix)


def _read_snapshot(snapshot: Callable[[], dict[str, Any]]) -> str:
    for _ in range(3):  # a reload may change a dict mid-read: read again
        try:
            return render(snapshot())
        except RuntimeError:
            continue
    return ""


def _gid(group: str | None) -> int | None:
    if group is None:
        return None
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        raise EnvironmentProblem(f"[metrics] group {group!r}: no such group") from None


def _listen_tcp(endpoint: str) -> socket.socket:
    host, _, port = endpoint.rpartition(":")
    host = host.strip("[]")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, int(port)))
        sock.listen(16)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise EnvironmentProblem(f"cannot serve metrics on {endpoint}: {exc.strerror or exc}") from exc
    return sock


def scrape_unix(path: str, timeout: float = 5.0, max_size: int = 256 << 20) -> str:
    """GET /metrics over the unix socket; the body (for `icmp6-shim metrics`).

    Raises:
        ShimError: nobody answers, permission denied, a bad or late answer.
    """
    deadline = time.monotonic() + timeout
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC) as s:
            s.settimeout(timeout)
            s.connect(path)
            s.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
            data = recv_to_eof(s, deadline, max_size)
    except FileNotFoundError as exc:
        raise ShimError(f"no metrics socket at {path} (is [metrics] socket set?)") from exc
    except PermissionError as exc:
        raise ShimError(f"permission denied on {path}: run as root or as a member of "
                        "[metrics] group") from exc
    except TimeoutError as exc:
        raise ShimError(f"the daemon at {path} did not answer within {timeout:g} s") from exc
    except OSError as exc:
        raise ShimError(f"cannot reach the metrics socket {path}: {exc.strerror or exc}") from exc
    if data is None:
        raise ShimError(f"the metrics answer at {path} exceeds {max_size} bytes")
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep or not head.startswith(b"HTTP/1.0 200"):
        raise ShimError(f"the daemon at {path} sent an unexpected metrics answer")
    return body.decode("utf-8", "replace")
