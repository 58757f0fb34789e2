"""experiments/common: the metrics log, the run directory, tables; scripts answer --help at once."""

import json
import os
import subprocess
import sys
from argparse import Namespace
from pathlib import Path

import pytest

from experiments.common import MetricsLog, Run, markdown_table

ROOT = Path(__file__).parents[2]
SCRIPTS = [
    "weight_init_sweep.py",
    "convergence.py",
    "hyperparam_search.py",
    "activation_stats.py",
    "regularization.py",
]


def test_metrics_log_is_strict_json_lines(tmp_path):
    path = tmp_path / "metrics.jsonl"
    with MetricsLog(path) as log:
        log.write(step=1, loss=float("nan"), acc=[0.5, float("inf")], nested={"x": -float("inf")})
        assert path.read_text().count("\n") == 1  # flushed before close
        log.write(step=2, loss=0.25)
    lines = path.read_text().splitlines()
    records = [json.loads(line, parse_constant=lambda c: 1 / 0) for line in lines]
    assert records == [
        {"step": 1, "loss": None, "acc": [0.5, None], "nested": {"x": None}},
        {"step": 2, "loss": 0.25},
    ]


def test_run_lists_every_file_it_wrote(tmp_path):
    run = Run(Namespace(out_dir=tmp_path / "out", seed=3), extra=[1, 2])
    with run.log() as log:
        log.write(a=1)
    run.text("results.md", markdown_table(["a", "b"], [[1, 2], ["x", None]]))
    run.json("summary.json", {"v": float("nan")})
    on_disk = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert on_disk == ["config.json", "metrics.jsonl", "results.md", "summary.json"]
    assert sorted(p.name for p in run.files) == on_disk
    assert all(name in run.wrote() for name in on_disk)
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["seed"] == 3 and config["extra"] == [1, 2] and "jax" in config["environment"]
    assert json.loads((tmp_path / "out" / "summary.json").read_text()) == {"v": None}
    md = (tmp_path / "out" / "results.md").read_text()
    assert md == "| a | b |\n| --- | --- |\n| 1 | 2 |\n| x | None |\n"


@pytest.mark.parametrize("script", SCRIPTS)
def test_help_answers_without_importing_jax(script):
    """--help is parsed before the slow imports: no jax, jaxbn or matplotlib module is loaded."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", str(ROOT / "experiments" / script), "--help"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert proc.returncode == 0 and proc.stdout.startswith("usage:")
    imported = {line.split("|")[-1].strip().split(".")[0] for line in proc.stderr.splitlines()}
    assert not imported & {"jax", "jaxbn", "matplotlib", "numpy"}, sorted(imported)
