"""E5: how the weight initialization shapes the activations of a deep net, with and without BN.

    python experiments/activation_stats.py      # offline; 35-40 s on 2 shared CPU cores

The set-up of the CS231n lecture notes: 1,000 Gaussian examples of 500 features go through 10
fully connected layers of 500 units (no biases), tanh or ReLU, with weights drawn as all zeros,
N(0, 0.01^2), N(0, 1), Xavier N(0, 1 / fan_in) or He N(0, 2 / fan_in) (scales from
``jaxbn.init_std``, the same standard normals for every init), each with and without batch norm
(``jaxbn.batch_norm`` in training mode between each affine and its nonlinearity). For every
layer it records the mean and standard deviation of the activations and their histogram. The
input goes through the notes' preprocessing first: raw features with arbitrary offsets and
scales are zero-centred and scaled to unit variance, feature by feature.

The notes report: with std 0.01 the activations collapse towards 0 layer by layer; with std 1 tanh
saturates at -1 and +1; Xavier keeps a healthy spread for tanh but collapses for ReLU; He fixes
ReLU; with BN the spread stays healthy whatever the init.

Zero init (and any constant init) is the symmetry problem: every unit of a layer computes the
same function, gets the same gradient and so stays identical to its neighbours forever. The
script shows it on a few steps of full-batch SGD on random labels (a 3-layer version of the net
with a 10-way softmax head): the largest difference between two units' activations, and between
two units' weight gradients, stays at 0 (zero init) or at float32 round-off (constant init).

Outputs in ``--out-dir`` (default ``runs/activation_stats``): ``config.json``, ``metrics.jsonl``
(one line per activation, init, BN and layer; then the symmetry check), one histogram grid per
activation (``activation_stats_tanh.png``, ``activation_stats_relu.png``: rows = settings,
columns = layers) and ``results.md`` (per-layer std and mean, the preprocessing, the symmetry
check).
"""

from __future__ import annotations

import argparse
import itertools
import math
import sys
import time
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

_ROOT = str(Path(__file__).resolve().parents[1])  # `experiments` is a package beside `jaxbn`
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

import jaxbn
from experiments import common
from jaxbn.benchmark import markdown_table

ACTIVATIONS = {"tanh": jnp.tanh, "relu": jax.nn.relu}
DEFAULT_INITS = ["zero", "0.01", "1.0", "xavier", "he"]


def parse_init(text: str) -> str | float:
    """'zero', 'xavier', 'he' or a positive float (a fixed std)."""
    if text in ("zero", "xavier", "he"):
        return text
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"an init is 'zero', 'xavier', 'he' or a positive std, got {text!r}"
        ) from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"a fixed std must be a finite number > 0, got {text!r}")
    return value


