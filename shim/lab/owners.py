# SPDX-License-Identifier: MIT
"""Who made a testbed namespace: one owner record per namespace under /run.

`testbed down` must remove only what this testbed made and nobody still uses. A name
prefix cannot say that (any run, any user's, makes i6tb- names), so each namespace the
testbed creates gets a record naming its owner process: the scenario run itself, or for
`testbed up`, which exits at once, the process that ran it (a shell, a test). The owner is
identified by pid and start time, so a reused pid is not mistaken for it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["OWNER_DIR", "Owner", "forget", "owner_of", "process", "record"]

# Under /run (a tmpfs): records vanish with the namespaces at reboot.
OWNER_DIR = Path("/run/icmp6-shim-testbed")


@dataclass(frozen=True, slots=True)
class Owner:
    """A process, by pid and the start time the kernel gives it (clock ticks since boot)."""

    pid: int
    start: int

    def alive(self) -> bool:
        """True while this very process runs (not another one that got its pid)."""
        return process(self.pid) == self


def process(pid: int) -> Owner | None:
    """The running process `pid` as an Owner, or None when there is none."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    # Field 22 (starttime), counted after the parenthesised command, which may hold spaces.
    fields = stat.rsplit(")", 1)[-1].split()
    try:
        return Owner(pid, int(fields[19]))
    except (IndexError, ValueError):
        return None


def record(netns: str, owner: Owner, base: Path = OWNER_DIR) -> None:
    """Note that `owner` made namespace `netns`."""
    base.mkdir(mode=0o755, parents=True, exist_ok=True)
    (base / netns).write_text(f"{owner.pid} {owner.start}\n", encoding="ascii")


def owner_of(netns: str, base: Path = OWNER_DIR) -> Owner | None:
    """Who made `netns`, or None when the testbed has no (readable) record of it."""
    try:
        pid, start = (base / netns).read_text(encoding="ascii").split()
        return Owner(int(pid), int(start))
    except (OSError, ValueError):
        return None


def forget(netns: str, base: Path = OWNER_DIR) -> None:
    """Drop the record of `netns` (it is gone)."""
    try:
        os.unlink(base / netns)
    except FileNotFoundError:
        pass
