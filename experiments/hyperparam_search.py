"""E3: grid search over weight scale x learning rate, without and with normalization (CS231n A2).

    python experiments/hyperparam_search.py                    # Fashion-MNIST, ~5-7 min, 2 cores
    python experiments/hyperparam_search.py --data-dir DIR     # CIFAR-10 when DIR holds it

The CS231n protocol: 49,000 train / 1,000 validation / 1,000 test images (the test images are the
first 1,000 of the official test set; the validation images are held out of the training set at
random), the training set's mean image subtracted from every split, pixels left in 0..255 as in
the assignment (``--scale-pixels`` divides by 255 first). FullyConnectedNet with hidden dims
[100] * 4, ReLU, weights N(0, weight_scale^2); Adam (optax defaults), batch 100, 5 epochs of
N // 100 steps over a fresh permutation; after each epoch the validation accuracy is measured and
each configuration keeps its best epoch's parameters (the assignment's Solver does the same).
Grid: weight_scale {1e-2, 2e-2, 5e-3} x lr {1e-5, 1e-4, 5e-4, 1e-3} x {none, batchnorm,
layernorm}. The 12 (scale, lr) configurations of one normalization are trained together:
their TrainStates are stacked and one jitted ``jax.vmap`` of ``jaxbn.train_step_fn`` advances all
12 on the same batch; the learning rate is a per-configuration array held in the optimizer state
(``optax.inject_hyperparams``). ``--mode loop`` trains them one at a time instead (same numbers),
and ``--timing-budget`` times one step of both ways.

Data: CIFAR-10 when the data root (``--data-dir``, else $JAXBN_DATA or ~/.cache/jaxbn) holds it,
otherwise Fashion-MNIST (Debian's dataset-fashion-mnist or a download), and the script says so;
``--dataset`` forces one.

Reported (CIFAR-10, no normalization, grid weight_scale {1e-2, 2e-2, 5e-3} x lr {1e-5, 5e-4}):
best validation accuracy 0.528, test accuracy 0.527. On Fashion-MNIST the numbers are not
comparable (a different, easier data set). Writes config.json, metrics.jsonl (per epoch and
configuration), results.md and hyperparam_heatmap.png to --out-dir.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a file: find `experiments`

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxbn
from experiments import common
from jaxbn.benchmark import markdown_table, time_interleaved
from jaxbn.data import DatasetNotFoundError, load_dataset
from jaxbn.data.locate import locate_cifar10

NORMS = {"none": None, "batchnorm": "batchnorm", "layernorm": "layernorm"}
SOURCE = {"dataset": "cifar10", "norm": "none", "best_val_accuracy": 0.528, "test_accuracy": 0.527}


def parse_args(argv):
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    common.add_common_args(p, out_dir="runs/hyperparam_search")
    p.add_argument(
        "--dataset",
        choices=("auto", "cifar10", "fashion_mnist", "mnist"),
        default="auto",
        help="auto: CIFAR-10 if on disk, else Fashion-MNIST",
    )
    p.add_argument("--n-train", type=int, default=49000)
    p.add_argument("--n-val", type=int, default=1000)
    p.add_argument("--n-test", type=int, default=1000)
    p.add_argument("--scale-pixels", action="store_true", help="divide pixels by 255 first")
    p.add_argument("--hidden", type=int, nargs="+", default=[100] * 4)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--weight-scales", type=float, nargs="+", default=[1e-2, 2e-2, 5e-3])
    p.add_argument("--lrs", type=float, nargs="+", default=[1e-5, 1e-4, 5e-4, 1e-3])
    p.add_argument("--norms", nargs="+", choices=tuple(NORMS), default=list(NORMS))
    p.add_argument("--mode", choices=("vmap", "loop"), default="vmap")
    p.add_argument(
        "--timing-budget",
        type=float,
        default=2.0,
        help="seconds timing one step of the vmapped grid vs a loop over it (0: skip)",
    )
    p.add_argument("--train-acc-samples", type=int, default=1000)
    p.add_argument("--no-download", action="store_true", help="never download missing files")
    return p.parse_args(argv)


def choose_dataset(args) -> tuple[str, str]:
    """The data set to use and a sentence saying why."""
    if args.dataset != "auto":
        return args.dataset, f"{args.dataset} (chosen with --dataset)"
    try:
        where = locate_cifar10(args.data_dir, download=False)
    except DatasetNotFoundError:
        return "fashion_mnist", (
            "Fashion-MNIST: no CIFAR-10 under the data root (pass --data-dir DIR holding "
            "cifar-10-batches-py/ or --dataset cifar10 to download it); the numbers are NOT "
            "comparable to the source's CIFAR-10 numbers"
        )
    return "cifar10", f"CIFAR-10 found in {where}"


def load(args, name):
    try:
        ds = load_dataset(
            name,
            args.data_dir,
            val_size=args.n_val,
            seed=args.seed,
            n_train=args.n_train,
            scale=args.scale_pixels,
            subtract_mean=True,
            download=not args.no_download,
        )
    except DatasetNotFoundError as err:
        raise SystemExit(f"{err}\n\nE3 needs {name}; see --dataset and --data-dir.") from err
    return ds._replace(x_test=ds.x_test[: args.n_test], y_test=ds.y_test[: args.n_test])


# Jitted tree helpers: one compilation per tree structure instead of one per leaf shape.
take = jax.jit(lambda tree, i: jax.tree.map(lambda a: a[i], tree))


def copy(tree):
    """New buffers for every array (no compilation): the copy survives donating the original."""
    return jax.tree.map(lambda a: jax.device_put(a, may_alias=False), tree)


stack = jax.jit(lambda trees: jax.tree.map(lambda *a: jnp.stack(a), *trees))


def init_grid(norm, args, input_dim, configs):
    """Stacked TrainStates, one per (scale, lr), all from one key: W = scale * the same N(0, 1).

    ``FullyConnectedNet(weight_init=scale).init`` draws ``scale * N(0, 1)`` from its key, so the
    net is initialized once with unit std and each configuration's weights are that draw times its
    scale (biases, gamma, beta and running statistics are the same for all); each Adam state holds
    its own learning rate (``optax.inject_hyperparams``).

    Returns:
      ``(net, optimizer, states)``: the net that applies every configuration (``weight_init``
      only matters at init), the optimizer (it reads the learning rate from each state; its own
      value is never used) and the states, stacked along a leading axis of size K.
    """
    net = jaxbn.FullyConnectedNet(tuple(args.hidden), 10, normalization=NORMS[norm])
    unit = jaxbn.FullyConnectedNet(
        tuple(args.hidden), 10, normalization=NORMS[norm], weight_init=1.0
    )
    template = optax.inject_hyperparams(optax.adam)(learning_rate=0.0)

    @jax.jit  # one program for the whole grid
    def init_all(key, scales, lrs):
        ts0 = jaxbn.init_train_state(unit, template, key, input_dim)

        def expand(scale, lr):
            scaled = [{k: v * scale if k == "W" else v for k, v in p.items()} for p in ts0.params]
            opt = optax.inject_hyperparams(optax.adam)(learning_rate=lr)
            return ts0._replace(params=scaled, opt_state=opt.init(scaled))

        return jax.vmap(expand)(scales, lrs)

    scales = jnp.asarray([c[0] for c in configs], jnp.float32)
    lrs = jnp.asarray([c[1] for c in configs], jnp.float32)
    return net, template, init_all(jax.random.key(args.seed), scales, lrs)


def make_advance(net, optimizer, mode):
    """``advance(states, x_all, y_all, order, b) -> (states, losses (K,))`` for every config."""
    step = jaxbn.train_step_fn(net, optimizer)

    def indexed(ts, x_all, y_all, order, b):
        idx = order[b]
        ts, metrics = step(ts, x_all[idx], y_all[idx])
        return ts, metrics["loss"]

    if mode == "vmap":
        return jax.jit(jax.vmap(indexed, in_axes=(0, None, None, None, None)), donate_argnums=0)
    one = jax.jit(indexed, donate_argnums=0)

    def advance(states, x_all, y_all, order, b):
        out = [one(ts, x_all, y_all, order, b) for ts in states]
        return [ts for ts, _ in out], jnp.stack([loss for _, loss in out])

    return advance


def finite_or_none(v: float) -> float | None:
    return v if math.isfinite(v) else None


def train_grid(norm, args, ds, configs, log, mode):
    """Train the configurations of one normalization; return per-config results and timings."""
    net, optimizer, states = init_grid(norm, args, ds.x_train.shape[1], configs)
    advance = make_advance(net, optimizer, mode)
    if mode == "loop":
        states = [take(states, i) for i in range(len(configs))]

    def config(i):  # fresh arrays: the loop's states are donated at the next step
        return take(states, i) if mode == "vmap" else copy(states[i])

    x_all, y_all = jnp.asarray(ds.x_train), jnp.asarray(ds.y_train)
    n = len(ds.x_train)
    steps = max(n // args.batch_size, 1)
    k = len(configs)
    best_val = np.full(k, -1.0)
    best = [None] * k
    history = [[] for _ in range(k)]
    sub = np.random.default_rng(args.seed).permutation(n)[: args.train_acc_samples]
    t_train = 0.0
    for epoch in range(args.epochs):
        rng = np.random.default_rng([args.seed, epoch])
        order = jnp.asarray(rng.permutation(n)[: steps * args.batch_size].reshape(steps, -1))
        t0 = time.perf_counter()
        losses = []
        for b in range(steps):
            states, loss = advance(states, x_all, y_all, order, b)
            losses.append(loss)
        losses = np.asarray(jax.device_get(jnp.stack(losses)))  # (steps, K)
        t_train += time.perf_counter() - t0
        for i, (scale, lr) in enumerate(configs):
            ts = config(i)
            val = jaxbn.evaluate(net, ts.params, ts.state, ds.x_val, ds.y_val)["accuracy"]
            tr = jaxbn.evaluate(net, ts.params, ts.state, ds.x_train[sub], ds.y_train[sub])[
                "accuracy"
            ]
            if val > best_val[i]:
                best_val[i] = val
                best[i] = ((ts.params, ts.state), epoch + 1)
            rec = {
                "epoch": epoch + 1,
                "train_loss_last": finite_or_none(float(losses[-1, i])),
                "train_loss_mean": finite_or_none(float(np.mean(losses[:, i]))),
                "train_accuracy": tr,
                "val_accuracy": val,
            }
            history[i].append(rec)
            log.write(event="epoch", norm=norm, weight_scale=scale, lr=lr, **rec)
    results = []
    for i, (scale, lr) in enumerate(configs):
        (params, state), best_epoch = best[i]
        test = jaxbn.evaluate(net, params, state, ds.x_test, ds.y_test)["accuracy"]
        r = {
            "norm": norm,
            "weight_scale": scale,
            "lr": lr,
            "best_val_accuracy": float(best_val[i]),
            "best_epoch": int(best_epoch),
            "test_accuracy": test,
            "last_batch_loss": history[i][-1]["train_loss_last"],
            "last_epoch_loss": history[i][-1]["train_loss_mean"],
            "final_train_accuracy": history[i][-1]["train_accuracy"],
        }
        log.write(event="config", **r)
        results.append(r)
    trained = (net, optimizer, mode, advance, states)
    return results, {"train_seconds": t_train, "steps": steps * args.epochs}, trained


def time_modes(trained, args, ds, budget_s):
    """Seconds per training step of all K configurations: one vmapped step vs a loop of K steps.

    Starts from copies of the trained states and reuses the compiled step of the training mode.
    """
    net, optimizer, mode, advance, states = trained
    stacked = copy(states) if mode == "vmap" else stack(states)
    cells = {"vmap": stacked, "loop": [take(stacked, i) for i in range(stacked.step.shape[0])]}
    advances = {m: advance if m == mode else make_advance(net, optimizer, m) for m in cells}
    x_all, y_all = jnp.asarray(ds.x_train), jnp.asarray(ds.y_train)
    order = jnp.arange(args.batch_size)[None, :]

    def runner(mode):
        def run():
            cells[mode], loss = advances[mode](cells[mode], x_all, y_all, order, 0)
            return loss

        return run

    timings = time_interleaved({m: runner(m) for m in cells}, budget_s=budget_s, min_runs=5)
    return {m: t.median for m, t in timings.items()}


def best_of(results, norm):
    rs = [r for r in results if r["norm"] == norm]
    return max(rs, key=lambda r: (r["best_val_accuracy"], -r["lr"]))


def render(results, timing, args, ds, why, configs_per_norm, mode) -> str:
    def acc(a):
        return f"{a:.3f}"

    rows = []
    for norm in args.norms:
        b = best_of(results, norm)
        rows.append(
            [
                norm,
                f"{b['weight_scale']:g}",
                f"{b['lr']:g}",
                acc(b["best_val_accuracy"]),
                acc(b["test_accuracy"]),
                f"{timing[norm]['train_seconds']:.0f}",
            ]
        )
    source_row = ["source (CIFAR-10), none", "", "", acc(SOURCE["best_val_accuracy"]),
                  acc(SOURCE["test_accuracy"]), ""]  # fmt: skip
    rows.insert(1 if args.norms[0] == "none" else 0, source_row)
    header = ["normalization", "weight scale", "lr", "best val acc", "test acc", "train (s)"]
    grid_rows = [
        [
            r["norm"],
            f"{r['weight_scale']:g}",
            f"{r['lr']:g}",
            acc(r["best_val_accuracy"]),
            r["best_epoch"],
            acc(r["test_accuracy"]),
            "diverged" if r["last_epoch_loss"] is None else f"{r['last_epoch_loss']:.3f}",
        ]
        for r in results
    ]
    grid = markdown_table(
        [
            "norm",
            "scale",
            "lr",
            "best val acc",
            "best epoch",
            "test acc",
            "last epoch's train loss",
        ],
        grid_rows,
    )
    speed = ""
    if any("vmap_s" in t for t in timing.values()):
        speed_rows = [
            [
                norm,
                f"{1e3 * t['vmap_s']:.1f}",
                f"{1e3 * t['loop_s']:.1f}",
                f"{t['loop_s'] / t['vmap_s']:.2f}x",
            ]
            for norm, t in timing.items()
            if "vmap_s" in t
        ]
        speed = (
            f"\nOne training step of all {configs_per_norm} configurations, batch "
            f"{args.batch_size} ({jax.default_backend()}, median, interleaved):\n\n"
            + markdown_table(
                ["norm", "vmap, one call (ms)", f"loop of {configs_per_norm} calls (ms)", "ratio"],
                speed_rows,
            )
        )
    comparable = (
        "The source's row is CIFAR-10 without normalization (its grid: lr {1e-5, 5e-4} only)."
        if ds.name == "cifar10"
        else "**Not comparable**: this run is on Fashion-MNIST, the source's row on CIFAR-10."
    )
    return (
        f"# E3: hyperparameter search, weight scale x learning rate ({ds.name})\n\n"
        f"Data: {why}. {len(ds.x_train):,} train / {len(ds.x_val):,} val / "
        f"{len(ds.x_test):,} test, mean image subtracted"
        + (", pixels / 255" if args.scale_pixels else ", pixels 0..255")
        + f". Net {'-'.join(map(str, args.hidden))}, Adam, batch {args.batch_size}, "
        f"{args.epochs} epochs, {mode} over the {configs_per_norm} configurations of each "
        "normalization; each configuration keeps its best epoch by validation accuracy. Seed "
        f"{args.seed}.\n\nBest configuration per normalization (by validation accuracy):\n\n"
        + markdown_table(header, rows)
        + f"\n{comparable}\n\nEvery configuration:\n\n"
        + grid
        + speed
    )


def plot(results, args, ds, path):
    plt = common.pyplot()
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
        f"E3: validation accuracy, {ds.name}, hidden {list(args.hidden)}, Adam, {args.epochs} "
        "epochs (red: best per normalization)",
        fontsize=11,
    )
    common.save_figure(fig, path, dpi=90)
    plt.close(fig)


def main(argv=None):
    args = parse_args(argv)
    name, why = choose_dataset(args)
    print(f"E3 data: {why}", flush=True)
    ds = load(args, name)
    configs = [(s, lr) for s in args.weight_scales for lr in args.lrs]
    out, _ = common.start_run(
        args,
        data={
            "name": ds.name,
            "source": ds.source,
            "why": why,
            "n_train": len(ds.x_train),
            "n_val": len(ds.x_val),
            "n_test": len(ds.x_test),
        },
    )
    results, timing = [], {}
    with common.MetricsLog(out / "metrics.jsonl") as log:
        for norm in args.norms:
            rs, t, trained = train_grid(norm, args, ds, configs, log, args.mode)
            if args.timing_budget > 0:
                modes = time_modes(trained, args, ds, args.timing_budget)
                t.update(vmap_s=modes["vmap"], loop_s=modes["loop"])
            log.write(event="timing", norm=norm, **t)
            results += rs
            timing[norm] = t
            b = best_of(rs, norm)
            print(
                f"{norm:>9}: best val {b['best_val_accuracy']:.3f} (scale {b['weight_scale']:g}, "
                f"lr {b['lr']:g}), test {b['test_accuracy']:.3f}; {t['train_seconds']:.0f} s"
                + (
                    f"; one step of {len(configs)} configs: vmap {1e3 * t['vmap_s']:.1f} ms, "
                    f"loop {1e3 * t['loop_s']:.1f} ms"
                    if "vmap_s" in t
                    else ""
                ),
                flush=True,
            )
    common.write_table(
        out / "results.md", render(results, timing, args, ds, why, len(configs), args.mode)
    )
    plot(results, args, ds, out / "hyperparam_heatmap.png")
    print(
        f"source (CIFAR-10, no norm): best val {SOURCE['best_val_accuracy']}, test "
        f"{SOURCE['test_accuracy']}"
        + ("" if ds.name == "cifar10" else f" -- not comparable with this {ds.name} run")
    )
    print(f"wrote {out / 'results.md'} and {out / 'hyperparam_heatmap.png'}")
    return {"results": results, "timing": timing, "dataset": ds.name}


if __name__ == "__main__":
    main()
