"""Two JAX processes x two CPU devices on 127.0.0.1 (jax.distributed, gloo) match one device.

One test, one launch: the worker (multiprocess_worker.py) runs make_train_step(mesh=...) for
three steps (the last an uneven 17 + 13 row batch from process_batch), the same uneven step as
explicit shard_map code (train_step_fn(axis_name=...)), a masked shard_map batch_norm value and
gradient, and fit(mesh=...) for one epoch with a checkpoint, resumed for a second; process 0
compares each with the same computation on one device.
"""

import json
from pathlib import Path

import pytest

from experiments.common.loopback import cpu_collectives_missing, launch

WORKER = Path(__file__).with_name("multiprocess_worker.py")
FLOAT32_TOL = 1e-6  # float32 round-off from a different reduction order, nothing more


@pytest.mark.slow
def test_two_processes_match_one_device(tmp_path):
    reason = cpu_collectives_missing()
    if reason is not None:
        pytest.skip(reason)
    results = launch(WORKER, n_processes=2, n_devices=2, args=[tmp_path], timeout=300)
    for i, r in enumerate(results):
        assert r.returncode == 0, f"process {i} failed:\n{r.stderr[-4000:]}"
    reports = [json.loads(r.stdout.strip().splitlines()[-1]) for r in results]
    assert [rep["process"] for rep in reports] == [0, 1]
    # Every process sees the same replicated results, and talked over loopback only.
    for key in ("step_losses", "accuracy", "fit_step_losses"):
        assert reports[0][key] == reports[1][key], key
    for rep in reports:
        assert rep["tcp"] and all(a.rsplit(":", 1)[0].endswith("127.0.0.1") for a in rep["tcp"])
    errors = reports[0]["errors"]
    assert len(errors) == 14
    for what, err in errors.items():
        assert err <= FLOAT32_TOL, (what, err)
    assert reports[0]["same_counters"] == [True, True, True]
    assert len(reports[0]["fit_step_losses"]) == 6  # 2 epochs x 3 steps, 1 of them resumed
    # Process 0 alone shows the progress bar and writes the checkpoint.
    assert "step/s" in results[0].stderr and "step/s" not in results[1].stderr
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.npz"]
