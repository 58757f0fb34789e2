"""Seconds per call of jitted functions, timed side by side (interleaved) after warm-up."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

import jaxbn


class Timing(NamedTuple):
    """Seconds per call: median, quartiles and the number of timed calls."""

    median: float
    q25: float
    q75: float
    runs: int


def time_interleaved(
    fns: Mapping[str, Callable[[], object]],
    *,
    warmup: int = 3,
    min_runs: int = 10,
    budget_s: float = 2.0,
) -> dict[str, Timing]:
    """Time zero-argument callables round by round, in a rotating order, each waited for."""
    names = list(fns)
    for name in names:
        for _ in range(warmup):
            jax.block_until_ready(fns[name]())
    samples: dict[str, list[float]] = {name: [] for name in names}
    start, rounds = time.perf_counter(), 0
    while rounds < min_runs or time.perf_counter() - start < budget_s:
        for name in names[rounds % len(names) :] + names[: rounds % len(names)]:
            t0 = time.perf_counter()
            jax.block_until_ready(fns[name]())
            samples[name].append(time.perf_counter() - t0)
        rounds += 1
    out = {}
    for name, s in samples.items():
        q25, q75 = np.percentile(s, [25, 75])
        out[name] = Timing(statistics.median(s), float(q25), float(q75), len(s))
    return out


def step_times(nets, optimizer, states, ds, batch_size, budget_s):
    """Median seconds per training step of each net, timed alone and interleaved on one batch.

    Starts from the trained states (copied: the jitted step donates its input).
    """
    xb = jnp.asarray(ds.x_train[:batch_size])
    yb = jnp.asarray(ds.y_train[:batch_size])
    runners = {}
    for name, net in nets.items():
        step = jaxbn.make_train_step(net, optimizer)
        cell = [jax.tree.map(lambda a: jax.device_put(a, may_alias=False), states[name])]

        def run(step=step, cell=cell):
            cell[0], metrics = step(cell[0], xb, yb)
            return metrics["loss"]

        runners[name] = run
    return time_interleaved(runners, budget_s=budget_s)
