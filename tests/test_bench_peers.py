"""Smoke test of experiments/bench_peers.py with only jax installed: the peers are skipped."""

import json
import sys
from pathlib import Path

from tests.helpers import load_experiment

SCRIPT = Path(__file__).parents[1] / "experiments" / "bench_peers.py"
PEERS = ("flax", "haiku", "equinox", "torch")


def _load_script():
    return load_experiment(SCRIPT)


def test_quick_run_without_peers_writes_json_and_markdown(tmp_path, monkeypatch):
    for name in (*PEERS, "flax.linen"):
        monkeypatch.setitem(sys.modules, name, None)  # `import name` now raises ImportError
    bench = _load_script()
    bench.main(["--quick", "--out-dir", str(tmp_path)])

    results = json.loads((tmp_path / "results.json").read_text())
    config = json.loads((tmp_path / "config.json").read_text())
    markdown = (tmp_path / "results.md").read_text()
    assert config["quick"] is True
    (op,) = results["op"]
    assert op["shape"] == "(100, 100)"
    competitors = op["competitors"]
    assert {f"jaxbn {bw}" for bw in ("closed_form", "staged", "autodiff")} <= set(competitors)
    assert competitors["jaxbn closed_form"]["vs_jaxbn"] == 1.0
    assert competitors["jaxbn closed_form"]["residuals"]["new"] < op["input_bytes"]
    assert not any(
        "flax" in k or "haiku" in k or "equinox" in k or "PyTorch" in k for k in competitors
    )
    for name in PEERS:
        assert any(note.startswith(name) for note in results["notes"]), name
        assert f"{name} not installed" in markdown
    assert all(r["steps_per_s"] > 0 for r in results["mlp"]["competitors"].values())
    assert competitors["jaxbn closed_form"]["kernels"] > 0
    assert "## Targets (issue 5)" in markdown
    assert "E1" in markdown and "| jaxbn closed_form |" in markdown
