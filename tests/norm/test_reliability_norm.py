"""Reliability of batch_norm: masked garbage, empty batches, bad batches, validation.

Cases covered here: 1 (NaN/Inf in masked-out rows), 2 (all-False mask, also under axis_name),
5 (a non-finite batch keeps the running statistics), 12 (axis / num_features / eps validation).
Case 11 (eager shard_map) is in test_reliability_sharded.py. Test data come from NumPy and the
library runs under jit, so each configuration compiles once.
"""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxbn
from tests.helpers import rel_error

BACKWARDS = jaxbn.BACKWARDS


def _real_and_padded(dtype=np.float64):
    """4 real rows of 3 features, then 3 masked-out rows of garbage (NaN, Inf, -Inf, huge)."""
    rng = np.random.default_rng(1)
    real = 2 + 3 * rng.standard_normal((4, 3))
    garbage = np.array([[np.nan, np.inf, 1.0], [np.inf, -np.inf, np.nan], [1e30, np.nan, -1e30]])
    x = np.concatenate([real, garbage])
    mask = np.arange(7) < 4
    c = rng.standard_normal((4, 3))
    return jnp.asarray(real.astype(dtype)), jnp.asarray(x.astype(dtype)), mask, jnp.asarray(c)


bn = jax.jit(jaxbn.batch_norm, static_argnames=("training", "momentum", "backward"))
bn_train = jax.jit(jaxbn.batch_norm_train, static_argnames="backward")


def _loss_with_statistics(gamma, beta, x, mask, c, *, backward):
    y, mean, var = jaxbn.batch_norm_train(x, gamma, beta, mask=mask, backward=backward)
    # the statistics enter the loss too, so their cotangents go through the backward
    return jnp.sum(y[:4] * c) + jnp.sum(mean * c[0]) + jnp.sum(var * c[1])


@partial(jax.jit, static_argnames="backward")
def _grads_with_statistics(gamma, beta, x, mask, c, *, backward):
    return jax.grad(_loss_with_statistics, (0, 1, 2))(gamma, beta, x, mask, c, backward=backward)


@pytest.mark.parametrize("backward", BACKWARDS)
def test_masked_nan_inf_rows_do_not_reach_real_gradients(x64, backward):
    """Case 1: garbage in masked rows changes neither y, the statistics nor any gradient."""
    real, x, mask, c = _real_and_padded()
    gamma, beta = jnp.array([1.0, 2.0, 0.5]), jnp.array([0.1, -0.2, 0.3])
    grads = _grads_with_statistics(gamma, beta, x, mask, c, backward=backward)
    want = _grads_with_statistics(gamma, beta, real, None, c, backward=backward)
    for got, ref in zip(grads[:2], want[:2], strict=True):
        assert np.all(np.isfinite(got))
        assert rel_error(got, ref) < 1e-12
    dx = np.asarray(grads[2])
    assert rel_error(dx[:4], want[2]) < 1e-12
    assert np.all(dx[4:] == 0)  # masked rows: exactly zero gradient
    y, mean, var = bn_train(x, gamma, beta, mask=mask, backward=backward)
    y0, mean0, var0 = bn_train(real, gamma, beta, backward=backward)
    assert rel_error(np.asarray(y)[:4], y0) < 1e-12
    assert rel_error(mean, mean0) < 1e-12 and rel_error(var, var0) < 1e-12


def test_masked_nan_rows_keep_batch_norm_state_finite():
    _, x, mask, _ = _real_and_padded(jnp.float32)
    _, state = bn(x, np.ones(3), np.zeros(3), jaxbn.batch_norm_state(3), training=True, mask=mask)
    assert np.all(np.isfinite(state.mean)) and np.all(np.isfinite(state.var))


@pytest.mark.parametrize("backward", BACKWARDS)
def test_all_false_mask_keeps_state_and_gives_zero_gradients(backward):
    """Case 2: no real row: output beta, state (count too) unchanged, zero gradients."""
    x = jnp.array([[1.0, np.nan], [3.0, 2.0], [np.inf, 5.0]])
    mask = np.zeros(3, bool)
    gamma, beta = jnp.array([2.0, 3.0]), jnp.array([0.5, -1.0])
    state = jaxbn.BatchNormState(jnp.array([1.0, 2.0]), jnp.array([3.0, 4.0]), jnp.array(5))

    def loss(gamma, beta, x):
        y, new = jaxbn.batch_norm(
            x, gamma, beta, state, training=True, mask=mask, backward=backward
        )
        return jnp.sum(y), (y, new)

    grads, (y, new) = jax.jit(jax.grad(loss, (0, 1, 2), has_aux=True))(gamma, beta, x)
    np.testing.assert_array_equal(y, np.broadcast_to(beta, x.shape))
    for a, b in zip(new, state, strict=True):
        np.testing.assert_array_equal(a, b)
    for g in grads:
        np.testing.assert_array_equal(g, np.zeros(g.shape))  # true gradient is exactly zero


