"""Smoke test of experiments/hyperparam_search.py (E3) on a tiny generated CIFAR-10 directory."""

import json
import pickle
from pathlib import Path

import jax
import numpy as np
import optax
import pytest

import jaxbn
from tests.helpers import load_experiment

SCRIPT = Path(__file__).parents[1] / "experiments" / "hyperparam_search.py"


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


def reference_last_loss(ds, scale, lr, *, hidden, batch_size, epochs, seed):
    """Train one configuration alone with plain optax.adam on the batches the script documents."""
    net = jaxbn.FullyConnectedNet(hidden, 10, normalization="batchnorm", weight_init=scale)
    opt = optax.adam(lr)
    ts = jaxbn.init_train_state(net, opt, jax.random.key(seed), ds.x_train.shape[1])
    step = jaxbn.make_train_step(net, opt)
    n = len(ds.x_train)
    steps = n // batch_size
    for epoch in range(epochs):
        order = np.random.default_rng([seed, epoch]).permutation(n)[: steps * batch_size]
        for idx in order.reshape(steps, batch_size):
            ts, metrics = step(ts, ds.x_train[idx], ds.y_train[idx])
    return float(metrics["loss"])


def test_hyperparam_search_on_generated_cifar(tmp_path):
    write_cifar(tmp_path / "data" / "cifar-10-batches-py")
    module = load_script()
    out = tmp_path / "out"
    argv = [
        *("--data-dir", str(tmp_path / "data"), "--out-dir", str(out), "--seed", "3"),
        *("--n-train", "100", "--n-val", "20", "--n-test", "25", "--hidden", "8"),
        *("--batch-size", "25", "--epochs", "2", "--weight-scales", "1e-2", "5e-2"),
        *("--lrs", "1e-3", "3e-2", "--norms", "batchnorm"),
        *("--timing-budget", "0.01", "--train-acc-samples", "50", "--no-download"),
    ]
    result = module.main(argv)
    assert result["dataset"] == "cifar10"  # found on disk: no fall-back to Fashion-MNIST
    results = result["results"]
    assert {(r["norm"], r["weight_scale"], r["lr"]) for r in results} == {
        ("batchnorm", s, lr) for s in (1e-2, 5e-2) for lr in (1e-3, 3e-2)
    }
    for r in results:
        assert 0 <= r["test_accuracy"] <= 1 and r["best_epoch"] in (1, 2)
    # The vmapped grid equals each configuration trained alone with its own optax.adam(lr):
    # the learning rate and the weight scale really differ per configuration.
    args = module.parse_args(argv)
    ds = module.load(args, "cifar10")
    assert ds.x_train.shape == (100, 3072) and abs(float(ds.x_train.mean())) < 1e-3
    bn = {
        (r["weight_scale"], r["lr"]): r["last_batch_loss"]
        for r in results
        if r["norm"] == "batchnorm"
    }
    ref = reference_last_loss(ds, 5e-2, 3e-2, hidden=(8,), batch_size=25, epochs=2, seed=3)
    assert bn[5e-2, 3e-2] == pytest.approx(ref, rel=2e-4)
    assert bn[5e-2, 1e-3] != pytest.approx(ref, rel=1e-2)  # another lr, another trajectory
    timing = result["timing"]
    assert all(t["vmap_s"] > 0 and t["loop_s"] > 0 for t in timing.values())

    config = strict_json((out / "config.json").read_text())
    assert config["data"]["name"] == "cifar10" and "CIFAR-10 found" in config["data"]["why"]
    records = [strict_json(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert sum(r["event"] == "epoch" for r in records) == 4 * 2
    assert sum(r["event"] == "config" for r in records) == 4
    md = (out / "results.md").read_text()
    assert "| source (CIFAR-10), none |  |  | 0.528 | 0.527 |  |" in md
    assert "Not comparable" not in md
    assert (out / "hyperparam_heatmap.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_falls_back_to_fashion_mnist_without_cifar(tmp_path):
    module = load_script()
    args = module.parse_args(["--data-dir", str(tmp_path)])
    name, why = module.choose_dataset(args)
    assert name == "fashion_mnist" and "NOT comparable" in why
