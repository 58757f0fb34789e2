"""experiments/common.py: the metrics log writes strict JSON, one flushed record per line."""

import json

from experiments.common import MetricsLog


def test_metrics_log_is_strict_json_lines(tmp_path):
    path = tmp_path / "metrics.jsonl"
    with MetricsLog(path) as log:
        log.write(step=1, loss=float("nan"), acc=[0.5, float("inf")], nested={"x": -float("inf")})
        assert path.read_text().count("\n") == 1  # flushed before close
        log.write(step=2, loss=0.25)
    lines = path.read_text().splitlines()
    records = [json.loads(line, parse_constant=lambda c: 1 / 0) for line in lines]
    assert records == [
        {"step": 1, "loss": None, "acc": [0.5, None], "nested": {"x": None}},
        {"step": 2, "loss": 0.25},
    ]
