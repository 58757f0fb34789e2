"""Numerical helpers shared by the tests: the course's relative error and central differences."""

import jax
import jax.numpy as jnp
import numpy as np


def rel_error(a, b) -> float:
    """max |a - b| / max(|a| + |b|, 1e-8), as the course material reports gradient checks."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(a) + np.abs(b)), 1e-8))


def central_difference(f, x, h=1e-6):
    """Gradient of the scalar function f at x by central differences, one entry at a time."""
    x = jnp.asarray(x)
    eye = jnp.eye(x.size, dtype=x.dtype).reshape((x.size, *x.shape))
    f_batched = jax.jit(jax.vmap(f))
    plus = f_batched(x[None] + h * eye)
    minus = f_batched(x[None] - h * eye)
    return ((plus - minus) / (2 * h)).reshape(x.shape)


def jgrad(f, argnums=0, **kwargs):
    """jax.jit(jax.grad(...)): one compilation instead of one per eager op."""
    return jax.jit(jax.grad(f, argnums=argnums, **kwargs))
