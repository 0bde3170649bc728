# SPDX-License-Identifier: MIT
"""radvd in the testbed: Debian's router advertisement daemon as a node's router.

Its own config file, pid file and log (stderr, collected), in the node's
namespace; nothing of the host's /etc/radvd.conf or /run/radvd.pid is used.
Started and stopped by the scenario run; every wait is bounded.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from pathlib import Path

from shim.core.errors import EnvironmentProblem
from shim.lab.runner import time_scale

__all__ = ["Radvd"]


class Radvd:
    """`radvd -n` in a namespace with a config of its own."""

    def __init__(self, *, netns: str, workdir: Path, conf: str) -> None:
        self.netns = netns
        self.dir = workdir
        self.conf = conf
        self.log_path = workdir / "radvd.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10.0) -> None:
        if shutil.which("radvd") is None:
            raise EnvironmentProblem("'radvd' is not installed; install the Debian package radvd")
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "radvd.conf").write_text(self.conf)
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                ["ip", "netns", "exec", self.netns, "radvd", "-n", "-m", "stderr", "-d", "1",
                 "-C", str(self.dir / "radvd.conf"), "-p", str(self.dir / "radvd.pid")],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout * time_scale()
        while "polling" not in self.log_path.read_text(errors="replace"):  # bounded: first poll
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise EnvironmentProblem(f"radvd in {self.netns} did not start: "
                                         f"{self.log_path.read_text(errors='replace').strip()[-300:]}")
            time.sleep(0.05)

    def log_lines(self) -> list[str]:
        try:
            return self.log_path.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return []

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout)
