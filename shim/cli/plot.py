# SPDX-License-Identifier: MIT
"""`replay --plot`: verdicts per ICMPv6 type as stacked bars (matplotlib, the extra 'plot')."""

from __future__ import annotations

from shim.core.errors import ShimError

__all__ = ["check_plot", "plot_verdicts", "verdict_key"]


def check_plot() -> None:
    """Raise ShimError (one line) unless matplotlib can be imported."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ShimError("--plot needs matplotlib: pip install 'icmp6-shim[plot]'") from None


def verdict_key(view: object, decision: object) -> tuple[str, str]:
    """(ICMPv6 type label, "verdict (default|user|settings)") of one judged packet."""
    from shim.core.icmp6_types import type_name

    t = getattr(view, "icmpv6_type")
    v = getattr(decision, "verdict")
    mark = f":{v.mark_name or hex(v.mark)}" if v.mark is not None else ""
    label = f"{t} {type_name(t)}" if t is not None else "no ICMPv6"
    return label, f"{v.action.value}{mark} ({getattr(decision, 'origin').value})"


def plot_verdicts(tally: dict[tuple[str, str], int], path: str, title: str = "") -> None:
    """Stacked bars: packets per ICMPv6 type, split by verdict and origin; PNG at path."""
    check_plot()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    types = sorted({t for t, _ in tally}, key=lambda s: (not s[0].isdigit(), int(s.split()[0])
                                                        if s[0].isdigit() else 0, s))
    kinds = sorted({k for _, k in tally}, key=lambda k: ("(user)" not in k, k))
    fig, ax = plt.subplots(figsize=(max(6.0, 0.7 * len(types) + 2), 4.5))
    bottom = [0] * len(types)
    for kind in kinds:
        heights = [tally.get((t, kind), 0) for t in types]
        ax.bar(types, heights, bottom=bottom, label=kind,
               hatch="//" if "(user)" in kind else None)
        bottom = [b + h for b, h in zip(bottom, heights)]
    ax.set_ylabel("packets")
    ax.set_title(title or "icmp6-shim replay: verdicts per ICMPv6 type (hatched: user rule)")
    ax.tick_params(axis="x", labelrotation=60)
    if tally:
        ax.legend(fontsize="small")
    fig.tight_layout()
    try:
        fig.savefig(path, format="png")
    except OSError as exc:
        raise ShimError(f"--plot {path}: {exc.strerror}") from None
    finally:
        plt.close(fig)
