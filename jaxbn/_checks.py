"""Eager validation of the static facts of a call: shapes, dtypes, hyperparameter ranges.

Every check raises a ``ValueError`` or ``TypeError`` that names the argument and the value it got.
Only static facts are checked here (shapes, dtypes, Python hyperparameters); traced values are never
inspected.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Sequence

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


def positive_finite(name: str, value) -> float:
    """Require a finite real number > 0 (``inf`` would silently turn every output into 0)."""
    value = positive(name, value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return value


def python_int(name: str, value, *, low: int | None = None, high: int | None = None) -> int:
    """Require a Python or NumPy integer (not a bool, not a float) in ``[low, high]``."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {value!r} of type {type(value).__name__}")
    value = int(value)
    if (low is not None and value < low) or (high is not None and value > high):
        lo = "-inf" if low is None else low
        hi = "inf" if high is None else high
        raise ValueError(f"{name} must be an int in [{lo}, {hi}], got {value!r}")
    return value


def all_finite(name: str, a) -> None:
    """Require a host array without NaN or Inf; the message names the first bad index."""
    a = np.asarray(a)
    if not np.issubdtype(a.dtype, np.inexact):
        return
    bad = ~np.isfinite(a)
    if bad.any():
        index = tuple(int(i) for i in np.unravel_index(int(np.argmax(bad)), a.shape))
        raise ValueError(
            f"{name} must hold only finite values, got {float(a[index])} at index {index} "
            f"({int(bad.sum())} non-finite values in all)"
        )


def feature_axes(axis: int | Sequence[int], ndim: int, *, name: str = "axis") -> tuple[int, ...]:
    """Normalize ``axis`` (an int or a sequence of ints) to sorted non-negative axes of an array."""
    if isinstance(axis, (int, np.integer)):
        raw = (axis,)
    elif isinstance(axis, Iterable) and not isinstance(axis, (str, bytes)):
        raw = tuple(axis)
    else:
        raise TypeError(
            f"{name} must be an int or a tuple of ints, got {axis!r} of type {type(axis).__name__}"
        )
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


def positive_int(name: str, value) -> int:
    """Require an int >= 1 (a Python or NumPy integer, not a bool)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


def nonneg_int(name: str, value, upper: int | None = None) -> int:
    """Require an int >= 0 (and < ``upper`` when given)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral) or value < 0:
        raise ValueError(f"{name} must be a non-negative int, got {value!r}")
    if upper is not None and int(value) >= upper:
        raise ValueError(f"{name} must be < {upper}, got {value!r}")
    return int(value)


def nonneg_finite(name: str, value) -> float:
    """Require a finite Python real >= 0."""
    value = real_number(name, value)
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return value


def net(value):
    """Require a network configuration: an object with ``init``, ``apply`` and ``num_classes``."""
    if not (
        callable(getattr(value, "init", None))
        and callable(getattr(value, "apply", None))
        and hasattr(value, "num_classes")
    ):
        raise TypeError(
            "net must be a jaxbn network (e.g. jaxbn.FullyConnectedNet), "
            f"got {type(value).__name__}"
        )
    return value


def optimizer(value):
    """Require an optax gradient transformation (``init`` and ``update``)."""
    if not (callable(getattr(value, "init", None)) and callable(getattr(value, "update", None))):
        raise TypeError(
            "optimizer must be an optax.GradientTransformation (e.g. optax.adam(1e-3)), "
            f"got {type(value).__name__}"
        )
    return value


def xy(x, y, x_name: str = "x", y_name: str = "y"):
    """Check a data set's static facts: floating ``(N, ...)`` inputs, ``(N,)`` integer labels."""
    if not hasattr(x, "dtype") or not hasattr(x, "shape"):
        x = np.asarray(x)
    if not hasattr(y, "dtype") or not hasattr(y, "shape"):
        y = np.asarray(y)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(
            f"{x_name} must be a floating-point array (scale integer pixels first), got dtype "
            f"{x.dtype}"
        )
    if x.ndim < 2:
        raise ValueError(f"{x_name} must have shape (N, D) or (N, ...), got shape {tuple(x.shape)}")
    if not jnp.issubdtype(y.dtype, jnp.integer):
        raise TypeError(f"{y_name} must be an integer array of class labels, got dtype {y.dtype}")
    if y.ndim != 1:
        raise ValueError(f"{y_name} must have shape (N,), got shape {tuple(y.shape)}")
    if x.shape[0] != y.shape[0]:
        raise ValueError(
            f"{x_name} and {y_name} must have the same number of examples, got {x.shape[0]} and "
            f"{y.shape[0]}"
        )
    return x, y


def class_labels(name: str, y, num_classes: int) -> None:
    """Require host integer labels in ``[0, num_classes)`` (a bad label gives a NaN loss)."""
    y = np.asarray(y)
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(
            f"{name} must hold class indices in [0, {num_classes}), got values in "
            f"[{y.min()}, {y.max()}]"
        )


def tree_shapes_match(name: str, tree, expected, why: str) -> None:
    """Require ``tree`` to have the structure and leaf shapes of ``expected`` (shape structs).

    ``why`` says where ``expected`` comes from, e.g. ``"the net with input_dim=784"``.
    """
    got = jax.tree_util.tree_flatten_with_path(tree)
    want = jax.tree_util.tree_flatten_with_path(expected)
    if got[1] != want[1]:
        raise ValueError(
            f"{name} does not have the structure of {why}: got {got[1]}, expected {want[1]}"
        )
    for (path, leaf), (_, ref) in zip(got[0], want[0], strict=True):
        if tuple(np.shape(leaf)) != tuple(ref.shape):
            raise ValueError(
                f"{name}{jax.tree_util.keystr(path)} has shape {tuple(np.shape(leaf))} but "
                f"{why} has {tuple(ref.shape)}; was it built for another net?"
            )
