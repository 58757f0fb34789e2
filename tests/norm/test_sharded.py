"""axis_name: 4 CPU devices holding 4 shards compute what one device computes on the whole batch."""

from pathlib import Path

import pytest

import jaxbn
from tests.helpers import run_worker

WORKER = Path(__file__).parents[1] / "sharded_worker.py"


@pytest.fixture(scope="module")
def sharded_errors():
    return run_worker(WORKER, n_devices=4)


@pytest.mark.parametrize("use_mask", [False, True], ids=["full", "masked"])
@pytest.mark.parametrize("backward", jaxbn.BACKWARDS)
def test_shard_map_matches_single_device(sharded_errors, backward, use_mask):
    errors = sharded_errors[f"{backward}{'-mask' if use_mask else ''}"]
    for what, err in errors.items():
        assert err <= 1e-12, (what, err)
