# SPDX-License-Identifier: MIT
"""Loading the config directory: layering, validation messages, the shipped config."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from shim.config.loader import load_config
from shim.core.errors import ConfigError
from shim.core.lint import lint
from shim.core.model import Action, Backend, Hook, MarkName, Origin, Role, Settings
from shim.core.rules import build_table

REPO = Path(__file__).resolve().parents[2]
BROKEN = Path(__file__).resolve().parents[1] / "data" / "configs"

# file in tests/data/configs -> the message after "<dir>/icmp6-shim.toml: "
EXPECTED = {
    "bad-toml.toml": "invalid TOML: Invalid value (at line 3, column 11)",
    "unknown-section.toml": "unknown section [queues] (did you mean 'queue'?)",
    "unknown-setting.toml": "[queue] unknown key 'nmu' (did you mean 'num'?)",
    "setting-type.toml": "[queue] key 'fail_open': expected true or false, got 'yes'",
    "bad-hook-setting.toml": "[diversion] key 'hooks': 'fowrard' is not one of forward, "
                             "input, output, postrouting, prerouting",
    "bad-mark-name.toml": "rule 'x' ([[rule]] #1): key 'verdict': mark 'bypas' is not "
                          "defined in [marks] (defined: bypass, protect)",
    "mark-outside-mask.toml": "[marks] 'lan': value 0x100 has bits outside mask 0xff",
    "unknown-rule-key.toml": "rule 'x' ([[rule]] #1): key 'typ': unknown key "
                             "(did you mean 'type'?)",
    "bad-type-name.toml": "rule 'typo' ([[rule]] #1): key 'type': unknown ICMPv6 type "
                          "'echo-requst' (did you mean 'echo-request'?)",
    "bad-range.toml": "rule 'hl' ([[rule]] #1): key 'hop_limit': range 255-1 is reversed",
    "priority-range.toml": "rule 'far' ([[rule]] #1): key 'priority': 40000 is not within "
                           "-32768..32767",
    "missing-name.toml": "[[rule]] #2: key 'name': required",
    "missing-verdict.toml": "rule 'noverdict' ([[rule]] #1): key 'verdict': required "
                            "(accept, drop, mark:NAME or mark:VALUE[/MASK])",
    "bad-prefix.toml": "rule 'pfx' ([[rule]] #1): key 'src': '2001:db8::/129': the prefix "
                       "length '129' is not a number within 0..128",
    "bad-code-name.toml": "rule 'code' ([[rule]] #1): key 'code': unknown code for "
                          "destination-unreachable 'port-unreachabel' "
                          "(did you mean 'port-unreachable'?)",
    "rule-not-array.toml": "'rule' must be an array of tables: write [[rule]]",
    "bool-type.toml": "rule 'b' ([[rule]] #1): key 'nd_valid': expected true or false, "
                      "got 'false'",
}


def write(directory: Path, text: str, name: str = "icmp6-shim.toml") -> Path:
    """Write a config file (creating rules.d as needed) and return its path."""
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def error(directory: Path) -> str:
    """The ConfigError message loading the directory gives."""
    with pytest.raises(ConfigError) as info:
        load_config(directory)
    return str(info.value)


class TestBrokenConfigs:
    """Every broken file in tests/data/configs fails with its precise message."""

    def test_every_file_has_an_expectation(self) -> None:
        """The data directory and EXPECTED list the same files."""
        assert sorted(p.name for p in BROKEN.glob("*.toml")) == sorted(EXPECTED)

    @pytest.mark.parametrize("name", sorted(EXPECTED))
    def test_message(self, tmp_path: Path, name: str) -> None:
        """The message names the file, the rule and the key."""
        main = tmp_path / "icmp6-shim.toml"
        shutil.copy(BROKEN / name, main)
        assert error(tmp_path) == f"{main}: {EXPECTED[name]}"


class TestLayering:
    """Main file then rules.d/*.toml in lexical order."""

    def test_order_and_provenance(self, tmp_path: Path) -> None:
        """Rules carry file, file order and index; files lists the read order."""
        main = write(tmp_path, '[[rule]]\nname = "m"\nverdict = "drop"\n')
        b = write(tmp_path, '[[rule]]\nname = "b"\nverdict = "accept"\n', "rules.d/20-b.toml")
        a = write(tmp_path, '[[rule]]\nname = "a0"\nverdict = "accept"\n'
                            '[[rule]]\nname = "a1"\nverdict = "accept"\n', "rules.d/10-a.toml")
        write(tmp_path, "ignored", "rules.d/30-c.toml.disabled")
        config = load_config(tmp_path)
        assert config.files == (str(main), str(a), str(b))
        assert [(r.name, r.file_order, r.index) for r in config.rules] == [
            ("m", 0, 0), ("a0", 1, 0), ("a1", 1, 1), ("b", 2, 0)]
        assert all(r.origin is Origin.USER and r.priority is None for r in config.rules)

    def test_equal_priority_follows_file_order(self, tmp_path: Path) -> None:
        """Ties between files are broken by lexical file order."""
        write(tmp_path, "")
        write(tmp_path, '[[rule]]\nname = "late"\npriority = 3\nverdict = "drop"\n',
              "rules.d/90.toml")
        write(tmp_path, '[[rule]]\nname = "early"\npriority = 3\nverdict = "drop"\n',
              "rules.d/01.toml")
        table = build_table(Settings(), load_config(tmp_path).rules)
        assert [r.name for r in table.rules if not r.hardening][:2] == ["early", "late"]

    def test_rules_d_without_main(self, tmp_path: Path) -> None:
        """A directory without its main file is an error, not the defaults without rules.d."""
        write(tmp_path, '[[rule]]\nname = "x"\nverdict = "drop"\n', "rules.d/x.toml")
        assert error(tmp_path) == f"{tmp_path / 'icmp6-shim.toml'}: cannot read: missing"

    def test_empty_main_gives_defaults(self, tmp_path: Path) -> None:
        """An empty main file is the built-in settings; rules.d adds its rules."""
        write(tmp_path, "")
        write(tmp_path, '[[rule]]\nname = "x"\nverdict = "drop"\n', "rules.d/x.toml")
        config = load_config(tmp_path)
        assert config.settings == Settings() and [r.name for r in config.rules] == ["x"]

    def test_duplicate_across_files(self, tmp_path: Path) -> None:
        """One name in two files is an error naming both."""
        main = write(tmp_path, '[[rule]]\nname = "x"\nverdict = "drop"\n')
        other = write(tmp_path, '[[rule]]\nname = "x"\nverdict = "drop"\n', "rules.d/a.toml")
        assert error(tmp_path) == (f"{other}: rule 'x' ([[rule]] #1): key 'name': duplicate "
                                   f"name, first used in {main} [[rule]] #1")

    def test_dropin_holds_only_rules(self, tmp_path: Path) -> None:
        """Settings in a drop-in are an error."""
        write(tmp_path, "")
        path = write(tmp_path, "[queue]\nnum = 3\n", "rules.d/a.toml")
        assert error(tmp_path) == (f"{path}: unknown key 'queue': a rules.d file holds only "
                                   "[[rule]] tables")

    def test_replacing_a_default(self, tmp_path: Path) -> None:
        """A rule named like a default loads, replaces it, and lint says so."""
        write(tmp_path, '[[rule]]\nname = "echo-request"\ntype = 128\nverdict = "drop"\n')
        table = build_table(Settings(), load_config(tmp_path).rules)
        assert [r.origin for r in table.rules if r.name == "echo-request"] == [Origin.USER]
        assert any("replaces the default" in w for w in lint(table))

    def test_none_and_missing(self, tmp_path: Path) -> None:
        """None gives built-in settings; a missing directory is an error."""
        assert load_config(None).settings == Settings()
        assert error(tmp_path / "nope") == f"{tmp_path / 'nope'}: config directory does not exist"


class TestValues:
    """Settings and rule values are parsed into model values."""

    def test_settings(self, tmp_path: Path) -> None:
        """Every section reaches its Settings field."""
        write(tmp_path, """
[queue]
num = 7
workers = 2
fail_open = false
[diversion]
backend = "nft"
hooks = ["forward"]
[verdicts]
no_match = "mark:lan"
on_error = "drop"
[marks]
lan = { value = 0x10, mask = 0xf0 }
bypass = { value = 0x4 }
[parser]
ext_limit = 8
[log]
format = "json"
rate = 2
""")
        s = load_config(tmp_path).settings
        assert (s.queue_num, s.workers, s.fail_open, s.backend, s.hooks, s.ext_limit,
                s.log_format, s.log_rate) == (7, 2, False, Backend.NFT, (Hook.FORWARD,), 8,
                                              "json", 2.0)
        assert s.mark("lan") == MarkName(name="lan", value=0x10, mask=0xF0)
        assert s.mark("bypass") == MarkName(name="bypass", value=0x4, mask=0xFFFFFFFF)
        assert (s.no_match.mark, s.no_match.mark_name, s.on_error.action) == (
            0x10, "lan", Action.DROP)

    def test_rule_match_fields(self, tmp_path: Path) -> None:
        """Names, ranges, lists, classes, prefixes and flags all parse."""
        write(tmp_path, """
[[rule]]
name = "all-keys"
priority = -7
description = "d"
log = true
verdict = "mark:0x10/0xff"
type = ["destination-unreachable", "130-132", 128]
code = ["port-unreachable", 0]
role = ["any-to-end", "link-local"]
ike = "must-not"
src_class = "link-local"
dst_class = ["multicast", "solicited_node"]
src = "fe80::/10"
dst = "2001:db8::1"
hop_limit = 255
iif = "eth0"
oif = "wg0"
hook = ["input", "forward"]
frag = ["none", "non-first"]
chain_complete = true
malformed = false
nd_valid = true
mtu = "0-1279"
""")
        r = load_config(tmp_path).rules[0]
        m = r.match
        assert (r.priority, r.log, r.verdict.mark, r.verdict.mask) == (-7, True, 0x10, 0xFF)
        assert m.types == frozenset({1, 128, 130, 131, 132}) and m.codes == frozenset({0, 4})
        assert m.roles == Role.ANY_TO_END | Role.LINK_LOCAL
        assert (m.src_classes, m.dst_classes) == (frozenset({"link_local"}),
                                                  frozenset({"multicast", "solicited_node"}))
        assert (m.src, m.dst, m.hop_limit, m.mtu) == ("fe80::/10", "2001:db8::1/128",
                                                      (255, 255), (0, 1279))
        assert m.hooks == frozenset({Hook.INPUT, Hook.FORWARD})
        assert m.frag == frozenset({"none", "non_first"})
        assert (m.iif, m.oif, m.chain_complete, m.malformed, m.nd_valid) == (
            "eth0", "wg0", True, False, True)

    @pytest.mark.parametrize(("line", "message"), [
        ('verdict = "reject"', "key 'verdict': 'reject' is not accept, drop, mark:NAME or "
                               "mark:VALUE[/MASK]"),
        ('verdict = "mark:0x100/0xff"', "key 'verdict': mark 0x100 has bits outside mask 0xff"),
        ('verdict = "drop"\ncode = "no-route"', "key 'code': code name 'no-route' needs a "
                                                "'type' to be looked up in"),
        ('verdict = "drop"\nmtu = "1-99999999999"', "key 'mtu': 1-99999999999 is not within "
                                                    "0-4294967295"),
        ('verdict = "drop"\nrole = "local"', "key 'role': 'local' is not one of any-to-end, "
                                             "end-to-end, link-local, unclassified"),
        ('verdict = "drop"\nhook = []', "key 'hook': expected at least one value, got an "
                                        "empty list"),
        ('verdict = "drop"\npriority = true', "key 'priority': expected an integer "
                                              "-32768..32767, got True"),
        ('verdict = "drop"\ntype = 256', "key 'type': 256-256 is not within 0-255"),
    ])
    def test_rule_errors(self, tmp_path: Path, line: str, message: str) -> None:
        """Each wrong value names rule and key."""
        path = write(tmp_path, f'[[rule]]\nname = "r"\n{line}\n')
        assert error(tmp_path) == f"{path}: rule 'r' ([[rule]] #1): {message}"

    def test_reserved_rule_name(self, tmp_path: Path) -> None:
        """no-match is the settings decision's name, not a rule's."""
        path = write(tmp_path, '[[rule]]\nname = "no-match"\nverdict = "drop"\n')
        assert error(tmp_path) == (f"{path}: rule 'no-match' ([[rule]] #1): key 'name': "
                                   "'no-match' is reserved for the [verdicts] decisions")

    def test_marks_must_differ(self, tmp_path: Path) -> None:
        """Two names for one mark value are an error."""
        path = write(tmp_path, "[marks]\nprotect = { value = 0x1, mask = 0xff }\n")
        assert re.fullmatch(re.escape(f"{path}: [marks] ") + r".*both set 0x1/0xff",
                            error(tmp_path))


class TestShipped:
    """The config/ directory in the repository loads, and so does its example."""

    def test_shipped_config(self) -> None:
        """config/ loads to the built-in settings and no rules."""
        config = load_config(REPO / "config")
        assert config.settings == Settings() and config.rules == ()
        assert lint(build_table(config.settings, config.rules)) == []

    def test_example_dropin(self, tmp_path: Path) -> None:
        """The disabled example, enabled, loads and builds."""
        shutil.copytree(REPO / "config", tmp_path / "c")
        example = tmp_path / "c" / "rules.d" / "00-example.toml.disabled"
        example.rename(example.with_suffix(""))
        config = load_config(tmp_path / "c")
        table = build_table(config.settings, config.rules)
        assert [r.name for r in table.rules if not r.hardening][:2] == ["site-ping",
                                                                     "no-outside-ping"]
        assert table.rules[-1].name == "last-resort"
        assert any("'nd-redirect'" in w and "replaces" in w for w in lint(table))


class TestOverload:
    """The [overload] budgets: per-interface, per-class rates ahead of the queue."""

    def test_defaults_give_every_class_a_budget(self) -> None:
        """Out of the box each class has a budget and what exceeds it is dropped."""
        from shim.adapters.diversion import budget_spec

        spec = budget_spec(Settings())
        assert spec is not None and spec.verdict == "drop"
        assert [name for name, _t, rate in spec.classes() if rate > 0] == \
            ["nd", "error", "other", "headers"]

    def test_keys(self, tmp_path: Path) -> None:
        """Every key reaches its field; a zero rate leaves its class without a budget."""
        from shim.adapters.diversion import budget_spec

        write(tmp_path, '[overload]\nnd_rate = 50\nerror_rate = 0\nother_rate = 70\n'
                        'headers_rate = 90\nover_budget = "accept"\ninterfaces = ["eth1", "eth0"]\n')
        s = load_config(tmp_path).settings
        assert (s.budget_nd_rate, s.budget_error_rate, s.budget_other_rate, s.budget_headers_rate,
                s.budget_verdict, s.budget_interfaces) == (50, 0, 70, 90, "accept", ("eth0", "eth1"))
        spec = budget_spec(s)
        assert spec is not None and dict(spec.rates) == {"nd": 50, "other": 70, "headers": 90}

    def test_off(self, tmp_path: Path) -> None:
        """budget = false lays no budget rule."""
        from shim.adapters.diversion import budget_spec

        write(tmp_path, "[overload]\nbudget = false\n")
        assert budget_spec(load_config(tmp_path).settings) is None

    @pytest.mark.parametrize(("line", "message"), [
        ("nd_rate = -1", "key 'nd_rate'"),
        ('over_budget = "queue"', "key 'over_budget'"),
        ('interfaces = ["a/b"]', "key 'interfaces'"),
        ("burst = 5", "unknown key 'burst'"),
    ])
    def test_bad_values(self, tmp_path: Path, line: str, message: str) -> None:
        """A bad [overload] value names its key."""
        write(tmp_path, f"[overload]\n{line}\n")
        assert f"[overload] {message}" in error(tmp_path)
