"""Gradient transformations for reproducing reference code that steps some parameters differently.

``batch_sum_norm_grads(batch_size)`` is an optax ``GradientTransformation`` that multiplies the
gradients of the normalization parameters (every ``"gamma"`` and ``"beta"`` leaf) by
``batch_size`` and leaves all others unchanged. Chained before ``optax.sgd(lr)`` it reproduces
code whose backward starts from ``softmax(logits) - Y`` without dividing by the batch size and
divides only the affine layers' weight gradients by it: batch norm's ``gamma`` and ``beta`` then
step along the batch SUM of their per-example gradients, ``batch_size`` times the mean::

    optimizer = optax.chain(jaxbn.train.batch_sum_norm_grads(64), optax.sgd(0.1))

With a padded, masked short last batch the factor stays ``batch_size`` (the sum over the real
rows would be ``n_real`` times their mean): a difference on one step per epoch.
"""

from __future__ import annotations

import math
import numbers

import jax
import optax

__all__ = ["NORM_PARAM_NAMES", "batch_sum_norm_grads"]

NORM_PARAM_NAMES = ("gamma", "beta")


def _is_norm_param(path) -> bool:
    last = path[-1] if path else None
    return (
        isinstance(last, jax.tree_util.DictKey) and getattr(last, "key", None) in NORM_PARAM_NAMES
    )


def batch_sum_norm_grads(batch_size: int | float) -> optax.GradientTransformation:
    """Scale the ``"gamma"`` and ``"beta"`` gradients by ``batch_size``; pass the rest through.

    Args:
      batch_size: the factor, a finite number > 0 (the training batch size: turns the gradient
        of the mean loss into that of the summed loss on these parameters).

    Returns:
      A stateless ``optax.GradientTransformation``; its updates have the structure of the
      gradients, the ``"gamma"`` and ``"beta"`` leaves (dict keys, at any depth) multiplied.

    Raises:
      ValueError: ``batch_size`` not a finite number > 0.
      TypeError: ``batch_size`` not a real number.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Real):
        raise TypeError(f"batch_size must be a number > 0, got {batch_size!r}")
    if not (math.isfinite(batch_size) and batch_size > 0):
        raise ValueError(f"batch_size must be a finite number > 0, got {batch_size!r}")
    factor = float(batch_size)

    def update_fn(updates, state, params=None):
        del params
        scaled = jax.tree_util.tree_map_with_path(
            lambda path, g: g * factor if _is_norm_param(path) else g, updates
        )
        return scaled, state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update_fn)
