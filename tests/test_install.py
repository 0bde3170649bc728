# SPDX-License-Identifier: MIT
"""`make install` / `make uninstall` into a DESTDIR, `make deb`, and the unit checked by systemd-analyze.

The package installed and run under systemd as PID 1 is the stock-kernel lane's part
(vm/guest/systemd-checks.sh); here: what the staged tree and the .deb hold.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
LAUNCHER = "usr/local/lib/icmp6-shim/bin/icmp6-shim"


def _make(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["make", "-C", str(REPO), *args], capture_output=True, text=True, timeout=900)


def _files_naming(tree: Path, needle: bytes) -> list[str]:
    """Every file (or symlink target) below tree whose bytes contain needle."""
    found = []
    for path in tree.rglob("*"):
        if path.is_symlink():
            if needle in str(path.readlink()).encode():
                found.append(str(path))
        elif path.is_file() and needle in path.read_bytes():
            found.append(str(path))
    return found


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dest = tmp_path_factory.mktemp("destdir")
    out = _make("install", f"DESTDIR={dest}")
    assert out.returncode == 0, out.stdout + out.stderr
    return dest


class TestInstall:
    def test_layout(self, installed: Path) -> None:
        """The launcher, its unit, the config and the docs land where the unit expects them."""
        assert (installed / LAUNCHER).exists()
        assert (installed / "usr/local/bin/icmp6-shim").readlink() == Path("/" + LAUNCHER)
        unit = (installed / "etc/systemd/system/icmp6-shim.service").read_text()
        assert f"ExecStart=/{LAUNCHER} run --config /etc/icmp6-shim" in unit
        assert (installed / "etc/icmp6-shim/icmp6-shim.toml").read_text() == (REPO / "config/icmp6-shim.toml").read_text()
        assert not (installed / "usr/local/lib/icmp6-shim/venv").exists()

    def test_system_interpreter(self, installed: Path) -> None:
        """The launcher runs /usr/bin/python3 in isolated mode, whatever python3 is first in PATH."""
        first = (installed / LAUNCHER).read_text().splitlines()[0]
        assert first == "#!/usr/bin/python3 -I"
        abi = subprocess.run(["/usr/bin/python3", "-c", "import sysconfig; print(sysconfig.get_config_var('SOABI'))"],
                             capture_output=True, text=True, check=True).stdout.strip()
        lib = installed / "usr/local/lib/icmp6-shim/lib"
        # Compiled for that interpreter: its ABI tag, or the stable ABI (abi3).
        modules = sorted(p.name for p in lib.rglob("*.so"))
        assert modules and all(f".{abi}." in m or ".abi3." in m for m in modules), (abi, modules)

    def test_relocatable(self, installed: Path) -> None:
        """No installed file names the staging directory, and the staged tree runs where it lies."""
        assert _files_naming(installed, str(installed).encode()) == []
        launcher = installed / LAUNCHER
        version = subprocess.run([launcher, "--version"], capture_output=True, text=True)
        assert version.returncode == 0 and version.stdout.startswith("icmp6-shim "), version.stderr
        out = subprocess.run([launcher, "check", "--config", installed / "etc/icmp6-shim"],
                             capture_output=True, text=True)
        assert out.returncode == 0 and out.stdout.startswith("ok:"), out.stderr

    def test_python_environment_ignored(self, installed: Path, tmp_path: Path) -> None:
        """PYTHONPATH cannot run code in the daemon's interpreter (-I: no sitecustomize from it)."""
        (tmp_path / "sitecustomize.py").write_text("raise SystemExit('sitecustomize from PYTHONPATH ran')\n")
        out = subprocess.run([installed / LAUNCHER, "--version"], capture_output=True, text=True,
                             env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(tmp_path)})
        assert out.returncode == 0 and "sitecustomize" not in out.stdout + out.stderr, out.stderr

    def test_unit_verifies_and_is_hardened(self, installed: Path, tmp_path: Path) -> None:
        """systemd-analyze verify passes and the offline exposure stays at 1.1 or lower."""
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
        assert float(level.group(1)) <= 1.1 and level.group(2) in ("OK", "SAFE", "PERFECT")

    def test_second_install_keeps_the_operator_config(self, installed: Path) -> None:
        """Installing again never overwrites a config the operator changed, and still runs."""
        conf = installed / "etc/icmp6-shim/icmp6-shim.toml"
        conf.write_text(conf.read_text() + "\n# operator was here\n")
        out = _make("install", f"DESTDIR={installed}")
        assert out.returncode == 0, out.stderr
        assert conf.read_text().endswith("# operator was here\n")
        assert not list(installed.rglob("lib.new")) and not list(installed.rglob("lib.old"))
        version = subprocess.run([installed / LAUNCHER, "--version"], capture_output=True, text=True)
        assert version.returncode == 0, version.stderr

    def test_uninstall_reverses_install(self, installed: Path) -> None:
        """uninstall removes program, unit and docs, and keeps a changed config."""
        out = _make("uninstall", f"DESTDIR={installed}")
        assert out.returncode == 0, out.stderr
        assert not (installed / "usr/local/lib/icmp6-shim").exists()
        assert not (installed / "usr/local/bin/icmp6-shim").is_symlink()
        assert not (installed / "etc/systemd/system/icmp6-shim.service").exists()
        assert (installed / "etc/icmp6-shim/icmp6-shim.toml").exists()  # changed by the test above


