"""Data-parallel training of E2's net on a mesh of devices, checked against a single device.

    python experiments/data_parallel.py --data-dir ../shared/data/mnist --host-devices 8 \
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

    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_common_args(p, out_dir="runs/data_parallel")
    p.add_argument("--devices", type=int, nargs="+", default=[1, 2, 4, 8])
    p.add_argument(
        "--host-devices", type=int, default=None, help="split the CPU into this many devices"
    )
    p.add_argument("--dataset", default="mnist", help="a jaxbn.data name (mnist, mnist_embedded)")
    p.add_argument("--n-train", type=int, default=None, help="use only this many training rows")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument(
        "--processes", type=int, default=None, help="train across this many local processes"
    )
    p.add_argument("--timeout", type=float, default=1800, help="seconds the processes may take")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)  # set by --processes
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument(
        "--acc-tol",
        type=float,
        default=0.005,
        help="largest |test accuracy - first run's| that counts as a match (float32 round-off, "
        "1e-7 per step, compounds over thousands of SGD steps)",
    )
    return p.parse_args(argv)


def rel_diff(a, b) -> float:
    """max |a - b| / max(|a| + |b|), over two flat float64 vectors."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(a) + np.abs(b)), 1e-8))


def fit_e2(args, mesh=None):
    """E2's net trained with ``fit`` (on ``mesh`` if given): ``(step losses, flat params)``."""
    import jax
    import optax

    import jaxbn
    from jaxbn.data import load_dataset

    ds = load_dataset(
        args.dataset, args.data_dir, val_size=1 / 20, seed=args.seed, n_train=args.n_train,
        progress=False,
    )  # fmt: skip
    net = jaxbn.FullyConnectedNet((128, 64, 32, 16), 10, normalization="batchnorm")
    result = jaxbn.fit(
        net, optax.sgd(args.lr), ds.x_train, ds.y_train, ds.x_val, ds.y_val, epochs=args.epochs,
        batch_size=args.batch_size, seed=args.seed, progress=False, mesh=mesh,
    )  # fmt: skip
    leaves = jax.tree.leaves(result.train_state.params)
    flat = np.concatenate([np.ravel(np.asarray(a, np.float64)) for a in leaves])
    return np.asarray(result.history.step_loss), flat


def run_worker(args):
    """One of the ``--processes`` processes: ``fit`` on the mesh of every process's devices."""
    from tests.multiprocess import initialize_on_loopback

    process = initialize_on_loopback()
    from jaxbn import parallel

    losses, params = fit_e2(args, mesh=parallel.data_mesh())
    if process == 0:
        np.savez(Path(args.out_dir) / "processes_result.npz", step_loss=losses, params=params)


def run_processes(args, argv):
    """Launch ``--processes`` local processes, then check their result against one device."""
    from tests.multiprocess import launch

    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    n_dev = args.host_devices or 1
    t0 = time.perf_counter()
    results = launch(__file__, args.processes, n_dev, [*argv, "--worker"], timeout=args.timeout)
    wall = time.perf_counter() - t0
    for i, r in enumerate(results):
        if r.returncode != 0:
            raise SystemExit(f"process {i} failed (exit {r.returncode}):\n{r.stderr[-3000:]}")
    from jaxbn._io import write_json

    got = np.load(out / "processes_result.npz")
    ref_losses, ref_params = fit_e2(args)
    record = {
        "processes": args.processes, "devices_per_process": n_dev, "wall_s": wall,
        "steps": len(ref_losses),
        "step_loss_rel_diff": rel_diff(ref_losses, got["step_loss"]),
        "params_rel_diff": rel_diff(ref_params, got["params"]),
    }  # fmt: skip
    write_json(out / "processes.json", record)
    print(
        f"{args.processes} processes x {n_dev} device(s) vs one device, {len(ref_losses)} steps: "
        f"max relative difference {record['step_loss_rel_diff']:.1e} (step losses), "
        f"{record['params_rel_diff']:.1e} (final parameters)"
    )
    return record


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    if args.processes and not args.worker:
        return run_processes(args, argv)
    if args.host_devices and not args.worker:
        os.environ["XLA_FLAGS"] = (
            os.environ.get("XLA_FLAGS", "")
            + f" --xla_force_host_platform_device_count={args.host_devices}"
        )
    if args.worker:
        return run_worker(args)
    import jax
    import optax

    import jaxbn
    from experiments.common import MetricsLog, start_run, write_table
    from jaxbn import parallel
    from jaxbn.benchmark import markdown_table
    from jaxbn.data import load_dataset

    if jax.device_count() < max(args.devices):
        raise SystemExit(
            f"asked for up to {max(args.devices)} devices but JAX sees {jax.device_count()}; "
            "on a CPU-only machine pass --host-devices N"
        )
    out, _ = start_run(args, device_kind=jax.devices()[0].device_kind)
    ds = load_dataset(
        args.dataset, args.data_dir, val_size=1 / 20, seed=args.seed, n_train=args.n_train
    )
    print(f"data: {ds.source}; train {len(ds.x_train)}, val {len(ds.x_val)}, test {len(ds.x_test)}")
    net = jaxbn.FullyConnectedNet((128, 64, 32, 16), 10, normalization="batchnorm")
    opt = optax.sgd(args.lr)

    rows, reference = [], None
    with MetricsLog(out / "metrics.jsonl") as log:
        for n in args.devices:
            mesh = parallel.data_mesh(n)
            t0 = time.perf_counter()
            result = jaxbn.fit(
                net, opt, ds.x_train, ds.y_train, ds.x_val, ds.y_val, epochs=args.epochs,
                batch_size=args.batch_size, seed=args.seed, progress=False, mesh=mesh,
            )  # fmt: skip
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
            flat = [np.ravel(np.asarray(a, np.float64)) for a in jax.tree.leaves(params0)]
            flat_n = [
                np.ravel(np.asarray(a, np.float64))
                for a in jax.tree.leaves(result.train_state.params)
            ]
            a, b = np.concatenate(flat), np.concatenate(flat_n)
            record["params_rel_error_vs_first"] = float(
                np.max(np.abs(a - b)) / max(np.max(np.abs(a) + np.abs(b)), 1e-8)
            )
            record["max_step_loss_diff_vs_first"] = float(
                np.max(np.abs(np.asarray(h.step_loss) - np.asarray(h0.step_loss)))
            )
            record["test_accuracy_diff_vs_first"] = record["test_accuracy"] - rec0["test_accuracy"]
            log.write(**record)
            rows.append(record)
            print(
                f"{n} device(s): {steps_per_s:7.1f} steps/s, test accuracy "
                f"{record['test_accuracy']:.4f} (diff vs {args.devices[0]}: "
                f"{record['test_accuracy_diff_vs_first']:+.4f}), params rel. error "
                f"{record['params_rel_error_vs_first']:.1e}",
                flush=True,
            )
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
    print(f"wrote {out / 'results.md'}")
    return rows


if __name__ == "__main__":
    main()
