"""Run an experiment's training in N local processes (loopback only) and check it on one device.

Used by ``experiments/data_parallel.py --processes N``. The launcher and the loopback
``jax.distributed`` setup are in ``experiments/common/loopback.py`` (the multi-process tests use
them too): every process binds 127.0.0.1 only, and a deadline ends the processes it started.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np


def rel_diff(a, b) -> float:
    """max |a - b| / max(|a| + |b|), over two flat float64 vectors."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(a) + np.abs(b)), 1e-8))


def worker(args, train):
    """One of the processes: ``train(mesh)`` on the mesh of every process's devices."""
    from experiments.common.loopback import initialize_on_loopback

    process = initialize_on_loopback()
    from jaxbn import parallel

    losses, params = train(parallel.data_mesh())
    if process == 0:
        np.savez(Path(args.out_dir) / "processes_result.npz", step_loss=losses, params=params)


def compare_with_one_device(script, args, argv, train):
    """Launch ``args.processes`` copies of ``script --worker``, then compare with ``train()``."""
    from experiments.common.loopback import launch
    from jaxbn._io import write_json

    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    n_dev = args.host_devices or 1
    t0 = time.perf_counter()
    results = launch(script, args.processes, n_dev, [*argv, "--worker"], timeout=args.timeout)
    wall = time.perf_counter() - t0
    for i, r in enumerate(results):
        if r.returncode != 0:
            raise SystemExit(f"process {i} failed (exit {r.returncode}):\n{r.stderr[-3000:]}")
    got = np.load(out / "processes_result.npz")
    ref_losses, ref_params = train()
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
    print(f"wrote {out / 'processes_result.npz'}, {out / 'processes.json'}")
    return record
