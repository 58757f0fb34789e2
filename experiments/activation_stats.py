"""E5: how the weight initialization shapes the activations of a deep net, with and without BN.

    python experiments/activation_stats.py      # offline; 35-40 s on 2 shared CPU cores

The CS231n lecture notes' set-up: 1,000 Gaussian examples of 500 features (zero-centred and
scaled per feature first) through 10 layers of 500 units, tanh or ReLU, weights zero, N(0,
0.01^2), N(0, 1), Xavier or He (the same normals for every init), with and without batch norm;
``jaxbn.diagnostics`` gives each layer's mean, std, histogram, dead and saturated units. Writes
config.json, metrics.jsonl, activation_stats_{tanh,relu}.png and results.md.

The notes report: with std 0.01 the activations collapse towards 0 layer by layer; with std 1
tanh saturates at -1 and +1; Xavier keeps a healthy spread for tanh but collapses for ReLU; He
fixes ReLU; with BN the spread stays healthy whatever the init. A zero or constant init keeps
every unit of a layer identical (the symmetry problem): shown on a few SGD steps of a 3-layer
net on random labels, where two units' activations and gradients differ by 0 or round-off.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a file: find `experiments`
from experiments import common

DEFAULT_INITS = ["zero", "0.01", "1.0", "xavier", "he"]
SYMMETRY = ("activation_spread", "gradient_spread", "max_abs_activation", "max_abs_gradient")


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
    args = p.parse_args(argv)
    names = ("input_dim", "width", "depth", "bins", "symmetry_examples", "symmetry_depth")
    common.require_positive(p, args, *names)
    if args.examples < 2:  # batch norm needs two values per feature
        p.error(f"--examples must be >= 2, got {args.examples}")
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


def label(init) -> str:  # a fixed std, or the init's name
    return f"std {init:g}" if isinstance(init, float) else init


def make_input(n: int, d: int, seed: int) -> tuple[np.ndarray, dict]:
    """Raw features with arbitrary offsets and scales, then the notes' ``X -= X.mean(0)`` and
    ``X /= X.std(0)``; and the range of the feature means and stds before and after."""
    rng = np.random.default_rng(seed)
    offsets = rng.uniform(-10, 10, d)
    scales = np.exp(rng.uniform(np.log(0.1), np.log(10), d))
    raw = offsets + scales * rng.standard_normal((n, d))
    x = (raw - raw.mean(axis=0)) / (raw - raw.mean(axis=0)).std(axis=0)

    def describe(a):
        m, s = a.mean(axis=0), a.std(axis=0)
        return dict(feature_mean_min=float(m.min()), feature_mean_max=float(m.max()),
                    feature_std_min=float(s.min()), feature_std_max=float(s.max()))  # fmt: skip

    return x.astype(np.float32), {"raw": describe(raw), "preprocessed": describe(x)}


def net_and_params(init, dims, num_classes, activation, batchnorm, eps, seed):
    """A FullyConnectedNet and its params: ``W = init_std(init, fan_in) * z`` with host normals
    ``z`` (the same for every init; zeros or ``1 / fan_in`` for "zero" / "constant"), zero
    biases, gamma 1, beta 0, fresh running statistics."""
    norm = "batchnorm" if batchnorm else None
    net = jaxbn.FullyConnectedNet(dims[1:-1], num_classes, activation=activation,
                                  normalization=norm, eps=eps)  # fmt: skip
    rng, params = np.random.default_rng(seed), []
    for i, (d_in, d_out) in enumerate(itertools.pairwise(dims)):
        z = rng.standard_normal((d_in, d_out), dtype=np.float32)
        w = {"zero": np.zeros_like(z), "constant": np.full_like(z, 1.0 / d_in)}.get(init)
        w = np.float32(jaxbn.init_std(init, d_in)) * z if w is None else w
        params.append({"W": w, "b": np.zeros(d_out, np.float32)})
        if batchnorm and i < len(dims) - 2:
            params[-1].update(gamma=np.ones(d_out, np.float32), beta=np.zeros(d_out, np.float32))
    state = [jaxbn.batch_norm_state(d) if batchnorm else None for d in dims[1:-1]]
    return net, params, state


def symmetry_check(init, x, labels, args, activation, batchnorm) -> dict:
    """The largest of ``diagnostics.symmetry_step``'s statistics over the steps."""
    dims = [x.shape[1]] + [args.width] * args.symmetry_depth + [10]
    net, params, state = net_and_params(
        init, dims, 10, activation, batchnorm, args.bn_eps, args.seed + 1
    )
    rows, lr = [], args.symmetry_lr
    for _ in range(args.symmetry_steps + 1):  # the statistics before each step and after the last
        params, stats = diagnostics.symmetry_step(net, params, state, x, labels, lr=lr)
        rows.append(stats)
    top = np.stack(jax.device_get(rows)).max(axis=0)
    name = init if init != "constant" else "constant 1/fan_in"
    return dict(activation=activation, batchnorm=batchnorm, init=name,
                **dict(zip(SYMMETRY, map(float, top), strict=True)))  # fmt: skip


