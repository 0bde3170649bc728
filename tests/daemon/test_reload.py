# SPDX-License-Identifier: MIT
"""Reloads off the packet path (shim.daemon.reload) and the Service's keep-the-old-table rule.

Why: when only ShimError was caught around a reload, any other exception
killed the daemon (and its exit removed the diversion); and the parse ran
inside the packet loop.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from shim.core.model import Hook
from shim.daemon import service as service_module
from shim.daemon.notify import Notifier
from shim.daemon.reload import Reloader
from shim.daemon.service import Service
from shim.lab.packets import icmp6_packet

DROP_ECHO = '[[rule]]\nname = "drop-echo"\ntype = "echo-request"\nverdict = "drop"\n'


class TestReloader:
    """One reload thread at a time, bounded in time, every exception an error string."""

    def test_any_exception_is_an_outcome(self) -> None:
        """A RecursionError in the work is an error outcome, not an exception in the loop."""
        def work() -> int:
            raise RecursionError("maximum recursion depth exceeded")

        r: Reloader[int] = Reloader(work, timeout=10)
        r.request()
        out = r.wait(10)
        assert out is not None and out.value is None
        assert out.error == "internal error: RecursionError (nested too deep)"

    def test_timeout_fails_now_and_drops_the_late_result(self) -> None:
        """A reload past its timeout fails at once; its late value is dropped; a queued request runs next."""
        release, calls = threading.Event(), []

        def work() -> int:
            calls.append(1)
            if len(calls) == 1:
                release.wait(10)
            return len(calls)

        r: Reloader[int] = Reloader(work, timeout=0.05)
        r.request()
        out = r.wait(5)
        assert out is not None and out.value is None and "did not finish within" in (out.error or "")
        r.request()  # waits for the stuck thread: never two at once
        assert len(calls) == 1 and r.busy
        release.set()
        out = r.wait(5)
        assert out is not None and out.value == 2 and len(calls) == 2


class TestServiceReload:
    """Service.reload keeps the old table on any failure and reports it."""

    def make(self, tmp_path: Path) -> Service:
        (tmp_path / "icmp6-shim.toml").write_text(DROP_ECHO)
        return Service(tmp_path, notifier=Notifier({}), control_socket="")

    def test_unexpected_exception_keeps_the_old_table(self, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
        """Not a ShimError: the old table stays, the error is in stats and STATUS."""
        svc = self.make(tmp_path)
        old = svc.compiled

        def boom(_config: object) -> object:
            raise MemoryError("no room for the table")

        monkeypatch.setattr(service_module, "compile_config", boom)
        assert svc.reload() is False
        assert svc.compiled is old and svc.reload_failures == 1
        snap = svc.snapshot()
        assert snap["last_reload_error"] == "internal error: MemoryError: no room for the table"
        assert "last reload failed, old table kept: internal error: MemoryError" in svc.status_line()

    def test_classifier_over_its_limit_keeps_the_old_table(
            self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """Rules whose compiled classifier exceeds the limit: a ConfigError, the old table stays."""
        from shim.daemon import compile as compile_module
        svc = self.make(tmp_path)
        old = svc.compiled
        (tmp_path / "icmp6-shim.toml").write_text("".join(
            f'[[rule]]\nname = "r{i}"\ntype = "echo-request"\nsrc = "2001:db8:{i:x}::/48"\n'
            f'verdict = "drop"\n' for i in range(300)))
        monkeypatch.setattr(compile_module, "MAX_CLASSIFIER_BYTES", 16 << 10)
        assert svc.reload() is False
        assert svc.compiled is old
        error = str(svc.snapshot()["last_reload_error"])
        assert "compiled classifier larger than" in error and "icmp6-shim.toml" in error
        packet = icmp6_packet("2001:db8:5::1", "2001:db8::2", 128, 0, b"x")
        judge = svc.compiled.judge
        assert judge.decisions[judge.classify(packet, int(Hook.INPUT), 0, 0)].rule == "drop-echo"
        monkeypatch.setattr(compile_module, "MAX_CLASSIFIER_BYTES", 256 << 20)
        assert svc.reload() is True and svc.compiled.native.n_rules > 300

    def test_unreadable_dropin_keeps_the_rules(self, tmp_path: Path) -> None:
        """A non-UTF-8 drop-in added after start: reload fails, the user rule stays enforced."""
        svc = self.make(tmp_path)
        (tmp_path / "rules.d").mkdir()
        (tmp_path / "rules.d" / "bad.toml").write_bytes(b"# \xff\n")
        assert svc.reload() is False
        assert "drop-echo" in [r.name for r in svc.compiled.table.rules]
        assert "not UTF-8" in str(svc.snapshot()["last_reload_error"])
        (tmp_path / "rules.d" / "bad.toml").unlink()
        assert svc.reload() is True and svc.snapshot()["last_reload_error"] is None


class TestRestartOnlySettings:
    """A reload keeps the restart-only settings as started and names the changed ones."""

    def test_changed_restart_only_keys_are_kept_and_listed(self, tmp_path: Path) -> None:
        """queue maxlen and the metrics timeout wait for a restart; the log rate follows the file."""
        (tmp_path / "icmp6-shim.toml").write_text(DROP_ECHO)
        svc = Service(tmp_path, notifier=Notifier({}), control_socket="")
        started = svc.settings
        (tmp_path / "icmp6-shim.toml").write_text(
            "[queue]\nmaxlen = 77\n[metrics]\ntimeout = 5.0\n[log]\nrate = 3.0\n" + DROP_ECHO)
        assert svc.reload() is True
        assert svc.settings.queue_maxlen == started.queue_maxlen
        assert svc.settings.metrics_timeout == started.metrics_timeout
        assert svc.settings.log_rate == 3.0
        assert svc._restart_needed(svc.compiled) == ["queue_maxlen", "metrics_timeout"]


ECHO = icmp6_packet("2001:db8::1", "2001:db8::2", 128)
PING_REPLY = icmp6_packet("2001:db8::2", "2001:db8::1", 129)
ALLOW_REPLY = '[[rule]]\nname = "allow-reply"\ntype = "echo-reply"\nverdict = "accept"\n'


def judge(svc: Service, packet: bytes, times: int) -> None:
    """Count `times` hits in the service's current table, as the packet path does."""
    for _ in range(times):
        svc.compiled.native.classify(packet, Hook.INPUT, 0, 0)


