"""Eager jax.shard_map (no jit) around batch_norm(axis_name=...) on 8 CPU devices,
with an uneven masked batch (30 real rows of 32), equals one device on the real rows."""

from pathlib import Path

import pytest

import jaxbn
from tests.helpers import run_worker

WORKER = Path(__file__).parents[1] / "reliability_sharded_worker.py"


@pytest.fixture(scope="module")
def eager_errors():
    return run_worker(WORKER, n_devices=8)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["eager", "eager-forward"])
@pytest.mark.parametrize("backward", jaxbn.BACKWARDS)
def test_eager_shard_map_matches_single_device(eager_errors, backward, mode):
    errors = dict(eager_errors[backward][mode])
    padding = errors.pop("dx_padding_abs", 0.0)
    assert padding == 0.0  # the padding rows' true gradient is exactly zero
    for what, err in errors.items():
        assert err <= 1e-12, (what, err)
