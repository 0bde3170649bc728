# SPDX-License-Identifier: MIT
"""`check`, `diff` and `search` over the exact analysis, and their agreement with the C walk."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import shim.cli.analysis as cli_analysis
from shim.cli.main import main
from shim.core.analysis import atoms_for, partition, space_for, verdict_key
from shim.core.examples import Example, packet
from shim.core.model import Hook
from shim.core.packetspace import D, match_box
from shim.core.rules import RuleTable
from shim.core.space import region_contains
from tests.bindings.test_matchers_agree import tables

REPO = Path(__file__).resolve().parents[2]


def _config(tmp_path: Path, name: str, rules: str) -> str:
    d = tmp_path / name
    d.mkdir()
    (d / "icmp6-shim.toml").write_text(rules)
    return str(d)


def _check(capsys: pytest.CaptureFixture[str], cfg: str) -> list[str]:
    assert main(["check", "--config", cfg]) == 0
    return [line for line in capsys.readouterr().out.splitlines() if line.startswith("warning")]


class TestCheck:
    """check names every rule that can never match, and why."""

    def test_shipped_defaults_are_clean(self, capsys: pytest.CaptureFixture[str]) -> None:
        """The shipped config/ gives no warning at all."""
        assert _check(capsys, str(REPO / "config")) == []

    def test_fallback_covered_by_defaults(self, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
        """An echo-request fallback at 5000 is covered by the defaults, which are named."""
        cfg = _config(tmp_path, "c", '[[rule]]\nname = "fb"\npriority = 5000\n'
                                     'type = "echo-request"\nverdict = "drop"\n')
        [w] = _check(capsys, cfg)
        assert "'fb'" in w and "can never match" in w
        assert "'echo-request'" in w and "'transit-echo-request'" in w

    def test_mtu_on_echo_request(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """mtu on echo-request contradicts itself: the keys type and mtu are named."""
        cfg = _config(tmp_path, "c", '[[rule]]\nname = "m"\ntype = "echo-request"\n'
                                     'mtu = "1280-1500"\nverdict = "drop"\n')
        [w] = _check(capsys, cfg)
        assert "'m'" in w and "'type' and 'mtu'" in w and "Packet Too Big" in w

    def test_iif_at_output(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """iif with hook output contradicts itself; no MUST NOT warning for a dead rule."""
        cfg = _config(tmp_path, "c", '[[rule]]\nname = "o"\niif = "eth0"\nhook = "output"\n'
                                     'verdict = "drop"\n')
        [w] = _check(capsys, cfg)
        assert "'hook' and 'iif'" in w and "no input interface" in w

    def test_covered_by_a_union(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """Two halves of a /32 together cover a rule on the /32; no single rule does."""
        rules = "".join(f'[[rule]]\nname = "{n}"\ntype = "echo-request"\nsrc = "{p}"\n'
                        f'verdict = "drop"\n' for n, p in (("lo", "2001:db8::/33"),
                                                          ("hi", "2001:db8:8000::/33"),
                                                          ("all", "2001:db8::/32")))
        warnings = _check(capsys, _config(tmp_path, "c", rules))
        assert [w for w in warnings if "'all'" in w and "'lo', 'hi' come first" in w]

    def test_budget_is_said(self, tmp_path: Path) -> None:
        """A spent budget is reported, never silent."""
        table = cli_analysis._load_table(_config(tmp_path, "c", ""))
        assert any("stopped at rule" in w for w in cli_analysis.check_warnings(table, budget=10))


class TestHardening:
    """A user rule goes above hardening only when it asks, and check says what it lets by."""

    def test_default_priority_stays_below_hardening(self, tmp_path: Path) -> None:
        """A PTB bypass at priority 0 no longer takes a PTB with MTU 500."""
        table = cli_analysis._load_table(_config(
            tmp_path, "c", '[[rule]]\nname = "t"\ntype = "packet-too-big"\nverdict = "accept"\n'))
        names = [r.name for r in table.rules]
        assert names.index("hardening-ptb-below-minimum-mtu") < names.index("t")

    def test_override_is_named_with_an_example(self, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
        """override_hardening puts the rule first and check names the leak, with a packet
        that `explain` decides by that rule."""
        cfg = _config(tmp_path, "c", '[[rule]]\nname = "t"\ntype = "packet-too-big"\n'
                                     'override_hardening = true\nverdict = "accept"\n')
        leaks = [w for w in _check(capsys, cfg) if "drops (" in w and "minimum-mtu" in w]
        assert len(leaks) == 1 and "mtu=0-1279" in leaks[0]
        hex_ = leaks[0].rsplit("e.g. ", 1)[1].split()[0]
        assert main(["explain", "--config", cfg, "--hex", hex_, "--json"]) == 0
        out = json.loads(capsys.readouterr().out)
        assert out["decision"]["rule"] == "t" and out["mtu"] < 1280


class TestRefusal:
    """An example the C walk decides otherwise makes the command refuse to answer."""

    def test_wrong_example_is_refused(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:
        """diff exits 2 when the example's bytes are not what the analysis predicts."""
        a = _config(tmp_path, "a", "")
        b = _config(tmp_path, "b", '[[rule]]\nname = "x"\ntype = "echo-request"\nverdict = "drop"\n')
        bogus = Example(data=b"\x60" + bytes(19), hook=Hook.INPUT, iif=None, oif=None,
                        indev=1, outdev=0)
        monkeypatch.setattr(cli_analysis, "example", lambda box, space: bogus)
        assert main(["diff", a, b]) == 2
        assert "no answer given" in capsys.readouterr().err


