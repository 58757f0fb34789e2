"""Smoke test of experiments/convergence.py (E2) on tiny generated MNIST files, offline."""

import gzip
import json
import struct
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import load_experiment

SCRIPT = Path(__file__).parents[2] / "experiments" / "convergence.py"
pytestmark = pytest.mark.slow


def load_script():
    return load_experiment(SCRIPT)


def write_idx(path: Path, array: np.ndarray) -> None:
    magic = 0x0800 | array.ndim  # unsigned bytes, ndim dimensions
    header = struct.pack(f">I{array.ndim}I", magic, *array.shape)
    path.write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes(), mtime=0))


def write_striped_mnist(directory: Path, n_train: int, n_test: int, seed: int = 0) -> None:
    """MNIST-shaped IDX files a small net can learn: label k lights rows 2k and 2k + 1."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = rng.integers(0, 10, n)
        images = rng.integers(0, 60, (n, 28, 28))
        for i, k in enumerate(labels):
            images[i, 2 * k : 2 * k + 2] = 255
        write_idx(directory / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(directory / f"{prefix}-labels-idx1-ubyte.gz", labels)


def strict_json(text):
    def reject(name):
        raise ValueError(f"non-standard JSON constant {name}")

    return json.loads(text, parse_constant=reject)


def test_convergence_reaches_the_target_and_writes_results(tmp_path):
    write_striped_mnist(tmp_path / "data" / "mnist", n_train=400, n_test=200)
    out = tmp_path / "out"
    result = load_script().main(
        [
            *("--data-dir", str(tmp_path / "data"), "--out-dir", str(out)),
            *("--hidden", "8", "--batch-size", "38", "--max-epochs", "8"),
            *("--target-loss", "0.3", "--checks-per-epoch", "5", "--repeats", "1"),
            *("--timing-budget", "0.05", "--no-download", "--no-progress"),
        ]
    )
    # 380 training images (1/20 held out), batch 38: 10 steps per epoch, a check every 2 steps.
    assert result["steps_per_epoch"] == 10
    config = strict_json((out / "config.json").read_text())
    assert config["eval_every"] == 2 and config["data"]["n_val"] == 20
    for run in result["runs"]:
        assert run["reached"], run["variant"]
        # It stops at a check, before the epoch limit, and the checked loss is under the target.
        assert run["steps"] % 2 == 0 and run["steps"] < 8 * 10
        assert run["checks"][-1] == (run["steps"], pytest.approx(run["final_val_loss"]))
        assert run["final_val_loss"] <= 0.3
        assert run["test_accuracy"] > 0.8  # chance: 0.1
    records = [strict_json(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    events = {r["event"] for r in records}
    assert events == {"check", "epoch", "run", "summary"}
    check_steps = [r["step"] for r in records if r["event"] == "check" and r["variant"] == "BN"]
    assert check_steps == sorted(set(check_steps))  # one record per check, in order
    summary = result["summary"]
    assert set(summary) == {"no BN", "BN"} and all(s["ms_per_step"] > 0 for s in summary.values())
    md = (out / "results.md").read_text()
    assert "| **jaxbn, BN** |" in md and "| source, no BN | 7 (reported 6, 0-based) |" in md
    assert (out / "convergence.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_convergence_without_mnist_names_the_offline_alternative(tmp_path):
    with pytest.raises(SystemExit) as info:
        load_script().main(
            ["--data-dir", str(tmp_path), "--out-dir", str(tmp_path / "out"), "--no-download"]
        )
    message = str(info.value)
    assert "MNIST files missing" in message and "--dataset mnist_embedded" in message
    assert not (tmp_path / "out").exists()  # nothing written before the data is found


def test_together_stops_where_fit_stops_with_the_reference_code_options(tmp_path):
    write_striped_mnist(tmp_path / "data" / "mnist", n_train=400, n_test=200)
    common = [
        *("--data-dir", str(tmp_path / "data"), "--hidden", "8", "--batch-size", "38"),
        *("--max-epochs", "8", "--target-loss", "0.3", "--checks-per-epoch", "5"),
        *("--repeats", "2", "--timing-budget", "0.05", "--no-download", "--no-progress"),
        "--reference-code",
    ]
    script = load_script()
    alone = script.main([*common, "--out-dir", str(tmp_path / "alone")])
    together = script.main([*common, "--out-dir", str(tmp_path / "together"), "--together"])
    config = strict_json((tmp_path / "together" / "config.json").read_text())
    assert (config["init"], config["bn_param_grad"], config["val_split"]) == (
        "fan_out", "sum", "first")  # fmt: skip

    def stops(result):
        return {(r["variant"], r["seed"]): (r["reached"], r["steps"]) for r in result["runs"]}

    # The vmapped seeds follow fit's batches and stop rule: the same stop step per run.
    assert stops(together) == stops(alone)
    assert sum(reached for reached, _ in stops(alone).values()) >= 3  # (here one BN run is not)
    by_key = {(r["variant"], r["seed"]): r for r in alone["runs"]}
    for r in together["runs"]:  # the parameters at the stop step: equal up to float round-off
        a = by_key[r["variant"], r["seed"]]
        assert r["test_accuracy"] == pytest.approx(a["test_accuracy"], abs=0.011)
        assert [s for s, _ in r["checks"]] == [s for s, _ in a["checks"]]  # every 2 steps
        np.testing.assert_allclose([v for _, v in r["checks"]], [v for _, v in a["checks"]],
                                   rtol=1e-4)  # fmt: skip
    md = (tmp_path / "together" / "results.md").read_text()
    assert "(first validation split)" in md and "He fan-out init" in md