def init_label(init: str | float) -> str:
    return f"std {init:g}" if isinstance(init, float) else init


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    common.add_common_args(p, out_dir="runs/activation_stats")  # --data-dir: unused (synthetic)
    p.add_argument("--examples", type=int, default=1000, help="N, rows of the Gaussian input")
    p.add_argument("--input-dim", type=int, default=500, help="D, input features")
    p.add_argument("--width", type=int, default=500, help="units per layer")
    p.add_argument("--depth", type=int, default=10, help="number of layers")
    p.add_argument(
        "--inits", type=parse_init, nargs="+", default=[parse_init(t) for t in DEFAULT_INITS]
    )
    p.add_argument("--activations", nargs="+", default=["tanh", "relu"], choices=ACTIVATIONS)
    p.add_argument("--bn-eps", type=float, default=1e-5)
    p.add_argument("--bins", type=int, default=30, help="histogram bins (the notes: 30)")
    p.add_argument("--symmetry-examples", type=int, default=100, help="batch of the symmetry check")
    p.add_argument("--symmetry-steps", type=int, default=3, help="SGD steps of the symmetry check")
    p.add_argument("--symmetry-depth", type=int, default=3, help="layers of the symmetry check")
    p.add_argument("--symmetry-lr", type=float, default=0.1)
    p.add_argument("--dpi", type=int, default=80)
    args = p.parse_args(argv)
    positive = ("examples", "input_dim", "width", "depth", "bins", "symmetry_examples")
    for name in (*positive, "symmetry_depth"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.examples < 2:
        p.error("--examples must be >= 2 (batch norm needs two values per feature)")
    return args


# ---------------------------------------------------------------------------------------------
# Data: the preprocessing step of the notes.
# ---------------------------------------------------------------------------------------------


def make_input(n: int, d: int, seed: int) -> tuple[np.ndarray, dict]:
    """Raw Gaussian features with arbitrary offsets and scales, then zero-centred, unit-scaled.

    The notes' two lines: ``X -= np.mean(X, axis=0)`` and ``X /= np.std(X, axis=0)``.
    """
    rng = np.random.default_rng(seed)
    offsets = rng.uniform(-10, 10, d)
    scales = np.exp(rng.uniform(np.log(0.1), np.log(10), d))
    raw = offsets + scales * rng.standard_normal((n, d))
    x = raw - raw.mean(axis=0)
    x /= x.std(axis=0)

    def describe(a):
        m, s = a.mean(axis=0), a.std(axis=0)
        return {
            "feature_mean_min": float(m.min()),
            "feature_mean_max": float(m.max()),
            "feature_std_min": float(s.min()),
            "feature_std_max": float(s.max()),
        }

    return x.astype(np.float32), {"raw": describe(raw), "preprocessed": describe(x)}


# ---------------------------------------------------------------------------------------------
# The net: depth x {x @ W - [batch norm] - activation}, no biases (as in the notes).
# ---------------------------------------------------------------------------------------------


def draw_matrix(init, rng: np.random.Generator, d_in: int, d_out: int) -> np.ndarray:
    """One ``(d_in, d_out)`` float32 matrix: zeros, all ``1 / d_in`` ("constant") or ``std * z``.

    ``std = jaxbn.init_std(init, d_in)``: the fixed std, Xavier's ``sqrt(1 / fan_in)`` or He's
    ``sqrt(2 / fan_in)``, exactly as ``jaxbn.fixed_std_normal`` / ``xavier_normal`` /
    ``he_normal`` scale their draws; the standard normals ``z`` come from NumPy on the host (a
    ``jax.random`` draw costs a second of XLA compilation per shape on a CPU).
    """
    z = rng.standard_normal((d_in, d_out), dtype=np.float32)  # drawn for every init: same z
    if init == "zero":
        return np.zeros_like(z)
    if init == "constant":
        return np.full_like(z, 1.0 / d_in)
    return np.float32(jaxbn.init_std(init, d_in)) * z


def draw_weights(init, dims, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``(D_in, width)`` matrix and the others stacked ``(L - 1, width, width)``.

    The same seed serves every init, so two random inits differ only by their scale.
    """
    rng = np.random.default_rng(seed)
    out = [draw_matrix(init, rng, a, b) for a, b in itertools.pairwise(dims)]
    return out[0], np.stack(out[1:]) if len(out) > 1 else np.zeros((0, dims[1], dims[1]))


def layer(h, w, *, activation: str, batchnorm: bool, eps: float):
    """``activation([batch_norm](h @ w))``; batch norm in training mode, gamma 1, beta 0."""
    z = h @ w
    if batchnorm:
        d = w.shape[1]
        z, _ = jaxbn.batch_norm(
            z, jnp.ones(d), jnp.zeros(d), jaxbn.batch_norm_state(d), training=True, eps=eps
        )
    return ACTIVATIONS[activation](z)


def hidden_layers(weights, x, **kw):
    """All the layers' activations, ``(L, N, width)``: the first layer, then a scan over the rest.

    The scan keeps the compiled program the size of two layers whatever the depth.
    """
    first, rest = weights
    h = layer(x, first, **kw)

    def body(h, w):
        h = layer(h, w, **kw)
        return h, h

    _, hs = jax.lax.scan(body, h, rest)
    return jnp.concatenate([h[None], hs])


@partial(jax.jit, static_argnames=("activation", "eps"))
def forward_stats(weights, x, *, activation: str, eps: float):
    """The net without and with batch norm (one program: half the compilation of two).

    Returns ``{False: stats, True: stats}`` keyed by ``batchnorm``: per-layer activations
    ``(L, N, width)``, their means, stds, and the fractions saturated (``|h| > 0.99``) and zero.
    """
    out = {}
    for batchnorm in (False, True):
        hs = hidden_layers(weights, x, activation=activation, batchnorm=batchnorm, eps=eps)
        axes = (1, 2)
        out[batchnorm] = {
            "activations": hs,
            "mean": jnp.mean(hs, axes),
            "std": jnp.std(hs, axes),
            "saturated": jnp.mean(jnp.abs(hs) > 0.99, axes),  # tanh: at +-1
            "zero": jnp.mean(hs == 0, axes),  # ReLU: dead or negative input
        }
    return out


@partial(jax.jit, static_argnames=("activation", "eps"))
def symmetry_step(weights, x, labels, lr, *, activation, eps):
    """One full-batch SGD step on softmax cross-entropy; and how far apart the units of a layer are.

    ``weights``: ``{batchnorm: [W_1, ..., W_head]}`` for the net without (False) and with (True)
    batch norm, each a list of ``(D_in, D_out)`` matrices, the last the output layer (unrolled:
    differentiating a scan over layers costs twice the compilation). Returns the updated weights
    and, per net, ``[activation spread, gradient spread, max |h|, max |dW|]`` over the hidden
    layers, where a spread is the largest ``|a[:, j] - a[:, 0]|`` over units ``j`` (the columns
    of the activations ``h`` and of the weight gradients ``dW``). Batch norm has gamma 1, beta 0.
    """

    def spread(a):  # (rows, units): max over units j of |a[:, j] - a[:, 0]|
        return jnp.max(jnp.abs(a - a[:, :1]))

    def largest(values):
        return jnp.max(jnp.stack(values))

    new, stats = {}, {}
    for batchnorm, ws in weights.items():

        def loss_fn(ws, batchnorm=batchnorm):
            hs, h = [], x
            for w in ws[:-1]:
                h = layer(h, w, activation=activation, batchnorm=batchnorm, eps=eps)
                hs.append(h)
            return jaxbn.softmax_cross_entropy(h @ ws[-1], labels), hs

        (_, hs), grads = jax.value_and_grad(loss_fn, has_aux=True)(ws)
        stats[batchnorm] = jnp.stack(
            [
                largest([spread(h) for h in hs]),
                largest([spread(g) for g in grads[:-1]]),
                largest([jnp.max(jnp.abs(h)) for h in hs]),
                largest([jnp.max(jnp.abs(g)) for g in grads[:-1]]),
            ]
        )
        new[batchnorm] = [w - lr * g for w, g in zip(ws, grads, strict=True)]
    return new, stats


def symmetry_check(init, x, labels, *, depth, width, steps, lr, seed, **kw) -> dict:
    """``steps`` SGD steps of a ``depth``-layer net (plus a 10-way head) from ``init``.

    Returns ``{batchnorm: (steps + 1, 4) array}`` of ``symmetry_step``'s statistics, before each
    step and after the last, for the net without (False) and with (True) batch norm; both start
    from the same weights.
    """
    dims = [x.shape[1]] + [width] * depth + [10]
    rng = np.random.default_rng(seed)
    ws = [draw_matrix(init, rng, a, b) for a, b in itertools.pairwise(dims)]
    weights = {False: ws, True: ws}
    rows = []
    for _ in range(steps + 1):
        weights, stats = symmetry_step(weights, x, labels, lr, **kw)
        rows.append(stats)
    rows = jax.device_get(rows)
    return {bn: np.stack([r[bn] for r in rows]) for bn in (False, True)}


# ---------------------------------------------------------------------------------------------
# Figures and tables.
# ---------------------------------------------------------------------------------------------


def hist_range(activation: str, first_layer: np.ndarray) -> tuple[float, float]:
    """tanh: [-1, 1] as the notes; ReLU: [0, 99.5th percentile of the row's first layer]."""
    if activation == "tanh":
        return -1.0, 1.0
    positive = first_layer[first_layer > 0]
    top = float(np.percentile(positive, 99.5)) if positive.size else 1.0
    return 0.0, top if top > 0 else 1.0


def histograms(activation: str, hs: np.ndarray, bins: int):
    """Per layer: (counts, edges) over a range shared by the row; values outside it clipped."""
    lo, hi = hist_range(activation, hs[0])
    out = []
    for h in hs:
        v = h.ravel()
        if activation == "relu":
            v = v[v > 0]  # the zeros (half the units) would dwarf everything: their share is noted
        counts, edges = np.histogram(np.clip(v, lo, hi), bins=bins, range=(lo, hi))
        out.append((counts, edges))
    return out


def draw_grid(activation: str, rows: list[dict], title: str):
    """Rows = settings (init x BN), columns = layers; each cell a histogram with its std.

    A row shares one x range (given in its label); the axes carry no ticks, which keeps a
    hundred small panels quick to lay out and draw.
    """
    plt = common.pyplot()
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


def fmt(v: float) -> str:
    return f"{v:.3g}" if v != 0 else "0"


def render(results, prep, symmetry, args, timing) -> str:
    depth = args.depth
    header = ["activation", "init", "BN", *[f"layer {i + 1}" for i in range(depth)]]

    def table(key):
        return markdown_table(
            header,
            [
                [r["activation"], r["label"], "yes" if r["batchnorm"] else "no"]
                + [fmt(v) for v in r[key]]
                for r in results
            ],
        )

    prep_rows = [
        [
            stage,
            f"[{d['feature_mean_min']:.3g}, {d['feature_mean_max']:.3g}]",
            f"[{d['feature_std_min']:.3g}, {d['feature_std_max']:.3g}]",
        ]
        for stage, d in prep.items()
    ]
    sym_rows = [
        [
            s["activation"],
            s["init"],
            "yes" if s["batchnorm"] else "no",
            fmt(s["activation_spread"]),
            fmt(s["gradient_spread"]),
            fmt(s["max_abs_activation"]),
            fmt(s["max_abs_gradient"]),
        ]
        for s in symmetry
    ]
    return (
        f"# E5: activation statistics, {depth} layers of {args.width} units\n\n"
        f"Input: {args.examples:,} x {args.input_dim} Gaussian features after the preprocessing "
        "step (per feature: subtract the mean, divide by the std):\n\n"
        + markdown_table(["input", "feature means in", "feature stds in"], prep_rows)
        + "\nStandard deviation of each layer's activations (all units and examples):\n\n"
        + table("std")
        + "\nMean of each layer's activations:\n\n"
        + table("mean")
        + f"\nSymmetry check: {args.symmetry_depth} layers of {args.width} units and a 10-way "
        f"softmax head, {args.symmetry_steps} steps of full-batch SGD (lr {args.symmetry_lr}) on "
        f"{args.symmetry_examples} of the examples with random labels. Spread: the largest "
        "difference between two units of a layer (their activations over the examples; their "
        "weight-gradient columns), over all hidden layers and steps. A random init for "
        "contrast.\n\n"
        + markdown_table(
            [
                "activation",
                "init",
                "BN",
                "activation spread",
                "gradient spread",
                "max abs activation",
                "max abs gradient",
            ],
            sym_rows,
        )
        + f"\nWall time {timing['total_s']:.1f} s: forward passes and histograms "
        f"{timing['forward_s']:.1f} s, figures {timing['figures_s']:.1f} s, symmetry check "
        f"{timing['symmetry_s']:.1f} s, compilation included ({timing['backend']}).\n"
    )


def main(argv=None):
    t_start = time.perf_counter()
    args = parse_args(argv)
    out, _ = common.start_run(args, inits=[str(i) for i in args.inits])
    x, prep = make_input(args.examples, args.input_dim, args.seed)
    print(
        "input: raw feature means in [{feature_mean_min:.2f}, {feature_mean_max:.2f}], stds in "
        "[{feature_std_min:.2f}, {feature_std_max:.2f}]".format(**prep["raw"])
        + " -> preprocessed: means in [{feature_mean_min:.1e}, {feature_mean_max:.1e}], stds in "
        "[{feature_std_min:.6f}, {feature_std_max:.6f}]".format(**prep["preprocessed"]),
        flush=True,
    )
    dims = [args.input_dim] + [args.width] * args.depth
    weights = {init: draw_weights(init, dims, args.seed) for init in args.inits}

    phases = {"forward": 0.0, "figures": 0.0, "symmetry": 0.0}
    results, figures = [], []
    with common.MetricsLog(out / "metrics.jsonl") as log:
        for activation in args.activations:
            rows = []
            t0 = time.perf_counter()
            for init in args.inits:
                both = jax.device_get(
                    forward_stats(weights[init], x, activation=activation, eps=args.bn_eps)
                )
                for batchnorm in (False, True):
                    s = both[batchnorm]
                    row = {
                        "activation": activation,
                        "init": str(init),
                        "label": init_label(init),
                        "batchnorm": batchnorm,
                        **{k: s[k].tolist() for k in ("mean", "std", "saturated", "zero")},
                    }
                    row["hist"] = histograms(activation, s["activations"], args.bins)
                    for i in range(args.depth):
                        counts, edges = row["hist"][i]
                        log.write(
                            kind="layer",
                            activation=activation,
                            init=str(init),
                            batchnorm=batchnorm,
                            layer=i + 1,
                            mean=row["mean"][i],
                            std=row["std"][i],
                            saturated=row["saturated"][i],
                            zero=row["zero"][i],
                            hist_counts=counts.tolist(),
                            hist_edges=edges.tolist(),
                        )
                    rows.append(row)
                    print(
                        f"{activation:4s} {init_label(init):9s} {'BN   ' if batchnorm else 'no BN'}"
                        " std per layer: " + " ".join(f"{v:8.2g}" for v in row["std"]),
                        flush=True,
                    )
            results.extend(rows)
            phases["forward"] += time.perf_counter() - t0
            t0 = time.perf_counter()
            title = (
                f"{activation}: activations of {args.depth} layers of {args.width} units, "
                f"{args.examples:,} Gaussian examples; BN rows in blue; σ = std of the layer"
                + (
                    "; ReLU: histogram of the non-zero values (0s: share of zeros)"
                    if activation == "relu"
                    else ""
                )
                + "; values beyond the range are counted in the edge bins"
            )
            fig = draw_grid(activation, rows, title)
            figures.append(
                common.save_figure(fig, out / f"activation_stats_{activation}.png", dpi=args.dpi)
            )
            common.pyplot().close(fig)
            phases["figures"] += time.perf_counter() - t0

        # The symmetry problem: zero and constant inits against a random one.
        t0 = time.perf_counter()
        rng = np.random.default_rng(args.seed + 1)
        xs = jnp.asarray(x[: args.symmetry_examples])
        labels = jnp.asarray(rng.integers(0, 10, len(xs)), jnp.int32)
        symmetry = []
        for activation in args.activations:
            for init in ("zero", "constant", "xavier" if activation == "tanh" else "he"):
                both = symmetry_check(
                    init,
                    xs,
                    labels,
                    depth=args.symmetry_depth,
                    width=args.width,
                    steps=args.symmetry_steps,
                    lr=args.symmetry_lr,
                    seed=args.seed + 1,
                    activation=activation,
                    eps=args.bn_eps,
                )
                for batchnorm, stats in both.items():
                    rec = {
                        "activation": activation,
                        "init": init if init != "constant" else "constant 1/fan_in",
                        "batchnorm": batchnorm,
                        "activation_spread": float(stats[:, 0].max()),
                        "gradient_spread": float(stats[:, 1].max()),
                        "max_abs_activation": float(stats[:, 2].max()),
                        "max_abs_gradient": float(stats[:, 3].max()),
                    }
                    symmetry.append(rec)
                    log.write(kind="symmetry", steps=args.symmetry_steps, **rec)
        phases["symmetry"] = time.perf_counter() - t0

    timing = {
        "total_s": time.perf_counter() - t_start,
        **{f"{k}_s": v for k, v in phases.items()},
        "backend": f"{jax.default_backend()} x{len(jax.devices())}",
    }
    table = render(results, prep, symmetry, args, timing)
    common.write_table(out / "results.md", table)
    print()
    print(
        "symmetry check (largest difference between two units of a layer, over "
        f"{args.symmetry_steps} SGD steps):"
    )
    for s in symmetry:
        print(
            f"  {s['activation']:4s} {s['init']:18s} {'BN   ' if s['batchnorm'] else 'no BN'} "
            f"activations {s['activation_spread']:.2g} (max |h| {s['max_abs_activation']:.2g}), "
            f"gradients {s['gradient_spread']:.2g} (max |dW| {s['max_abs_gradient']:.2g})"
        )
    print(f"\nwrote {out / 'results.md'}, " + ", ".join(map(str, figures)))
    print(
        f"wall time {timing['total_s']:.1f} s (forward + histograms {timing['forward_s']:.1f} s, "
        f"figures {timing['figures_s']:.1f} s, symmetry {timing['symmetry_s']:.1f} s)"
    )
    for r in results:
        del r["hist"]
    return {"layers": results, "symmetry": symmetry, "preprocessing": prep, "out_dir": out}


if __name__ == "__main__":
    main()
