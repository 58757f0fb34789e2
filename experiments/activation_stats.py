"""E5: how the weight initialization shapes the activations of a deep net, with and without BN.

    python experiments/activation_stats.py      # offline; about 40 s on 2 shared CPU cores

The set-up of the CS231n lecture notes: 1,000 Gaussian examples of 500 features (first
zero-centred and scaled to unit variance per feature, the notes' preprocessing) go through 10
layers of 500 units (``jaxbn.FullyConnectedNet``, zero biases), tanh or ReLU, with weights all
zeros, N(0, 0.01^2), N(0, 1), Xavier or He (scales from ``jaxbn.init_std``, the same standard
normals for every init), with and without batch norm (training mode). ``jaxbn.diagnostics``
gives each layer's mean, std, histogram and the share of dead / saturated units.

The notes report: with std 0.01 the activations collapse towards 0 layer by layer; with std 1
tanh saturates at -1 and +1; Xavier keeps a healthy spread for tanh but collapses for ReLU; He
fixes ReLU; with BN the spread stays healthy whatever the init. A zero (or constant) init is the
symmetry problem: every unit of a layer stays identical to its neighbours, shown here on a few
full-batch SGD steps on random labels (3 layers and a 10-way head): the largest difference
between two units' activations and weight gradients stays 0 (zero init) or at round-off.

Writes config.json, metrics.jsonl, activation_stats_tanh.png, activation_stats_relu.png and
results.md (per-layer std and mean, the preprocessing, the symmetry check) to --out-dir.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a file: find `experiments`
from experiments import common

DEFAULT_INITS = ["zero", "0.01", "1.0", "xavier", "he"]


def parse_init(text: str) -> str | float:
    """'zero', 'xavier', 'he' or a positive float (a fixed std)."""
    if text in ("zero", "xavier", "he"):
        return text
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"an init is zero, xavier, he or a std > 0, got {text!r}")
    return value


def parse_args(argv=None) -> argparse.Namespace:
    p = common.parser(__doc__, out_dir="runs/activation_stats")
    add = p.add_argument
    add("--examples", type=int, default=1000, help="N, rows of the Gaussian input")
    add("--input-dim", type=int, default=500, help="D, input features")
    add("--width", type=int, default=500, help="units per layer")
    add("--depth", type=int, default=10, help="number of layers")
    add("--inits", type=parse_init, nargs="+", default=[parse_init(t) for t in DEFAULT_INITS])
    add("--activations", nargs="+", default=["tanh", "relu"], choices=("tanh", "relu"))
    add("--bn-eps", type=float, default=1e-5)
    add("--bins", type=int, default=30, help="histogram bins (the notes: 30)")
    add("--symmetry-examples", type=int, default=100, help="batch of the symmetry check")
    add("--symmetry-steps", type=int, default=3, help="SGD steps of the symmetry check")
    add("--symmetry-depth", type=int, default=3, help="layers of the symmetry check")
    add("--symmetry-lr", type=float, default=0.1)
    add("--dpi", type=int, default=80)
    args = p.parse_args(argv)
    for name in (
        "examples",
        "input_dim",
        "width",
        "depth",
        "bins",
        "symmetry_examples",
        "symmetry_depth",
    ):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.examples < 2:
        p.error("--examples must be >= 2 (batch norm needs two values per feature)")
    return args


if __name__ == "__main__":
    parse_args()  # --help and bad flags answer here, before the slow imports below

import itertools

import jax
import jax.numpy as jnp
import numpy as np

import jaxbn
from experiments.common import plots, reports
from jaxbn import diagnostics


def label(init) -> str:
    return f"std {init:g}" if isinstance(init, float) else init


def make_input(n: int, d: int, seed: int) -> tuple[np.ndarray, dict]:
    """Raw features with arbitrary offsets and scales, then the notes' ``X -= X.mean(0)`` and
    ``X /= X.std(0)``; and the range of the feature means and stds before and after."""
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


def net_and_params(init, dims, num_classes, activation, batchnorm, eps, seed):
    """A FullyConnectedNet and its params: ``W = init_std(init, fan_in) * z`` with host normals
    ``z`` (the same for every init; zeros or ``1 / fan_in`` for "zero" / "constant"), zero
    biases, gamma 1, beta 0, fresh running statistics."""
    net = jaxbn.FullyConnectedNet(
        tuple(dims[1:-1]),
        num_classes,
        activation=activation,
        normalization="batchnorm" if batchnorm else None,
        eps=eps,
    )
    rng, params = np.random.default_rng(seed), []
    for i, (d_in, d_out) in enumerate(itertools.pairwise(dims)):
        z = rng.standard_normal((d_in, d_out), dtype=np.float32)
        w = (
            np.zeros_like(z)
            if init == "zero"
            else np.full_like(z, 1.0 / d_in)
            if init == "constant"
            else np.float32(jaxbn.init_std(init, d_in)) * z
        )
        params.append({"W": w, "b": np.zeros(d_out, np.float32)})
        if batchnorm and i < len(dims) - 2:
            params[-1].update(gamma=np.ones(d_out, np.float32), beta=np.zeros(d_out, np.float32))
    state = [jaxbn.batch_norm_state(d) if batchnorm else None for d in dims[1:-1]]
    return net, params, state


def symmetry_check(init, x, labels, args, activation, batchnorm) -> np.ndarray:
    """``(steps + 1, 4)`` statistics of ``symmetry_step``, before each step and after the last."""
    dims = [x.shape[1]] + [args.width] * args.symmetry_depth + [10]
    net, params, state = net_and_params(
        init, dims, 10, activation, batchnorm, args.bn_eps, args.seed + 1
    )
    rows = []
    for _ in range(args.symmetry_steps + 1):
        params, stats = diagnostics.symmetry_step(
            net, params, state, x, labels, lr=args.symmetry_lr
        )
        rows.append(stats)
    return np.stack(jax.device_get(rows))


def main(argv=None):
    args = parse_args(argv)
    run = common.Run(args, inits=[str(i) for i in args.inits])
    x, prep = make_input(args.examples, args.input_dim, args.seed)
    print(
        "input: raw feature stds in [{feature_std_min:.2f}, {feature_std_max:.2f}]".format(
            **prep["raw"]
        )
        + ", preprocessed to [{feature_std_min:.6f}, {feature_std_max:.6f}]".format(
            **prep["preprocessed"]
        ),
        flush=True,
    )
    dims = [args.input_dim] + [args.width] * args.depth + [2]  # a 2-way head, never used
    n_sym = 3 * 2 * len(args.activations)
    total = len(args.activations) * (2 * len(args.inits) + 1) + n_sym
    bar = common.Progress(total, unit="step", enabled=not args.no_progress)
    results, symmetry = [], []
    with run.log() as log, bar:
        for activation in args.activations:
            rows = []
            for init, bn in itertools.product(args.inits, (False, True)):
                bar.phase(f"forward {activation}, {label(init)}, {'BN' if bn else 'no BN'}")
                net, params, state = net_and_params(
                    init, dims, 2, activation, bn, args.bn_eps, args.seed
                )
                hs, stats = jax.device_get(diagnostics.activation_statistics(net, params, state, x))
                value_range = diagnostics.histogram_range(activation, hs[0])
                row = {
                    "activation": activation,
                    "init": str(init),
                    "label": label(init),
                    "batchnorm": bn,
                    **{k: v.tolist() for k, v in stats._asdict().items()},
                    "hist": diagnostics.layer_histograms(
                        hs, bins=args.bins, value_range=value_range, drop_zeros=activation == "relu"
                    ),
                }
                for i, (counts, edges) in enumerate(row["hist"]):
                    log.write(
                        kind="layer",
                        activation=activation,
                        init=str(init),
                        batchnorm=bn,
                        layer=i + 1,
                        **{k: row[k][i] for k in stats._fields},
                        hist_counts=counts.tolist(),
                        hist_edges=edges.tolist(),
                    )
                rows.append(row)
                print(
                    f"{activation:4s} {label(init):9s} {'BN   ' if bn else 'no BN'} std per layer:",
                    *(f"{v:8.2g}" for v in row["std"]),
                )
                bar.done()
            bar.phase(f"drawing the {activation} histograms")
            title = (
                f"{activation}: activations of {args.depth} layers of {args.width} units, "
                f"{args.examples:,} Gaussian examples; BN rows in blue; σ = std of the layer"
                + ("; ReLU: non-zero values (0s: share of zeros)" if activation == "relu" else "")
                + "; values beyond the range are counted in the edge bins"
            )
            fig = plots.activation_histogram_grid(activation, rows, title)
            run.figure(f"activation_stats_{activation}.png", fig, dpi=args.dpi)
            bar.done()
            results += rows
        xs = jnp.asarray(x[: args.symmetry_examples])
        labels = jnp.asarray(
            np.random.default_rng(args.seed + 1).integers(0, 10, len(xs)), jnp.int32
        )
        for activation in args.activations:
            for init in ("zero", "constant", "xavier" if activation == "tanh" else "he"):
                for bn in (False, True):
                    bar.phase(f"symmetry check {activation}, {init}, {'BN' if bn else 'no BN'}")
                    s = symmetry_check(init, xs, labels, args, activation, bn).max(axis=0)
                    rec = {
                        "activation": activation,
                        "batchnorm": bn,
                        "init": init if init != "constant" else "constant 1/fan_in",
                        **dict(
                            zip(
                                (
                                    "activation_spread",
                                    "gradient_spread",
                                    "max_abs_activation",
                                    "max_abs_gradient",
                                ),
                                map(float, s),
                                strict=True,
                            )
                        ),
                    }
                    symmetry.append(rec)
                    log.write(kind="symmetry", steps=args.symmetry_steps, **rec)
                    bar.done()
    run.text("results.md", reports.activation_stats_report(results, prep, symmetry, args))
    print(f"\nsymmetry check (largest difference between two units, {args.symmetry_steps} steps):")
    for s in symmetry:
        print(
            f"  {s['activation']:4s} {s['init']:18s} {'BN   ' if s['batchnorm'] else 'no BN'} "
            f"activations {s['activation_spread']:.2g}, gradients {s['gradient_spread']:.2g}"
        )
    print(run.wrote())
    for r in results:
        del r["hist"]
    return {"layers": results, "symmetry": symmetry, "preprocessing": prep, "out_dir": run.dir}


if __name__ == "__main__":
    main()
