# SPDX-License-Identifier: MIT
"""The adversarial suite's data, crafted packets and verdict logic (no namespaces needed)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from shim.lab.adversarial import Attack, Result, format_table, judge, load_suite
from shim.lab.adversarial_probes import CRAFTS, craft, marker_body
from shim.core.errors import ConfigError
from shim.bindings.icmp6 import parse
from shim.lab.packets import icmp6_packet

A, B = "2001:db8:1::a", "2001:db8:2::b"


class TestSuiteFile:
    def test_every_row_loads_with_its_placeholders_filled(self) -> None:
        """The shipped suite parses, and no row keeps an unfilled {placeholder}."""
        suite = load_suite({"ll_a": "fe80::1234"})
        assert suite.attacks
        for attack in suite.attacks:
            for text in (*attack.run, attack.sent_filter, attack.link_filter, attack.src or "",
                         attack.dst or ""):
                assert "{" not in text, (attack.name, text)
        assert any(a.src == "fe80::1234" for a in suite.attacks)

    def test_every_known_evasion_is_a_row(self) -> None:
        """Fragmented types 128/139/138/100/200/255/134, AH, overlap, and the THC tools are covered."""
        suite = load_suite()
        frag = {a.icmp_type for a in suite.attacks if a.send == "frag-dstopt"}
        assert {128, 139, 138, 100, 200, 255, 134} <= frag
        assert any(a.send == "ah" for a in suite.attacks)
        assert any(a.send == "overlap" and a.expect == "none" for a in suite.attacks)
        tools = {a.run[0] for a in suite.attacks if a.run}
        assert {"atk6-implementation6", "atk6-denial6", "atk6-fake_router26",
                "atk6-flood_router26", "atk6-ndpexhaust26"} <= tools
        assert all(a.ping for a in suite.attacks if a.run and "flood" in a.run[0])

    def test_a_row_with_send_and_run_is_refused(self, tmp_path: Path) -> None:
        """A row must be crafted or a tool, not both: one clear ConfigError."""
        f = tmp_path / "s.toml"
        f.write_text('topology = "three-node"\n[victims.b]\naddr = "2001:db8:2::b"\n'
                     '[[attack]]\nname = "x"\nvictim = "b"\ntype = 128\nsend = "plain"\nrun = ["true"]\n')
        with pytest.raises(ConfigError, match="exactly one of send"):
            load_suite(path=str(f))

    def test_an_unknown_placeholder_is_refused(self, tmp_path: Path) -> None:
        """{nosuch} in a row names the row and the placeholder."""
        f = tmp_path / "s.toml"
        f.write_text('topology = "three-node"\n[victims.b]\naddr = "2001:db8:2::b"\n'
                     '[[attack]]\nname = "x"\nvictim = "b"\ntype = 128\nrun = ["t", "{nosuch}"]\n')
        with pytest.raises(ConfigError, match=r"#1: unknown placeholder.*nosuch"):
            load_suite(path=str(f))


class TestCrafted:
    @pytest.mark.parametrize("icmp_type", [128, 139, 134])
    def test_frag_dstopt_hides_the_icmpv6_header_from_both_fragments(self, icmp_type: int) -> None:
        """First fragment ends between the two DestOpts; neither fragment shows an upper layer."""
        first, second = craft("frag-dstopt", A, B, icmp_type, marker_body(b"m", 1, 1), 9)
        v1, v2 = parse(first, 16), parse(second, 16)
        assert (v1.frag_status, v1.chain_complete, v1.upper_layer) == ("first", False, None)
        assert (v2.frag_status, v2.frag_offset, v2.upper_layer) == ("non_first", 1224, None)
        assert len(first) <= 1280 and v1.frag_id == v2.frag_id == 9

    def test_frag_dstopt_reassembles_to_the_message(self) -> None:
        """Fragment payloads put together give DestOpt, DestOpt, then the ICMPv6 message."""
        body = marker_body(b"marker", 1, 2)
        first, second = craft("frag-dstopt", A, B, 139, body, 9)
        whole = first[48:] + second[48:]
        assert (whole[0], whole[1224]) == (60, 58) and whole[1232] == 139
        assert whole.endswith(body)

    def test_ah_carries_the_message_after_the_authentication_header(self) -> None:
        """The parser walks AH and finds the ICMPv6 type."""
        (pkt,) = craft("ah", A, B, 128, marker_body(b"m", 1, 1), 3)
        view = parse(pkt, 16)
        assert view.ext_headers == (51,) and view.icmpv6_type == 128 and view.chain_complete

    def test_overlap_second_fragment_overwrites_the_first(self) -> None:
        """An Echo Reply first fragment, and a non-first one at offset 8 that overlaps it."""
        first, second = craft("overlap", A, B, 128, marker_body(b"m", 1, 1), 3)
        v1, v2 = parse(first, 16), parse(second, 16)
        assert v1.icmpv6_type == 129 and v2.frag_offset == 8 < len(first) - 48
        assert second[48] == 128  # the overlapping octets start with the Echo Request type

    def test_plain_is_the_undisguised_message(self) -> None:
        """`plain` is the same bytes icmp6_packet builds."""
        body = marker_body(b"m", 1, 1)
        assert craft("plain", A, B, 128, body, 1) == [icmp6_packet(A, B, 128, 0, body, 255)]
        assert set(CRAFTS) == {"plain", "frag-dstopt", "ah", "overlap"}


class TestJudge:
    @staticmethod
    def _row(pred: Callable[[Attack], bool]) -> Attack:
        return next(a for a in load_suite().attacks if pred(a))

    def test_a_dropped_message_must_not_reach(self) -> None:
        """Policy drop: ok only with reached 0, and only if something was sent."""
        a = self._row(lambda a: a.send == "frag-dstopt")
        assert judge(a, 5, 0, False) == ("0", True)
        assert judge(a, 5, 5, False) == ("0", False)
        assert judge(a, 0, 0, False) == ("0", False)

    def test_an_allowed_message_must_reach(self) -> None:
        """Policy accept: every datagram sent must arrive (the counters work)."""
        a = self._row(lambda a: a.send == "plain")
        assert judge(a, 5, 5, True) == ("all", True)
        assert judge(a, 5, 4, True) == ("all", False)

    def test_a_flood_row_needs_the_ping_success(self) -> None:
        """Flood: ok at >= min_success percent pings, with the flood actually sent."""
        a = self._row(lambda a: a.ping is not None)
        assert judge(a, 1000, 0, None, 99.5)[1] is True
        assert judge(a, 1000, 0, None, 76.0)[1] is False
        assert judge(a, 0, 0, None, 100.0)[1] is False


class TestTable:
    def test_columns_rows_and_summary(self) -> None:
        """The table has the six columns, one line per row, FAIL marks and a count."""
        rows = [Result(attack="x", sent=5, judged=0, reached="5", expected="0 (r)", ok=False,
                       rules={}, detail=""),
                Result(attack="y", sent=5, judged=5, reached="0", expected="0 (r)", ok=True,
                       rules={"r": 5}, detail="")]
        text = format_table(rows).splitlines()
        assert text[0].split() == ["attack", "sent", "judged", "reached", "expected", "ok"]
        assert text[2].startswith("x") and text[2].endswith("FAIL") and text[3].endswith("ok")
        assert text[-1] == "1 of 2 ok, 1 FAIL"
