# SPDX-License-Identifier: MIT
"""A 10-second libFuzzer run over native/icmp6.c (ASan + UBSan + invariants).

clang is a build dependency (`make system-deps` installs it), so a missing
clang fails this test instead of skipping it.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

__all__: list[str] = []

ROOT = Path(__file__).resolve().parents[2]


class TestFuzzShort:
    """native/fuzz/run.sh builds and runs without a finding."""

    def test_fuzz_10s(self) -> None:
        """Ten seconds of fuzzing end without a crash or sanitizer report."""
        if shutil.which("clang") is None:
            pytest.fail("clang is not installed: the fuzz target needs clang with libFuzzer "
                        "(run `make system-deps` as root, or apt-get install clang)")
        proc = subprocess.run(["bash", str(ROOT / "native" / "fuzz" / "run.sh"), "10"],
                              cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
