# SPDX-License-Identifier: MIT
"""Config files that are unreadable, not UTF-8, too deep, too big or missing: one ConfigError each.

Each of these once crashed `check` (exit 70) and a reload, or silently
reloaded without the user's rules. Every case must end as a ConfigError whose
message names the file and the problem.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from shim.config import loader as config_module
from shim.config.loader import MAX_RULES, load_config
from shim.core.errors import ConfigError

RULE = '[[rule]]\nname = "{name}"\ntype = "echo-request"\nverdict = "drop"\n'


def cfg(tmp_path: Path, dropin: str | None = RULE.format(name="x")) -> Path:
    """A config directory: an empty main file and one drop-in (when given)."""
    d = tmp_path / "cfg"
    (d / "rules.d").mkdir(parents=True)
    (d / "icmp6-shim.toml").write_text("")
    if dropin is not None:
        (d / "rules.d" / "10-x.toml").write_text(dropin)
    return d


def error(directory: Path) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(directory)
    return str(info.value)


def as_nobody(fn: Callable[[], object]) -> object:
    """Run fn in a child process as uid/gid 65534; returns the error text or 'ok'."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.close(r)
        try:
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            fn()
            msg = "ok"
        except ConfigError as exc:
            msg = str(exc)
        except BaseException as exc:  # noqa: BLE001 - reported to the parent as a failure
            msg = f"CRASH {type(exc).__name__}: {exc}"
        os.write(w, msg.encode())
        os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        out = f.read().decode()
    os.waitpid(pid, 0)
    return out


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to switch to uid 65534")


@pytest.fixture
def open_tmp() -> Iterator[Path]:
    """A directory uid 65534 can reach (pytest's tmp_path parents are 0700)."""
    d = Path(tempfile.mkdtemp(prefix="icmp6-shim-faults-", dir="/tmp"))
    d.chmod(0o755)
    try:
        yield d
    finally:
        for p in d.rglob("*"):
            if p.is_dir() and not p.is_symlink():
                p.chmod(0o755)
        shutil.rmtree(d)


class TestUnreadable:
    """Bytes and permissions tomllib or pathlib used to crash on."""

    def test_not_utf8(self, tmp_path: Path) -> None:
        """A non-UTF-8 byte names the file, the byte and its line."""
        d = cfg(tmp_path, None)
        data = b'[[rule]]\nname = "caf\xe9"\n'
        (d / "rules.d" / "10-x.toml").write_bytes(data)
        assert error(d) == (f"{d / 'rules.d/10-x.toml'}: not UTF-8: byte 0xe9 at line 2 "
                            f"(offset {data.index(0xE9)})")

    def test_deeply_nested(self, tmp_path: Path) -> None:
        """Nesting that overflows tomllib's recursion is a one-line error."""
        d = cfg(tmp_path, "x = " + "[" * 100_000 + "]" * 100_000 + "\n")
        assert error(d) == (f"{d / 'rules.d/10-x.toml'}: invalid TOML: arrays or tables nested "
                            "too deep")

    def test_symlink_loop(self, tmp_path: Path) -> None:
        """A drop-in that is a symlink loop is an error, not a file to skip."""
        d = cfg(tmp_path)
        (d / "rules.d" / "20-loop.toml").symlink_to(d / "rules.d" / "20-loop.toml")
        assert error(d) == (f"{d / 'rules.d/20-loop.toml'}: cannot read: symlink loop "
                            "(too many levels of symbolic links)")

    def test_dangling_symlink(self, tmp_path: Path) -> None:
        """A drop-in pointing nowhere is an error."""
        d = cfg(tmp_path)
        (d / "rules.d" / "20-gone.toml").symlink_to(tmp_path / "gone.toml")
        assert error(d) == f"{d / 'rules.d/20-gone.toml'}: cannot read: broken symlink"

    def test_directory_named_toml(self, tmp_path: Path) -> None:
        """A *.toml entry that is not a regular file (a directory, a FIFO) is refused, not read."""
        d = cfg(tmp_path)
        (d / "rules.d" / "20-dir.toml").mkdir()
        os.mkfifo(d / "rules.d" / "30-fifo.toml")
        assert error(d) == f"{d / 'rules.d/20-dir.toml'}: cannot read: not a regular file"
        (d / "rules.d" / "20-dir.toml").rmdir()
        assert error(d) == f"{d / 'rules.d/30-fifo.toml'}: cannot read: not a regular file"

    def test_rules_d_not_a_directory(self, tmp_path: Path) -> None:
        """rules.d as a file is an error."""
        d = cfg(tmp_path, None)
        (d / "rules.d").rmdir()
        (d / "rules.d").write_text("")
        assert error(d) == f"{d / 'rules.d'}: rules.d is not a directory"

    @needs_root
    def test_rules_d_unreadable(self, open_tmp: Path) -> None:
        """A rules.d the service user cannot list is an error, not a config without rules."""
        d = cfg(open_tmp)
        d.chmod(0o755)
        (d / "icmp6-shim.toml").chmod(0o644)
        (d / "rules.d").chmod(0o300)
        assert as_nobody(lambda: load_config(d)) == (
            f"{d / 'rules.d'}: rules.d: cannot list or search it: permission denied "
            "(needs read and execute for uid 65534)")

    @needs_root
    def test_config_dir_not_searchable(self, open_tmp: Path) -> None:
        """A config directory the service user cannot search is a ConfigError (was PermissionError)."""
        d = cfg(open_tmp)
        d.chmod(0o700)
        assert as_nobody(lambda: load_config(d)) == (
            f"{d}: config directory: cannot list or search it: permission denied "
            "(needs read and execute for uid 65534)")


class TestLimits:
    """A config directory is bounded in bytes, files and rules."""

    def test_file_too_big(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """One file past MAX_FILE_BYTES is refused with the limit in the message."""
        monkeypatch.setattr(config_module, "MAX_FILE_BYTES", 2 * 2**20)
        d = cfg(tmp_path, "# " + "x" * (2 * 2**20) + "\n")
        assert error(d) == (f"{d / 'rules.d/10-x.toml'}: larger than 2 MiB (the limit of one "
                            "config file)")

    def test_directory_too_big(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """Files each under the limit, together past MAX_TOTAL_BYTES, are refused."""
        monkeypatch.setattr(config_module, "MAX_TOTAL_BYTES", 2 * 2**20)
        d = cfg(tmp_path, "# " + "x" * 2**20 + "\n")
        (d / "rules.d" / "20-y.toml").write_text("# " + "y" * 2**20 + "\n")
        assert error(d) == (f"{d / 'rules.d/20-y.toml'}: the config directory is larger than "
                            "2 MiB (the limit)")

    def test_rule_limit(self, tmp_path: Path) -> None:
        """MAX_RULES rules load; one more is an error naming the file that crossed the limit."""
        d = cfg(tmp_path, "".join(RULE.format(name=f"r{i}") for i in range(MAX_RULES)))
        assert len(load_config(d).rules) == MAX_RULES
        (d / "rules.d" / "20-y.toml").write_text(RULE.format(name="one-more"))
        assert error(d) == (f"{d / 'rules.d/20-y.toml'}: more than {MAX_RULES} rules in {d} "
                            "(the limit of one config directory)")
