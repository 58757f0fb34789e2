"""Inverted dropout: drop fraction, scaling, determinism, gradient and error paths."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxbn
from tests.helpers import jgrad

drop = jax.jit(jaxbn.dropout, static_argnames=("rate", "training"))
SHAPE = (500, 500)  # one shape for every test: the compiled RNG programs are shared


@pytest.mark.parametrize("rate", [0.1, 0.5, 0.8])
def test_zero_fraction_and_mean(key, rate):
    x = jnp.ones(SHAPE)
    y = drop(x, key=key, rate=rate, training=True)
    zero_fraction = float(jnp.mean(y == 0))
    # 250,000 Bernoulli draws: the standard error of the fraction is below 1e-3.
    assert abs(zero_fraction - rate) < 5e-3
    assert abs(float(jnp.mean(y)) - 1.0) < 0.02
    np.testing.assert_allclose(y[y != 0], 1.0 / (1.0 - rate), rtol=1e-6)


def test_identity_in_evaluation_and_at_rate_zero(key):
    x = jax.random.normal(key, (20, 7))
    assert jaxbn.dropout(x, key=key, rate=0.5, training=False) is x
    assert jaxbn.dropout(x, key=None, rate=0.0, training=True) is x


def test_same_key_same_mask_other_key_other_mask(key):
    x = jnp.ones(SHAPE)
    a = drop(x, key=key, rate=0.5, training=True)
    b = drop(x, key=key, rate=0.5, training=True)
    c = drop(x, key=jax.random.key(1), rate=0.5, training=True)
    np.testing.assert_array_equal(a, b)
    assert bool(jnp.any(a != c))


def test_gradient_is_mask_over_keep_probability(key):
    x = jax.random.normal(key, SHAPE)
    rate = 0.5
    mask = drop(jnp.ones_like(x), key=key, rate=rate, training=True) != 0
    dx = jgrad(lambda v: jnp.sum(jaxbn.dropout(v, key=key, rate=rate, training=True)))(x)
    np.testing.assert_allclose(dx, mask / (1.0 - rate), rtol=1e-6)


def test_dtype_preserved(key):
    y = drop(jnp.ones((8, 8), jnp.bfloat16), key=key, rate=0.5, training=True)
    assert y.dtype == jnp.bfloat16


@pytest.mark.parametrize("rate", [1.0, -0.1, 1.5])
def test_rate_out_of_range(key, rate):
    with pytest.raises(ValueError, match=rf"rate must be in \[0, 1\).*got {rate}"):
        jaxbn.dropout(jnp.ones(3), key=key, rate=rate, training=True)


def test_other_errors(key):
    with pytest.raises(ValueError, match="key must be a jax.random key"):
        jaxbn.dropout(jnp.ones(3), key=None, rate=0.5, training=True)
    with pytest.raises(TypeError, match="x must be a floating-point array"):
        jaxbn.dropout(jnp.ones(3, jnp.int32), key=key, rate=0.5, training=True)
    with pytest.raises(TypeError, match="training must be a Python bool"):
        jaxbn.dropout(jnp.ones(3), key=key, rate=0.5, training=1)