def hits(svc: Service) -> dict[str, object]:
    """Each rule's reported hits (and in_table, when a reload removed it)."""
    rules = svc.snapshot()["rules"]
    assert isinstance(rules, list)
    return {r["rule"]: (r["hits"], r.get("in_table", True)) for r in rules}


class TestHitsAcrossReloads:
    """A reload starts a fresh C table; the counts the old one held are carried over."""

    def test_counts_survive_reloads_and_removed_rules_keep_theirs(self, tmp_path: Path) -> None:
        """Hits of a kept rule add up over two tables; a removed rule is listed out of the table."""
        (tmp_path / "icmp6-shim.toml").write_text(DROP_ECHO + ALLOW_REPLY)
        svc = Service(tmp_path, notifier=Notifier({}), control_socket="")
        judge(svc, ECHO, 3)
        judge(svc, PING_REPLY, 2)
        assert svc.reload() is True
        assert svc.compiled.native.hits()[0] == 0  # the new C table counts from zero
        judge(svc, ECHO, 4)
        now = hits(svc)
        assert now["drop-echo"] == (7, True) and now["allow-reply"] == (2, True)
        (tmp_path / "icmp6-shim.toml").write_text(ALLOW_REPLY)
        assert svc.reload() is True
        judge(svc, PING_REPLY, 1)
        now = hits(svc)
        assert now["drop-echo"] == (7, False) and now["allow-reply"] == (3, True)
        types = svc.snapshot()["types"]
        assert isinstance(types, dict) and types["128"] == 7 and types["129"] == 3

    def test_a_failed_reload_keeps_the_counts_in_place(self, tmp_path: Path) -> None:
        """Nothing is carried twice when the new config is refused: the table and its counts stay."""
        (tmp_path / "icmp6-shim.toml").write_text(DROP_ECHO)
        svc = Service(tmp_path, notifier=Notifier({}), control_socket="")
        judge(svc, ECHO, 2)
        (tmp_path / "icmp6-shim.toml").write_text("[[rule]]\nname = 1\n")
        assert svc.reload() is False
        judge(svc, ECHO, 1)
        assert hits(svc)["drop-echo"] == (3, True)

