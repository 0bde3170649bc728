# SPDX-License-Identifier: MIT
"""The command line as people and scripts use it: explain, replay, check, rules, errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from scapy.layers.inet6 import ICMPv6EchoRequest, ICMPv6ND_NS, IPv6, IPv6ExtHdrFragment
from scapy.layers.l2 import Ether
from scapy.utils import PcapNgWriter, wrpcap

from shim.lab.packets import icmp6_packet

REPO = Path(__file__).resolve().parents[2]
PARSER_FIELDS = {
    "version", "payload_length", "hop_limit", "src_class", "dst_class", "src_mcast_scope",
    "dst_mcast_scope", "ext_headers", "upper_layer", "upper_layer_offset", "icmpv6_type",
    "icmpv6_code", "frag_status", "frag_offset", "frag_more", "frag_id", "chain_complete",
    "malformed", "nd_valid", "mtu",
}
DECISION_KEYS = {"verdict", "mark", "mark_name", "rule", "origin", "priority", "citation"}


def shim(*args: str, check: bool = False) -> subprocess.CompletedProcess[str]:
    out = subprocess.run([sys.executable, "-m", "shim", *args], capture_output=True, text=True,
                         cwd=REPO, timeout=60)
    assert "Traceback" not in out.stderr, out.stderr
    if check:
        assert out.returncode == 0, out.stderr
    return out


NS = icmp6_packet("fe80::1", "ff02::1:ff00:1", 135, 0,
                  bytes(4) + bytes.fromhex("20010db8000000000000000000000001"), 255)
ECHO = icmp6_packet("2001:db8:1::a", "2001:db8:2::b", 128, 0, b"\x00\x01\x00\x01hi")


class TestExplain:
    def test_json_carries_parser_fields_and_decision(self) -> None:
        """explain --json has every parser field by its documented name and the decision keys."""
        doc = json.loads(shim("explain", "--hex", NS.hex(), "--json", check=True).stdout)
        assert PARSER_FIELDS <= doc.keys()
        assert DECISION_KEYS <= doc["decision"].keys()
        assert (doc["icmpv6_type"], doc["dst_class"], doc["nd_valid"]) == (135, "solicited_node", True)
        assert (doc["decision"]["verdict"], doc["decision"]["mark_name"]) == ("mark", "bypass")

    @pytest.mark.parametrize("hexdata", ["", "60", NS[:39].hex(), NS[:43].hex(), "ff" * 80,
                                         ("60000000ffff0000" + "00" * 32), NS.hex() + "00"])
    def test_hostile_and_truncated_packets_are_explained(self, hexdata: str) -> None:
        """Any bytes give a parse and a decision, never a traceback."""
        doc = json.loads(shim("explain", "--hex", hexdata or "00", "--json", check=True).stdout)
        assert doc["decision"]["verdict"] in ("accept", "drop", "mark")

    def test_user_rule_overrides_and_lists_overridden(self, tmp_path: Path) -> None:
        """A user rule wins over the default, which shows up as overridden."""
        (tmp_path / "icmp6-shim.toml").write_text(
            '[[rule]]\nname = "echo-bypass"\ntype = "echo-request"\nverdict = "mark:bypass"\n')
        doc = json.loads(shim("explain", "--hex", ECHO.hex(), "--config", str(tmp_path),
                              "--hook", "forward", "--json", check=True).stdout)
        assert (doc["decision"]["rule"], doc["decision"]["origin"]) == ("echo-bypass", "user")
        assert doc["overridden"]

    def test_bad_hex_is_one_line(self) -> None:
        """Not hex: one line, non-zero exit."""
        out = shim("explain", "--hex", "zz")
        assert out.returncode != 0 and len(out.stderr.strip().splitlines()) == 1


@pytest.fixture
def captures(tmp_path: Path) -> dict[str, Path]:
    pkts = [Ether(src="02:00:00:00:00:01", dst="33:33:00:00:00:01") / IPv6(src="2001:db8::1", dst="2001:db8::2") / ICMPv6EchoRequest(data=b"a"),
            Ether(src="02:00:00:00:00:01", dst="33:33:00:00:00:01") / IPv6(src="fe80::1", dst="ff02::1:ff00:2", hlim=255) / ICMPv6ND_NS(tgt="2001:db8::2"),
            Ether(src="02:00:00:00:00:01", dst="33:33:00:00:00:01") / IPv6(src="fe80::1", dst="ff02::1", hlim=64) / ICMPv6ND_NS(tgt="2001:db8::2"),
            Ether(src="02:00:00:00:00:01", dst="33:33:00:00:00:01") / IPv6(src="2001:db8::1", dst="2001:db8::2") / IPv6ExtHdrFragment(offset=8, m=0) / (b"x" * 8)]
    raw = [bytes(p[IPv6]) for p in pkts] + [ECHO[:45]]
    paths = {"eth": tmp_path / "eth.pcap", "raw": tmp_path / "raw.pcap", "ng": tmp_path / "eth.pcapng"}
    wrpcap(str(paths["eth"]), pkts)
    wrpcap(str(paths["raw"]), [IPv6(r) for r in raw], linktype=229)
    with PcapNgWriter(str(paths["ng"])) as w:
        for p in pkts:
            w.write(p)
    return paths


class TestReplay:
    @pytest.mark.parametrize("kind", ["eth", "raw", "ng"])
    def test_one_json_object_per_packet(self, captures: dict[str, Path], kind: str) -> None:
        """replay --json prints one object per record with fields and decision (pcap, pcapng, raw)."""
        lines = shim("replay", str(captures[kind]), "--json", check=True).stdout.splitlines()
        docs = [json.loads(line) for line in lines]
        assert len(docs) == (5 if kind == "raw" else 4)
        assert all(PARSER_FIELDS <= d.keys() and DECISION_KEYS <= d["decision"].keys() for d in docs)
        assert [d["icmpv6_type"] for d in docs[:3]] == [128, 135, 135]
        assert docs[2]["decision"]["verdict"] == "drop"  # NS with hop limit 64
        assert docs[3]["frag_status"] == "non_first"

    def test_diff_lists_changed_packets_and_summary(self, captures: dict[str, Path], tmp_path: Path) -> None:
        """--diff prints only packets whose verdict changes and a per-type summary."""
        other = tmp_path / "other"
        other.mkdir()
        (other / "icmp6-shim.toml").write_text(
            '[[rule]]\nname = "no-echo"\ntype = "echo-request"\nverdict = "drop"\n')
        out = shim("replay", str(captures["eth"]), "--diff", str(other))
        assert out.returncode == 1  # as diff(1): some verdict differs
        assert out.stdout.count("\n") == 1 and "no-echo" in out.stdout
        assert "1 of 4 packets change verdict" in out.stderr and "type 128: 1" in out.stderr

    def test_counters(self, captures: dict[str, Path]) -> None:
        """--counters reports rule hits for the capture."""
        out = shim("replay", str(captures["eth"]), "--counters", check=True)
        assert "hardening-nd-invalid" in out.stderr

    def test_not_a_capture(self, tmp_path: Path) -> None:
        """A file that is not a capture: one line, exit 1."""
        bad = tmp_path / "x.pcap"
        bad.write_bytes(b"hello world")
        out = shim("replay", str(bad))
        assert out.returncode == 1 and "not a pcap or pcapng file" in out.stderr


class TestCheckAndRules:
    def test_shipped_config_checks(self) -> None:
        """The shipped config/ passes check."""
        assert shim("check", "--config", "config", check=True).stdout.startswith("ok:")

    def test_broken_config_names_file_rule_and_key(self, tmp_path: Path) -> None:
        """check on a broken config: exit 2 and the file, rule and key in one line."""
        (tmp_path / "icmp6-shim.toml").write_text('[[rule]]\nname = "x"\ntype = "echo"\nverdikt = "drop"\n')
        out = shim("check", "--config", str(tmp_path))
        assert out.returncode == 2
        assert "icmp6-shim.toml" in out.stderr and "'x'" in out.stderr

    def test_rules_lists_defaults_in_order(self) -> None:
        """rules prints the merged table with origin and citations."""
        out = shim("rules", check=True).stdout
        assert out.index("hardening-malformed") < out.index("nd-neighbor-solicit")
        assert "draft-arkko-icmpv6-ike-effects-02" in out

    def test_missing_config_dir(self) -> None:
        """A config path that is not a directory: exit 2, one line."""
        out = shim("check", "--config", "/nonexistent")
        assert out.returncode == 2 and "not a directory" in out.stderr


class TestCheckNeverCrashes:
    """check on a broken file is one line and exit 2, never an internal error (70)."""

    @pytest.mark.parametrize(("body", "message"), [
        (b'[[rule]]\nname = "caf\xe9"\n', "not UTF-8: byte 0xe9 at line 2"),
        (b"x = " + b"[" * 100_000 + b"]" * 100_000 + b"\n", "nested too deep"),
    ], ids=["non-utf8", "deep"])
    def test_broken_dropin(self, tmp_path: Path, body: bytes, message: str) -> None:
        """A broken rules.d file: exit 2, one line naming the file and the problem."""
        (tmp_path / "rules.d").mkdir()
        (tmp_path / "icmp6-shim.toml").write_text("")
        (tmp_path / "rules.d" / "10-bad.toml").write_bytes(body)
        out = shim("check", "--config", str(tmp_path))
        assert out.returncode == 2, out.stderr
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and f"{tmp_path / 'rules.d' / '10-bad.toml'}: " in lines[0]
        assert message in lines[0]

    def test_symlink_loop_and_missing_main(self, tmp_path: Path) -> None:
        """A symlink loop, then a directory without its main file: exit 2 each, not 'ok'."""
        (tmp_path / "rules.d").mkdir()
        (tmp_path / "icmp6-shim.toml").write_text("")
        (tmp_path / "rules.d" / "10-loop.toml").symlink_to(tmp_path / "rules.d" / "10-loop.toml")
        out = shim("check", "--config", str(tmp_path))
        assert out.returncode == 2 and "symlink loop" in out.stderr
        (tmp_path / "rules.d" / "10-loop.toml").unlink()
        (tmp_path / "icmp6-shim.toml").unlink()
        out = shim("check", "--config", str(tmp_path))
        assert out.returncode == 2 and "icmp6-shim.toml: cannot read: missing" in out.stderr
