"""Inverted dropout with an explicit PRNG key."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from jaxbn import _checks

__all__ = ["dropout"]


def dropout(x: ArrayLike, *, key: jax.Array | None, rate: float, training: bool) -> jax.Array:
    """Apply inverted dropout: drop each unit with probability ``rate``, rescale the rest.

    In training, each element is kept with probability ``1 - rate`` and kept elements are divided
    by ``1 - rate``, so the expected value is unchanged and evaluation is the identity
    (Srivastava et al., 2014, in its "inverted" form).

    Args:
      x: input of any shape, floating dtype.
      key: a ``jax.random`` key; required when ``training`` and ``rate > 0``.
      rate: the probability of DROPPING a unit, in [0, 1).
      training: Python bool; in evaluation (False) ``x`` is returned unchanged.

    Returns:
      An array shaped and typed like ``x``.

    Raises:
      ValueError: ``rate`` outside [0, 1), or no ``key`` when one is needed.
      TypeError: non-floating ``x`` or a non-bool ``training``.
    """
    x = _checks.floating_array("x", x)
    training = _checks.python_bool("training", training)
    rate = _checks.real_number("rate", rate)
    if not 0.0 <= rate < 1.0:
        raise ValueError(
            f"rate must be in [0, 1) (the probability of dropping a unit), got {rate!r}"
        )
    if not training or rate == 0.0:
        return x
    if key is None:
        raise ValueError("key must be a jax.random key when training with rate > 0, got None")
    keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
    return jnp.where(keep, x / jnp.asarray(1.0 - rate, x.dtype), jnp.zeros((), x.dtype))
