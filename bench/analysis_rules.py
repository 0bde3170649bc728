# SPDX-License-Identifier: MIT
"""Write a config directory of N user rules for timing `check` and `diff` (README, Rules).

The rules mix seven ICMPv6 types, a distinct /64 source each, and now and then a hook,
a destination class, a hop-limit range or an input interface: overlapping enough that
the exact analysis has work to do, as a large site's policy would.
Usage: python bench/analysis_rules.py DIR [N]
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

TYPES = ("echo-request", "echo-reply", "nd-neighbor-solicit", "packet-too-big",
         "destination-unreachable", "mld-listener-query", "nd-router-advert")


def rules(n: int, seed: int = 1) -> str:
    """TOML text of n rules (deterministic for a seed)."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        r = ["[[rule]]", f'name = "u{i}"', f'type = "{rng.choice(TYPES)}"',
             f'src = "2001:db8:{i // 256:x}:{i % 256:x}::/64"']
        if rng.random() < 0.3:
            r.append(f'hook = "{rng.choice(["input", "output", "forward"])}"')
        if rng.random() < 0.2:
            r.append(f'dst_class = "{rng.choice(["global_unicast", "link_local", "multicast"])}"')
        if rng.random() < 0.2:
            r.append(f'hop_limit = "{rng.randint(0, 100)}-{rng.randint(100, 255)}"')
        if rng.random() < 0.1:
            r.append(f'iif = "eth{rng.randint(0, 3)}"')
        r.append(f'verdict = "{rng.choice(["accept", "drop", "mark:protect"])}"')
        out.append("\n".join(r))
    return "\n\n".join(out) + "\n"


if __name__ == "__main__":
    target = Path(sys.argv[1])
    target.mkdir(parents=True, exist_ok=True)
    (target / "icmp6-shim.toml").write_text(rules(int(sys.argv[2]) if len(sys.argv) > 2 else 1000))
