"""matplotlib on the Agg backend, and figures written atomically as PNG."""

from __future__ import annotations

import io
import math
from pathlib import Path

try:
    import matplotlib
except ImportError as err:  # pragma: no cover - depends on the environment
    raise ImportError(
        'the experiments draw with matplotlib: pip install -e ".[experiments]"'
    ) from err

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from jaxbn._io import atomic_write_bytes


def pyplot():
    """matplotlib.pyplot on the non-interactive Agg backend."""
    return plt


def save_figure(fig, path: Path, *, dpi: int = 110) -> Path:
    """Render a matplotlib figure to PNG in memory, write it atomically and close it."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())


def weight_sweep_grid(stds, acc: dict, title: str, labels: dict):
    """E1's grid: one panel per std, BN solid, no-BN dashed; a min-max band over seeds."""
    n, cols = len(stds), min(4, len(stds))
    fig, axes = plt.subplots(
        math.ceil(n / cols), cols, figsize=(2.6 * cols, 2.0 * math.ceil(n / cols) + 0.6),
        sharex=True, sharey=True, squeeze=False)  # fmt: skip
    epochs = np.arange(acc["batchnorm"].shape[-1])
    for i, ax in enumerate(axes.flat):
        if i >= n:
            ax.set_axis_off()
            continue
        for name, color, ls in (("batchnorm", "C0", "-"), ("none", "C1", "--")):
            a = acc[name][:, i]  # (seeds, E + 1)
            ax.plot(epochs, a.mean(0), color=color, linestyle=ls, label=labels[name])
            if a.shape[0] > 1:
                ax.fill_between(epochs, a.min(0), a.max(0), color=color, alpha=0.25, lw=0)
        ax.set(title=f"std = {stds[i]:.2g}", ylim=(0, 1), ylabel="train accuracy" * (i % cols == 0),
               xlabel="epoch" * (i >= n - cols))  # fmt: skip
        ax.title.set_fontsize(9)
        ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=9)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=2, bbox_to_anchor=(0.5, -0.01))
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    return fig


def activation_histogram_grid(activation: str, rows: list[dict], title: str):
    """E5's grid: rows = settings (init x BN), columns = layers; each cell a histogram with its std.

    A row shares one x range (given in its label); the axes carry no ticks, which keeps a
    hundred small panels quick to lay out and draw.
    """
    depth = len(rows[0]["hist"])
    fig, axes = plt.subplots(
        len(rows),
        depth,
        figsize=(1.3 * depth + 1.6, 0.95 * len(rows) + 0.8),
        squeeze=False,
        gridspec_kw={"wspace": 0.06, "hspace": 0.12, "left": 0.13, "right": 0.995},
    )
    color = {False: "C1", True: "C0"}
    for r, row in enumerate(rows):
        for c, (counts, edges) in enumerate(row["hist"]):
            ax = axes[r, c]
            ax.stairs(counts, edges, fill=True, color=color[row["batchnorm"]], alpha=0.85)
            ax.set_xlim(edges[0], edges[-1])
            ax.set_xticks([])
            ax.set_yticks([])
            note = f"σ={row['std'][c]:.2g}"
            if activation == "relu":
                note += f"\n0s {row['zero'][c]:.0%}"
            ax.text(
                0.97,
                0.93,
                note,
                transform=ax.transAxes,
                ha="right",
                va="top",
                fontsize=7,
                bbox={"facecolor": "white", "alpha": 0.75, "linewidth": 0, "pad": 0.6},
            )
            if r == 0:
                ax.set_title(f"layer {c + 1}", fontsize=8)
        lo, hi = row["hist"][0][1][[0, -1]]
        axes[r, 0].set_ylabel(
            f"{row['label']}, {'BN' if row['batchnorm'] else 'no BN'}\nx in [{lo:.2g}, {hi:.2g}]",
            rotation=0,
            ha="right",
            va="center",
            fontsize=8,
        )
    fig.suptitle(title, fontsize=9, y=1 - 0.25 / fig.get_figheight())
    fig.subplots_adjust(top=1 - 0.7 / fig.get_figheight(), bottom=0.1 / fig.get_figheight())
    return fig
