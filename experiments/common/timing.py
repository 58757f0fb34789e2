"""Seconds per training step of several nets, timed side by side (with benchmarks.timing)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

import jaxbn
from benchmarks.timing import time_interleaved


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
