"""benchmarks.timing and benchmarks.report: the measuring helpers, on tiny inputs."""

import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks.report import VERDICT_MIN_RUNS, markdown_table, parse_shape, verdict
from benchmarks.timing import (
    compiled_kernels,
    compiled_memory,
    count_kernels,
    residual_bytes,
    time_interleaved,
)


def test_time_interleaved_times_every_callable_and_orders_quartiles():
    calls = {"a": 0, "b": 0}

    def bump(name):
        calls[name] += 1
        return np.zeros(1)

    t = time_interleaved(
        {"a": lambda: bump("a"), "b": lambda: bump("b")}, warmup=2, min_runs=5, budget_s=0.0
    )
    assert set(t) == {"a", "b"}
    for name, timing in t.items():
        assert timing.runs == 5
        assert calls[name] == 2 + 5  # warm-up calls, then one per round
        assert 0 <= timing.q25 <= timing.median <= timing.q75


@pytest.mark.parametrize(
    "kwargs, match",
    [({"fns": {}}, "fns must name"), ({"fns": {"a": int}, "min_runs": 0}, "min_runs")],
    ids=["empty", "zero-runs"],
)
def test_time_interleaved_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        time_interleaved(**kwargs)


def test_residual_bytes_separates_inputs_from_new_buffers():
    x = jnp.ones((8, 4), jnp.float32)
    # sin keeps cos(x): one new (8, 4) buffer. x * x keeps x itself: an input, no new memory.
    assert residual_bytes(jnp.sin, x) == {"new": 128, "aliased_inputs": 0, "largest_new": 128}
    kept = residual_bytes(lambda x: x * x, x)
    assert kept["new"] == 0 and kept["aliased_inputs"] == 128


def test_compiled_memory_and_kernels_read_the_compiled_program():
    x = jnp.ones((16, 16), jnp.float32)
    memory = compiled_memory(lambda x: jnp.tanh(x) @ x, x)
    assert memory["argument"] == x.nbytes and memory["output"] == x.nbytes
    assert compiled_kernels(lambda x: jnp.tanh(x) @ x, x) >= 1


HLO = """HloModule m

%fused (p: f32[4]) -> f32[4] {
  %p = f32[4]{0} parameter(0)
  ROOT %n = f32[4]{0} negate(%p)
}

ENTRY %main (x: f32[4]) -> (f32[4], f32[4]) {
  %x = f32[4]{0} parameter(0)
  %c = f32[] constant(0)
  %f = f32[4]{0} fusion(%x), kind=kLoop, calls=%fused
  %m = (f32[4]{0}, /*index=1*/f32[4]{0}) fusion(%x, %f), kind=kLoop, calls=%fused
  %g = f32[4]{0} get-tuple-element(%m), index=0
  %k = f32[4]{0} copy(%g)
  ROOT %t = (f32[4]{0}, f32[4]{0}) tuple(%f, %k)
}
"""


def test_count_kernels_counts_launches_of_the_entry_only():
    # Two fusions (one with a tuple result) and a copy; the fused computation's negate is
    # inside a kernel, and parameters, constants, tuples and get-tuple-element launch nothing.
    assert count_kernels(HLO) == 3


def test_parse_shape_and_its_errors():
    assert parse_shape("256x1024") == ((256, 1024), "(256, 1024)")
    assert parse_shape("nhwc:2x3x3x4") == ((2, 3, 3, 4), "NHWC (2, 3, 3, 4)")
    for bad in ("256", "256xa", "0x4"):
        with pytest.raises(ValueError, match="shape"):
            parse_shape(bad)


def test_verdicts_need_enough_runs_an_idle_machine_and_never_come_from_quick():
    assert verdict(True, VERDICT_MIN_RUNS, quick=False) == "met"
    assert verdict(False, VERDICT_MIN_RUNS, quick=False) == "NOT met"
    assert "no verdict" in verdict(False, VERDICT_MIN_RUNS - 1, quick=False)
    assert verdict(False, 10**6, quick=True) == "no verdict (--quick)"
    assert verdict(None, 10**6, quick=False) == "n/a"
    assert verdict(True, 10**6, quick=False, busy="load 9 on 2 cores") == (
        "no verdict (load 9 on 2 cores)"
    )


def test_markdown_table():
    assert markdown_table(["a", "b"], [[1, 2]]) == "| a | b |\n| --- | --- |\n| 1 | 2 |\n"
