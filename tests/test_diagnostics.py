"""jaxbn.diagnostics: per-layer statistics of a FullyConnectedNet's activations."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxbn
from jaxbn import diagnostics


@pytest.fixture(scope="module")
def x():
    return np.random.default_rng(0).standard_normal((16, 5)).astype(np.float32)


def test_hidden_outputs_are_what_apply_builds_the_logits_from(x):
    net = jaxbn.FullyConnectedNet((4, 4, 3), 2, normalization="batchnorm", activation="tanh")
    params, state = net.init(jax.random.key(0), 5)
    hs, s1 = jax.jit(net.hidden, static_argnames="training")(params, state, x, training=True)
    logits, s2 = jax.jit(net.apply, static_argnames="training")(params, state, x, training=True)
    assert [h.shape for h in hs] == [(16, 4), (16, 4), (16, 3)]
    np.testing.assert_array_equal(logits, hs[-1] @ params[-1]["W"] + params[-1]["b"][None])
    jax.tree.map(np.testing.assert_array_equal, s1, s2)
    z = x @ params[0]["W"] + params[0]["b"][None]  # layer 1 by hand: BN with batch statistics
    manual = jnp.tanh((z - z.mean(0, keepdims=True)) / jnp.sqrt(z.var(0, keepdims=True) + net.eps))
    np.testing.assert_allclose(hs[0], manual, atol=1e-5)


def test_statistics_per_layer(x):
    net = jaxbn.FullyConnectedNet((6, 6), 2, activation="relu", weight_init=1.0)
    params, state = net.init(jax.random.key(1), 5)
    params[1]["W"] = params[1]["W"].at[:, :2].set(0.0)  # units 0, 1 of layer 2: always 0
    params[1]["b"] = params[1]["b"].at[:2].set(-1.0)
    hs, stats = diagnostics.activation_statistics(net, params, state, x)
    assert hs.shape == (2, 16, 6)
    want, _ = net.hidden(params, state, x, training=True)
    np.testing.assert_array_equal(hs, jnp.stack(want))
    for i, h in enumerate(want):
        h = np.asarray(h)
        np.testing.assert_allclose(stats.mean[i], h.mean(), rtol=1e-6)
        np.testing.assert_allclose(stats.std[i], h.std(), rtol=1e-5)
        assert stats.zero[i] == pytest.approx((h == 0).mean())
        assert stats.dead[i] == pytest.approx((h == 0).all(0).mean())
    assert stats.dead[1] >= 2 / 6 and stats.zero[1] >= stats.dead[1]
    assert np.all(np.asarray(stats.saturated) == 0)  # ReLU has no flat upper end


@pytest.mark.parametrize("activation", ["tanh", "sigmoid"])
def test_saturation_of_large_weights(x, activation):
    net = jaxbn.FullyConnectedNet((8, 8), 2, activation=activation, weight_init=30.0)
    params, state = net.init(jax.random.key(2), 5)
    _, stats = diagnostics.activation_statistics(net, params, state, x)
    assert np.all(np.asarray(stats.saturated) > 0.8) and np.all(np.asarray(stats.dead) == 0)
    small = jaxbn.FullyConnectedNet((8, 8), 2, activation=activation, weight_init=1e-3)
    params, state = small.init(jax.random.key(2), 5)
    _, stats = diagnostics.activation_statistics(small, params, state, x)
    assert np.all(np.asarray(stats.saturated) == 0)


def test_histograms_clip_into_the_edge_bins():
    hs = np.array([[[0.0, 0.5, 1.0]], [[0.0, 10.0, 1e6]]])  # (layers, N, units)
    lo, hi = diagnostics.histogram_range("relu", hs[0])
    assert lo == 0 and 0.99 <= hi <= 1.0
    (c1, e1), (c2, e2) = diagnostics.layer_histograms(
        hs, bins=4, value_range=(lo, hi), drop_zeros=True
    )
    assert e1[0] == e2[0] == 0 and e1[-1] == e2[-1] == hi
    assert c1.sum() == 2 and c2.sum() == 2 and c2[-1] == 2  # zeros left out; big values clipped
    ((t, edges),) = diagnostics.layer_histograms(
        np.array([[[-1.0, 0.0, 1.0]]]), bins=2, value_range=(-1, 1), drop_zeros=False
    )
    assert edges.tolist() == [-1.0, 0.0, 1.0] and t.sum() == 3
    assert diagnostics.histogram_range("tanh", hs[0]) == (-1.0, 1.0)


def test_errors():
    with pytest.raises(ValueError, match="activations must be"):
        diagnostics.layer_statistics(np.zeros((2, 3)), activation="relu")
    with pytest.raises(ValueError, match="activation must be"):
        diagnostics.layer_statistics(np.zeros((1, 2, 3)), activation="gelu")
    net = jaxbn.FullyConnectedNet((4, 3), 2)
    params, state = net.init(jax.random.key(0), 5)
    with pytest.raises(ValueError, match="one width"):
        diagnostics.activation_statistics(net, params, state, np.zeros((2, 5), np.float32))
