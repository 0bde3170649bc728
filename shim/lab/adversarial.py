# SPDX-License-Identifier: MIT
"""The adversarial suite's data and verdicts: rows, expectations, the table.

The live run is shim.lab.adversarial_run. The suite (shim/lab/data/adversarial.toml,
docs/testbed.md) builds A -- G -- B, starts
the daemon on G as a child (shim.lab.runner) with the defaults plus the suite's user
rules, runs each attack from A and measures, never assumes:
- sent: datagrams a crafted attack sent, or a tool's packets on A's link (tcpdump);
- judged: the packets the shim counted meanwhile (`icmp6-shim stats`, a child);
- reached: the attack's messages at the victim (raw ICMPv6 socket or link filter);
- expected: what the policy does to the same message undisguised (`icmp6-shim
  explain` on G, a child), or the kernel's duty (e.g. RFC 5722), or, for floods,
  the ping success B -> G must keep.
Invariants: every wait is bounded; the namespaces (prefix i6adv<pid>-) and the
shim are removed in a finally; only what this run created is touched.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from shim.lab.adversarial_probes import CRAFTS
from shim.core.errors import ConfigError

__all__ = ["Attack", "Result", "Suite", "format_table", "judge", "load_suite"]

_ATTACK_KEYS = {"name", "victim", "type", "send", "count", "src", "dst", "run", "seconds",
                "sent_filter", "reach", "link_filter", "expect", "why", "ping", "min_success"}


@dataclass(frozen=True, slots=True, kw_only=True)
class Attack:
    name: str
    victim: str
    icmp_type: int | None
    send: str | None                 # a CRAFTS kind, or None for a tool
    run: tuple[str, ...]             # the tool's argv (placeholders filled)
    count: int
    seconds: float
    src: str | None
    dst: str | None
    sent_filter: str
    reach: str                       # "socket" or "link"
    link_filter: str
    expect: str                      # "policy" or "none"
    why: str
    ping: dict[str, Any] | None
    min_success: float


@dataclass(frozen=True, slots=True, kw_only=True)
class Suite:
    description: str
    topology: str
    config: str
    addresses: dict[str, str]
    victims: dict[str, dict[str, str]]
    attacks: tuple[Attack, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Result:
    attack: str
    sent: int
    judged: int
    reached: str
    expected: str
    ok: bool
    rules: dict[str, int]            # rule hits during the attack
    detail: str


def _fill(text: str, names: dict[str, str], where: str) -> str:
    try:
        return text.format(**names)
    except (KeyError, IndexError, ValueError) as exc:
        raise ConfigError(f"{where}: unknown placeholder in {text!r}: {exc}") from None


def _attack(item: dict[str, Any], names: dict[str, str], victims: set[str], where: str) -> Attack:
    unknown = set(item) - _ATTACK_KEYS
    if unknown or "name" not in item or item.get("victim") not in victims:
        raise ConfigError(f"{where}: needs name and victim ({', '.join(sorted(victims))}); "
                          f"unknown keys: {sorted(unknown)}")
    send, run = item.get("send"), tuple(_fill(str(w), names, where) for w in item.get("run", ()))
    if (send is None) == (not run) or (send is not None and send not in CRAFTS):
        raise ConfigError(f"{where}: exactly one of send ({', '.join(CRAFTS)}) or run is needed")
    if item.get("reach", "socket") not in ("socket", "link") or item.get("expect", "policy") \
            not in ("policy", "none"):
        raise ConfigError(f"{where}: reach is socket or link; expect is policy or none")
    if "ping" not in item and not isinstance(item.get("type"), int):
        raise ConfigError(f"{where}: type (the ICMPv6 type counted at the victim) is needed")
    opt = {k: _fill(str(item[k]), names, where) if k in item else None for k in ("src", "dst")}
    return Attack(
        name=str(item["name"]), victim=str(item["victim"]), icmp_type=item.get("type"),
        send=send, run=run, count=min(int(item.get("count", 5)), 100),
        seconds=min(float(item.get("seconds", 5)), 30.0), src=opt["src"], dst=opt["dst"],
        sent_filter=_fill(str(item.get("sent_filter", "ip6")), names, where),
        reach=str(item.get("reach", "socket")),
        link_filter=_fill(str(item.get("link_filter", "ip6")), names, where),
        expect=str(item.get("expect", "policy")), why=str(item.get("why", "")),
        ping={k: _fill(v, names, where) if isinstance(v, str) else v
              for k, v in item["ping"].items()} if "ping" in item else None,
        min_success=float(item.get("min_success", 99)))


def load_suite(names: dict[str, str] | None = None, path: str | None = None) -> Suite:
    """Read the suite (shim/lab/data/adversarial.toml or `path`), placeholders filled from `names`.

    Raises:
        ConfigError: bad TOML, an unknown key or placeholder, a row missing what it needs.
    """
    where = path or "shim/lab/data/adversarial.toml"
    try:
        text = Path(path).read_text() if path else \
            resources.files("shim.lab").joinpath("data/adversarial.toml").read_text()
        doc = tomllib.loads(text)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{where}: {exc}") from None
    names = {**doc.get("addresses", {}), **(names or {})}
    names.setdefault("ll_a", "fe80::a")  # the real one is known once the topology is up
    victims = {v: {k: _fill(str(x), names, where) for k, x in spec.items()}
               for v, spec in doc.get("victims", {}).items()}
    attacks = tuple(_attack(a, names, set(victims), f"{where}: [[attack]] #{i + 1}")
                    for i, a in enumerate(doc.get("attack", [])))
    return Suite(description=str(doc.get("description", "")), topology=str(doc["topology"]),
                 config=str(doc.get("config", "")),
                 addresses={k: str(v) for k, v in names.items()}, victims=victims, attacks=attacks)


def judge(attack: Attack, sent: int, reached: int, allowed: bool | None,
          success: float | None = None) -> tuple[str, bool]:
    """(the expectation as text, whether the measurement meets it).

    An attack that sent nothing proves nothing and is not ok. `allowed` is the policy's
    answer for the undisguised message (None when the row expects the kernel to drop it).
    """
    if attack.ping is not None:
        return f">= {attack.min_success:g}% pings", sent > 0 and (success or 0.0) >= attack.min_success
    if allowed:
        return "all", sent > 0 and reached >= sent
    return "0", sent > 0 and reached == 0


_COLUMNS = ("attack", "sent", "judged", "reached", "expected", "ok")


def format_table(results: list[Result]) -> str:
    """The plain-text table: attack, sent, judged, reached the victim, expected, ok."""
    rows = [_COLUMNS] + [(r.attack, str(r.sent), str(r.judged), r.reached, r.expected,
                          "ok" if r.ok else "FAIL") for r in results]
    widths = [max(len(row[i]) for row in rows) for i in range(len(_COLUMNS))]
    lines = ["  ".join(cell.ljust(w) if i in (0, 4) else cell.rjust(w)
                       for i, (cell, w) in enumerate(zip(row, widths))).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    bad = sum(not r.ok for r in results)
    lines.append(f"{len(results) - bad} of {len(results)} ok" + (f", {bad} FAIL" if bad else ""))
    return "\n".join(lines)
