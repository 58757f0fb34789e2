"""Folding eval-mode batch norm into the layer before it: same outputs, dense and conv."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import rel_error
from jax import lax

import jaxbn


def _random_bn(key, d, dtype):
    k1, k2, k3, k4 = jax.random.split(key, 4)
    gamma = 1.0 + 0.5 * jax.random.normal(k1, (d,), dtype)
    beta = jax.random.normal(k2, (d,), dtype)
    state = jaxbn.BatchNormState(
        mean=jax.random.normal(k3, (d,), dtype) * 2.0,
        var=jax.random.uniform(k4, (d,), dtype, 0.1, 3.0),
        count=jnp.zeros((), jnp.int32),
    )
    return gamma, beta, state


def _conv(x, W, b):
    y = lax.conv_general_dilated(x, W, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return y + b[None, None, None, :]


@pytest.mark.parametrize(
    ("kind", "dtype", "tol"),
    [
        ("dense", jnp.float32, 1e-5),
        ("dense", jnp.float64, 1e-12),
        # conv programs take seconds each to compile: full suite only
        pytest.param("conv", jnp.float32, 1e-5, marks=pytest.mark.slow),
        pytest.param("conv", jnp.float64, 1e-12, marks=pytest.mark.slow),
    ],
)
def test_fold_batch_norm_matches_affine_then_bn(kind, dtype, tol):
    if kind == "dense":
        x_shape, w_shape = (16, 5), (5, 7)
        op = lambda x, W, b: x @ W + b[None, :]  # noqa: E731
    else:
        x_shape, w_shape = (2, 6, 6, 3), (3, 3, 3, 7)
        op = _conv

    @jax.jit  # one program instead of a compilation per eager op
    def run(key):
        keys = jax.random.split(key, 4)
        x = jax.random.normal(keys[0], x_shape, dtype)
        W = jax.random.normal(keys[1], w_shape, dtype)
        b = jax.random.normal(keys[2], (7,), dtype)
        gamma, beta, state = _random_bn(keys[3], 7, dtype)
        want, _ = jaxbn.batch_norm(op(x, W, b), gamma, beta, state, training=False, eps=1e-3)
        W2, b2 = jaxbn.fold_batch_norm(W, b, gamma, beta, state, eps=1e-3)
        return want, op(x, W2, b2), W2, b2

    with jax.enable_x64(dtype == jnp.float64):
        want, got, W2, b2 = run(jax.random.key(0))
        assert W2.shape == w_shape and W2.dtype == dtype and b2.shape == (7,)
        assert rel_error(got, want) <= tol


@pytest.mark.parametrize("dtype,tol", [(jnp.float32, 1e-5), (jnp.float64, 1e-12)])
@pytest.mark.parametrize("kind", ["fc", pytest.param("conv", marks=pytest.mark.slow)])
def test_fold_net_same_eval_logits(kind, dtype, tol):
    with jax.enable_x64(dtype == jnp.float64):
        if kind == "fc":
            net = jaxbn.FullyConnectedNet((8, 6), 4, normalization="batchnorm")
            shape = 5
            x = jax.random.normal(jax.random.key(1), (12, 5), dtype)
        else:
            net = jaxbn.ConvNet((4, 5), 4, hidden_dims=(6,), normalization="batchnorm")
            shape = (8, 8, 2)
            x = jax.random.normal(jax.random.key(1), (3, 8, 8, 2), dtype)
        params, state = net.init(jax.random.key(0), shape, dtype=dtype)
        # Non-trivial gamma, beta and statistics: one training-mode pass with momentum 0.5.
        params = jax.tree.map(lambda p: p + 0.3, params)
        _, state = jax.jit(net.apply, static_argnames="training")(
            params, state, x * 2.0 + 1.0, training=True
        )
        want, _ = jax.jit(net.apply, static_argnames="training")(params, state, x, training=False)
        plain_net, plain_params, plain_state = jaxbn.fold_net(net, params, state)
        assert plain_net.normalization is None
        assert plain_state == [None] * len(state)
        assert all(set(p) == {"W", "b"} for p in plain_params)
        plain_apply = jax.jit(plain_net.apply, static_argnames="training")
        got, _ = plain_apply(plain_params, plain_state, x, training=False)
        assert rel_error(got, want) <= tol


def test_fold_rejects_bad_input():
    state = jaxbn.batch_norm_state(3)
    with pytest.raises(ValueError, match="b must have"):
        jaxbn.fold_batch_norm(np.ones((2, 3)), np.ones(4), np.ones(3), np.ones(3), state)
    with pytest.raises(ValueError, match="W must be"):
        jaxbn.fold_batch_norm(np.ones(3), np.ones(3), np.ones(3), np.ones(3), state)
    with pytest.raises(TypeError, match="BatchNormState"):
        jaxbn.fold_batch_norm(np.ones((2, 3)), np.ones(3), np.ones(3), np.ones(3), (0, 1))
    net = jaxbn.FullyConnectedNet((3,), 2, normalization="layernorm")
    params, state = net.init(jax.random.key(0), 2)
    with pytest.raises(ValueError, match="batch norm only"):
        jaxbn.fold_net(net, params, state)
