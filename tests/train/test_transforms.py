"""jaxbn.train.batch_sum_norm_grads: the reference code's batch-SUM step on gamma and beta."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxbn


@pytest.fixture(scope="module")
def grads():
    net = jaxbn.FullyConnectedNet((6, 5), 3, normalization="batchnorm")
    params, state = net.init(jax.random.key(0), 4)
    x = jax.random.normal(jax.random.key(1), (8, 4))
    y = jnp.arange(8) % 3

    def loss(p, reduce):
        logits, _ = net.apply(p, state, x, training=True)
        per_row = optax.softmax_cross_entropy_with_integer_labels(logits, y)
        return reduce(per_row)

    @jax.jit  # one program, not one compilation per eager op
    def both(p):
        return jax.grad(loss)(p, jnp.mean), jax.grad(loss)(p, jnp.sum)

    return params, *both(params)


def test_scales_gamma_and_beta_by_the_batch_size_only(grads):
    params, mean_g, sum_g = grads
    tx = jaxbn.train.batch_sum_norm_grads(8)
    updates, _ = tx.update(mean_g, tx.init(params), params)
    for layer, u, g_mean, g_sum in zip(params, updates, mean_g, sum_g, strict=True):
        for name in layer:
            if name in ("gamma", "beta"):
                # The sum-loss gradient is exactly what the reference code steps along.
                np.testing.assert_allclose(u[name], g_sum[name], rtol=1e-5, atol=1e-6)
                np.testing.assert_allclose(u[name], 8 * g_mean[name], rtol=1e-6)
            else:
                np.testing.assert_array_equal(u[name], g_mean[name])


def test_chained_with_sgd_steps_gamma_by_lr_times_batch_size(grads):
    params, mean_g, _ = grads
    tx = optax.chain(jaxbn.train.batch_sum_norm_grads(8), optax.sgd(0.1))
    updates, _ = tx.update(mean_g, tx.init(params), params)
    np.testing.assert_allclose(updates[0]["gamma"], -0.8 * mean_g[0]["gamma"], rtol=1e-6)
    np.testing.assert_allclose(updates[0]["W"], -0.1 * mean_g[0]["W"], rtol=1e-6)


@pytest.mark.parametrize(
    ("value", "error"), [(0, ValueError), (float("nan"), ValueError), ("8", TypeError)]
)
def test_rejects_bad_batch_size(value, error):
    with pytest.raises(error, match="batch_size"):
        jaxbn.train.batch_sum_norm_grads(value)
