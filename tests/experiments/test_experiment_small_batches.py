"""Smoke test of experiments/small_batches.py (E7) on a few of the embedded digits, offline."""

import json
import math
from pathlib import Path

import pytest

from tests.helpers import load_experiment

SCRIPT = Path(__file__).parents[2] / "experiments" / "small_batches.py"


def test_small_batches_smoke(tmp_path):
    pytest.importorskip("mlxtend")
    module = load_experiment(SCRIPT)
    argv = ["--out-dir", str(tmp_path), "--n-train", "96", "--epochs", "1", "--batch-sizes", "8"]
    results = module.main([*argv, "--ghost", "4", "--variants", "BN ghost", "renorm"])
    assert set(results) == {("BN ghost", 8), ("renorm", 8)}
    for r in results.values():
        assert 0.0 <= r["test_accuracy"] <= 1.0 and math.isfinite(r["train_eval_gap"])
        assert r["steps"] == 12  # one epoch of 96 / 8
    lines = [json.loads(s) for s in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [(r["variant"], r["batch_size"]) for r in lines] == [("BN ghost", 8), ("renorm", 8)]
    table = (tmp_path / "results.md").read_text()
    assert "| 8 | - | - |" in table and "Ioffe, 2017" in table
    assert (tmp_path / "small_batches.png").stat().st_size > 0
    assert json.loads((tmp_path / "config.json").read_text())["variants"] == ["BN ghost", "renorm"]
