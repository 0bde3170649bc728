# SPDX-License-Identifier: MIT
"""`ip xfrm`: add and remove the policies shim.core.xfrm derives.

Rule: only policies this process added are removed again; a policy that was
already there and allows is kept and not owned.
"""

from __future__ import annotations

import subprocess

from shim.core.errors import EnvironmentProblem
from shim.core.xfrm import XfrmPolicy

__all__ = ["apply", "remove"]


def _ip(netns: str | None, argv: list[str]) -> subprocess.CompletedProcess[str]:
    cmd = ["ip", *(["-n", netns] if netns else []), *argv]
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    except FileNotFoundError as exc:
        raise EnvironmentProblem("'ip' is not installed; install the Debian package iproute2") from exc


def apply(policies: tuple[XfrmPolicy, ...], netns: str | None = None) -> list[XfrmPolicy]:
    """Add the policies; return those added (one already present is kept, not owned).

    On a failure removes what it added, then raises EnvironmentProblem.
    """
    added: list[XfrmPolicy] = []
    for p in policies:
        proc = _ip(netns, p.add_argv())
        if proc.returncode == 0:
            added.append(p)
            continue
        problem = proc.stderr.strip()
        if "File exists" in proc.stderr:
            # The kernel keys policies by selector, direction and mark only: the one that
            # is there may block or require IPsec. Keep it only if it allows too.
            have = _ip(netns, ["xfrm", "policy", "get", *p.selector()])
            # `ip` prints "action block" for a blocking policy and "tmpl" for an IPsec one;
            # an allow shows neither ("action allow" is the default and not printed).
            if have.returncode == 0 and "action block" not in have.stdout and "tmpl" not in have.stdout:
                continue
            problem = (f"a policy with this selector already exists and does not allow: "
                       f"{' '.join(have.stdout.split())[:200]}")
        remove(tuple(added), netns)
        raise EnvironmentProblem(f"ip {' '.join(p.add_argv())}: {problem}")
    return added


def remove(policies: tuple[XfrmPolicy, ...], netns: str | None = None) -> int:
    """Delete the policies that exist; return how many were deleted. Never raises on absence."""
    return sum(1 for p in policies if _ip(netns, p.delete_argv()).returncode == 0)
