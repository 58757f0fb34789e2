"""E3: grid search over weight scale x learning rate, without and with normalization (CS231n A2).

    python experiments/hyperparam_search.py                 # Fashion-MNIST, 5-7 min on 2 cores
    python experiments/hyperparam_search.py --data-dir DIR  # CIFAR-10 when DIR holds it

The CS231n protocol: 49,000 train / 1,000 validation (held out at random) / 1,000 test images
(the first of the official test set), the training mean image subtracted, pixels in 0..255
(``--scale-pixels``: / 255). Hidden dims [100] * 4, ReLU, weights N(0, weight_scale^2), Adam,
batch 100, 5 epochs over fresh permutations; each configuration keeps its best epoch by
validation accuracy (as the assignment's Solver).
Grid: weight_scale {1e-2, 2e-2, 5e-3} x lr {1e-5, 1e-4, 5e-4, 1e-3} x {none, batchnorm,
layernorm}. The 12 (scale, lr) configurations of one normalization are trained together
(``jaxbn.train.sweep``: stacked states, one vmapped step scanned over each epoch's batches);
the learning rate is a per-configuration array in the optimizer state (``inject_hyperparams``).

Data: CIFAR-10 when the data root (``--data-dir``, $JAXBN_DATA or ~/.cache/jaxbn) holds it,
else Fashion-MNIST (on disk or downloaded), and the script says so; ``--dataset`` forces one.

Reported (CIFAR-10, no normalization, grid weight_scale {1e-2, 2e-2, 5e-3} x lr {1e-5, 5e-4}):
best validation accuracy 0.528, test accuracy 0.527 (Fashion-MNIST is not comparable). Writes
config.json, metrics.jsonl, results.md and hyperparam_heatmap.png to --out-dir.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a file: find `experiments`
from experiments import common

NORMS = {"none": None, "batchnorm": "batchnorm", "layernorm": "layernorm"}
SOURCE = {"dataset": "cifar10", "norm": "none", "best_val_accuracy": 0.528, "test_accuracy": 0.527}


def parse_args(argv=None):
    p = common.parser(__doc__, out_dir="runs/hyperparam_search")
    p.add_argument("--dataset", choices=("auto", "cifar10", "fashion_mnist", "mnist"),
                   default="auto", help="auto: CIFAR-10 if found, else Fashion-MNIST")  # fmt: skip
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
    p.add_argument("--train-acc-samples", type=int, default=1000)
    p.add_argument("--no-download", action="store_true", help="never download missing files")
    return p.parse_args(argv)


if __name__ == "__main__":
    parse_args()  # --help and bad flags answer here, before the slow imports below

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxbn
from experiments.common import plots, reports
from jaxbn.data import DatasetNotFoundError, dataset_available, load_dataset
from jaxbn.train import sweep


def choose_dataset(args) -> tuple[str, str]:
    """The data set to use and a sentence saying why."""
    if args.dataset != "auto":
        return args.dataset, f"{args.dataset} (chosen with --dataset)"
    if dataset_available("cifar10", args.data_dir):
        return "cifar10", "CIFAR-10 found under the data root"
    why = "Fashion-MNIST: no CIFAR-10 under the data root (see --data-dir, --dataset cifar10)"
    return "fashion_mnist", why + "; NOT comparable to the source's CIFAR-10 numbers"


def load(args, name):
    try:
        ds = load_dataset(name, args.data_dir, val_size=args.n_val, seed=args.seed,
                          n_train=args.n_train, scale=args.scale_pixels, subtract_mean=True,
                          download=not args.no_download)  # fmt: skip
    except DatasetNotFoundError as err:
        raise SystemExit(f"{err}\n\nE3 needs {name}; see --dataset and --data-dir.") from err
    return ds._replace(x_test=ds.x_test[: args.n_test], y_test=ds.y_test[: args.n_test])


def init_grid(norm, args, input_dim, configs):
    """The net, the optimizer and K stacked TrainStates, one per (scale, lr), from one key:
    the unit-std init times each scale (what ``weight_init=scale`` draws), each Adam state with
    its own learning rate (``optax.inject_hyperparams``)."""
    hidden, k = tuple(args.hidden), len(configs)
    net = jaxbn.FullyConnectedNet(hidden, 10, normalization=NORMS[norm])
    unit = jaxbn.FullyConnectedNet(hidden, 10, normalization=NORMS[norm], weight_init=1.0)
    optimizer = optax.inject_hyperparams(optax.adam)(learning_rate=0.0)
    init = jax.jit(jaxbn.init_train_state, static_argnums=(0, 1, 3))
    ts0 = init(unit, optimizer, jax.random.key(args.seed), input_dim)
    scales = jnp.asarray([c[0] for c in configs], jnp.float32)
    params = [
        {
            n: v[None] * scales[:, None, None] if n == "W" else jnp.stack([v] * k)
            for n, v in p.items()
        }
        for p in ts0.params
    ]
    states = sweep.init_sweep(net, optimizer, params, sweep.stack([ts0.state] * k), key=ts0.key)
    lrs = jnp.asarray([c[1] for c in configs], jnp.float32)
    hyper = {**states.opt_state.hyperparams, "learning_rate": lrs}
    return net, optimizer, states._replace(opt_state=states.opt_state._replace(hyperparams=hyper))


def train_grid(norm, args, ds, configs, log, bar):
    """Train the configurations of one normalization; return per-config results and timings."""
    net, optimizer, states = init_grid(norm, args, ds.x_train.shape[1], configs)
    run_epoch = sweep.make_sweep(net, optimizer)
    x_all, y_all = jnp.asarray(ds.x_train), jnp.asarray(ds.y_train)
    n, k = len(ds.x_train), len(configs)
    steps = max(n // args.batch_size, 1)
    best_val, best, history = np.full(k, -1.0), [None] * k, [[] for _ in range(k)]
    sub = np.random.default_rng(args.seed).permutation(n)[: args.train_acc_samples]
    t_train = 0.0
    for epoch in range(args.epochs):
        rng = np.random.default_rng([args.seed, epoch])
        order = rng.permutation(n)[: steps * args.batch_size].reshape(1, steps, -1)
        compiling = "compiling and " if epoch == 0 else ""
        bar.phase(f"{norm}: {compiling}training {k} nets, epoch {epoch + 1}/{args.epochs}")
        with common.Timer() as t:
            states, out = run_epoch(states, x_all, y_all, jnp.asarray(order))
            losses = np.asarray(jax.device_get(out["loss"][:, 0].T))  # (steps, K)
        t_train += t.wall
        bar.phase(f"{norm}: evaluating {k} nets, epoch {epoch + 1}/{args.epochs}")
        for i, (scale, lr) in enumerate(configs):
            ts = sweep.take(states, i)
            val = jaxbn.evaluate(net, ts.params, ts.state, ds.x_val, ds.y_val)["accuracy"]
            tr = jaxbn.evaluate(net, ts.params, ts.state, ds.x_train[sub], ds.y_train[sub])
            if val > best_val[i]:
                best_val[i], best[i] = val, ((ts.params, ts.state), epoch + 1)
            last, mean = (
                common.finite_or_none(float(v)) for v in (losses[-1, i], losses[:, i].mean())
            )
            rec = dict(epoch=epoch + 1, train_loss_last=last, train_loss_mean=mean,
                       train_accuracy=tr["accuracy"], val_accuracy=val)  # fmt: skip
            history[i].append(rec)
            log.write(event="epoch", norm=norm, weight_scale=scale, lr=lr, **rec)
        bar.done()
    results = []
    for i, (scale, lr) in enumerate(configs):
        (params, state), best_epoch = best[i]
        test = jaxbn.evaluate(net, params, state, ds.x_test, ds.y_test)["accuracy"]
        h = history[i][-1]
        r = dict(norm=norm, weight_scale=scale, lr=lr, best_val_accuracy=float(best_val[i]),
                 best_epoch=int(best_epoch), test_accuracy=test,
                 last_batch_loss=h["train_loss_last"], last_epoch_loss=h["train_loss_mean"],
                 final_train_accuracy=h["train_accuracy"])  # fmt: skip
        log.write(event="config", **r)
        results.append(r)
    return results, {"train_seconds": t_train, "steps": steps * args.epochs}


def best_of(results, norm):  # the best validation accuracy; the smaller lr on ties
    rs = [r for r in results if r["norm"] == norm]
    return max(rs, key=lambda r: (r["best_val_accuracy"], -r["lr"]))


def main(argv=None):
    args = parse_args(argv)
    name, why = choose_dataset(args)
    print(f"E3 data: {why}", flush=True)
    ds = load(args, name)
    configs = [(s, lr) for s in args.weight_scales for lr in args.lrs]
    data = {"name": ds.name, "source": ds.source, "why": why, "n_train": len(ds.x_train),
            "n_val": len(ds.x_val), "n_test": len(ds.x_test)}  # fmt: skip
    run = common.Run(args, data=data)
    results, timing = [], {}
    bar = common.Progress(len(args.norms) * args.epochs, unit="epoch", enabled=not args.no_progress)
    with run.log() as log, bar:
        for norm in args.norms:
            rs, t = train_grid(norm, args, ds, configs, log, bar)
            log.write(event="timing", norm=norm, **t)
            results, timing[norm], b = results + rs, t, best_of(rs, norm)
            print(f"{norm:>9}: best val {b['best_val_accuracy']:.3f} (scale "
                  f"{b['weight_scale']:g}, lr {b['lr']:g}), test {b['test_accuracy']:.3f}; "
                  f"{t['train_seconds']:.0f} s", flush=True)  # fmt: skip
    k = len(configs)
    run.text(
        "results.md", reports.hyperparam_report(results, timing, args, ds, why, k, best_of, SOURCE)
    )
    run.figure("hyperparam_heatmap.png", plots.hyperparam_heatmaps(results, args, ds.name, best_of))
    print(f"source (CIFAR-10, no norm): best val {SOURCE['best_val_accuracy']}, test "
          f"{SOURCE['test_accuracy']}" + ("" if ds.name == "cifar10" else
          f" -- not comparable with this {ds.name} run"))  # fmt: skip
    print(run.wrote())
    return {"results": results, "timing": timing, "dataset": ds.name}


if __name__ == "__main__":
    main()
