# SPDX-License-Identifier: MIT
"""Optional Prometheus exposition of the daemon's snapshot (off by default).

The one importer of prometheus_client. The collector turns the same snapshot
`icmp6-shim stats` shows into metrics at scrape time, so nothing on the
packet path knows about Prometheus.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from shim.errors import EnvironmentProblem

__all__ = ["start_exporter"]


def start_exporter(endpoint: str, snapshot: Callable[[], dict[str, Any]]) -> None:
    """Serve /metrics on a loopback HOST:PORT from a daemon thread.

    Raises:
        EnvironmentProblem: prometheus-client is missing or the port is taken.
    """
    try:
        from prometheus_client import start_http_server
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, REGISTRY
    except ImportError as exc:
        raise EnvironmentProblem("[metrics] prometheus is set but prometheus-client is not "
                                 "installed: pip install 'icmp6-shim[metrics]'") from exc

    class Collector:
        def collect(self) -> Iterator[Any]:
            for _ in range(3):  # a reload may change a dict mid-read: read again
                try:
                    snap = snapshot()
                    break
                except RuntimeError:
                    continue
            else:
                return
            pkts = CounterMetricFamily("icmp6_shim_packets", "Packets judged", labels=["verdict"])
            for verdict, n in (snap.get("verdicts") or {}).items():
                pkts.add_metric([verdict], n)
            yield pkts
            yield CounterMetricFamily("icmp6_shim_errors", "Packets given the on_error verdict",
                                      value=snap.get("errors", 0))
            yield CounterMetricFamily("icmp6_shim_reloads", "Successful reloads", value=snap.get("reloads", 0))
            yield CounterMetricFamily("icmp6_shim_reload_failures", "Rejected reloads",
                                      value=snap.get("reload_failures", 0))
            rules = CounterMetricFamily("icmp6_shim_rule_hits", "Packets decided by each rule",
                                        labels=["rule", "origin", "verdict"])
            for r in snap.get("rules") or []:
                rules.add_metric([r["rule"], r["origin"], r["verdict"]], r["hits"])
            yield rules
            types = CounterMetricFamily("icmp6_shim_type_packets", "Packets by ICMPv6 type", labels=["type"])
            for t, n in (snap.get("types") or {}).items():
                types.add_metric([t], n)
            yield types
            kq = GaugeMetricFamily("icmp6_shim_kernel_queue", "Kernel NFQUEUE counters",
                                   labels=["queue", "counter"])
            for k in snap.get("kernel") or []:
                for key in ("queue_total", "queue_dropped", "user_dropped"):
                    kq.add_metric([str(k["queue"]), key], k[key])
            yield kq

    host, _, port = endpoint.rpartition(":")
    REGISTRY.register(Collector())
    try:
        start_http_server(int(port), addr=host.strip("[]"))
    except OSError as exc:
        raise EnvironmentProblem(f"cannot serve metrics on {endpoint}: {exc.strerror}") from exc
