"""Smoke test of experiments/backward_speed.py (E4): tiny shapes, files written and parseable."""

import json
from pathlib import Path

import pytest

from tests.helpers import load_experiment

SCRIPT = Path(__file__).parents[2] / "experiments" / "backward_speed.py"


@pytest.mark.slow
def test_backward_speed_writes_results(tmp_path, capsys):
    results = load_experiment(SCRIPT).main(
        ["--out-dir", str(tmp_path), "--shapes", "nhwc:2x3x3x4", "--budget", "0.05"]
    )
    data = json.loads((tmp_path / "results.json").read_text())
    assert json.loads((tmp_path / "config.json").read_text())["shapes"] == ["nhwc:2x3x3x4"]
    assert [r["shape"] for r in data["results"]] == ["NHWC (2, 3, 3, 4)"]
    for row in results:
        assert set(row["median_s"]) == {"closed_form", "staged", "autodiff"}
        assert all(t > 0 for t in row["median_s"].values())
        assert row["rel_diff_float64"]["staged"]["dx"] < 1e-12
        # The closed form keeps x itself and O(features) for the backward: no new full-size buffer.
        assert row["residuals"]["closed_form"]["largest_new"] < row["input_bytes"]
    md = (tmp_path / "results.md").read_text()
    # One timing row per shape, plus one difference row per shape and dtype.
    assert md.count("\n| NHWC (2, 3, 3, 4) |") == 3
    assert "\n| NHWC (2, 3, 3, 4) | float64 |" in md
    out = capsys.readouterr().out
    assert all(str(tmp_path / n) in out for n in ("config.json", "results.json", "results.md"))
