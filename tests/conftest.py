"""Shared fixtures (rank promotion raises, PRNG key, float64 for gradient checks); the slow tier.

`pytest -m "not slow"` is the fast tier. A test is slow when its file is an experiment or benchmark
smoke test (`test_experiment_*.py`, `test_bench*.py`) or when the test or one of its fixtures
starts a multi-device worker process (`run_worker`): those rules live here, so new test files are
covered without marking each test. Tests marked `@pytest.mark.slow` in place are the end-to-end
runs (the README's examples, training sweeps, long fits) and the cases whose programs take seconds
each to compile (conv nets in float64, conv converters); each such mark says why, and a faster
case of the same code path stays in the fast tier.
"""

import fnmatch
import inspect
from pathlib import Path

import jax
import pytest

jax.config.update("jax_numpy_rank_promotion", "raise")

SLOW_FILES = ("test_experiment_*.py", "test_bench*.py")
SLOW_CALLS = frozenset({"run_worker"})  # names whose use makes a test slow (subprocess JAX runs)


def _calls_slow(func) -> bool:
    func = inspect.unwrap(func)
    code = getattr(func, "__code__", None)
    return code is not None and not SLOW_CALLS.isdisjoint(code.co_names)


def _is_slow(item: pytest.Item) -> bool:
    if any(fnmatch.fnmatch(Path(str(item.fspath)).name, p) for p in SLOW_FILES):
        return True
    if _calls_slow(getattr(item, "function", None)):
        return True
    info = getattr(item, "_fixtureinfo", None)
    for name in getattr(item, "fixturenames", ()):
        defs = info.name2fixturedefs.get(name, ()) if info is not None else ()
        if any(_calls_slow(d.func) for d in defs):
            return True
    return False


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.get_closest_marker("slow") is None and _is_slow(item):
            item.add_marker(pytest.mark.slow)


@pytest.fixture
def key():
    return jax.random.key(0)


@pytest.fixture
def x64():
    """Enable float64 for the duration of a test (gradient checks)."""
    previous = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", previous)
