# SPDX-License-Identifier: MIT
"""What an operator reads: every config error at once, our own wording, exit codes, no reprs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from scapy.layers.inet6 import ICMPv6EchoRequest, ICMPv6ND_RA, IPv6
from scapy.packet import Raw
from scapy.utils import wrpcap

from shim.lab.packets import icmp6_packet

REPO = Path(__file__).resolve().parents[2]
ECHO = icmp6_packet("2001:db8:1::a", "2001:db8:2::b", 128, 0, b"\x00\x01\x00\x01hi")
PTB = icmp6_packet("2001:db8:1::a", "2001:db8:2::b", 2, 0, b"\x00\x00\x05\x00" + bytes(48))


def shim(*args: str) -> subprocess.CompletedProcess[str]:
    out = subprocess.run([sys.executable, "-m", "shim", *args], capture_output=True, text=True,
                         cwd=REPO, timeout=60)
    assert "Traceback" not in out.stderr, out.stderr
    return out


def _config(path: Path, text: str) -> Path:
    path.mkdir()
    (path / "icmp6-shim.toml").write_text(text)
    return path


class TestCheckReportsEveryError:
    def test_three_bad_rules_give_three_lines(self, tmp_path: Path) -> None:
        """Each bad [[rule]] of a file gets its own error line; nothing is loaded (exit 2)."""
        cfg = _config(tmp_path / "c", '[[rule]]\nname = "a"\ntype = "nope"\nverdict = "drop"\n'
                      '[[rule]]\nname = "ok"\ntype = "echo-request"\nverdict = "drop"\n'
                      '[[rule]]\nname = "b"\nhop_limit = "9-1"\nverdict = "drop"\n'
                      '[[rule]]\nname = "c"\nverdict = "bogus"\n')
        out = shim("check", "--config", str(cfg))
        lines = out.stderr.strip().splitlines()
        assert out.returncode == 2 and "ok:" not in out.stdout
        assert [line.split("): key ")[0].rsplit("(", 1)[1] for line in lines] == [
            "[[rule]] #1", "[[rule]] #3", "[[rule]] #4"]
        assert all(line.startswith("icmp6-shim: error: ") for line in lines)


class TestOwnWording:
    def test_ipv4_prefix_is_named_as_such(self, tmp_path: Path) -> None:
        """An IPv4 prefix in a rule: our sentence, not ipaddress's "At least 3 parts"."""
        cfg = _config(tmp_path / "c", '[[rule]]\nname = "v4"\nsrc = "10.0.0.0/8"\nverdict = "drop"\n')
        out = shim("check", "--config", str(cfg))
        assert out.returncode == 2 and "'10.0.0.0/8' is an IPv4 prefix" in out.stderr
        assert "parts expected" not in out.stderr
        out = shim("explain", "--config", str(cfg), "--hex", ECHO.hex())
        assert out.returncode == 2 and "is an IPv4 prefix" in out.stderr

    @pytest.mark.parametrize("text, words", [("zz", "'z' at position 1 is not a hex digit"),
                                             ("600", "3 hex digits")])
    def test_bad_hex(self, text: str, words: str) -> None:
        """Bad --hex: one line in our words, exit 2, no fromhex() text."""
        out = shim("explain", "--hex", text)
        assert out.returncode == 2 and words in out.stderr and "fromhex" not in out.stderr
        assert len(out.stderr.strip().splitlines()) == 1

    def test_explain_text_has_no_python_reprs(self) -> None:
        """explain's text names the verdict once (mark:protect) and shows no None or ()."""
        out = shim("explain", "--hex", PTB.hex(), "--hook", "forward")
        assert out.returncode == 0
        assert "decision at hook forward: mark:protect (0x2/0xff)" in out.stdout
        for repr_ in ("None", "()", "mark mark", "True", "False"):
            assert repr_ not in out.stdout, repr_

    def test_replay_text_without_upper_layer(self, tmp_path: Path) -> None:
        """No upper layer, or no IPv6 header at all: plain words, never None, also under --diff."""
        cap = tmp_path / "x.pcap"
        wrpcap(str(cap), [IPv6(bytes.fromhex("60000000000000ff" + "00" * 32)),
                          Raw(bytes.fromhex("6000"))], linktype=229)
        out = shim("replay", str(cap))
        assert out.returncode == 0 and "None" not in out.stdout
        assert "no upper layer found" in out.stdout
        other = _config(tmp_path / "o", '[verdicts]\nno_match = "drop"\n'
                        '[[rule]]\nname = "all"\nverdict = "accept"\n'
                        # Above the hardening band, which would otherwise decide both.
                        'override_hardening = true\n')
        out = shim("replay", str(cap), "--diff", str(other))
        assert out.returncode == 1 and "None" not in out.stdout + out.stderr


