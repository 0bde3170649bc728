# SPDX-License-Identifier: MIT
"""docs/design.md stays true: every path it names for a change, and every module in its
package table, exists in the tree; the version comes from the package metadata."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DESIGN = (REPO / "docs" / "design.md").read_text()
# A path: words joined by "/", optionally ending in "/" (a directory) or a file suffix.
PATH = re.compile(r"\b(?:native|shim|tests|docs|systemd|vm|config)/[\w./-]*[\w/]")


def section(title: str) -> str:
    """The text of one `###` section of docs/design.md."""
    start = DESIGN.index(f"### {title}")
    end = DESIGN.find("\n## ", start)
    return DESIGN[start:end if end >= 0 else None]


def without_parentheses(text: str) -> str:
    """`text` with every parenthesised part (nested too) removed."""
    out, depth = [], 0
    for ch in text:
        depth += ch == "("
        if depth == 0:
            out.append(ch)
        depth -= ch == ")" and depth > 0
    return "".join(out)


def table_modules() -> list[tuple[str, str]]:
    """(package, module) for each module named at the top level of the package table."""
    rows = [ln for ln in DESIGN.splitlines() if ln.startswith("| `shim/")]
    out = []
    for row in rows:
        cells = row.split("|")
        package = cells[1].strip().strip("`")
        modules = re.findall(r"`([^`]+)`", without_parentheses(cells[2]))
        out += [(package, m) for m in modules]
    return out


WHERE = sorted(set(PATH.findall(section("Where a change goes"))))
MODULES = table_modules()


class TestDesignDoc:
    """The doc's map of the tree matches the tree."""

    def test_the_sections_are_found(self) -> None:
        """The parsers find something to check (a renamed section fails here, not silently)."""
        assert len(WHERE) >= 15 and len(MODULES) >= 40

    @pytest.mark.parametrize("path", WHERE)
    def test_where_a_change_goes_names_real_paths(self, path: str) -> None:
        """Each path under "Where a change goes" exists."""
        assert (REPO / path).exists(), f"docs/design.md names {path}, which does not exist"

    @pytest.mark.parametrize(("package", "module"), MODULES, ids=[f"{p}.{m}" for p, m in MODULES])
    def test_the_package_table_names_real_modules(self, package: str, module: str) -> None:
        """Each module of the package table is a module (or, ending in /, a folder) of its package."""
        base = REPO / package
        target = base / module if module.endswith("/") else base / f"{module}.py"
        assert target.exists(), f"docs/design.md lists {module} in {package}: no {target}"

    def test_every_module_is_in_the_table(self) -> None:
        """A module added to a package is added to the table too."""
        listed = set(MODULES)
        missing = [(p.parent.relative_to(REPO).as_posix(), p.stem)
                   for p in sorted((REPO / "shim").glob("*/*.py")) if p.stem != "__init__"]
        assert [m for m in missing if m not in listed] == []


class TestVersion:
    """One source of truth for the version: pyproject.toml, as installed."""

    def test_version_is_the_projects(self) -> None:
        """`icmp6-shim --version` says the version in pyproject.toml."""
        want = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
        out = subprocess.run([sys.executable, "-m", "shim", "--version"], capture_output=True,
                             text=True, timeout=60, cwd=REPO)
        assert out.stdout.strip() == f"icmp6-shim {want}", out.stderr

    def test_an_uninstalled_tree_has_a_placeholder(self) -> None:
        """Without package metadata the version is 0+unknown (valid PEP 440), never an error."""
        code = ("from importlib import metadata\n"
                "def missing(name):\n    raise metadata.PackageNotFoundError(name)\n"
                "metadata.version = missing\n"
                "import shim\nprint(shim.__version__)\n")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             timeout=60, cwd=REPO)
        assert out.stdout.strip() == "0+unknown", out.stderr
