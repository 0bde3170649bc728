# SPDX-License-Identifier: MIT
"""Listings reduced to sections, and the one line that says what changed."""

from __future__ import annotations

from shim.adapters.drift import describe, ipt_sections, nft_sections

NFT = """table inet icmp6_shim_q0 { # progname icmp6-shim
	flags owner

	set budget_nd_in {
		type iface_index
		size 4096
		flags dynamic,timeout
		timeout 1m
	}

	chain input {
		type filter hook input priority -150; policy accept;
		meta nfproto ipv6 exthdr frag exists counter queue num 0 bypass
		meta nfproto ipv6 meta l4proto != ipv6-icmp return
	}
}
"""

SAVE = """*mangle
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:ICMP6_SHIM_Q0 - [0:0]
:ICMP6_SHIM_Q0_IN - [0:0]
:ICMP6_SHIM_Q01 - [0:0]
-A INPUT -j ICMP6_SHIM_Q0_IN
-A INPUT -j ICMP6_SHIM_Q0
-A INPUT -p udp -j ACCEPT
-A INPUT -j ICMP6_SHIM_Q01
-A ICMP6_SHIM_Q0 -m frag -j NFQUEUE --queue-num 0 --queue-bypass
-A ICMP6_SHIM_Q0 ! -p ipv6-icmp -j RETURN
-A ICMP6_SHIM_Q01 -j RETURN
COMMIT
"""


class TestNftSections:
    def test_chains_and_sets_are_sections(self) -> None:
        """Each chain and set is a section of its lines; the table's own lines are "table"."""
        sec = nft_sections(NFT)
        assert set(sec) == {"table", "set budget_nd_in", "chain input"}
        assert sec["table"] == ("flags owner",)
        assert len(sec["chain input"]) == 3 and sec["chain input"][0].startswith("type filter")

    def test_a_flushed_chain_is_described(self) -> None:
        """Rules gone from a chain: named, with how many of how many are left."""
        base = nft_sections(NFT)
        cut = nft_sections(NFT.replace("\t\tmeta nfproto ipv6 meta l4proto != ipv6-icmp return\n", ""))
        assert describe(base, cut, "t") == "chain input lost rules (2 of 3)"
        assert describe(base, base, "t") is None
        assert describe(base, None, "table inet icmp6_shim_q0") == "table inet icmp6_shim_q0 is missing"


class TestIptSections:
    def test_only_our_lines_count(self) -> None:
        """Our chains whole, our jumps in built-in chains; foreign rules and another
        instance's chain (ICMP6_SHIM_Q01 is not ICMP6_SHIM_Q0's) are not ours."""
        sec = ipt_sections(SAVE, "ICMP6_SHIM_Q0")
        assert sec == {
            "ICMP6_SHIM_Q0": ("-m frag -j NFQUEUE --queue-num 0 --queue-bypass",
                              "! -p ipv6-icmp -j RETURN"),
            "ICMP6_SHIM_Q0_IN": (),
            "jumps from INPUT": ("-j ICMP6_SHIM_Q0_IN", "-j ICMP6_SHIM_Q0"),
        }

    def test_a_mangle_flush_is_described(self) -> None:
        """`ip6tables -t mangle -F` keeps the chains and empties them: both are said."""
        base = ipt_sections(SAVE, "ICMP6_SHIM_Q0")
        flushed = ipt_sections("\n".join(ln for ln in SAVE.splitlines()
                                         if not ln.startswith("-A")), "ICMP6_SHIM_Q0")
        assert describe(base, flushed, "x") == ("missing jumps from INPUT; "
                                                "ICMP6_SHIM_Q0 emptied (0 of 2 rules)")

    def test_a_rule_of_others_ahead_of_our_jumps_is_a_change(self) -> None:
        """`ip6tables -t mangle -I INPUT 1 ... -j ACCEPT` ends the walk before our jump: a
        bypass the guard must find. Another instance's jump ahead of ours is not one."""
        base = ipt_sections(SAVE, "ICMP6_SHIM_Q0")
        ahead = SAVE.replace("-A INPUT -j ICMP6_SHIM_Q0_IN",
                             "-A INPUT -p ipv6-icmp -j ACCEPT\n-A INPUT -j ICMP6_SHIM_Q0_IN")
        assert describe(base, ipt_sections(ahead, "ICMP6_SHIM_Q0"), "x") == \
            "added rules ahead of our jumps in INPUT"
        other = SAVE.replace("-A INPUT -j ICMP6_SHIM_Q0_IN",
                             "-A INPUT -j ICMP6_SHIM_Q1\n-A INPUT -j ICMP6_SHIM_Q0_IN")
        assert describe(base, ipt_sections(other, "ICMP6_SHIM_Q0"), "x") is None

    def test_a_foreign_rule_is_no_change(self) -> None:
        """Someone else's rule in a built-in chain is not an alteration of ours."""
        base = ipt_sections(SAVE, "ICMP6_SHIM_Q0")
        more = ipt_sections(SAVE.replace("COMMIT", "-A INPUT -p tcp -j ACCEPT\nCOMMIT"), "ICMP6_SHIM_Q0")
        assert describe(base, more, "x") is None
