"""Data-parallel training of E2's net on a mesh of devices, checked against a single device.

    python experiments/data_parallel.py --data-dir DIR --host-devices 8 \
        --devices 1 2 4 8 --out-dir runs/data_parallel          # a few minutes on 2 cores

Trains the E2 network (784-128-64-32-16-10, He init, ReLU, batch norm, SGD lr 0.1, batch 64) with
`jaxbn.fit(..., mesh=data_mesh(n))` for each device count n, reports steps/s (epochs after the
first, so compilation is excluded) and checks that the final test accuracy, losses and parameters
match the single-device run. On a CPU-only machine, `--host-devices N` splits the CPU into N XLA
devices (it must be set before JAX starts, so the script sets XLA_FLAGS itself); these share the
same cores, so steps/s measures the overhead of the partitioned program, not a speedup. On a GPU
or TPU host, leave `--host-devices` out and list the real device counts.

    python experiments/data_parallel.py --processes 2 --host-devices 2 --dataset digits \
        --epochs 1 --out-dir runs/data_parallel_processes

`--processes N` starts N local processes that talk over 127.0.0.1 only (jax.distributed, gloo CPU
collectives), each with `--host-devices` CPU devices (default 1); they train with
`fit(mesh=data_mesh())` across all of them, and this process then trains on one device and
prints the largest relative difference of the step losses and of the final parameters.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def parse_args(argv):
    from experiments.common import add_common_args

    fmt = argparse.RawDescriptionHelpFormatter
    p = argparse.ArgumentParser(description=__doc__, formatter_class=fmt)
    add_common_args(p, out_dir="runs/data_parallel")
    p.add_argument("--devices", type=int, nargs="+", default=[1, 2, 4, 8])
    p.add_argument("--host-devices", type=int, help="split the CPU into this many devices")
    p.add_argument("--dataset", default="mnist", help="a jaxbn.data name (mnist, mnist_embedded)")
    p.add_argument("--n-train", type=int, default=None, help="use only this many training rows")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--processes", type=int, help="train across this many local processes")
    p.add_argument("--timeout", type=float, default=1800, help="seconds the processes may take")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)  # set by --processes
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=0.1)
    # float32 round-off (1e-7 per step) compounds over thousands of SGD steps:
    p.add_argument("--acc-tol", type=float, default=0.005,
                   help="largest |test accuracy - first run's| that counts as a match")  # fmt: skip
    return p.parse_args(argv)


def flat(params) -> np.ndarray:
    """Every parameter in one float64 vector."""
    import jax

    return np.concatenate([np.ravel(np.asarray(a, np.float64)) for a in jax.tree.leaves(params)])


def load(args):
    from jaxbn.data import load_dataset

    return load_dataset(args.dataset, args.data_dir, val_size=1 / 20, seed=args.seed,
                        n_train=args.n_train, progress=False)  # fmt: skip


def fit_e2(args, ds, mesh=None):
    """E2's net trained with ``fit`` on ``ds`` (on ``mesh`` if given)."""
    import optax

    import jaxbn

    net = jaxbn.FullyConnectedNet((128, 64, 32, 16), 10, normalization="batchnorm")
    return net, jaxbn.fit(
        net, optax.sgd(args.lr), ds.x_train, ds.y_train, ds.x_val, ds.y_val, epochs=args.epochs,
        batch_size=args.batch_size, seed=args.seed, progress=False, mesh=mesh,
    )  # fmt: skip


def losses_and_params(result):
    return np.asarray(result.history.step_loss), flat(result.train_state.params)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    from experiments.common import processes

    train = lambda mesh=None: losses_and_params(fit_e2(args, load(args), mesh)[1])  # noqa: E731
    if args.processes and not args.worker:
        return processes.compare_with_one_device(__file__, args, argv, train)
    if args.host_devices and not args.worker:
        os.environ["XLA_FLAGS"] = (
            os.environ.get("XLA_FLAGS", "")
            + f" --xla_force_host_platform_device_count={args.host_devices}"
        )
    if args.worker:
        return processes.worker(args, train)
    import jax

    import jaxbn
    from experiments.common import MetricsLog, markdown_table, start_run, write_table
    from jaxbn import parallel

    if jax.device_count() < max(args.devices):
        raise SystemExit(
            f"asked for up to {max(args.devices)} devices but JAX sees {jax.device_count()}; "
            "on a CPU-only machine pass --host-devices N"
        )
    out, _ = start_run(args, device_kind=jax.devices()[0].device_kind)
    ds = load(args)
    print(f"data: {ds.source}; train {len(ds.x_train)}, val {len(ds.x_val)}, test {len(ds.x_test)}")

    rows, reference = [], None
    with MetricsLog(out / "metrics.jsonl") as log:
        for n in args.devices:
            mesh = parallel.data_mesh(n)
            t0 = time.perf_counter()
            net, result = fit_e2(args, ds, mesh)
            wall = time.perf_counter() - t0
            h = result.history
            test = jaxbn.evaluate(net, result.train_state.params, result.train_state.state,
                                  ds.x_test, ds.y_test)  # fmt: skip
            steps = np.diff([0, *h.epoch_steps])
            later = slice(1, None) if len(steps) > 1 else slice(None)
            steps_per_s = float(np.sum(steps[later]) / np.sum(h.epoch_seconds[later]))
            record = {
                "devices": n, "steps_per_s": steps_per_s, "wall_s": wall,
                "test_accuracy": float(test["accuracy"]), "test_loss": float(test["loss"]),
                "final_val_accuracy": h.val_accuracy[-1], "final_step_loss": h.step_loss[-1],
            }  # fmt: skip
            if reference is None:
                reference = (h, result.train_state.params, record)
            h0, params0, rec0 = reference
            record["params_rel_error_vs_first"] = processes.rel_diff(
                flat(params0), flat(result.train_state.params)
            )
            record["max_step_loss_diff_vs_first"] = float(
                np.max(np.abs(np.asarray(h.step_loss) - np.asarray(h0.step_loss)))
            )
            record["test_accuracy_diff_vs_first"] = record["test_accuracy"] - rec0["test_accuracy"]
            log.write(**record)
            rows.append(record)
            print(f"{n} device(s): {steps_per_s:7.1f} steps/s, test accuracy "
                  f"{record['test_accuracy']:.4f} ({record['test_accuracy_diff_vs_first']:+.4f} "
                  f"vs {args.devices[0]}), params rel. error "
                  f"{record['params_rel_error_vs_first']:.1e}", flush=True)  # fmt: skip
    table = markdown_table(
        ["devices", "steps/s", "test accuracy", "Δ test acc. vs first", "params rel. error",
         "max |Δ step loss|"],
        [[r["devices"], f"{r['steps_per_s']:.1f}", f"{r['test_accuracy']:.4f}",
          f"{r['test_accuracy_diff_vs_first']:+.4f}", f"{r['params_rel_error_vs_first']:.1e}",
          f"{r['max_step_loss_diff_vs_first']:.1e}"] for r in rows],
    )  # fmt: skip
    write_table(out / "results.md", f"# Data-parallel training ({jax.devices()[0].platform})\n\n"
                + table)  # fmt: skip
    worst = max(abs(r["test_accuracy_diff_vs_first"]) for r in rows)
    verdict = "MATCH" if worst <= args.acc_tol else "MISMATCH"
    print(f"{verdict}: largest test-accuracy difference {worst:.4f} (tolerance {args.acc_tol})")
    print(f"wrote {out / 'config.json'}, {out / 'metrics.jsonl'}, {out / 'results.md'}")
    return rows


if __name__ == "__main__":
    main()
