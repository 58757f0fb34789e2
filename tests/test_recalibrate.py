"""Exact recalibration: the population statistics of each layer's eval-mode input."""

import dataclasses
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import rel_error, run_worker

import jaxbn

N, BATCH = 37, 8  # 37 is not a multiple of 8: the last batch is short and masked


def _fc_inputs_eval(net, params, state, x):
    """Each hidden layer's pre-BN input, earlier layers in eval mode with the given state."""
    h, out = x.reshape(x.shape[0], -1), []
    for i, p in enumerate(params[:-1]):
        z = h @ p["W"] + p["b"][None, :]
        out.append(z)
        h, _ = jaxbn.batch_norm(z, p["gamma"], p["beta"], state[i], training=False, eps=net.eps)
        h = jax.nn.relu(h)
    return out


def _check_against_full_batch(net, params, state, new_state, x):
    # Oracle: one training-mode pass over the whole data set with momentum 0 stores the exact
    # statistics of every layer, each layer normalized by the full-data statistics of the
    # layers before it, which are exactly their recalibrated statistics.
    oracle = dataclasses.replace(net, momentum=0.0)
    _, full = jax.jit(oracle.apply, static_argnames="training")(params, state, x, training=True)
    for s, f in zip(new_state, full, strict=True):
        assert rel_error(s.mean, f.mean) <= 1e-10
        assert rel_error(s.var, f.var) <= 1e-10
        assert s.mean.dtype == jnp.float64


def test_recalibrate_fc_float64_matches_direct_statistics():
    with jax.enable_x64(True):
        net = jaxbn.FullyConnectedNet((6, 5), 3, normalization="batchnorm")
        x = jax.random.normal(jax.random.key(1), (N, 4), jnp.float64) * 3.0 + 1.0
        params, state = net.init(jax.random.key(0), 4, dtype=jnp.float64)
        params = jax.tree.map(lambda p: p + 0.3 * jnp.ones_like(p), params)  # gamma, beta != 1, 0
        new = jaxbn.recalibrate(net, params, state, x, batch_size=BATCH)
        # Direct: each layer's input with the earlier layers in eval mode, recalibrated stats.
        inputs = _fc_inputs_eval(net, params, new, x)
        for z, s, old in zip(inputs, new, state, strict=True):
            assert rel_error(s.mean, jnp.mean(z, 0)) <= 1e-10
            assert rel_error(s.var, jnp.var(z, 0)) <= 1e-10
            assert int(s.count) == int(old.count)
        _check_against_full_batch(net, params, state, new, x)
        # The eval-mode net now normalizes the last hidden layer's input to mean 0, var 1.
        assert rel_error(jnp.var(inputs[1], 0), new[1].var) <= 1e-10


@pytest.mark.slow  # conv nets in float64 take seconds to compile: full suite only
def test_recalibrate_conv_float64_and_padding_never_leaks():
    with jax.enable_x64(True):
        net = jaxbn.ConvNet((3, 4), 3, hidden_dims=(5,), normalization="batchnorm")
        x = jax.random.normal(jax.random.key(2), (N, 6, 6, 2), jnp.float64) + 0.5
        params, state = net.init(jax.random.key(0), (6, 6, 2), dtype=jnp.float64)
        params = jax.tree.map(lambda p: p + 0.2, params)
        new = jaxbn.recalibrate(net, params, state, x, batch_size=BATCH)
        _check_against_full_batch(net, params, state, new, x)
        # Conv layer 0: statistics over N, H, W of the conv output.
        z0 = net.apply(params, state, x, training=False, stop_before_norm=0)[0]
        assert rel_error(new[0].mean, jnp.mean(z0, (0, 1, 2))) <= 1e-10
        assert rel_error(new[0].var, jnp.var(z0, (0, 1, 2))) <= 1e-10


def test_population_statistics_masks_out_padding_even_nan():
    x = np.arange(10.0, dtype=np.float32).reshape(10, 1)
    # The feature function turns the zero padding rows into NaN: they must not count.
    mean, var, count = jaxbn.population_statistics(
        lambda xb, m: jnp.where(m[:, None], xb, jnp.nan), x, batch_size=4
    )
    assert count == 10
    np.testing.assert_allclose(mean, [4.5], rtol=1e-7)
    np.testing.assert_allclose(var, [np.var(np.arange(10.0))], rtol=1e-6)


def test_recalibrate_rejects_bad_input():
    fc = jaxbn.FullyConnectedNet((4,), 3)
    params, state = fc.init(jax.random.key(0), 2)
    with pytest.raises(ValueError, match="batch-norm net"):
        jaxbn.recalibrate(fc, params, state, np.zeros((4, 2), np.float32))
    with pytest.raises(TypeError, match="FullyConnectedNet or jaxbn.ConvNet"):
        jaxbn.recalibrate("net", params, state, np.zeros((4, 2), np.float32))
    bn = jaxbn.FullyConnectedNet((4,), 3, normalization="batchnorm")
    params, state = bn.init(jax.random.key(0), 2)
    with pytest.raises(ValueError, match="batch_size"):
        jaxbn.recalibrate(bn, params, state, np.zeros((4, 2), np.float32), batch_size=0)
    with pytest.raises(ValueError, match="at least one example"):
        jaxbn.recalibrate(bn, params, state, np.zeros((0, 2), np.float32))


def test_recalibrate_and_conv_fit_on_a_mesh_match_one_device():
    report = run_worker(Path(__file__).parent / "recalibrate_worker.py", n_devices=4)
    assert report["devices"] == 4
    assert max(report["errors"].values()) <= 1e-6, report["errors"]
