"""The measured memory facts of the closed-form backward, guarded (memory, not timing).

The closed form keeps only x (already alive) plus per-feature statistics between forward and
backward, and its compiled forward+backward needs no full-size temporary. Read from JAX's traced
residuals and XLA's compiled memory analysis: deterministic numbers, no clock.
"""

import jax
import jax.numpy as jnp
import pytest

import jaxbn
from benchmarks.timing import compiled_memory, residual_bytes

D = 1024


def _forward(backward):
    return lambda x, gamma, beta: jaxbn.batch_norm_train(x, gamma, beta, backward=backward)[0]


def _params():
    return jnp.ones(D, jnp.float32), jnp.zeros(D, jnp.float32)


def test_closed_form_new_residuals_are_per_feature_and_do_not_grow_with_the_batch():
    gamma, beta = _params()
    kept = {
        n: residual_bytes(_forward("closed_form"), jnp.ones((n, D), jnp.float32), gamma, beta)
        for n in (16, 256)
    }
    assert kept[16]["new"] == kept[256]["new"]  # O(features): independent of the batch
    assert kept[256]["new"] <= 4 * D * 4  # at most four float32 vectors of D
    assert kept[256]["largest_new"] <= D * 4
    # The same measure sees the staged backward keep full-size arrays: the check can fail.
    staged = residual_bytes(_forward("staged"), jnp.ones((256, D), jnp.float32), gamma, beta)
    assert staged["largest_new"] >= 256 * D * 4


@pytest.fixture(scope="module")
def temps_at_256x1024():
    """Compiled temporaries of value_and_grad(sum(y * c)) at (256, 1024), per backward."""
    x = c = jnp.ones((256, D), jnp.float32)
    gamma, beta = _params()
    out = {}
    for backward in ("closed_form", "autodiff"):

        def loss(x, gamma, beta, c, backward=backward):
            return jnp.sum(_forward(backward)(x, gamma, beta) * c)

        grad = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))
        out[backward] = compiled_memory(grad, x, gamma, beta, c)
    return out, x.nbytes


def test_closed_form_compiled_temporaries_stay_below_one_input(temps_at_256x1024):
    temps, input_bytes = temps_at_256x1024
    if not temps["closed_form"]:
        pytest.fail("this backend reports no memory analysis")
    assert temps["closed_form"]["temp"] < input_bytes
    # Autodiff of the same loss needs full-size temporaries: the measure discriminates.
    assert temps["autodiff"]["temp"] >= input_bytes