def test_all_false_mask_in_train_step_keeps_params_and_state():
    """Case 2 in make_train_step: loss 0, params unchanged by the data (no NaN), state unchanged."""
    net = jaxbn.FullyConnectedNet((4,), 3, normalization="batchnorm")
    opt = optax.sgd(0.1)
    ts = jaxbn.init_train_state(net, opt, jax.random.key(0), 5)
    before = jax.jit(partial(jax.tree.map, jnp.copy))(ts)  # the step donates ts
    # (the linear layers need finite padding)
    x = np.random.default_rng(1).standard_normal((4, 5)).astype(np.float32)
    ts, metrics = jaxbn.make_train_step(net, opt)(ts, x, np.zeros(4, np.int32), np.zeros(4, bool))
    assert float(metrics["loss"]) == 0.0
    for a, b in zip(jax.tree.leaves(ts.params), jax.tree.leaves(before.params), strict=True):
        np.testing.assert_array_equal(a, b)  # zero gradient: SGD leaves them as they were
    for a, b in zip(jax.tree.leaves(ts.state), jax.tree.leaves(before.state), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("backward", BACKWARDS)
def test_axis_name_global_count_decides(x64, backward):
    """Case 2 under axis_name (vmap as 2 devices): an empty shard is fine; all empty keeps state."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 4, 3))
    x[0] = np.nan  # shard 0 all padding
    c = rng.standard_normal((2, 4, 3))
    gamma, beta = jnp.array([1.0, 2.0, 0.5]), jnp.array([0.1, -0.2, 0.3])
    state = jaxbn.batch_norm_state(3, jnp.float64)

    def per_device(x, c, mask, gamma, beta):
        def loss(gamma, beta, x):
            y, new = jaxbn.batch_norm(
                x, gamma, beta, state, training=True, axis_name="d", mask=mask, backward=backward
            )
            return jnp.sum(jnp.where(mask[:, None], y * c, 0)), new

        return jax.grad(loss, (0, 1, 2), has_aux=True)(gamma, beta, x)

    run = jax.jit(jax.vmap(per_device, in_axes=(0, 0, 0, None, None), axis_name="d"))
    mask = np.array([[False] * 4, [True] * 4])
    (dg, db, dx), new = run(x, c, mask, gamma, beta)

    def single(gamma, beta, x):
        y, new = jaxbn.batch_norm(x, gamma, beta, state, training=True, backward=backward)
        return jnp.sum(y * c[1]), new

    (dg1, db1, dx1), new1 = jax.jit(jax.grad(single, (0, 1, 2), has_aux=True))(gamma, beta, x[1])
    assert rel_error(dg.sum(0), dg1) < 1e-12 and rel_error(db.sum(0), db1) < 1e-12
    dx, new = np.asarray(dx), jax.tree.map(np.asarray, new)
    assert rel_error(dx[1], dx1) < 1e-12 and np.all(dx[0] == 0)
    assert rel_error(new.mean[0], new1.mean) < 1e-12 and int(new.count[0]) == 1

    grads, new = run(x, c, np.zeros((2, 4), bool), gamma, beta)
    for g in grads:
        np.testing.assert_array_equal(g, np.zeros(g.shape))
    new = jax.tree.map(np.asarray, new)
    np.testing.assert_array_equal(new.mean[0], state.mean)
    np.testing.assert_array_equal(new.var[1], state.var)
    assert int(new.count[0]) == 0


@pytest.mark.parametrize("bad", [np.nan, np.inf], ids=["nan", "inf"])
def test_non_finite_batch_keeps_running_statistics_of_that_feature(bad):
    """Case 5: feature 1 gets a bad value: its running stats stay, feature 0's update."""
    x = jnp.array([[1.0, 2.0], [3.0, bad], [5.0, 4.0]])
    state = jaxbn.BatchNormState(jnp.array([0.5, 0.25]), jnp.array([2.0, 3.0]), jnp.array(7))
    y, new = bn(x, np.ones(2), np.zeros(2), state, training=True, momentum=0.5)
    y, new = np.asarray(y), jax.tree.map(np.asarray, new)
    assert new.mean[1] == state.mean[1] and new.var[1] == state.var[1]
    assert float(new.mean[0]) == pytest.approx(0.5 * 0.5 + 0.5 * 3.0)
    assert float(new.var[0]) == pytest.approx(0.5 * 2.0 + 0.5 * 8 / 3, rel=1e-6)
    assert int(new.count) == 8
    assert np.all(np.isnan(y[:, 1])) and np.all(np.isfinite(y[:, 0]))  # the math's NaN stays


def test_axis_must_be_int_or_tuple():
    x = np.ones((4, 3), np.float32)
    with pytest.raises(TypeError, match="axis must be an int or a tuple of ints, got 1.0"):
        jaxbn.batch_norm(x, np.ones(3), np.zeros(3), jaxbn.batch_norm_state(3), training=True,
                         axis=1.0)  # fmt: skip
    with pytest.raises(TypeError, match="axis must be an int"):
        jaxbn.layer_norm(x, np.ones(3), np.zeros(3), axis=1.0)


def test_batch_norm_state_num_features():
    state = jaxbn.batch_norm_state(np.int64(8))
    assert state.mean.shape == (8,) and state.var.shape == (8,)
    assert jaxbn.batch_norm_state((np.int32(2), 3)).mean.shape == (2, 3)
    with pytest.raises(TypeError, match="num_features"):
        jaxbn.batch_norm_state(4.0)
    with pytest.raises(ValueError, match="num_features"):
        jaxbn.batch_norm_state((4.0,))


@pytest.mark.parametrize(
    ("eps", "msg"),
    [(float("inf"), "eps must be finite, got inf"), (float("nan"), "eps must be > 0, got nan")],
    ids=["inf", "nan"],
)
def test_eps_must_be_finite(eps, msg):
    x = np.ones((4, 3), np.float32)
    with pytest.raises(ValueError, match=msg):
        jaxbn.batch_norm(x, np.ones(3), np.zeros(3), jaxbn.batch_norm_state(3), training=True,
                         eps=eps)  # fmt: skip
    with pytest.raises(ValueError, match=msg):
        jaxbn.layer_norm(x, np.ones(3), np.zeros(3), eps=eps)
