"""Train K seeds of one net together to a validation-loss target: ``fit``'s stop rule, vmapped.

``fit(..., target_loss=t, eval_every=k)`` evaluates the validation set every ``k`` steps (counted
over the whole run) and after every epoch and stops at the first check with loss <= t. Here the
K seeds (each its own initialization ``jax.random.key(seed)`` and its own batch order, exactly
``fit``'s) take their steps together in one ``vmap``ped, ``scan``ned program, one epoch per call,
in chunks of ``gcd(k, steps_per_epoch)`` steps; after a chunk that ends on a check step every seed
evaluates the validation set (a ``lax.cond`` on a flag shared by all seeds, so the other chunks
cost nothing). Each seed keeps training past its crossing (the others need the steps) but its
parameters at the crossing are kept for the test evaluation; calls stop once every seed crossed.
"""

from __future__ import annotations

import math
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

import jaxbn
from jaxbn.train.plan import epoch_order


def _program(net, optimizer, target, x, y, x_val, y_val):
    step = jaxbn.train_step_fn(net, optimizer)

    def val_loss(ts):
        logits, _ = net.apply(ts.params, ts.state, x_val, training=False)
        return jaxbn.softmax_cross_entropy(logits, y_val)

    def one(carry, order, mask, check):  # one seed, one epoch: order (C, S, B)
        def chunk(carry, xs):
            ts, kept, reached = carry
            idx, m, flag = xs

            def body(ts, im):
                ts, metrics = step(ts, x[im[0]], y[im[0]], im[1])
                return ts, metrics["loss"]

            ts, losses = lax.scan(body, ts, (idx, m))
            v = lax.cond(flag, val_loss, lambda ts: jnp.float32(jnp.nan), ts)
            hit = flag & (v <= target) & ~reached
            kept = jax.tree.map(lambda a, b: jnp.where(hit, a, b), (ts.params, ts.state), kept)
            return (ts, kept, reached | hit), (losses, v)

        return lax.scan(chunk, carry, (order, mask, check))

    run = jax.vmap(one, in_axes=(0, 0, None, None))
    return jax.jit(run, donate_argnums=0)


def train_seeds(net, optimizer, ds, seeds, *, batch_size, eval_every, target, max_epochs):
    """Train ``net`` from every seed in ``seeds`` until each reaches ``target`` (or the budget).

    Returns one dict per seed: ``reached``, ``steps`` (the stop step, or the steps run),
    ``checks`` [(step, val loss)] up to the stop, ``step_loss`` (each step's training loss),
    ``test_accuracy``/``test_loss`` (of the parameters at the stop step, else the last ones) and
    ``fit_seconds`` (the wall time shared by all seeds).
    """
    n, spe = len(ds.x_train), math.ceil(len(ds.x_train) / batch_size)
    size = math.gcd(eval_every, spe)
    keys = jnp.stack([jax.random.key(s) for s in seeds])
    ts = jax.vmap(lambda k: jaxbn.init_train_state(net, optimizer, k, ds.x_train.shape[1]))(keys)
    carry = (ts, (ts.params, ts.state), jnp.zeros(len(seeds), bool))
    carry = jax.tree.map(lambda a: jax.device_put(a, may_alias=False), carry)
    program = _program(net, optimizer, target, jnp.asarray(ds.x_train), jnp.asarray(ds.y_train),
                       jnp.asarray(ds.x_val), jnp.asarray(ds.y_val))  # fmt: skip
    losses, vals, t0 = [], [], time.perf_counter()
    for epoch in range(max_epochs):
        orders = [epoch_order(s, epoch, n, batch_size, "shuffle", spe) for s in seeds]
        last = orders[0][1]
        mask = np.ones((spe, batch_size), bool)
        mask[-1, last:] = False
        ends = epoch * spe + size * np.arange(1, spe // size + 1)
        check = (ends % eval_every == 0) | (ends % spe == 0)
        order = np.stack([o for o, _ in orders]).reshape(len(seeds), -1, size, batch_size)
        carry, (loss, val) = program(carry, order, mask.reshape(-1, size, batch_size), check)
        losses.append(np.asarray(loss).reshape(len(seeds), -1))
        vals.append(np.asarray(val))
        if bool(np.all(np.asarray(carry[2]))):
            break
    wall = time.perf_counter() - t0
    step_loss, val = np.concatenate(losses, 1), np.concatenate(vals, 1)
    ends = size * np.arange(1, val.shape[1] + 1)
    runs = []
    for i, seed in enumerate(seeds):
        checked = (ends % eval_every == 0) | (ends % spe == 0)
        checks = [(int(s), float(v)) for s, v in zip(ends[checked], val[i][checked], strict=True)]
        stop = next((s for s, v in checks if v <= target), None)
        checks = [c for c in checks if stop is None or c[0] <= stop]  # as fit records them
        last = (carry[0].params, carry[0].state)
        params, state = jax.tree.map(lambda a, i=i: a[i], carry[1] if stop is not None else last)
        test = jaxbn.evaluate(net, params, state, ds.x_test, ds.y_test)
        steps = stop if stop is not None else int(ends[-1])
        runs.append(dict(seed=seed, reached=stop is not None, steps=steps, checks=checks,
                         step_loss=step_loss[i, :steps].tolist(), test_accuracy=test["accuracy"],
                         test_loss=test["loss"], fit_seconds=wall))  # fmt: skip
    return runs
