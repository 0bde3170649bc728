# SPDX-License-Identifier: MIT
"""strongSwan in the testbed without a kernel: swanctl output, scenario schema, the ESP gate."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from shim.cli.main import main
from shim.core.errors import ConfigError
from shim.lab import testbed
from shim.lab.strongswan import make_psk, parse_sas
from shim.lab.testbed import load_scenario

# `swanctl --list-sas` of strongSwan 5.9.8 (Debian 12), one IKE_SA with its CHILD_SA.
LIST_SAS = """\
host-host: #1, ESTABLISHED, IKEv2, 7a290de00e1b5a67_i* 398e196cc9404119_r
  local  'a' @ 2001:db8:1::a[4500]
  remote 'b' @ 2001:db8:1::b[4500]
  AES_GCM_16-128/PRF_HMAC_SHA2_256/CURVE_25519
  established 6s ago, rekeying in 13290s
  all: #1, reqid 1, INSTALLED, TRANSPORT, ESP:AES_GCM_16-128
    installed 6s ago, rekeying in 3322s, expires in 3954s
    in  c4ca97b7,      0 bytes,     0 packets
    out cc34acf6,      0 bytes,     0 packets
    local  2001:db8:1::a/128
    remote 2001:db8:1::b/128
ndp: #2, CONNECTING, IKEv2, 1111111111111111_i 0000000000000000_r
"""


class TestParseSas:
    def test_ike_and_child_states(self) -> None:
        sas = parse_sas(LIST_SAS)
        assert [(s.name, s.state) for s in sas] == [("host-host", "ESTABLISHED"), ("ndp", "CONNECTING")]
        assert sas[0].children == (("all", "INSTALLED", "TRANSPORT ESP:AES_GCM_16-128"),)
        assert sas[1].children == ()

    def test_nothing(self) -> None:
        assert parse_sas("") == ()


def test_psk_is_fresh_and_in_swanctl_notation() -> None:
    a, b = make_psk(), make_psk()
    assert a != b and a.startswith("0s") and len(a) == 2 + 44


class TestSchema:
    def test_ike_deadlock_declares_charons_and_needs_esp(self) -> None:
        sc = load_scenario("ike-deadlock")
        assert sc.swanctl is not None and sc.swanctl.nodes == ("a", "b")
        assert sc.needs_esp
        assert [r.swanctl for r in sc.runs] == [(), (), ("nd-pass",), ("nd-pass",)]
        # No secret is in the file: the PSK is made per run.
        assert all("secret" not in text for _, text in sc.swanctl.conf)

    def test_existing_policy_only_scenarios_need_no_esp(self) -> None:
        assert not load_scenario("deadlock").needs_esp

    def test_unknown_fragment_is_named(self, tmp_path: Path) -> None:
        src = Path(testbed.__file__).parent / "data/scenarios/ike-deadlock.toml"
        bad = tmp_path / "bad.toml"
        bad.write_text(src.read_text().replace('swanctl = ["nd-pass"]', 'swanctl = ["nd-typo"]', 1))
        with pytest.raises(ConfigError, match=r"\[runs.pass\]: swanctl names nd-typo"):
            load_scenario(str(bad))

    def test_bad_auth(self, tmp_path: Path) -> None:
        src = Path(testbed.__file__).parent / "data/scenarios/ike-deadlock.toml"
        bad = tmp_path / "bad.toml"
        bad.write_text(src.read_text().replace('auth = "psk"', 'auth = "x509"', 1))
        with pytest.raises(ConfigError, match="auth must be psk or pubkey"):
            load_scenario(str(bad))


@pytest.mark.skipif(os.geteuid() != 0, reason="the testbed checks for root first")
def test_run_on_a_kernel_without_esp_says_so_in_one_line(monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """The gate is asked before anything is built: one line, non-zero exit."""
    monkeypatch.setattr(testbed, "esp_unavailable",
                        lambda: "this kernel has no ESP transform (x): run it in the stock-kernel lane")
    rc = main(["testbed", "run", "ike-deadlock"])
    err = capsys.readouterr().err
    assert rc != 0 and err.count("\n") == 1
    assert "ike-deadlock needs ESP SAs" in err and "stock-kernel lane" in err
