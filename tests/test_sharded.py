"""axis_name: 4 CPU devices holding 4 shards compute what one device computes on the whole batch."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import jaxbn

WORKER = Path(__file__).with_name("sharded_worker.py")


@pytest.fixture(scope="module")
def sharded_errors():
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(WORKER.parents[1]), env.get("PYTHONPATH")])
    )
    proc = subprocess.run(
        [sys.executable, str(WORKER)], capture_output=True, text=True, env=env, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("use_mask", [False, True], ids=["full", "masked"])
@pytest.mark.parametrize("backward", jaxbn.BACKWARDS)
def test_shard_map_matches_single_device(sharded_errors, backward, use_mask):
    errors = sharded_errors[f"{backward}{'-mask' if use_mask else ''}"]
    for what, err in errors.items():
        assert err <= 1e-12, (what, err)
