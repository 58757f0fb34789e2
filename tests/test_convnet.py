"""ConvNet: layout, spatial batch norm, masks, NCHW, and use through fit/evaluate."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import rel_error
from jax import lax

import jaxbn

SHAPE = (6, 6, 2)


@pytest.fixture(scope="module")
def bn_net():
    net = jaxbn.ConvNet((3, 4), 3, hidden_dims=(5,), normalization="batchnorm")
    params, state = net.init(jax.random.key(0), SHAPE)
    apply = jax.jit(net.apply, static_argnames="training")
    return net, params, state, apply


def test_init_shapes_and_state(bn_net):
    net, params, state, _ = bn_net
    assert [p["W"].shape for p in params] == [(3, 3, 2, 3), (3, 3, 3, 4), (1 * 1 * 4, 5), (5, 3)]
    assert [set(p) for p in params[:-1]] == [{"W", "b", "gamma", "beta"}] * 3
    assert set(params[-1]) == {"W", "b"}
    assert [s.mean.shape for s in state] == [(3,), (4,), (5,)]
    assert net.feature_shape(SHAPE) == (1, 1, 4)


def test_spatial_batch_norm_statistics_over_n_h_w(bn_net):
    net, params, state, apply = bn_net
    x = jax.random.normal(jax.random.key(1), (4, *SHAPE)) * 2.0 + 1.0
    _, new = apply(params, state, x, training=True)
    z = lax.conv_general_dilated(
        x, params[0]["W"], (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    m = net.momentum
    assert rel_error(new[0].mean, (1 - m) * jnp.mean(z, (0, 1, 2))) <= 1e-5
    assert rel_error(new[0].var, m + (1 - m) * jnp.var(z, (0, 1, 2))) <= 1e-5


def test_mask_leaves_padding_out_even_nan(bn_net):
    net, params, state, apply = bn_net
    x = jax.random.normal(jax.random.key(2), (5, *SHAPE))
    want, want_state = apply(params, state, x, training=True)
    padded = jnp.concatenate([x, jnp.full((3, *SHAPE), jnp.nan)])
    mask = jnp.arange(8) < 5
    got, got_state = jax.jit(net.apply, static_argnames="training")(
        params, state, padded, training=True, mask=mask
    )
    assert rel_error(got[:5], want) <= 1e-5
    for a, b in zip(got_state, want_state, strict=True):
        assert rel_error(a.mean, b.mean) <= 1e-5 and rel_error(a.var, b.var) <= 1e-5


def test_nchw_matches_nhwc():
    nhwc = jaxbn.ConvNet((3,), 3, normalization="batchnorm", pool=2)
    nchw = jaxbn.ConvNet((3,), 3, normalization="batchnorm", pool=2, data_format="NCHW")
    params, state = nhwc.init(jax.random.key(0), SHAPE)
    x = jax.random.normal(jax.random.key(1), (4, *SHAPE))
    want, want_state = nhwc.apply(params, state, x, training=True)
    # NCHW flattens in (c, h, w) order: permute the dense layer's rows to match.
    h, w, c = nhwc.feature_shape(SHAPE)
    dense = params[1]["W"].reshape(h, w, c, -1).transpose(2, 0, 1, 3).reshape(h * w * c, -1)
    params_c = [params[0], {"W": dense, "b": params[1]["b"]}]
    got, got_state = nchw.apply(params_c, state, x.transpose(0, 3, 1, 2), training=True)
    assert rel_error(got, want) <= 1e-5
    assert rel_error(got_state[0].var, want_state[0].var) <= 1e-5


def test_conv_layer_norm_normalizes_channels_per_position():
    net = jaxbn.ConvNet((4,), 3, normalization="layernorm", pool=1, activation="tanh")
    params, state = net.init(jax.random.key(0), SHAPE)
    params[0]["gamma"] = params[0]["gamma"] * 2.0
    x = jax.random.normal(jax.random.key(1), (2, *SHAPE))
    z = net.apply(params, state, x, training=False, stop_before_norm=0)[0]
    mu, var = jnp.mean(z, -1, keepdims=True), jnp.var(z, -1, keepdims=True)
    h = jnp.tanh(2.0 * (z - mu) / jnp.sqrt(var + net.eps)).reshape(2, -1)
    want = h @ params[1]["W"] + params[1]["b"][None, :]
    assert rel_error(net.apply(params, state, x, training=False)[0], want) <= 1e-5


@pytest.mark.slow  # end to end: fit and evaluate
def test_fit_and_evaluate_take_images():
    rng = np.random.default_rng(0)
    y = np.arange(60) % 2
    x = (rng.normal(size=(60, 6, 6, 1)) * 0.3 + (2.0 * y - 1.0)[:, None, None, None]).astype(
        np.float32
    )
    net = jaxbn.ConvNet((4,), 2, normalization="batchnorm", pool=3)
    result = jaxbn.fit(net, optax.adam(1e-2), x, y, epochs=3, batch_size=16, progress=False)
    ts = result.train_state
    metrics = jaxbn.evaluate(net, ts.params, ts.state, x, y, batch_size=25)
    logits, _ = net.apply(ts.params, ts.state, x, training=False)
    assert metrics["accuracy"] == pytest.approx(float(np.mean(np.argmax(logits, 1) == y)))
    assert metrics["accuracy"] >= 0.95


def test_bad_configuration_and_input():
    with pytest.raises(ValueError, match="channels must name"):
        jaxbn.ConvNet((), 3)
    with pytest.raises(ValueError, match="data_format"):
        jaxbn.ConvNet((2,), 3, data_format="HWC")
    with pytest.raises(ValueError, match="pool"):
        jaxbn.ConvNet((2,), 3, pool=0)
    net = jaxbn.ConvNet((2, 2, 2), 3)
    with pytest.raises(ValueError, match="too small"):
        net.init(jax.random.key(0), (4, 4, 1))
    with pytest.raises(TypeError, match="input_shape"):
        net.init(jax.random.key(0), 16)
    net = jaxbn.ConvNet((2,), 3, dropout=0.5)
    params, state = net.init(jax.random.key(0), (4, 4, 1))
    with pytest.raises(ValueError, match="channels"):
        net.apply(params, state, jnp.zeros((1, 4, 4, 3)), training=False)
    with pytest.raises(ValueError, match="key"):
        net.apply(params, state, jnp.zeros((1, 4, 4, 1)), training=True)