@pytest.fixture(scope="module")
def deb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out_dir = tmp_path_factory.mktemp("deb")
    out = _make("deb", f"DEB_OUT={out_dir}")
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    debs = list(out_dir.glob("icmp6-shim_*.deb"))
    assert len(debs) == 1, debs
    return debs[0]


def _field(deb: Path, name: str) -> str:
    return subprocess.run(["dpkg-deb", "-f", str(deb), name], capture_output=True, text=True,
                          check=True).stdout.strip()


class TestDeb:
    def test_control(self, deb: Path) -> None:
        """The control file names the package, this machine's architecture and pyproject's version."""
        arch = subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True).stdout.strip()
        version = re.search(r'^version = "([^"]+)"', (REPO / "pyproject.toml").read_text(), re.M)
        assert version is not None
        assert (_field(deb, "Package"), _field(deb, "Architecture"), _field(deb, "Version")) == \
            ("icmp6-shim", arch, version.group(1))
        assert deb.name == f"icmp6-shim_{version.group(1)}_{arch}.deb"

    def test_depends_cover_the_shared_libraries(self, deb: Path, tmp_path: Path) -> None:
        """Every library the package's ELF files load comes from a package its Depends names."""
        depends = _field(deb, "Depends")
        assert "nftables | iptables" in depends
        minor = subprocess.run(["/usr/bin/python3", "-c", "import sys; print(sys.version_info[1])"],
                               capture_output=True, text=True, check=True).stdout.strip()
        assert f"python3 (<< 3.{int(minor) + 1})" in depends and f"python3 (>= 3.{minor}~)" in depends
        named = {d.split()[0] for alt in depends.split(",") for d in alt.split("|")}
        subprocess.run(["dpkg-deb", "-x", str(deb), str(tmp_path)], check=True)
        needed: set[str] = set()
        for elf in tmp_path.rglob("*.so"):
            ldd = subprocess.run(["ldd", str(elf)], capture_output=True, text=True, check=True).stdout
            needed |= set(re.findall(r"=> (/\S+)", ldd))
        assert any("libnetfilter_queue" in lib for lib in needed), needed
        owners = set()
        for lib in needed:
            owner = subprocess.run(["dpkg", "-S", Path(lib).resolve()], capture_output=True, text=True)
            if owner.returncode:  # merged /usr: dpkg may know the /lib spelling only
                owner = subprocess.run(["dpkg", "-S", lib], capture_output=True, text=True)
            assert owner.returncode == 0, f"{lib}: {owner.stderr}"
            owners.add(owner.stdout.split(":")[0])
        # Libraries that come with a named package's own dependencies (libnfnetlink0, libmnl0
        # under libnetfilter-queue1) need not be named.
        direct = {o for o in owners if o in named}
        assert {"libc6", "libnetfilter-queue1"} <= direct, (owners, named)

    def test_contents(self, deb: Path) -> None:
        """Debian paths, root-owned, the unit pointing at the package's launcher."""
        listing = subprocess.run(["dpkg-deb", "-c", str(deb)], capture_output=True, text=True,
                                 check=True).stdout.splitlines()
        paths = {line.split()[5].lstrip(".") for line in listing}
        assert {"/usr/lib/icmp6-shim/bin/icmp6-shim", "/lib/systemd/system/icmp6-shim.service",
                "/usr/bin/icmp6-shim", "/etc/icmp6-shim/icmp6-shim.toml", "/etc/icmp6-shim/rules.d/",
                "/usr/share/doc/icmp6-shim/copyright"} <= paths
        assert not any(p.startswith("/usr/local") for p in paths)
        assert all(line.split()[1] == "root/root" for line in listing)
        unit = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(deb)], capture_output=True, check=True).stdout
        assert b"ExecStart=/usr/lib/icmp6-shim/bin/icmp6-shim run --config /etc/icmp6-shim" in unit

    def test_conffiles_and_scripts(self, deb: Path, tmp_path: Path) -> None:
        """The config is a conffile; the maintainer scripts parse and use deb-systemd-helper."""
        subprocess.run(["dpkg-deb", "-e", str(deb), str(tmp_path)], check=True)
        assert (tmp_path / "conffiles").read_text().split() == ["/etc/icmp6-shim/icmp6-shim.toml"]
        for script in ("postinst", "prerm", "postrm"):
            path = tmp_path / script
            assert path.stat().st_mode & 0o111, script
            assert subprocess.run(["sh", "-n", str(path)]).returncode == 0, script
        assert "deb-systemd-helper --quiet was-enabled" in (tmp_path / "postinst").read_text()
        assert "deb-systemd-helper purge" in (tmp_path / "postrm").read_text()

    def test_extracted_tree_runs(self, deb: Path, tmp_path: Path) -> None:
        """The package's files run from wherever they are unpacked: nothing names the build tree."""
        subprocess.run(["dpkg-deb", "-x", str(deb), str(tmp_path)], check=True)
        assert _files_naming(tmp_path, str(REPO / "build").encode()) == []
        out = subprocess.run([tmp_path / "usr/lib/icmp6-shim/bin/icmp6-shim", "check", "--config",
                              tmp_path / "etc/icmp6-shim"], capture_output=True, text=True)
        assert out.returncode == 0 and out.stdout.startswith("ok:"), out.stderr
