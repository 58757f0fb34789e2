"""Initializers: fixed std, Xavier (1 / fan_in), He (2 / fan_in)."""

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxbn


@pytest.fixture(autouse=True)
def _rank_promotion_raises():
    with jax.numpy_rank_promotion("raise"):
        yield


@pytest.mark.parametrize(
    ("weight_init", "fan_in", "want"),
    [
        ("he", 50, math.sqrt(2 / 50)),
        ("xavier", 50, math.sqrt(1 / 50)),
        (0.01, 50, 0.01),
        (3, 7, 3.0),
    ],
    ids=["he", "xavier", "fixed", "fixed_int"],
)
def test_init_std(weight_init, fan_in, want):
    assert jaxbn.init_std(weight_init, fan_in) == want


@pytest.mark.parametrize(
    ("fn", "std"),
    [
        (jaxbn.he_normal, math.sqrt(2 / 20)),
        (jaxbn.xavier_normal, math.sqrt(1 / 20)),
        (lambda key, shape, dtype: jaxbn.fixed_std_normal(key, shape, std=0.3, dtype=dtype), 0.3),
    ],
    ids=["he", "xavier", "fixed"],
)
def test_initializers_scale_a_standard_normal_draw(fn, std):
    # fan_in of a (2, 2, 5, 5) kernel is 2 * 2 * 5 = 20: all axes but the last. The draw is
    # jax.random.normal's (whose statistics are JAX's to test); the scale is ours.
    w = np.asarray(fn(jax.random.key(0), (2, 2, 5, 5), dtype=jnp.float32))
    assert w.shape == (2, 2, 5, 5) and w.dtype == np.float32
    z = np.asarray(jax.random.normal(jax.random.key(0), (100,), jnp.float32))
    np.testing.assert_allclose(w, (std * z).reshape(2, 2, 5, 5), rtol=1e-6)
    assert 0.5 < z.std() < 1.5  # a real standard normal draw, not zeros or a constant


def test_initializer_dtype():
    w = jax.eval_shape(lambda k: jaxbn.he_normal(k, (3, 2), dtype=jnp.bfloat16), jax.random.key(0))
    assert w.dtype == jnp.bfloat16 and w.shape == (3, 2)


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (
            lambda: jaxbn.init_std("kaiming", 5),
            ValueError,
            "weight_init must be one of .* got 'kaiming'",
        ),
        (lambda: jaxbn.init_std(-0.1, 5), ValueError, "got -0.1"),
        (lambda: jaxbn.init_std(float("nan"), 5), ValueError, "got nan"),
        (lambda: jaxbn.init_std(None, 5), TypeError, "got None"),
        (lambda: jaxbn.init_std("he", 0), ValueError, "fan_in must be a positive int, got 0"),
        (
            lambda: jaxbn.fixed_std_normal(jax.random.key(0), (3, 2), std=0.0),
            ValueError,
            "std must be a finite number > 0, got 0.0",
        ),
        (
            lambda: jaxbn.he_normal(jax.random.key(0), (5,)),
            ValueError,
            r"shape must have at least two positive dimensions .* got \(5,\)",
        ),
    ],
    ids=["unknown_name", "negative_std", "nan_std", "none", "fan_in_zero", "zero_std", "1d_shape"],
)
def test_initializer_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_he_fan_out_std_uses_the_output_size():
    assert jaxbn.init_std("he_fan_out", 784, fan_out=128) == math.sqrt(2 / 128)
    with pytest.raises(ValueError, match="fan_out must be a positive int for he_fan_out"):
        jaxbn.init_std("he_fan_out", 784)
    from jaxbn.initializers import he_fan_out_normal

    w = he_fan_out_normal(jax.random.key(0), (2000, 50))
    assert abs(float(jnp.std(w)) / math.sqrt(2 / 50) - 1) < 0.01  # 100,000 draws: ~0.2% spread


def test_net_with_fan_out_init_scales_each_layer_by_its_output_size():
    dims = (784, 128, 64, 32, 16, 10)
    key = jax.random.key(1)
    fan_out = jaxbn.FullyConnectedNet(dims[1:-1], 10, weight_init="he_fan_out").init(key, 784)[0]
    fan_in = jaxbn.FullyConnectedNet(dims[1:-1], 10, weight_init="he").init(key, 784)[0]
    ratios = [float(a["W"][0, 0] / b["W"][0, 0]) for a, b in zip(fan_out, fan_in, strict=True)]
    # Same normal draws, so W_fan_out / W_fan_in = sqrt(d_in / d_out) exactly per layer:
    # 2.47, 1.41, 1.41, 1.41, 1.26 for 784-128-64-32-16-10.
    want = [math.sqrt(d_in / d_out) for d_in, d_out in itertools.pairwise(dims)]
    np.testing.assert_allclose(ratios, want, rtol=1e-5)
