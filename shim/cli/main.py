# SPDX-License-Identifier: MIT
"""Command line: the composition root. Builds the parser from the command groups, maps errors to exits.

Every failure the shim expects is a ShimError and ends as one line on stderr
and a non-zero exit; an unexpected exception is reported on one line too
(set ICMP6_SHIM_DEBUG=1 for the traceback).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from shim import __version__
from shim.cli import analysis, daemon, policy, testbed
from shim.cli.common import AddCommand
from shim.core.errors import ShimError

__all__ = ["COMMAND_GROUPS", "build_parser", "main"]

# One module per command group, each registering its subcommands; --help lists them in this order.
COMMAND_GROUPS: tuple[Callable[[AddCommand], None], ...] = (
    daemon.add_commands, policy.add_commands, analysis.add_commands, testbed.add_commands)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="icmp6-shim",
        description="ICMPv6 policy enforcement behind NFQUEUE, with the defaults of "
                    "draft-arkko-icmpv6-ike-effects and user rules above them.")
    p.add_argument("--version", action="version", version=f"icmp6-shim {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    def add(name: str, func: object, help_: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help_, description=help_)
        sp.set_defaults(func=func)
        return sp

    for register in COMMAND_GROUPS:
        register(add)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `icmp6-shim` console script."""
    args = build_parser().parse_args(argv)
    try:
        rc: int = args.func(args)
        return rc
    except ShimError as exc:
        for problem in getattr(exc, "problems", None) or (str(exc),):
            print(f"icmp6-shim: error: {problem}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        if args.func is not daemon.cmd_run:
            return 0  # `icmp6-shim rules | head`: the reader is done, so are we
        # The daemon never ends quietly: a broken pipe there is a failure (systemd restarts it).
        print("icmp6-shim: internal error: BrokenPipeError", file=sys.stderr)
        return 70
    except Exception as exc:  # noqa: BLE001 - last line of defence: one line, no traceback
        if os.environ.get("ICMP6_SHIM_DEBUG"):
            raise
        print(f"icmp6-shim: internal error: {type(exc).__name__}: {exc} "
              "(set ICMP6_SHIM_DEBUG=1 for a traceback)", file=sys.stderr)
        return 70
