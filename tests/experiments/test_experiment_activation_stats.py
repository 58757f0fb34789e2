"""Smoke test of experiments/activation_stats.py (E5): a tiny deep net, files and the pattern."""

import itertools
import json
from pathlib import Path

import pytest

from tests.helpers import load_experiment

SCRIPT = Path(__file__).parents[2] / "experiments" / "activation_stats.py"

pytest.importorskip("matplotlib")
pytestmark = pytest.mark.slow


def load_script():
    return load_experiment(SCRIPT)


def test_activation_stats_writes_results(tmp_path):
    argv = ["--out-dir", str(tmp_path), "--examples", "200", "--input-dim", "32"]
    argv += ["--width", "32", "--depth", "4", "--inits", "zero", "0.01", "xavier", "he"]
    argv += ["--symmetry-examples", "16", "--symmetry-steps", "2", "--symmetry-depth", "2"]
    argv += ["--bins", "10", "--activations", "relu", "--no-progress"]  # one activation
    result = load_script().main(argv)

    config = json.loads((tmp_path / "config.json").read_text())
    assert config["inits"] == ["zero", "0.01", "xavier", "he"] and config["depth"] == 4

    # The preprocessing: every feature zero-centred and scaled to unit variance.
    prep = result["preprocessing"]["preprocessed"]
    assert abs(prep["feature_mean_min"]) < 1e-6 and abs(prep["feature_mean_max"]) < 1e-6
    assert prep["feature_std_min"] == pytest.approx(1)
    assert prep["feature_std_max"] == pytest.approx(1)
    assert result["preprocessing"]["raw"]["feature_std_max"] > 2  # it did have work to do

    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    layers = [r for r in records if r["kind"] == "layer"]
    # 4 inits x 2 (BN or not) x 4 layers.
    assert len(layers) == 32
    for r in layers:
        assert {"activation", "init", "batchnorm", "layer", "mean", "std", "dead"} <= set(r)
        assert r["saturated"] == 0  # ReLU has no flat upper end
        assert sum(r["hist_counts"]) > 0 or r["init"] == "zero"
        assert len(r["hist_edges"]) == len(r["hist_counts"]) + 1 == 11

    def stds(activation, init, bn):
        return [
            r["std"]
            for r in layers
            if (r["activation"], r["init"], r["batchnorm"]) == (activation, init, bn)
        ]

    # The reported pattern, even at this size: std 0.01 collapses layer by layer without BN;
    # Xavier shrinks ReLU activations, He keeps them; batch norm keeps every non-zero init's
    # spread healthy; zero init gives zeros everywhere.
    small = stds("relu", "0.01", False)
    assert all(b < a / 2 for a, b in itertools.pairwise(small))
    xavier, he = stds("relu", "xavier", False), stds("relu", "he", False)
    assert xavier[-1] < 0.5 * xavier[0] and he[-1] > 0.5 * he[0]
    for init in ("0.01", "xavier", "he"):
        assert min(stds("relu", init, True)) > 0.4
    assert max(stds("relu", "zero", True) + stds("relu", "zero", False)) == 0

    # The symmetry problem: zero and constant inits keep every unit of a layer identical.
    sym = [r for r in records if r["kind"] == "symmetry"]
    assert len(sym) == 3 * 2  # (zero, constant, random) x BN
    for r in sym:
        if r["init"] == "zero":
            assert r["activation_spread"] == r["gradient_spread"] == 0
        elif r["init"].startswith("constant"):
            assert r["max_abs_activation"] > 0 and r["max_abs_gradient"] > 0
            assert r["activation_spread"] <= 1e-5 * r["max_abs_activation"]
            assert r["gradient_spread"] <= 1e-5 * r["max_abs_gradient"]
        else:
            assert r["activation_spread"] > 0.01 * r["max_abs_activation"]

    png = tmp_path / "activation_stats_relu.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (tmp_path / "activation_stats_tanh.png").exists()
    md = (tmp_path / "results.md").read_text()
    assert md.count("\n| relu | std 0.01 | no |") == 2  # the std table and the mean table
    assert md.count("\n| relu | he | yes |") == 3  # the two tables and the symmetry check
    assert "| relu | zero | no | 0 | 0 |" in md
