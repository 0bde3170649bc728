# SPDX-License-Identifier: MIT
"""What became of an installed diversion: listings reduced to comparable sections.

Pure functions over the text the tools print. A diversion is held as sections
(an nft chain or set, an ip6tables chain) of rule lines; the listing taken right
after install is the baseline, and a later listing that differs is described in one
line for the `diversion_restored` event. Invariants:
- only what is ours is compared: another process's rules in the same built-in
  ip6tables chains, or its tables, never count as a change;
- stateful parts (counters, dynamic set elements) are not in the sections, so
  traffic never looks like an alteration.
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["Sections", "describe", "ipt_sections", "nft_sections"]

Sections = Mapping[str, tuple[str, ...]]


def nft_sections(listing: str) -> dict[str, tuple[str, ...]]:
    """`nft list table` text (stateless, terse) as {"chain NAME" / "set NAME" / "table":
    its lines}."""
    out: dict[str, list[str]] = {"table": []}
    current = "table"
    for raw in listing.splitlines():
        line = raw.strip()
        if not line or line.startswith("table ") or line == "}" and current == "table":
            continue
        if line.endswith("{") and line.split()[0] in ("chain", "set", "map"):
            current = " ".join(line.split()[:2])
            out.setdefault(current, [])
        elif line == "}":
            current = "table"
        else:
            out[current].append(line)
    return {k: tuple(v) for k, v in out.items()}


def _ours(word: str, chain: str) -> bool:
    return word == chain or word.startswith(chain + "_")


JUMPS_FROM = "jumps from "  # the section of our jumps in a chain not ours: JUMPS_FROM + its name
# The section of the rules of others in front of our first jump in a built-in chain: an
# ACCEPT there ends the table's walk before our jump (a bypass), so the guard must see it.
# Install puts our jumps first, so the baseline has none.
AHEAD_OF = "rules ahead of our jumps in "
_SHIM = "ICMP6_SHIM"  # every instance's chains: another instance's jump ahead is no bypass


def ipt_sections(save: str, chain: str) -> dict[str, tuple[str, ...]]:
    """`ip6tables-save -t mangle` text as {chain: the lines of ours in it}: our chains
    (declared, with all their rules), as JUMPS_FROM + CHAIN our jumps in the others, and as
    AHEAD_OF + CHAIN the rules of others in front of our first jump there."""
    out: dict[str, list[str]] = {}
    before: dict[str, list[str]] = {}   # built-in chain -> others' rules seen so far
    reached: set[str] = set()           # built-in chains where our first jump was seen
    for raw in save.splitlines():
        words = raw.split()
        if not words:
            continue
        if words[0].startswith(":") and _ours(words[0][1:], chain):
            out.setdefault(words[0][1:], [])
        elif words[0] in ("-A", "-I") and len(words) > 1:
            where = words[1]
            target = next((words[i + 1] for i, w in enumerate(words[:-1]) if w in ("-j", "-g")), "")
            if _ours(where, chain):
                out.setdefault(where, []).append(" ".join(words[2:]))
            elif _ours(target, chain):
                if where not in reached and before.get(where):
                    out[f"{AHEAD_OF}{where}"] = before[where]
                reached.add(where)
                out.setdefault(f"{JUMPS_FROM}{where}", []).append(" ".join(words[2:]))
            elif where not in reached and not where.startswith(_SHIM) \
                    and not target.startswith(_SHIM):
                before.setdefault(where, []).append(" ".join(words[2:]))
    return {k: tuple(v) for k, v in out.items()}


def describe(expected: Sections, actual: Sections | None, what: str) -> str | None:
    """None when `actual` equals `expected`, else one line saying what differs.

    Args:
        what: the whole diversion's name, for "... is missing" when `actual` is None.
    """
    if actual is None:
        return f"{what} is missing"
    parts = []
    missing = [k for k in expected if k not in actual]
    if missing:
        parts.append("missing " + ", ".join(missing))
    for key, lines in expected.items():
        found = actual.get(key)
        if found is None or tuple(found) == tuple(lines):
            continue
        if not found:
            parts.append(f"{key} emptied (0 of {len(lines)} rules)")
        elif set(found) <= set(lines) and len(found) < len(lines):
            parts.append(f"{key} lost rules ({len(found)} of {len(lines)})")
        else:
            parts.append(f"{key} changed ({len(found)} rules, {len(lines)} expected)")
    added = [k for k in actual if k not in expected and actual[k]]
    if added:
        parts.append("added " + ", ".join(added))
    return "; ".join(parts) or None
