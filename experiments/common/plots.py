"""matplotlib on the Agg backend, and figures written atomically as PNG."""

from __future__ import annotations

import functools
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
import jax
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import FormatStrFormatter, LogLocator

from jaxbn._io import atomic_write_bytes


def pyplot():
    """matplotlib.pyplot on the non-interactive Agg backend."""
    return plt


def save_figure(fig, path: Path, *, dpi: int = 110, tight: bool = True) -> Path:
    """Render a matplotlib figure to PNG in memory, write it atomically and close it.

    ``tight``: crop to the drawn content (costs one more rendering pass)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight" if tight else None)
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
    fig.legend(handles, labels, loc="lower center", ncol=2, bbox_to_anchor=(0.5, 0.0))
    # Fixed margins, not tight_layout: no extra rendering pass (save with tight=False).
    h = fig.get_figheight()  # inches: margins for the two-line title and the legend
    fig.subplots_adjust(left=0.08, right=0.98, bottom=0.8 / h, top=1 - 0.75 / h, wspace=0.12,
                        hspace=0.45)  # fmt: skip
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


def boundary_grid(data, n):
    x = np.concatenate([data["x_train"], data["x_test"]])
    lo, hi = x.min(0) - 0.3, x.max(0) + 0.3
    gx, gy = np.meshgrid(np.linspace(lo[0], hi[0], n), np.linspace(lo[1], hi[1], n))
    return gx, gy, np.stack([gx.ravel(), gy.ravel()], 1).astype(np.float32)


@functools.partial(jax.jit, static_argnums=0)
def class1_probability(net, params, state, points):
    logits, _ = net.apply(params, state, points, training=False)
    return jax.nn.softmax(logits, axis=-1)[:, 1]


def decision_boundaries(models, data, rows, grid: int):
    """E6: one panel per setting, the class-1 probability and the 0.5 contour of each net."""
    n = len(models)
    cols = min(n, 3)
    nrows = math.ceil(n / cols)
    fig, axes = plt.subplots(
        nrows, cols, figsize=(3.4 * cols, 3.3 * nrows), squeeze=False, layout="constrained"
    )
    gx, gy, points = boundary_grid(data, grid)
    by_label = {r["setting"]: r for r in rows if r["data"] == "toy"}
    for ax, (label, (net, ts)) in zip(axes.flat, models.items(), strict=False):
        prob = np.asarray(class1_probability(net, ts.params, ts.state, points)).reshape(gx.shape)
        ax.contourf(gx, gy, prob, levels=np.linspace(0, 1, 11), cmap="RdBu_r", alpha=0.55)
        ax.contour(gx, gy, prob, levels=[0.5], colors="k", linewidths=1.2)
        xt, yt = data["x_test"][:600], data["y_test"][:600]  # a sample keeps the PNG small
        ax.scatter(xt[:, 0], xt[:, 1], c=yt, cmap="bwr", s=3, alpha=0.3, linewidths=0)
        xs, ys = data["x_train"], data["y_train"]
        ax.scatter(xs[:, 0], xs[:, 1], c=ys, cmap="bwr", s=16, edgecolors="k", linewidths=0.6)
        r = by_label[label]
        ax.set_title(
            f"{label}\ntrain {100 * r['train_accuracy']:.0f}%, held-out "
            f"{100 * r['heldout_accuracy']:.1f}%",
            fontsize=10,
        )
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.suptitle(
        f"E6: decision boundaries, {data['name']}, {len(data['x_train'])} training points "
        "(large, black edge) and 600 held-out points (small)",
        fontsize=11,
    )
    return fig


def train_vs_heldout(rows, datasets):
    """E6: training and held-out accuracy per setting, one panel per data set."""
    keys = list(datasets)
    fig, axes = plt.subplots(
        1, len(keys), figsize=(5.2 * len(keys), 3.6), squeeze=False, layout="constrained"
    )
    for ax, key in zip(axes[0], keys, strict=True):
        rs = [r for r in rows if r["data"] == key]
        x = np.arange(len(rs))
        train = [r["train_accuracy"] for r in rs]
        held = [r["heldout_accuracy"] for r in rs]
        ax.bar(x - 0.2, train, 0.4, label="train", color="tab:gray")
        ax.bar(x + 0.2, held, 0.4, label="held-out", color="tab:green")
        for xi, v in zip(x, held, strict=True):
            ax.text(xi + 0.2, v + 0.003, f"{100 * v:.1f}", ha="center", va="bottom", fontsize=7)
        lo = min(held + train)
        ax.set_ylim(max(0.0, lo - 0.08), 1.0)
        ax.set_xticks(x, [r["setting"] for r in rs], rotation=30, ha="right", fontsize=8)
        ax.set_title(f"{datasets[key]['name']}, {len(datasets[key]['x_train']):,} training")
        ax.set_ylabel("accuracy")
        ax.grid(axis="y", alpha=0.3)
    axes[0, 0].legend(fontsize=8, loc="lower left")
    fig.suptitle("E6: training vs held-out accuracy per regularizer", fontsize=11)
    return fig


def hyperparam_heatmaps(results, args, ds_name, best_of):
    """E3: one heat map of validation accuracy (weight scale x lr) per normalization."""
    scales = sorted(args.weight_scales)
    lrs = sorted(args.lrs)
    norms = args.norms
    accs = [r["best_val_accuracy"] for r in results]
    vmin, vmax = math.floor(min(accs) * 20) / 20, math.ceil(max(accs) * 20) / 20
    vmax = max(vmax, vmin + 0.05)
    fig, axes = plt.subplots(
        1,
        len(norms),
        figsize=(3.6 * len(norms) + 1.0, 3.7),
        squeeze=False,
        sharey=True,
        layout="constrained",
    )
    image = None
    for ax, norm in zip(axes[0], norms, strict=True):
        grid = np.full((len(scales), len(lrs)), np.nan)
        for r in results:
            if r["norm"] == norm:
                grid[scales.index(r["weight_scale"]), lrs.index(r["lr"])] = r["best_val_accuracy"]
        image = ax.imshow(grid, vmin=vmin, vmax=vmax, cmap="viridis", origin="lower")
        b = best_of(results, norm)
        bi, bj = scales.index(b["weight_scale"]), lrs.index(b["lr"])
        ax.add_patch(plt.Rectangle((bj - 0.5, bi - 0.5), 1, 1, fill=False, ec="red", lw=2))
        for i in range(len(scales)):
            for j in range(len(lrs)):
                v = grid[i, j]
                ax.text(
                    j, i, f"{v:.3f}", ha="center", va="center", fontsize=9,
                    color="black" if v > (vmin + vmax) / 2 else "white",
                )  # fmt: skip
        ax.set_xticks(range(len(lrs)), [f"{v:g}" for v in lrs])
        ax.set_yticks(range(len(scales)), [f"{v:g}" for v in scales])
        ax.set_xlabel("learning rate")
        ax.set_title(
            f"{norm}\nbest val {b['best_val_accuracy']:.3f}, test {b['test_accuracy']:.3f}",
            fontsize=10,
        )
    axes[0, 0].set_ylabel("weight scale")
    fig.colorbar(image, ax=axes[0].tolist(), shrink=0.9, label="validation accuracy")
    fig.suptitle(
        f"E3: validation accuracy, {ds_name}, hidden {list(args.hidden)}, Adam, {args.epochs} "
        "epochs (red: best per normalization)",
        fontsize=11,
    )
    return fig


def convergence_curves(runs, eval_every, steps_per_epoch, args, source):
    """E2: validation loss at each check and smoothed training loss, per variant and seed."""
    colors = {"no BN": "tab:blue", "BN": "tab:orange"}
    fig, (ax_val, ax_train) = plt.subplots(1, 2, figsize=(11, 4.2))
    for r in runs:
        first = r["seed"] == args.seed
        label = r["variant"] if first else None
        alpha = 1.0 if first else 0.35
        steps, losses = zip(*r["checks"], strict=True) if r["checks"] else ((), ())
        ax_val.plot(steps, losses, color=colors[r["variant"]], label=label, alpha=alpha, lw=1.4)
        sl = np.asarray(r["step_loss"])
        k = max(eval_every, 1)
        n = len(sl) // k
        if n:
            smooth = sl[: n * k].reshape(n, k).mean(axis=1)
            ax_train.plot(
                (np.arange(n) + 1) * k, smooth, color=colors[r["variant"]], label=label, alpha=alpha
            )
    for name, src in source.items():
        ax_val.axvline(
            src["iteration_index"] + 1,
            color=colors[name],
            ls=":",
            lw=1.2,
            label=f"source stop, {name}",
        )
    ax_val.axhline(args.target_loss, color="k", ls="--", lw=1, label=f"target {args.target_loss}")
    ax_val.set(
        yscale="log",
        xlabel="iteration",
        ylabel="validation loss",
        title=f"validation loss every {eval_every} steps",
    )
    ax_train.set(
        yscale="log",
        xlabel="iteration",
        ylabel="training loss",
        title=f"training loss (mean over {eval_every} steps)",
    )
    for ax in (ax_val, ax_train):
        ax.grid(alpha=0.3, which="both")
        ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
        ax.yaxis.set_minor_locator(LogLocator(subs=(2.0, 3.0, 5.0)))
        ax.yaxis.set_minor_formatter(FormatStrFormatter("%g"))
        ax.tick_params(axis="y", which="minor", labelsize=8)
        sec = ax.secondary_xaxis(
            "top", functions=(lambda s: s / steps_per_epoch, lambda e: e * steps_per_epoch)
        )
        sec.set_xlabel("epoch")
    ax_val.legend(fontsize=8)
    fig.suptitle(
        f"E2: MNIST 784-{'-'.join(map(str, args.hidden))}-10, SGD lr {args.lr}, "
        f"batch {args.batch_size}: BN vs no BN"
        + (
            f" (seed {args.seed} bold, seeds up to {args.seed + args.repeats - 1} faint)"
            if args.repeats > 1
            else ""
        )
    )
    fig.tight_layout()
    return fig
