"""Plots of evaluation sweeps (matplotlib, Agg)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

LABELS = {
    "adherence": "adherence (classifier reads the prompted digit) ↑",
    "fd_digits": "FD-digits (classifier features) ↓",
    "fd_enl0": "FD-ENL0 ↓",
    "top5_names": "top-5 retrieval of the prompted emoji ↑",
    "top1_names": "top-1 retrieval ↑",
}


def plot_sweep(rows: Sequence[dict], over: str, metrics: Sequence[str], out: Path, title: str = "") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = [m for m in metrics if any(m in r for r in rows)]
    fig, axes = plt.subplots(1, len(metrics), figsize=(5.2 * len(metrics), 4), squeeze=False)
    for ax, m in zip(axes[0], metrics):
        if over == "nfe":
            for name in dict.fromkeys(r["sampler"] for r in rows):
                pts = sorted((r["nfe"], r[m]) for r in rows if r["sampler"] == name)
                ax.plot(*zip(*pts), marker="o", ms=3, label=name)
            ax.set_xscale("log")
            ax.set_xlabel("network calls per image (NFE)")
        else:
            pts = sorted((r["guidance"], r[m]) for r in rows)
            ax.plot(*zip(*pts), marker="o")
            ax.set_xlabel("guidance scale")
        if m.startswith("fd"):
            ax.set_yscale("log")
        ax.set_title(LABELS.get(m, m), fontsize=10)
        ax.grid(alpha=0.3)
    if over == "nfe":
        axes[0][0].legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
