"""Every benchmark script answers --help before importing JAX (so in well under a second)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
# Run the module as `python -m` would, then report whether JAX got imported.
PROBE = """
import json, runpy, sys
sys.argv = ["prog", "--help"]
try:
    {run}
except SystemExit as e:
    code = e.code
print(json.dumps({{"code": code, "jax": "jax" in sys.modules}}))
"""


@pytest.mark.parametrize(
    "run",
    [
        "runpy.run_module('benchmarks.peers_op', run_name='__main__')",
        "runpy.run_module('benchmarks.peers_mlp', run_name='__main__')",
        "runpy.run_module('benchmarks.machine', run_name='__main__')",
        "runpy.run_module('benchmarks.variants', run_name='__main__')",
        "runpy.run_path('experiments/backward_speed.py', run_name='__main__')",
    ],
    ids=["peers_op", "peers_mlp", "machine", "variants", "backward_speed"],
)
def test_help_exits_before_jax_is_imported(run):
    proc = subprocess.run(
        [sys.executable, "-c", PROBE.format(run=run)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert "usage:" in proc.stdout, proc.stderr[-2000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report == {"code": 0, "jax": False}
