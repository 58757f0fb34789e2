"""Smoke test of experiments/hyperparam_search.py (E3) on a tiny generated CIFAR-10 directory."""

import json
import pickle
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import load_experiment

SCRIPT = Path(__file__).parents[2] / "experiments" / "hyperparam_search.py"
pytestmark = pytest.mark.slow


def load_script():
    return load_experiment(SCRIPT)


def write_cifar(directory: Path, rows: int = 30) -> None:
    """The six CIFAR-10 batch files (pickled dicts, like the official ones) with random images."""
    directory.mkdir(parents=True)
    rng = np.random.default_rng(0)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:
        batch = {
            b"data": rng.integers(0, 256, (rows, 3072), dtype=np.uint8),
            b"labels": [int(v) for v in rng.integers(0, 10, rows)],
        }
        (directory / name).write_bytes(pickle.dumps(batch, protocol=4))


def strict_json(text):
    def reject(name):
        raise ValueError(f"non-standard JSON constant {name}")

    return json.loads(text, parse_constant=reject)


def test_hyperparam_search_on_generated_cifar(tmp_path):
    write_cifar(tmp_path / "data" / "cifar-10-batches-py")
    module = load_script()
    out = tmp_path / "out"
    argv = [
        *("--data-dir", str(tmp_path / "data"), "--out-dir", str(out), "--seed", "3"),
        *("--n-train", "100", "--n-val", "20", "--n-test", "25", "--hidden", "8"),
        *("--batch-size", "25", "--epochs", "2", "--weight-scales", "1e-2", "5e-2"),
        *("--lrs", "1e-3", "3e-2", "--norms", "batchnorm"),
        *("--train-acc-samples", "50", "--no-download", "--no-progress"),
    ]
    result = module.main(argv)
    assert result["dataset"] == "cifar10"  # found on disk: no fall-back to Fashion-MNIST
    results = result["results"]
    assert {(r["norm"], r["weight_scale"], r["lr"]) for r in results} == {
        ("batchnorm", s, lr) for s in (1e-2, 5e-2) for lr in (1e-3, 3e-2)
    }
    for r in results:
        assert 0 <= r["test_accuracy"] <= 1 and r["best_epoch"] in (1, 2)
    # The per-configuration learning rate and weight scale really differ (jaxbn.train.sweep's tests
    # check that each vmapped configuration equals the same one trained alone).
    args = module.parse_args(argv)
    ds = module.load(args, "cifar10")
    assert ds.x_train.shape == (100, 3072) and abs(float(ds.x_train.mean())) < 1e-3
    last = {(r["weight_scale"], r["lr"]): r["last_batch_loss"] for r in results}
    assert len({round(v, 6) for v in last.values()}) == 4
    assert all(t["train_seconds"] > 0 for t in result["timing"].values())

    config = strict_json((out / "config.json").read_text())
    assert config["data"]["name"] == "cifar10" and "CIFAR-10 found" in config["data"]["why"]
    records = [strict_json(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert sum(r["event"] == "epoch" for r in records) == 4 * 2
    assert sum(r["event"] == "config" for r in records) == 4
    md = (out / "results.md").read_text()
    assert "| source (CIFAR-10), none |  |  | 0.528 | 0.527 |  |" in md
    assert "Not comparable" not in md
    assert (out / "hyperparam_heatmap.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["config.json", "metrics.jsonl", "results.md", "hyperparam_heatmap.png"]
    )


def test_falls_back_to_fashion_mnist_without_cifar(tmp_path):
    module = load_script()
    args = module.parse_args(["--data-dir", str(tmp_path)])
    name, why = module.choose_dataset(args)
    assert name == "fashion_mnist" and "NOT comparable" in why