@pytest.fixture
def capture(tmp_path: Path) -> Path:
    rogue_ra = IPv6(src="fe80::66", dst="ff02::1", hlim=64) / ICMPv6ND_RA()
    echo = IPv6(src="2001:db8::1", dst="2001:db8::2") / ICMPv6EchoRequest(data=b"a")
    path = tmp_path / "c.pcap"
    pkts = [rogue_ra, echo]
    pkts[0].time, pkts[1].time = 1700000000.25, 1700000001.5
    wrpcap(str(path), pkts, linktype=229)
    return path


class TestReplay:
    def test_json_fills_overridden_hook_and_timestamp(self, capture: Path) -> None:
        """replay --json lists what explain lists as overridden, with the hook and capture time."""
        docs = [json.loads(line) for line in shim("replay", str(capture), "--json").stdout.splitlines()]
        raw = bytes(IPv6(src="fe80::66", dst="ff02::1", hlim=64) / ICMPv6ND_RA()).hex()
        explained = json.loads(shim("explain", "--hex", raw, "--json").stdout)
        assert "nd-router-advert" in explained["overridden"]
        assert docs[0]["decision"]["overridden"] == explained["overridden"]
        assert docs[0]["decision"]["rule"] == explained["decision"]["rule"]
        assert [(d["hook"], d["timestamp"]) for d in docs] == [("input", 1700000000.25),
                                                              ("input", 1700000001.5)]

    def test_diff_exit_status_as_diff(self, capture: Path, tmp_path: Path) -> None:
        """--diff exits 0 when no verdict changes, 1 when one does, 2 when it cannot compare."""
        same = _config(tmp_path / "same", "")
        other = _config(tmp_path / "other", '[[rule]]\nname = "no-echo"\ntype = "echo-request"\n'
                        'verdict = "drop"\n')
        assert shim("replay", str(capture), "--diff", str(same)).returncode == 0
        out = shim("replay", str(capture), "--diff", str(other))
        assert out.returncode == 1 and "no-echo" in out.stdout
        bad = tmp_path / "bad.pcap"
        bad.write_bytes(b"not a capture")
        out = shim("replay", str(bad), "--diff", str(other))
        assert out.returncode == 2 and "not a pcap" in out.stderr
        assert shim("replay", str(bad)).returncode == 1  # without --diff: unchanged


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another user")
class TestExportNeedsRoot:
    @pytest.mark.parametrize("flag", ["--apply", "--remove"])
    def test_says_what_needs_root(self, flag: str) -> None:
        """export xfrm --apply/--remove as user nobody: names the xfrm change, exit 3."""
        out = subprocess.run(["setpriv", "--reuid", "nobody", "--regid", "nogroup", "--clear-groups",
                              sys.executable, "-m", "shim", "export", "xfrm", flag],
                             capture_output=True, text=True, timeout=60, cwd="/")
        assert out.returncode == 3, out.stderr
        assert f"export xfrm {flag} changes this namespace's xfrm policies" in out.stderr
        assert "testbed" not in out.stderr
