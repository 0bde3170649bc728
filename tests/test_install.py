# SPDX-License-Identifier: MIT
"""`make install` / `make uninstall` into a DESTDIR, and the unit file checked by systemd-analyze."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _make(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["make", "-C", str(REPO), *args], capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dest = tmp_path_factory.mktemp("destdir")
    out = _make("install", f"DESTDIR={dest}")
    assert out.returncode == 0, out.stdout + out.stderr
    return dest


class TestInstall:
    def test_layout(self, installed: Path) -> None:
        """The program, its unit, the config and the docs land where the unit expects them."""
        assert (installed / "usr/local/lib/icmp6-shim/venv/bin/icmp6-shim").exists()
        unit = (installed / "etc/systemd/system/icmp6-shim.service").read_text()
        assert "ExecStart=/usr/local/lib/icmp6-shim/venv/bin/icmp6-shim run --config /etc/icmp6-shim" in unit
        assert (installed / "etc/icmp6-shim/icmp6-shim.toml").read_text() == (REPO / "config/icmp6-shim.toml").read_text()
        out = subprocess.run([installed / "usr/local/lib/icmp6-shim/venv/bin/icmp6-shim", "check",
                              "--config", installed / "etc/icmp6-shim"], capture_output=True, text=True)
        assert out.returncode == 0 and out.stdout.startswith("ok:"), out.stderr

    def test_unit_verifies_and_is_hardened(self, installed: Path, tmp_path: Path) -> None:
        """systemd-analyze verify passes and the offline exposure stays in the OK band or better."""
        if shutil.which("systemd-analyze") is None:
            pytest.fail("systemd-analyze is missing; `make test` installs the systemd package")
        unit = (installed / "etc/systemd/system/icmp6-shim.service").read_text()
        # Point the unit at the DESTDIR copy so verify can check that ExecStart is executable.
        local = tmp_path / "icmp6-shim.service"
        local.write_text(unit.replace("/usr/local/", f"{installed}/usr/local/"))
        verify = subprocess.run(["systemd-analyze", "verify", str(local)], capture_output=True, text=True)
        assert verify.returncode == 0, verify.stderr
        sec = subprocess.run(["systemd-analyze", "security", "--offline=true", str(local)],
                             capture_output=True, text=True)
        level = re.search(r"Overall exposure level for \S+: ([0-9.]+) (\w+)", sec.stdout)
        assert level is not None, sec.stdout[-500:]
        assert float(level.group(1)) < 2.0 and level.group(2) in ("OK", "SAFE", "PERFECT")

    def test_second_install_keeps_the_operator_config(self, installed: Path) -> None:
        """Installing again never overwrites a config the operator changed."""
        conf = installed / "etc/icmp6-shim/icmp6-shim.toml"
        conf.write_text(conf.read_text() + "\n# operator was here\n")
        out = _make("install", f"DESTDIR={installed}")
        assert out.returncode == 0, out.stderr
        assert conf.read_text().endswith("# operator was here\n")

    def test_uninstall_reverses_install(self, installed: Path) -> None:
        """uninstall removes program, unit and docs, and keeps a changed config."""
        out = _make("uninstall", f"DESTDIR={installed}")
        assert out.returncode == 0, out.stderr
        assert not (installed / "usr/local/lib/icmp6-shim").exists()
        assert not (installed / "etc/systemd/system/icmp6-shim.service").exists()
        assert (installed / "etc/icmp6-shim/icmp6-shim.toml").exists()  # changed by the test above
