# SPDX-License-Identifier: MIT
"""`export xfrm` derivation (pure), its rendering, scenario files and `replay --plot`."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from shim.cli.main import main
from shim.core.errors import ConfigError, ShimError
from shim.core.model import Action, Hook, Match, Origin, Rule, Settings, Verdict
from shim.core.rules import RuleTable, build_table
from shim.lab.testbed import list_scenarios, load_scenario
from shim.lab.steps import router_advert
from shim.core.xfrm import XfrmPolicy, derive_policies, render

BYPASS = Verdict(action=Action.MARK, mark=0x1, mask=0xFF, mark_name="bypass")
PROTECT = Verdict(action=Action.MARK, mark=0x2, mask=0xFF, mark_name="protect")
DROP = Verdict(action=Action.DROP)


def _user(name: str, verdict: Verdict, priority: int = 0, **match: object) -> Rule:
    return Rule(name=name, priority=priority, origin=Origin.USER, verdict=verdict,
                match=Match(**match))  # type: ignore[arg-type]


def _table(*rules: Rule, settings: Settings = Settings()) -> RuleTable:
    return build_table(settings, rules)


def _out(policies: tuple[XfrmPolicy, ...]) -> dict[int | None, list[XfrmPolicy]]:
    found: dict[int | None, list[XfrmPolicy]] = {}
    for p in policies:
        if p.direction == "out":
            found.setdefault(p.icmp_type, []).append(p)
    return found


class TestDerivation:
    def test_defaults_allow_nd_out_and_mark_in(self) -> None:
        """The defaults: the bypass mark allowed inbound, ND allowed out, no fwd mark allow."""
        policies, _notes = derive_policies(_table())
        marked = [p for p in policies if p.mark is not None]
        assert [(p.direction, p.mark, p.mask) for p in marked] == [("in", 1, 0xFF)]
        out = _out(policies)
        for t in (133, 134, 135, 136, 137):
            assert [(p.src, p.dst, p.code) for p in out[t]] == [("::/0", "::/0", None)]
        assert not {1, 2, 3, 4, 128, 129, 138} & set(out)  # protect at output: IPsec decides
        assert {p.src for p in out[143]} == {"fe80::/10", "::/128"}  # MLDv2 from link-local or ::
        assert [p.src for p in out[130]] == ["fe80::/10"]

    def test_pure_and_stable(self) -> None:
        a = derive_policies(_table(), priority=7)
        b = derive_policies(_table(), priority=7)
        assert a == b and all(p.priority == 7 for p in a[0])
        text = render(*a, source="x", mark_text="0x1/0xff")
        assert text == render(*b, source="x", mark_text="0x1/0xff")
        assert "ip xfrm policy add dir out src ::/0 dst ::/0 proto ipv6-icmp type 135 priority 7 " \
               "action allow" in text
        assert all(line.startswith(("#", "ip xfrm policy add ")) for line in text.splitlines())

    def test_user_bypass_of_echo_is_exported(self) -> None:
        out = _out(derive_policies(_table(
            _user("echo-bypass", BYPASS, 100, types=frozenset({128, 129}))))[0])
        assert 128 in out and 129 in out and "echo-bypass" in out[128][0].why

    def test_user_drop_of_redirect_removes_its_allow(self) -> None:
        out = _out(derive_policies(_table(_user("no-redirect", DROP, types=frozenset({137}))))[0])
        assert 137 not in out and 135 in out

    def test_bypass_limited_to_input_is_not_exported_out(self) -> None:
        rule = _user("ptb-in", BYPASS, types=frozenset({2}), hooks=frozenset({Hook.INPUT}))
        assert 2 not in _out(derive_policies(_table(rule))[0])

    def test_prefix_selectors_carry_over(self) -> None:
        rule = _user("echo-to-mon", BYPASS, types=frozenset({128}), dst="2001:db8:9::/64")
        out = _out(derive_policies(_table(rule))[0])
        assert [(p.src, p.dst) for p in out[128]] == [("::/0", "2001:db8:9::/64")]

    def test_forwarded_packets_kept_under_ipsec_block_the_out_allow(self) -> None:
        """Out policies see forwarded packets too: a forward-hook protect rule forbids the allow."""
        guard = _user("fwd-protect", PROTECT, 0, types=frozenset({128}), hooks=frozenset({Hook.FORWARD}))
        later = _user("echo-bypass", BYPASS, 1, types=frozenset({128}))
        policies, notes = derive_policies(_table(guard, later))
        assert 128 not in _out(policies) and any("fwd-protect" in n for n in notes)

    def test_output_only_bypass_is_not_exported_over_transit_protect(self) -> None:
        """A bypass for locally sent echoes only: the default transit rule protects forwarded ones."""
        rule = _user("out-bypass", BYPASS, 0, types=frozenset({128}), hooks=frozenset({Hook.OUTPUT}))
        policies, notes = derive_policies(_table(rule))
        assert 128 not in _out(policies) and any("transit-echo-request" in n for n in notes)

    def test_bypass_for_every_hook_is_exported(self) -> None:
        """The same bypass on every hook covers forwarded packets too: the allow is safe."""
        policies, _ = derive_policies(_table(_user("echo-bypass", BYPASS, 0, types=frozenset({128}))))
        assert [(p.src, p.dst) for p in _out(policies)[128]] == [("::/0", "::/0")]

    def test_inexact_bypass_before_protect_is_not_exported(self) -> None:
        """A hop-limit condition is no xfrm selector: exporting it would leak the protected rest."""
        rule = _user("echo-hop", BYPASS, types=frozenset({128}), hop_limit=(255, 255))
        policies, notes = derive_policies(_table(rule))
        assert 128 not in _out(policies)
        assert any("echo-hop" in n for n in notes)

    def test_conditional_protect_taints_later_bypass(self) -> None:
        guard = _user("keep-some", PROTECT, 0, types=frozenset({128}), hop_limit=(64, 64))
        later = _user("echo-all", BYPASS, 1, types=frozenset({128}))
        policies, notes = derive_policies(_table(guard, later))
        assert 128 not in _out(policies) and any("keep-some" in n for n in notes)

    def test_mark_value_follows_settings(self) -> None:
        cfg_marks = Settings().marks
        settings = Settings(marks=tuple(m if m.name != "bypass" else type(m)(name="bypass",
                                        value=0x100, mask=0xF00) for m in cfg_marks))
        policies, _ = derive_policies(_table(settings=settings))
        assert {(p.mark, p.mask) for p in policies if p.mark is not None} == {(0x100, 0xF00)}
        assert 135 in _out(policies)

    def test_unknown_mark_is_a_clean_error(self) -> None:
        with pytest.raises(ShimError, match="no mark 'nope'"):
            derive_policies(_table(), mark_name="nope")


class TestGatewayRecipe:
    """dir fwd: the kernel checks it before the FORWARD hook (ip6_forward)."""

    @staticmethod
    def _fwd(hooks: tuple[Hook, ...], *rules: Rule) -> tuple[list[XfrmPolicy], tuple[str, ...]]:
        policies, notes = derive_policies(_table(*rules, settings=Settings(hooks=hooks)))
        return [p for p in policies if p.direction == "fwd"], notes

    def test_recipe_exports_no_fwd_allow_and_says_why(self) -> None:
        """input, forward, output: no shim mark reaches the fwd check, so no fwd allow; a note says so."""
        fwd, notes = self._fwd((Hook.INPUT, Hook.FORWARD, Hook.OUTPUT))
        assert fwd == [] and any("no dir fwd allow" in n for n in notes)

    def test_prerouting_and_forward_is_judged_twice(self) -> None:
        """prerouting with forward: the fwd allow (prerouting marks reach it) and a double-judgement note."""
        fwd, notes = self._fwd((Hook.PREROUTING, Hook.INPUT, Hook.FORWARD, Hook.OUTPUT))
        assert [(p.mark, p.mask) for p in fwd] == [(1, 0xFF)]
        assert any("judged twice" in n for n in notes)

    def test_prerouting_alone_judges_transit_with_host_rules(self) -> None:
        """prerouting without forward: the fwd allow, and a note that transit rules never apply."""
        fwd, notes = self._fwd((Hook.PREROUTING, Hook.OUTPUT))
        assert len(fwd) == 1 and any("transit rules (hook forward) never apply" in n for n in notes)

    def test_transit_bypass_rule_is_named(self) -> None:
        """A user bypass at forward cannot exempt a forwarded packet: the note names the rule."""
        rule = _user("fwd-echo-bypass", BYPASS, 0, types=frozenset({128}),
                     hooks=frozenset({Hook.FORWARD}))
        _fwd, notes = self._fwd((Hook.INPUT, Hook.FORWARD, Hook.OUTPUT), rule)
        assert any("fwd-echo-bypass gives bypass at forward: too late" in n for n in notes)


class TestExportCli:
    def test_prints_policies(self, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
        (tmp_path / "icmp6-shim.toml").write_text(
            '[[rule]]\nname = "echo-bypass"\ntype = "echo-request"\nverdict = "mark:bypass"\n')
        assert main(["export", "xfrm", "--config", str(tmp_path), "--priority", "3"]) == 0
        text = capsys.readouterr().out
        assert "type 128 priority 3 action allow" in text and "mark 0x1 mask 0xff" in text

    def test_bad_config_dir_is_one_line(self, capsys: pytest.CaptureFixture[str]) -> None:
        assert main(["export", "xfrm", "--config", "/nonexistent-dir"]) == 2
        assert capsys.readouterr().err.count("\n") == 1


class TestScenarioFiles:
    def test_every_scenario_loads(self) -> None:
        names = list_scenarios()
        assert {"deadlock", "pmtu", "override", "ra-guard"} <= set(names)
        for name in names:
            sc = load_scenario(name)
            assert sc.runs and sc.steps

    def test_schema_errors_name_the_key(self, tmp_path: Path) -> None:
        bad = tmp_path / "bad.toml"
        bad.write_text('topology = "two-hosts"\n[runs.x]\nshim = false\n[[step]]\ndo = "ping"\n'
                       'from = "a"\n')
        with pytest.raises(ConfigError, match="missing.*addr"):
            load_scenario(str(bad))
        bad.write_text('topology = "two-hosts"\n[runs.x]\nshim = false\n[[step]]\ndo = "ping"\n'
                       'from = "zz"\naddr = "2001:db8:1::b"\n')
        with pytest.raises(ConfigError, match="zz"):
            load_scenario(str(bad))
        with pytest.raises(ConfigError, match="unknown scenario"):
            load_scenario("no-such-scenario")

    def test_fragmented_ra_hides_the_icmp_header(self) -> None:
        first, second = router_advert("fe80::2", "2001:db8:bad::/64", "fragments")
        assert first[6] == 44 and second[6] == 44
        frag_off = struct.unpack("!H", second[42:44])[0] & 0xFFF8
        assert frag_off == 512 and len(first) - 48 == 512  # ICMPv6 header beyond offset 512


class TestReplayPlot:
    def test_plot_writes_png(self, tmp_path: Path) -> None:
        import matplotlib  # noqa: F401 - the test extra installs it; missing is a failure
        from shim.lab.packets import icmp6_packet

        pcap = tmp_path / "t.pcap"
        pkts = [icmp6_packet("2001:db8::1", "2001:db8::2", t, 0, bytes(8)) for t in (128, 129, 135)]
        data = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 101)
        for p in pkts:
            data += struct.pack("<IIII", 0, 0, len(p), len(p)) + p
        pcap.write_bytes(data)
        cfg = tmp_path / "cfg"
        cfg.mkdir()
        (cfg / "icmp6-shim.toml").write_text(
            '[[rule]]\nname = "no-echo"\ntype = "echo-request"\nverdict = "drop"\n')
        out = tmp_path / "v.png"
        assert main(["replay", str(pcap), "--config", str(cfg), "--plot", str(out)]) == 0
        assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    def test_plot_without_matplotlib_is_one_clean_line(
        self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    ) -> None:
        import sys

        monkeypatch.setitem(sys.modules, "matplotlib", None)  # import fails
        assert main(["replay", str(tmp_path / "x.pcap"), "--plot", str(tmp_path / "x.png")]) != 0
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "matplotlib" in err
