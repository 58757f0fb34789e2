"""Eager validation of the static facts of a call: shapes, dtypes, hyperparameter ranges.

Every check raises a ``ValueError`` or ``TypeError`` that names the argument and the value it got.
Only static facts are checked here (shapes, dtypes, Python hyperparameters); traced values are never
inspected.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np


def floating_array(name: str, x) -> jax.Array:
    """Return ``x`` as an array, requiring a floating-point dtype."""
    if not hasattr(x, "dtype"):
        x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"{name} must be a floating-point array, got dtype {x.dtype}")
    return x


def python_bool(name: str, value) -> bool:
    """Require a concrete Python (or NumPy) bool: a mode switch must be known at trace time."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise TypeError(
        f"{name} must be a Python bool (it selects the computation at trace time), "
        f"got {value!r} of type {type(value).__name__}"
    )


def real_number(name: str, value) -> float:
    """Require a concrete real number (hyperparameters are Python values, never traced)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(
            f"{name} must be a Python float, got {value!r} of type {type(value).__name__}"
        )
    return float(value)


def in_closed_range(name: str, value, lo: float, hi: float) -> float:
    value = real_number(name, value)
    if not lo <= value <= hi:
        raise ValueError(f"{name} must be in [{lo:g}, {hi:g}], got {value!r}")
    return value


def positive(name: str, value) -> float:
    value = real_number(name, value)
    if not value > 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")
    return value


def feature_axes(axis: int | Sequence[int], ndim: int, *, name: str = "axis") -> tuple[int, ...]:
    """Normalize ``axis`` (an int or a sequence of ints) to sorted non-negative axes of an array."""
    raw = (axis,) if isinstance(axis, (int, np.integer)) else tuple(axis)
    if not raw:
        raise ValueError(f"{name} must name at least one axis, got {axis!r}")
    axes = []
    for a in raw:
        if isinstance(a, bool) or not isinstance(a, (int, np.integer)):
            raise TypeError(f"{name} must be an int or a tuple of ints, got {axis!r}")
        if not -ndim <= a < ndim:
            raise ValueError(f"{name}={axis!r} is out of range for an input with {ndim} dimensions")
        axes.append(int(a) % ndim)
    if len(set(axes)) != len(axes):
        raise ValueError(f"{name} has repeated axes: {axis!r}")
    return tuple(sorted(axes))


def shape_is(name: str, value, expected: tuple[int, ...], what: str) -> None:
    shape = tuple(np.shape(value))
    if shape != tuple(expected):
        raise ValueError(f"{name} must have the {what} {tuple(expected)}, got shape {shape}")


def one_of(name: str, value, choices: Sequence):
    """Require ``value`` to be one of ``choices``."""
    if value not in tuple(choices):
        raise ValueError(f"{name} must be one of {tuple(choices)}, got {value!r}")
    return value


def params(gamma, beta, feature_shape: tuple[int, ...]) -> tuple[jax.Array, jax.Array]:
    """Require ``gamma`` and ``beta`` to be floating arrays of the feature shape."""
    for name, p in (("gamma", gamma), ("beta", beta)):
        shape_is(name, p, feature_shape, "feature shape")
        floating_array(name, p)
    return jnp.asarray(gamma), jnp.asarray(beta)
