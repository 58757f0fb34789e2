"""benchmarks.peers_op and benchmarks.peers_mlp: smoke runs with only JAX, and their verdicts."""

import json
import sys

import pytest

from benchmarks import machine, peers_mlp, peers_op
from benchmarks.report import VERDICT_MIN_RUNS

PEERS = ("flax", "haiku", "equinox", "torch")


@pytest.fixture
def without_peers(monkeypatch):
    for name in (*PEERS, "flax.linen"):
        monkeypatch.setitem(sys.modules, name, None)  # `import name` now raises ImportError


def _verdicts(results):
    return [row[2] for row in results["targets"]]


@pytest.mark.slow
def test_peers_op_quick_run_without_peers(tmp_path, without_peers, capsys):
    results = peers_op.main(["--quick", "--out-dir", str(tmp_path)])
    saved = json.loads((tmp_path / "results.json").read_text())
    config = json.loads((tmp_path / "config.json").read_text())
    markdown = (tmp_path / "results.md").read_text()
    assert config["quick"] is True and saved["targets"] == results["targets"]
    (op,) = saved["op"]
    assert op["shape"] == "(100, 100)"
    competitors = op["competitors"]
    assert set(competitors) == {
        "jaxbn closed_form", "jaxbn staged", "jaxbn autodiff", "jax autodiff (plain jnp)",
        "NumPy closed form",
    }  # fmt: skip
    closed = competitors["jaxbn closed_form"]
    assert closed["vs_jaxbn"] == 1.0 and closed["kernels"] > 0
    assert closed["residuals"]["new"] < op["input_bytes"]
    assert all(0 < r["fraction_of_bound"] for r in competitors.values())
    for name in PEERS:
        assert any(note.startswith(name) for note in saved["notes"]), name
        assert f"{name} not installed" in markdown
    # A --quick run states its measurements but gives no verdict.
    assert _verdicts(saved) and all(v == "no verdict (--quick)" for v in _verdicts(saved))
    assert "NOT met" not in markdown and "| met |" not in markdown
    out = capsys.readouterr().out
    for name in ("config.json", "results.json", "results.md"):
        assert str(tmp_path / name) in out  # the closing lines name every file written


@pytest.mark.slow
def test_peers_mlp_quick_run_without_peers(tmp_path, without_peers, capsys):
    peers_mlp.main(["--quick", "--out-dir", str(tmp_path)])
    saved = json.loads((tmp_path / "results.json").read_text())
    competitors = saved["competitors"]
    assert set(competitors) == {peers_mlp.JAXBN, "NumPy (textbook)"}
    assert all(r["steps_per_s"] > 0 for r in competitors.values())
    assert competitors[peers_mlp.JAXBN]["kernels_per_step"] > 0
    assert saved["targets"] == []  # no flax to compare with, E1 not timed under --quick
    assert "not timed" in saved["e1"]["note"]
    assert any(note.startswith("flax") for note in saved["notes"])
    out = capsys.readouterr().out
    assert all(str(tmp_path / n) in out for n in ("config.json", "results.json", "results.md"))


def _op_result(*, runs, flax_ratio, new_residuals):
    def row(ratio):
        return {"vs_jaxbn": ratio, "runs": runs}

    reference = row(1.0) | {"residuals": {"new": new_residuals, "aliased_inputs": 4096}}
    competitors = {"jaxbn closed_form": reference, "flax.linen.BatchNorm": row(flax_ratio)}
    return {"shape": "(256, 1024)", "input_bytes": 4096, "features": 4, "competitors": competitors}


def test_peers_op_targets_give_verdicts_only_with_enough_runs():
    good = _op_result(runs=VERDICT_MIN_RUNS, flax_ratio=1.5, new_residuals=32)
    assert _verdicts({"targets": peers_op.targets([good], quick=False)}) == ["met"] * 3
    slow = _op_result(runs=VERDICT_MIN_RUNS, flax_ratio=0.9, new_residuals=4096)
    assert _verdicts({"targets": peers_op.targets([slow], quick=False)}) == ["NOT met"] * 3
    busy = _verdicts({"targets": peers_op.targets([good], quick=False, busy="load 9")})
    assert busy == ["no verdict (load 9)"] * 2 + ["met"]  # the memory count keeps its verdict
    few = _op_result(runs=VERDICT_MIN_RUNS - 1, flax_ratio=1.5, new_residuals=32)
    assert all(
        "no verdict" in v for v in _verdicts({"targets": peers_op.targets([few], quick=False)})
    )


def test_peers_mlp_targets_give_verdicts_only_with_enough_runs():
    def result(runs, flax_steps, e1_s):
        comp = {peers_mlp.JAXBN: {"steps_per_s": 120.0, "runs": runs}}
        comp[peers_mlp.FLAX] = {"steps_per_s": flax_steps, "runs": runs}
        return {"competitors": comp, "e1": {"wall_s": e1_s}}

    enough = VERDICT_MIN_RUNS
    assert _verdicts({"targets": peers_mlp.targets(result(enough, 90.0, 10), quick=False)}) == [
        "met", "met"
    ]  # fmt: skip
    assert _verdicts({"targets": peers_mlp.targets(result(enough, 110.0, 20), quick=False)}) == [
        "NOT met", "NOT met"
    ]  # fmt: skip
    quick = _verdicts({"targets": peers_mlp.targets(result(enough, 90.0, 10), quick=True)})
    assert quick == ["no verdict (--quick)"] * 2


def test_bandwidth_bounds_on_cpu_use_the_best_measurement():
    bandwidth = {"numpy copy": 9.0, "numpy triad": 20.0, "xla copy": 12.0, "xla triad": 15.0}
    if machine.jax.default_backend() == "cpu":
        assert machine.bandwidth_bounds(bandwidth) == {"host": 20.0, "device": 20.0}
    else:
        assert machine.bandwidth_bounds(bandwidth) == {"host": 20.0, "device": 15.0}
    assert machine.bandwidth_bounds(bandwidth, peak_gbps=4800.0)["device"] == 4800.0


def test_busy_means_a_load_above_the_cores(monkeypatch):
    monkeypatch.setattr(machine.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(machine.os, "getloadavg", lambda: (3.5, 1.0, 1.0))
    assert machine.busy() == "busy machine: load 3.5 on 2 cores"
    assert machine.busy_note(machine.busy())[0].startswith("busy machine")
    monkeypatch.setattr(machine.os, "getloadavg", lambda: (2.5, 9.0, 9.0))
    assert machine.busy() is None and machine.busy_note(None) == []
