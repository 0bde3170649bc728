# SPDX-License-Identifier: MIT
"""The layering of shim/ holds: import-linter's contracts (pyproject.toml) and the cffi door.

The contracts are run on the real tree, and on a copy with one forbidden
import added per contract, so a contract that cannot fail would show here.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

__all__: list[str] = []

REPO = Path(__file__).resolve().parent.parent
LINT = Path(sys.executable).with_name("lint-imports")


def _lint(cwd: Path) -> subprocess.CompletedProcess[str]:
    # --no-cache: the cache lives beside the tree and would outlive a copied one.
    return subprocess.run([str(LINT), "--no-cache"], cwd=cwd, capture_output=True, text=True,
                          timeout=300)


class TestContracts:
    def test_the_tree_keeps_every_contract(self) -> None:
        """lint-imports passes on shim/ as it is."""
        out = _lint(REPO)
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-1000:]
        assert "0 broken" in out.stdout

    @pytest.mark.parametrize(("module", "line", "contract"), [
        ("core/errors.py", "import shim.config.loader", "Layers"),
        ("config/values.py", "import shim.bindings.icmp6", "Layers"),
        ("bindings/icmp6.py", "import shim.adapters.pcap", "Layers"),
        ("lab/testbed.py", "import shim.daemon.service", "Layers"),
        ("daemon/metrics.py", "import shim.cli.main", "Layers"),
        ("daemon/service.py", "import netfilterqueue", "netfilterqueue only in its adapter"),
        ("core/rules.py", "import structlog", "structlog only in the daemon"),
        ("adapters/batched.py", "import shim.adapters.nfq", "Engines share"),
    ], ids=["core>config", "config>bindings", "bindings>adapters", "lab>daemon", "daemon>cli",
            "netfilterqueue", "structlog", "engines"])
    def test_a_forbidden_import_breaks_its_contract(self, tmp_path: Path, module: str, line: str,
                                                    contract: str) -> None:
        """One forbidden import added to a copy of the tree makes lint-imports fail, naming it."""
        shutil.copytree(REPO / "shim", tmp_path / "shim", ignore=shutil.ignore_patterns("*.so"))
        shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
        with (tmp_path / "shim" / module).open("a") as f:
            f.write(f"\n{line}  # noqa\n")
        out = _lint(tmp_path)
        assert out.returncode != 0
        broken = [ln for ln in out.stdout.splitlines() if " BROKEN" in ln]
        assert any(ln.startswith(contract) for ln in broken), out.stdout[-2000:]


def _cffi_importers(root: Path) -> set[str]:
    """Modules under root/shim that import the cffi module shim._icmp6, at any depth."""
    found = set()
    for path in (root / "shim").rglob("*.py"):
        module = ".".join(path.relative_to(root).with_suffix("").parts)
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                hit = any(a.name == "shim._icmp6" for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                hit = node.module == "shim._icmp6" or (
                    node.module == "shim" and any(a.name == "_icmp6" for a in node.names))
            else:
                continue
            if hit:
                found.add(module)
    return found


class TestCffiDoor:
    """grimp reads only .py files, so it cannot see the compiled shim._icmp6: checked here."""

    def test_only_bindings_import_the_cffi_module(self) -> None:
        """Every importer of shim._icmp6 is a module of shim.bindings, and there is one."""
        importers = _cffi_importers(REPO)
        assert importers
        assert {m for m in importers if not m.startswith("shim.bindings.")} == set()

    def test_an_importer_elsewhere_is_found(self, tmp_path: Path) -> None:
        """A `from shim import _icmp6` inside a function of the daemon is caught."""
        shutil.copytree(REPO / "shim", tmp_path / "shim", ignore=shutil.ignore_patterns("*.so"))
        with (tmp_path / "shim" / "daemon" / "notify.py").open("a") as f:
            f.write("\n\ndef _sneak() -> None:\n    from shim import _icmp6  # noqa\n")
        assert "shim.daemon.notify" in _cffi_importers(tmp_path)
