# SPDX-License-Identifier: MIT
"""`icmp6-shim stats` answers from the control socket whatever state the config is in.

A real control server (shim.daemon.control.ControlServer) serves a snapshot from a
thread on a unix socket in tmp_path; the command runs in-process through main().
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from shim.cli.daemon import _stats_text
from shim.cli.main import main
from shim.config.loader import ControlAddress, control_address
from shim.daemon.control import ControlServer

SNAPSHOT: dict[str, object] = {
    "pid": 4242, "uptime_s": 3.0, "config": "/etc/icmp6-shim", "backend": "iptables",
    "queues": [0], "reloads": 0, "reload_failures": 1,
    "last_reload_error": "rules.d/10.toml: rule 'x' ([[rule]] #1): key 'type': unknown ICMPv6 type",
    "packets": 9, "errors": 0, "enobufs": 0, "verdicts": {"accept": 5, "drop": 4},
    "shadow": {"file": "candidate.toml", "evaluated": 9, "differences": 4,
               "pairs": [{"enforced": "transit-echo-request", "shadow": "try-drop-echo",
                          "packets": 4}]},
    "rules": [{"rule": "drop-echo", "origin": "user", "verdict": "drop", "hits": 4}],
}
BROKEN_RULE = '[[rule]]\nname = "broken"\ntype = "no-such-type"\nverdict = "drop"\n'


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[str]:
    """A control socket answering SNAPSHOT, served until the test ends; its path."""
    path = str(tmp_path / "control.sock")
    server = ControlServer(path, lambda: SNAPSHOT)
    stop = threading.Event()

    def serve() -> None:
        while not stop.wait(0.01):
            server.serve_pending()

    t = threading.Thread(target=serve)
    t.start()
    yield path
    stop.set()
    t.join(5)
    server.close()


def config(tmp_path: Path, text: str) -> Path:
    d = tmp_path / "cfg"
    d.mkdir(exist_ok=True)
    (d / "icmp6-shim.toml").write_text(text)
    return d


class TestStatsWithABrokenConfig:
    """The config only has to name the socket: broken rules do not stop `stats`."""

    def test_json_after_a_failed_reload(self, tmp_path: Path, daemon: str,
                                        capsys: pytest.CaptureFixture[str]) -> None:
        """An invalid rule in the main file: `stats --config --json` prints the daemon's JSON."""
        cfg = config(tmp_path, f'[control]\nsocket = "{daemon}"\n' + BROKEN_RULE)
        assert main(["stats", "--config", str(cfg), "--json"]) == 0
        assert json.loads(capsys.readouterr().out) == SNAPSHOT

    def test_human_after_a_failed_reload(self, tmp_path: Path, daemon: str,
                                         capsys: pytest.CaptureFixture[str]) -> None:
        """A broken drop-in: the human view answers, with the reload error and the shadow pair."""
        cfg = config(tmp_path, f'[control]\nsocket = "{daemon}"\n')
        (cfg / "rules.d").mkdir()
        (cfg / "rules.d" / "10.toml").write_bytes(b"# \xff\n")
        assert main(["stats", "--config", str(cfg)]) == 0
        out = capsys.readouterr().out
        assert "last reload failed, old table kept: rules.d/10.toml" in out
        assert "shadow candidate.toml: 9 packets judged, 4 with another verdict" in out

    def test_unreadable_main_file_names_why_the_default_was_tried(
            self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """Bad TOML: the default socket is tried, and the one-line error says why."""
        cfg = config(tmp_path, "[control\n")
        assert main(["stats", "--config", str(cfg), "--timeout", "1"]) != 0
        err = capsys.readouterr().err
        assert "the default was tried because" in err and "invalid TOML" in err
        assert "Traceback" not in err


class TestControlAddress:
    """Only [control] socket and [queue] num are read, each falling back on its own."""

    def test_both_keys_despite_broken_rules(self, tmp_path: Path) -> None:
        """Rules and other sections are not looked at."""
        cfg = config(tmp_path, '[control]\nsocket = "/run/x.sock"\n[queue]\nnum = 7\n'
                     '[log]\nrate = "fast"\n' + BROKEN_RULE)
        assert control_address(cfg) == ControlAddress(control_socket="/run/x.sock", queue_num=7)

    def test_a_bad_queue_num_falls_back_to_zero(self, tmp_path: Path) -> None:
        """A bad [queue] num: default 0, the socket key still used, the problem named."""
        addr = control_address(config(tmp_path, '[control]\nsocket = "/s"\n[queue]\nnum = -1\n'))
        assert (addr.control_socket, addr.queue_num) == ("/s", 0)
        assert addr.problem is not None and "[queue] key 'num'" in addr.problem

    def test_no_directory_and_a_missing_file(self, tmp_path: Path) -> None:
        """None gives the defaults silently; a directory without the main file says so."""
        assert control_address(None) == ControlAddress()
        empty = tmp_path / "empty"
        empty.mkdir()
        addr = control_address(empty)
        assert addr.queue_num == 0 and addr.problem is not None and "missing" in addr.problem


class TestStatsText:
    """The human view shows what docs/rules.md says it shows."""

    def test_no_shadow_no_shadow_line(self) -> None:
        """Without [shadow], no shadow line."""
        assert "shadow" not in _stats_text(dict(SNAPSHOT, shadow=None))

    def test_shadow_pairs_listed(self) -> None:
        """Each (enforced, shadow) pair with its packet count."""
        text = _stats_text(SNAPSHOT)
        assert "4  enforced transit-echo-request, shadow try-drop-echo" in text
