"""Layer normalization (Ba et al., 2016): per-example statistics, no running state."""

from __future__ import annotations

from collections.abc import Sequence

import jax
from jax.typing import ArrayLike

from jaxbn import _checks
from jaxbn.norm import _dispatch as D
from jaxbn.norm import _formulas as F

__all__ = ["layer_norm"]


def layer_norm(
    x: ArrayLike,
    gamma: ArrayLike,
    beta: ArrayLike,
    *,
    eps: float = 1e-5,
    axis: int | Sequence[int] = -1,
    backward: str = "closed_form",
) -> jax.Array:
    """Apply layer normalization (Ba et al., 2016): per-example statistics over the feature axes.

    ``y = gamma * (x - mean_F) / sqrt(var_F + eps) + beta`` where ``mean_F`` and the biased
    ``var_F`` are taken over ``axis`` for each example separately. There is no running state:
    training and evaluation compute the same thing.

    Args:
      x: input, e.g. ``(N, D)``; any float dtype (statistics in float32 or wider).
      gamma, beta: of the feature shape (``x.shape`` at ``axis``).
      eps: added to the variance, > 0.
      axis: the feature axis or a tuple of feature axes (normalized over).
      backward: ``"closed_form"`` (default), ``"staged"`` or ``"autodiff"``.

    Returns:
      ``y``, shaped and typed like ``x``.
    """
    x = _checks.floating_array("x", x)
    eps = _checks.positive_finite("eps", eps)
    _checks.one_of("backward", backward, F.BACKWARDS)
    axes = _checks.feature_axes(axis, x.ndim)
    feature_shape = tuple(x.shape[a] for a in axes)
    gamma, beta = _checks.params(gamma, beta, feature_shape)
    others = tuple(a for a in range(x.ndim) if a not in axes)
    lay = F.layout(x.shape, axes, others, eps)
    y, _, _ = D.normalize(x, gamma, beta, None, lay, backward)
    return y
