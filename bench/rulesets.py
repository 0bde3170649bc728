# SPDX-License-Identifier: MIT
"""Realistic user rule sets for the rule-scale benchmarks, as TOML.

A gateway's per-customer policy: each rule names an ICMPv6 type and a
customer's source and/or destination prefix (2001:db8:100::/40 onwards, so the
bench flood a -> b, 2001:db8:1::a -> 2001:db8:2::b, matches none), a hook and,
for some, one of a few interfaces. One rule in five also names the flood's own
destination prefix, so the packet's destination chain leads somewhere and the
classifier has to reject those rules on the source; one in a hundred has no
prefix at all (it sits in the unanchored bucket with the defaults).
"""

from __future__ import annotations

__all__ = ["realistic_rules"]

_IFACES = ("eth0", "eth1", "eth2", "lo")


def _customer(i: int, plen: int) -> str:
    return f"2001:db8:{0x100 + i // 256:x}:{(i % 256) << 8:x}::/{plen}"


def _rule(i: int) -> str:
    kind = i % 5
    lines = [f'name = "cust-{i}"']
    if i % 100 == 99:
        lines += ['type = "time-exceeded"', f'iif = "{_IFACES[i % 4]}"', 'hop_limit = "0-1"',
                  'verdict = "drop"']
    elif kind == 0:
        lines += ['type = "echo-request"', f'src = "{_customer(i, 56)}"', 'hook = "forward"',
                  'verdict = "drop"']
    elif kind == 1:
        lines += ['type = "packet-too-big"', f'dst = "{_customer(i, 56)}"', 'mtu = "0-1279"',
                  f'iif = "{_IFACES[i % 3]}"', 'verdict = "drop"']
    elif kind == 2:
        lines += ['type = ["echo-request", "echo-reply"]', f'src = "{_customer(i, 64)}"',
                  'dst = "2001:db8:2::/64"', 'hook = ["forward", "input"]',
                  'verdict = "mark:protect"']
    elif kind == 3:
        lines += ['type = "destination-unreachable"', f'src = "{_customer(i, 48)}"',
                  f'oif = "{_IFACES[i % 2]}"', 'verdict = "accept"']
    else:
        lines += ['type = "echo-reply"', f'dst = "{_customer(i, 60)}"', 'hook = "input"',
                  'verdict = "drop"']
    return "[[rule]]\n" + "\n".join(lines) + "\n\n"


def realistic_rules(n: int) -> str:
    """n realistic user rules (see the module docstring), none matching the bench flood."""
    return "".join(_rule(i) for i in range(n))
