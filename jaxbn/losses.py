"""Softmax cross-entropy from logits and integer labels, the L2 weight penalty, accuracy.

Shapes: N batch, C classes.
"""

from __future__ import annotations

import numbers
from typing import Any

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from jaxbn import _checks

__all__ = ["REDUCTIONS", "accuracy", "l2_penalty", "softmax_cross_entropy"]

REDUCTIONS = ("mean", "sum", "none")


def _check_logits_labels(logits, labels, mask):
    logits = _checks.floating_array("logits", logits)
    if logits.ndim != 2:
        raise ValueError(f"logits must have shape (N, C), got shape {tuple(logits.shape)}")
    labels = jnp.asarray(labels)  # canonical dtype: NumPy int64 becomes int32 without x64
    if not jnp.issubdtype(labels.dtype, jnp.integer):
        raise TypeError(
            f"labels must be an integer array of class indices, got dtype {labels.dtype}"
        )
    _checks.shape_is("labels", labels, logits.shape[:1], "shape (N,) of the logits' batch")
    if mask is not None:
        _checks.shape_is("mask", mask, logits.shape[:1], "shape (N,) of the logits' batch")
        mask = jnp.asarray(mask)
        if mask.dtype != jnp.bool_:
            raise TypeError(f"mask must be a boolean array, got dtype {mask.dtype}")
    return logits, labels, mask


def softmax_cross_entropy(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    mask: ArrayLike | None = None,
    reduction: str = "mean",
) -> jax.Array:
    """Compute the softmax cross-entropy ``-log softmax(logits)[label]`` per example, stably.

    ``nll_i = logsumexp(logits_i) - logits_i[label_i]``: the log-sum-exp subtracts the row maximum,
    so large logits neither overflow nor lose the answer to cancellation. Computed in float32 or
    wider whatever the logits' dtype.

    Args:
      logits: ``(N, C)`` unnormalized scores.
      labels: ``(N,)`` integer class indices in ``[0, C)``. A label outside that range gives a
        NaN loss for its row (it cannot be checked eagerly inside ``jit``).
      mask: optional ``(N,)`` bool; rows where it is False (padding) count for nothing: their loss
        is 0 and the mean is over the True rows only.
      reduction: ``"mean"`` (over the counted rows; 0 if there are none), ``"sum"`` or ``"none"``.

    Returns:
      A scalar for ``"mean"`` and ``"sum"``, an ``(N,)`` array for ``"none"``; float32 or wider.

    Raises:
      ValueError: wrong shapes or an unknown ``reduction``.
      TypeError: non-floating logits, non-integer labels or a non-bool mask.
    """
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    logits, labels, mask = _check_logits_labels(logits, labels, mask)
    z = logits.astype(jnp.promote_types(logits.dtype, jnp.float32))
    num_classes = z.shape[1]
    classes = jnp.arange(num_classes, dtype=labels.dtype)
    onehot = labels[:, None] == classes[None, :]
    picked = jnp.sum(jnp.where(onehot, z, 0), axis=1)
    nll = jax.nn.logsumexp(z, axis=1) - picked
    valid = (labels >= 0) & (labels < num_classes)
    nll = jnp.where(valid, nll, jnp.nan)
    if mask is not None:
        nll = jnp.where(mask, nll, 0)
    if reduction == "none":
        return nll
    total = jnp.sum(nll)
    if reduction == "sum":
        return total
    if mask is None:
        return total / nll.shape[0]
    return total / jnp.maximum(jnp.sum(mask, dtype=nll.dtype), 1)


def accuracy(
    logits: ArrayLike, labels: ArrayLike, *, mask: ArrayLike | None = None, reduction: str = "mean"
) -> jax.Array:
    """Compute the fraction (or count) of rows whose arg-max logit is the label.

    Args:
      logits: ``(N, C)`` scores.
      labels: ``(N,)`` integer class indices.
      mask: optional ``(N,)`` bool; False rows are not counted.
      reduction: ``"mean"`` (fraction of counted rows; 0 if none), ``"sum"`` (number correct) or
        ``"none"`` (per-row 0/1).

    Returns:
      A float32 scalar, or an ``(N,)`` float32 array for ``"none"``.
    """
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    logits, labels, mask = _check_logits_labels(logits, labels, mask)
    hit = jnp.argmax(logits, axis=1) == labels
    if mask is not None:
        hit = hit & mask
    hit = hit.astype(jnp.float32)
    if reduction == "none":
        return hit
    total = jnp.sum(hit)
    if reduction == "sum":
        return total
    n = hit.shape[0] if mask is None else jnp.maximum(jnp.sum(mask, dtype=jnp.float32), 1)
    return total / n


def _is_weight(path) -> bool:
    last = path[-1] if path else None
    return isinstance(last, jax.tree_util.DictKey) and getattr(last, "key", None) == "W"


def l2_penalty(params: Any, reg: float | ArrayLike) -> jax.Array:
    """Compute ``0.5 * reg * sum(W ** 2)`` over the weights only.

    Weights are the leaves stored under the dict key ``"W"`` (as in ``FullyConnectedNet``
    params); biases, ``gamma`` and ``beta`` are not penalized. The gradient is ``reg * W``.

    Args:
      params: a pytree of parameters, e.g. a list of per-layer dicts ``{"W", "b", ...}``.
      reg: the regularization strength: a Python float >= 0 (checked; 0 skips the sum), or a
        scalar array (not checked, may be traced: e.g. ``jax.vmap`` over a sweep of strengths).

    Returns:
      A scalar (float32 or wider); exactly 0.0 when ``reg`` is the Python number 0.

    Raises:
      ValueError: a Python ``reg`` < 0 or not finite, or an array ``reg`` that is not a scalar.
      TypeError: ``reg`` is neither a real number nor a numeric array.
    """
    leaves = [
        leaf for path, leaf in jax.tree_util.tree_leaves_with_path(params) if _is_weight(path)
    ]
    dtype = jnp.result_type(jnp.float32, *leaves) if leaves else jnp.float32
    reg_dtype = getattr(reg, "dtype", None)
    if reg_dtype is not None and not isinstance(reg, numbers.Number):
        if jnp.ndim(reg) != 0:
            raise ValueError(f"reg must be a scalar, got an array of shape {jnp.shape(reg)}")
        if not jnp.issubdtype(reg_dtype, jnp.number):
            raise TypeError(f"reg must be a real number, got an array of dtype {reg_dtype}")
    else:
        if isinstance(reg, bool) or not isinstance(reg, numbers.Real):
            raise TypeError(f"reg must be a Python float, got {reg!r} of type {type(reg).__name__}")
        if not 0.0 <= float(reg) < float("inf"):
            raise ValueError(f"reg must be a finite number >= 0, got {reg!r}")
        if reg == 0:
            return jnp.zeros((), dtype)
        reg = float(reg)
    if not leaves:
        return jnp.zeros((), dtype)
    total = sum(jnp.sum(jnp.square(w.astype(dtype))) for w in leaves)
    return jnp.asarray(0.5 * reg * total)