def forward(init, bn, x, args, activation, log) -> dict:
    """One net's per-layer statistics and histograms (logged per layer) for the table and grid."""
    dims = [args.input_dim] + [args.width] * args.depth + [2]  # a 2-way head, never used
    net, params, state = net_and_params(init, dims, 2, activation, bn, args.bn_eps, args.seed)
    hs, stats = jax.device_get(diagnostics.activation_statistics(net, params, state, x))
    rng = diagnostics.histogram_range(activation, hs[0])  # one x range for the row
    hist = diagnostics.layer_histograms(hs, bins=args.bins, value_range=rng, drop_zeros=rng[0] == 0)
    row = dict(activation=activation, init=str(init), label=label(init), batchnorm=bn, hist=hist,
               **{k: v.tolist() for k, v in stats._asdict().items()})  # fmt: skip
    for i, (counts, edges) in enumerate(hist):
        log.write(kind="layer", activation=activation, init=str(init), batchnorm=bn, layer=i + 1,
                  **{k: row[k][i] for k in stats._fields}, hist_counts=counts.tolist(),
                  hist_edges=edges.tolist())  # fmt: skip
    print(f"{activation:4s} {label(init):9s} {'BN   ' if bn else 'no BN'} std per layer:",
          *(f"{v:8.2g}" for v in row["std"]))  # fmt: skip
    return row


def main(argv=None):
    args = parse_args(argv)
    run = common.Run(args, inits=[str(i) for i in args.inits])
    x, prep = make_input(args.examples, args.input_dim, args.seed)
    raw, pre = prep["raw"], prep["preprocessed"]
    print(f"input: feature stds in [{raw['feature_std_min']:.2f}, {raw['feature_std_max']:.2f}],",
          f"preprocessed [{pre['feature_std_min']:.6f}, {pre['feature_std_max']:.6f}]")  # fmt: skip
    total, results, symmetry = len(args.activations) * (2 * len(args.inits) + 7), [], []
    with run.log() as log, common.Progress(total, enabled=not args.no_progress) as bar:
        for activation in args.activations:
            rows = []
            for init, bn in itertools.product(args.inits, (False, True)):
                bar.phase(f"forward {activation}, {label(init)}, {'BN' if bn else 'no BN'}")
                rows.append(forward(init, bn, x, args, activation, log))
                bar.done()
            bar.phase(f"drawing the {activation} histograms")
            title = (f"{activation}: activations of {args.depth} layers of {args.width} units, "
                     f"{args.examples:,} Gaussian examples; BN rows in blue; σ = std of the layer"
                     + ("; ReLU: non-zero values (0s: share of zeros)" * (activation == "relu"))
                     + "; values beyond the range are counted in the edge bins")  # fmt: skip
            fig = plots.activation_histogram_grid(activation, rows, title)
            run.figure(f"activation_stats_{activation}.png", fig, dpi=80)
            bar.done()
            results += rows
        xs = jnp.asarray(x[: args.symmetry_examples])
        labels = jnp.asarray(np.random.default_rng(args.seed + 1).integers(0, 10, len(xs)), "int32")
        for activation in args.activations:
            random_init = "xavier" if activation == "tanh" else "he"
            for init, bn in itertools.product(("zero", "constant", random_init), (False, True)):
                bar.phase(f"symmetry check {activation}, {init}, {'BN' if bn else 'no BN'}")
                symmetry.append(symmetry_check(init, xs, labels, args, activation, bn))
                log.write(kind="symmetry", steps=args.symmetry_steps, **symmetry[-1])
                bar.done()
    run.text("results.md", reports.activation_stats_report(results, prep, symmetry, args))
    for s in symmetry:  # the spread between two units of a layer: 0 = identical units
        what = f"{s['activation']:4s} {s['init']:18s} {'BN' if s['batchnorm'] else 'no BN':5s}"
        print(f"symmetry {what} spread {s['activation_spread']:.2g}, {s['gradient_spread']:.2g}")
    print(run.wrote())
    results = [{k: v for k, v in r.items() if k != "hist"} for r in results]
    return {"layers": results, "symmetry": symmetry, "preprocessing": prep, "out_dir": run.dir}


if __name__ == "__main__":
    main()
