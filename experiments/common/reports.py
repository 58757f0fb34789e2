"""The results.md text of each experiment: its tables and the sentences that frame them."""

from __future__ import annotations

import numpy as np

from experiments.common.tables import markdown_table


def weight_sweep_report(stds, acc, diverged, t, args, data_line) -> str:
    seeds = acc["batchnorm"].shape[0]

    def final(name, i):
        a, k = acc[name][:, i, -1], int(diverged[name][:, i].sum())
        text = f"{a[0]:.3f}" if seeds == 1 else f"{a.mean():.3f} [{a.min():.3f}, {a.max():.3f}]"
        return text + ("" if not k else " (diverged)" if seeds == 1 else f" (diverged {k}/{seeds})")

    def first(name, i):
        hits = np.flatnonzero(acc[name][:, i].mean(0) >= 0.5)
        return str(hits[0]) if hits.size else "never"

    rows = [
        [
            f"{s:.3g}",
            *(final(n, i) for n in ("batchnorm", "none")),
            *(first(n, i) for n in ("batchnorm", "none")),
        ]
        for i, s in enumerate(stds)
    ]
    w = "" if seeds == 1 else f", mean [min, max] over {seeds} seeds"
    header = [
        "weight std",
        f"BN: final train accuracy{w}",
        f"no BN: final train accuracy{w}",
        "BN: first epoch >= 0.5",
        "no BN: first epoch >= 0.5",
    ]
    mode = "evaluation mode (running" if args.bn_accuracy == "running" else "training mode (batch"
    if getattr(args, "protocol", "jaxbn") == "textbook":
        header[3:] = ["BN: first point >= 0.5", "no BN: first point >= 0.5"]
        steps = 1 + args.epochs * args.steps_per_epoch
        what = f"textbook protocol, {steps} steps"
        points = f"point e is after step 1 + {args.steps_per_epoch} e (no point before training)"
    else:
        what = f"{args.epochs} epochs of {args.steps_per_epoch} steps"
        points = "epoch 0 is before the first step"
    return (
        f"# E1: weight-scale sweep, {what}\n\n"
        f"Data: {data_line}. Accuracy on the training images; {points}. "
        f"BN nets measured in {mode} statistics). Diverged: the loss is no longer finite.\n\n"
        + markdown_table(header, rows)
        + f"\nCompile {t['compile_s']:.1f} s (CPU {t['compile_cpu_s']:.1f} s), run "
        f"{t['run_s']:.1f} s (CPU {t['run_cpu_s']:.1f} s); {t['backend']}.\n"
    )


def fmt(v: float) -> str:
    return f"{v:.3g}" if v != 0 else "0"


def activation_stats_report(results, prep, symmetry, args) -> str:
    header = ["activation", "init", "BN", *[f"layer {i + 1}" for i in range(args.depth)]]

    def table(key):
        return markdown_table(
            header,
            [
                [r["activation"], r["label"], "yes" if r["batchnorm"] else "no", *map(fmt, r[key])]
                for r in results
            ],
        )

    prep_rows = [
        [
            k,
            "[{feature_mean_min:.3g}, {feature_mean_max:.3g}]".format(**d),
            "[{feature_std_min:.3g}, {feature_std_max:.3g}]".format(**d),
        ]
        for k, d in prep.items()
    ]
    sym_keys = ("activation_spread", "gradient_spread", "max_abs_activation", "max_abs_gradient")
    sym_rows = [
        [
            s["activation"],
            s["init"],
            "yes" if s["batchnorm"] else "no",
            *(fmt(s[k]) for k in sym_keys),
        ]
        for s in symmetry
    ]
    return (
        f"# E5: activation statistics, {args.depth} layers of {args.width} units\n\n"
        f"Input: {args.examples:,} x {args.input_dim} Gaussian features after the preprocessing "
        "step (per feature: subtract the mean, divide by the std):\n\n"
        + markdown_table(["input", "feature means in", "feature stds in"], prep_rows)
        + "\nStandard deviation of each layer's activations (all units and examples):\n\n"
        + table("std")
        + "\nMean of each layer's activations:\n\n"
        + table("mean")
        + f"\nSymmetry check: {args.symmetry_depth} layers of {args.width} units and a 10-way "
        f"softmax head, {args.symmetry_steps} steps of full-batch SGD (lr {args.symmetry_lr}) on "
        f"{args.symmetry_examples} examples with random labels. Spread: the largest difference "
        "between two units of a layer (activations; weight-gradient columns), over all hidden "
        "layers and steps. A random init for contrast.\n\n"
        + markdown_table(
            ["activation", "init", "BN", *(k.replace("_", " ") for k in sym_keys)], sym_rows
        )
    )


def regularization_report(rows, datasets, args) -> str:
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
            markdown_table(
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


def hyperparam_report(results, timing, args, ds, why, configs_per_norm, best_of, source) -> str:
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
    source_row = ["source (CIFAR-10), none", "", "", acc(source["best_val_accuracy"]),
                  acc(source["test_accuracy"]), ""]  # fmt: skip
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
        f"{args.epochs} epochs, the {configs_per_norm} configurations of each "
        "normalization; each configuration keeps its best epoch by validation accuracy. Seed "
        f"{args.seed}.\n\nBest configuration per normalization (by validation accuracy):\n\n"
        + markdown_table(header, rows)
        + f"\n{comparable}\n\nEvery configuration:\n\n"
        + grid
    )


def convergence_report(
    summary, runs, ds, steps_per_epoch, eval_every, args, load_avg, source, backend
) -> str:
    def rng(lo, hi, fmt):
        return "" if lo == hi else f" ({fmt(lo)}-{fmt(hi)})"

    def pct(a):
        return f"{100 * a:.2f}%"

    rows = []
    for name in source:
        src = source[name]
        n_src = src["iteration_index"] + 1
        rows.append(
            [
                f"source, {name}",
                f"{src['epoch_index'] + 1} (reported {src['epoch_index']}, 0-based)",
                f"{n_src / 891:.2f}",  # the source: ceil(57,000 / 64) = 891 steps per epoch
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
        f"{len(ds.x_test):,} test ({args.val_split} validation split). Net "
        f"{'-'.join(map(str, args.hidden))}, He {args.init.replace('_', '-')} init, gamma/beta "
        f"step on the batch {args.bn_param_grad}, SGD lr "
        f"{args.lr}, batch {args.batch_size} ({steps_per_epoch} steps per epoch), validation loss "
        f"every {eval_every} steps, at most {args.max_epochs} epochs. "
        + (seeds if args.repeats > 1 else f"seed {args.seed}")
        + ".\n\n"
        + markdown_table(header, rows)
        + "\nThe source's epoch and iteration are 0-based indices (see the script's docstring): "
        "shown here as counts. Epochs = steps / steps per epoch (the source: 891 per epoch, ours: "
        f"{steps_per_epoch}). ms / iteration: one jitted SGD step alone (median and quartiles "
        f"of {summary['BN']['timed_steps']} steps each, the two nets interleaved, batch "
        f"{args.batch_size}, {backend}; load average {load_avg}). Fit wall time "
        "includes the validation checks, the per-epoch evaluations and, for the first seed, "
        "compilation.\n\n" + per_seed
    )


def convergence_summary(runs, steps_per_epoch, ms, variants):
    """Per-variant mean (and range over seeds) of the headline numbers."""
    out = {}
    for name in variants:
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
