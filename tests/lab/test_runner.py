# SPDX-License-Identifier: MIT
"""ShimProcess builds the command a test or the demo starts the daemon with."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from shim.lab import runner
from shim.lab.runner import ShimProcess


class TestArgv:
    def test_a_relative_config_means_the_callers_directory(self, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
        """`make demo` passes `config`: the child, started elsewhere, must get its absolute path."""
        (tmp_path / "config").mkdir()
        monkeypatch.chdir(tmp_path)
        argv = ShimProcess(Path("config"), netns="x").argv()
        assert argv[argv.index("--config") + 1] == str(tmp_path / "config")

    def test_the_child_starts_in_the_source_tree(self) -> None:
        """`python -m shim` runs from the tree's root, where the package is."""
        assert (runner._REPO / "shim" / "__main__.py").is_file()
        assert (runner._REPO / "pyproject.toml").is_file()
        assert os.path.samefile(runner._REPO / "shim" / "lab" / "runner.py", runner.__file__)
