"""Weight initializers: fixed standard deviation, Xavier (1 / fan_in), He (2 / fan_in or fan_out).

Every initializer draws ``W ~ N(0, std^2)``; they differ only in ``std``:

- fixed:  ``std = s`` (the textbooks' ``weight_scale``),
- Xavier: ``std = sqrt(1 / fan_in)`` (the variant the course material calls Xavier, suited to
  sigmoid and tanh; Glorot & Bengio's own formula averages fan-in and fan-out),
- He:     ``std = sqrt(2 / fan_in)`` (He et al., 2015, for ReLU),
- He fan-out: ``std = sqrt(2 / fan_out)`` (He et al.'s backward-pass variant; what the AI-Edu
  course's MiniFramework code calls "MSRA").

``fan_in`` is the product of every axis but the last: ``D_in`` for a ``(D_in, D_out)`` matrix.
Biases (and batch-norm ``beta``) start at zero; ``gamma`` at one.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax.typing import DTypeLike

__all__ = [
    "WEIGHT_INITS",
    "fixed_std_normal",
    "he_fan_out_normal",
    "he_normal",
    "init_std",
    "xavier_normal",
]

WEIGHT_INITS = ("he", "he_fan_out", "xavier")


def _fan_in(shape: Sequence[int]) -> int:
    shape = tuple(shape)
    if len(shape) < 2 or any(
        isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1 for n in shape
    ):
        raise ValueError(
            f"shape must have at least two positive dimensions (fan_in..., fan_out), got {shape!r}"
        )
    return math.prod(shape[:-1])


def _check_std(std) -> float:
    if isinstance(std, bool) or not isinstance(std, numbers.Real):
        raise TypeError(f"std must be a Python float, got {std!r} of type {type(std).__name__}")
    if not (math.isfinite(float(std)) and float(std) > 0):
        raise ValueError(f"std must be a finite number > 0, got {std!r}")
    return float(std)


def init_std(weight_init: str | float, fan_in: int, *, fan_out: int | None = None) -> float:
    """Return the standard deviation an initializer uses for a layer with ``fan_in`` inputs.

    Args:
      weight_init: ``"he"`` (``sqrt(2 / fan_in)``), ``"he_fan_out"`` (``sqrt(2 / fan_out)``),
        ``"xavier"`` (``sqrt(1 / fan_in)``) or a positive float used as the fixed standard
        deviation.
      fan_in: number of inputs of the layer, >= 1.
      fan_out: number of outputs of the layer, >= 1; required by ``"he_fan_out"`` only.

    Returns:
      The standard deviation, a Python float.

    Raises:
      ValueError: an unknown name, a non-positive float, a non-positive ``fan_in`` or
        ``fan_out``, or ``"he_fan_out"`` without ``fan_out``.
      TypeError: ``weight_init`` neither a string nor a real number.

    Example:
      >>> init_std("he", 50)
      0.2
    """
    if isinstance(fan_in, bool) or not isinstance(fan_in, numbers.Integral) or fan_in < 1:
        raise ValueError(f"fan_in must be a positive int, got {fan_in!r}")
    if isinstance(weight_init, str):
        if weight_init == "he":
            return math.sqrt(2.0 / fan_in)
        if weight_init == "xavier":
            return math.sqrt(1.0 / fan_in)
        if weight_init == "he_fan_out":
            if (
                fan_out is None
                or isinstance(fan_out, bool)
                or not isinstance(fan_out, numbers.Integral)
                or int(fan_out) < 1
            ):
                raise ValueError(f"fan_out must be a positive int for he_fan_out, got {fan_out!r}")
            return math.sqrt(2.0 / int(fan_out))
        raise ValueError(
            f"weight_init must be one of {WEIGHT_INITS} or a positive float, got {weight_init!r}"
        )
    if isinstance(weight_init, bool) or not isinstance(weight_init, numbers.Real):
        raise TypeError(
            f"weight_init must be one of {WEIGHT_INITS} or a positive float, got {weight_init!r} "
            f"of type {type(weight_init).__name__}"
        )
    if not (math.isfinite(weight_init) and weight_init > 0):
        raise ValueError(
            f"weight_init as a fixed std must be a finite number > 0, got {weight_init!r}"
        )
    return float(weight_init)


def fixed_std_normal(
    key: jax.Array, shape: Sequence[int], *, std: float, dtype: DTypeLike = jnp.float32
) -> jax.Array:
    """Draw weights ``W ~ N(0, std^2)``.

    Args:
      key: a ``jax.random`` key.
      shape: the weight shape, e.g. ``(D_in, D_out)``.
      std: the standard deviation, > 0.
      dtype: a floating dtype.

    Returns:
      An array of ``shape`` and ``dtype``: ``std * jax.random.normal(key, (prod(shape),))``
      reshaped.
    """
    std = _check_std(std)
    size = _fan_in(shape) * shape[-1]
    return (std * jax.random.normal(key, (size,), dtype)).reshape(tuple(shape)).astype(dtype)


def xavier_normal(
    key: jax.Array, shape: Sequence[int], *, dtype: DTypeLike = jnp.float32
) -> jax.Array:
    """Draw weights ``W ~ N(0, 1 / fan_in)`` (Xavier, fan-in variant; for sigmoid and tanh).

    Args:
      key: a ``jax.random`` key.
      shape: the weight shape, e.g. ``(D_in, D_out)``; ``fan_in`` is the product of all but the
        last axis.
      dtype: a floating dtype.

    Returns:
      An array of ``shape`` and ``dtype``.
    """
    return fixed_std_normal(key, shape, std=init_std("xavier", _fan_in(shape)), dtype=dtype)


def he_normal(key: jax.Array, shape: Sequence[int], *, dtype: DTypeLike = jnp.float32) -> jax.Array:
    """Draw weights ``W ~ N(0, 2 / fan_in)`` (He et al., 2015; for ReLU).

    Args:
      key: a ``jax.random`` key.
      shape: the weight shape, e.g. ``(D_in, D_out)``; ``fan_in`` is the product of all but the
        last axis.
      dtype: a floating dtype.

    Returns:
      An array of ``shape`` and ``dtype``.
    """
    return fixed_std_normal(key, shape, std=init_std("he", _fan_in(shape)), dtype=dtype)


def he_fan_out_normal(
    key: jax.Array, shape: Sequence[int], *, dtype: DTypeLike = jnp.float32
) -> jax.Array:
    """Draw weights ``W ~ N(0, 2 / fan_out)`` (He et al.'s fan-out variant).

    Args:
      key: a ``jax.random`` key.
      shape: the weight shape, e.g. ``(D_in, D_out)``; ``fan_out`` is the last axis.
      dtype: a floating dtype.

    Returns:
      An array of ``shape`` and ``dtype``.
    """
    _fan_in(shape)  # validates the shape
    std = init_std("he_fan_out", 1, fan_out=int(shape[-1]))
    return fixed_std_normal(key, shape, std=std, dtype=dtype)