class TestDiff:
    """diff lists exactly the regions that change."""

    def test_same_is_zero(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """Two configs with the same effect: exit 0."""
        assert main(["diff", str(REPO / "config"), _config(tmp_path, "c", "")]) == 0

    def test_one_override(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """One override: one group, its region, and an example explain confirms."""
        b = _config(tmp_path, "b", '[[rule]]\nname = "x"\ntype = "echo-request"\n'
                                   'hook = "input"\nsrc = "2001:db8::/32"\nverdict = "drop"\n')
        assert main(["diff", str(REPO / "config"), b, "--json"]) == 1
        out = json.loads(capsys.readouterr().out)
        [g] = out["groups"]
        assert (g["a"]["rule"], g["b"]["rule"]) == ("echo-request", "x")
        assert g["regions"] == ["hook=input type=echo-request malformed=false src=2001:db8::/32"]
        ex = g["example"]
        assert main(["explain", "--config", b, "--hex", ex["hex"], "--hook", ex["hook"],
                     "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["decision"]["rule"] == "x"

    def test_search(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """search finds who drops echo requests: nobody in the defaults but hardening."""
        assert main(["search", "--config", str(REPO / "config"), "--verdict", "drop",
                     "type=echo-request", "--json"]) == 0
        rules = {g["decision"]["rule"] for g in json.loads(capsys.readouterr().out)["groups"]}
        assert rules == {"hardening-malformed"}


def _verdicts(table: RuleTable) -> list[tuple[str, int | None, int | None]]:
    return [verdict_key(d.verdict) for d in table.decisions]


class TestDiffAgreesWithC:
    """Sampled packets: in a reported region exactly when the C walks' verdicts differ."""

    @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(a=tables(), b=tables(), data=st.data())
    def test_regions_are_exact(self, a: RuleTable, b: RuleTable, data: st.DataObject) -> None:
        """For points of the universe, the diff regions hold exactly the changed packets."""
        space = space_for([a, b], hooks=frozenset(Hook))
        universe = space.universe()
        boxes = [match_box(r.match, space, t.type_role, t.type_ike)
                 for t in (a, b) for r in t.rules]
        atoms = atoms_for([x[D["type"]] for x in boxes if x is not None], universe)
        pa, pb = partition(a, space, atoms=atoms), partition(b, space, atoms=atoms)
        groups = cli_analysis.diff_groups(pa, pb)
        na, nb = cli_analysis._native(a, space), cli_analysis._native(b, space)
        va, vb = _verdicts(a), _verdicts(b)
        for _ in range(20):
            box = data.draw(st.sampled_from(universe))
            point = tuple(data.draw(st.integers(*data.draw(st.sampled_from(d)))) for d in box)
            raw = packet(point)
            i = na.classify(raw, point[0], point[1], point[2])
            j = nb.classify(raw, point[0], point[1], point[2])
            inside = [g for g in groups if region_contains(g.boxes, point)]
            assert (va[i] != vb[j]) == bool(inside)
            assert all((g.a, g.b) == (i, j) for g in inside)


class TestPartitionAgreesWithC:
    """Sampled packets: the decision whose region holds a packet is the one C gives it."""

    @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(table=tables(), data=st.data())
    def test_each_point_in_its_winners_region(self, table: RuleTable, data: st.DataObject) -> None:
        """Exactly one region holds each sampled point, and it is the C walk's decision."""
        space = space_for([table], hooks=frozenset(Hook))
        part = partition(table, space)
        native = cli_analysis._native(table, space)
        universe = space.universe()
        for _ in range(20):
            box = data.draw(st.sampled_from(universe))
            point = tuple(data.draw(st.integers(*data.draw(st.sampled_from(d)))) for d in box)
            got = native.classify(packet(point), point[0], point[1], point[2])
            holders = [i for i in range(len(part.reach)) if region_contains(part.region(i), point)]
            assert holders == [got]
