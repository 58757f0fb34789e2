"""Host-side (NumPy) preprocessing: scaling, flattening, mean-image subtraction, seeded splits.

Everything here takes and returns NumPy arrays; moving them to an accelerator is the caller's
business (``jax.device_put`` or ``jnp.asarray``).
"""

from __future__ import annotations

import math
import numbers

import numpy as np

__all__ = [
    "VAL_SPLITS",
    "flatten",
    "mean_image",
    "resolve_count",
    "scale_pixels",
    "shuffle",
    "subtract_mean",
    "train_val_split",
]

VAL_SPLITS = ("random", "first")


def scale_pixels(x: np.ndarray, max_value: float = 255.0) -> np.ndarray:
    """Map pixel values from ``[0, max_value]`` to ``[0, 1]`` as float32.

    Args:
      x: pixels of any shape, e.g. uint8 (N, H, W) or (N, H, W, C).
      max_value: the largest possible pixel value (255 for 8-bit images, 16 for the 8x8 digits).

    Returns:
      float32 array of the same shape, ``x / max_value``.

    Raises:
      ValueError: if ``max_value`` is not positive.
    """
    if not max_value > 0:
        raise ValueError(f"max_value must be positive, got {max_value}")
    out = np.asarray(x).astype(np.float32)  # always a fresh array, so the division is in place
    out /= np.float32(max_value)
    return out


def flatten(x: np.ndarray) -> np.ndarray:
    """Reshape (N, ...) to (N, D) with D the product of the trailing dimensions.

    Args:
      x: array of shape (N, H, W) or (N, H, W, C), or already (N, D).

    Returns:
      Array of shape (N, D), a view when possible. For NHWC input the features are ordered
      row by row, then column, then channel.
    """
    x = np.asarray(x)
    return x.reshape(x.shape[0], math.prod(x.shape[1:]))  # not -1: N may be 0


def mean_image(x_train: np.ndarray) -> np.ndarray:
    """Return the mean over the examples (axis 0), the "mean image" of CS231n's preprocessing.

    Args:
      x_train: training examples, (N, ...) with N >= 1.

    Returns:
      float32 array of shape ``x_train.shape[1:]``, accumulated in float64.

    Raises:
      ValueError: if ``x_train`` holds no example.
    """
    x_train = np.asarray(x_train)
    if x_train.shape[0] == 0:
        raise ValueError("x_train must hold at least one example to compute a mean image, got 0")
    return x_train.mean(axis=0, dtype=np.float64).astype(np.float32)


def subtract_mean(mean: np.ndarray, *arrays: np.ndarray) -> tuple[np.ndarray, ...]:
    """Subtract a mean image (computed on the training split) from every given split.

    Args:
      mean: float32 array of shape (...), typically ``mean_image(x_train)``.
      *arrays: arrays of shape (N_i, ...) with trailing dimensions equal to ``mean.shape``.

    Returns:
      One float32 array ``a - mean`` per input, in the same order.

    Raises:
      ValueError: if an array's trailing shape differs from ``mean.shape``.
    """
    out = []
    for i, a in enumerate(arrays):
        a = np.asarray(a)
        if a.shape[1:] != mean.shape:
            raise ValueError(
                f"arrays[{i}] has example shape {a.shape[1:]}, but the mean has shape {mean.shape}"
            )
        centred = a.astype(np.float32)  # a fresh array: the input is never modified
        centred -= mean
        out.append(centred)
    return tuple(out)


def resolve_count(size: float, n: int, name: str) -> int:
    """Turn a split size given as a count or a fraction into a count.

    Args:
      size: an int in ``0 .. n`` (a count) or a float in ``[0, 1)`` (a fraction of ``n``, rounded
        to the nearest integer).
      n: the number of examples available.
      name: the argument's name, for error messages.

    Returns:
      The count.

    Raises:
      ValueError: if ``size`` is out of range, a bool, or neither an int nor a float.
    """
    if isinstance(size, bool) or not isinstance(size, numbers.Real):
        raise ValueError(f"{name} must be an int count or a float fraction, got {size!r}")
    if isinstance(size, numbers.Integral):
        if not 0 <= size <= n:
            raise ValueError(f"{name} must be in [0, {n}] as a count, got {size}")
        return int(size)
    if not 0.0 <= size < 1.0:
        raise ValueError(f"{name} must be in [0, 1) as a fraction, got {size}")
    return round(float(size) * n)


def shuffle(
    x: np.ndarray, y: np.ndarray, *, seed: int | np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Apply the same seeded random permutation to examples and labels.

    Args:
      x: examples, (N, ...).
      y: labels, (N,).
      seed: an int seed or a ``numpy.random.Generator`` (which is advanced).

    Returns:
      ``(x[perm], y[perm])``.

    Raises:
      ValueError: if ``x`` and ``y`` hold different numbers of examples.
    """
    if len(x) != len(y):
        raise ValueError(f"x holds {len(x)} examples but y holds {len(y)}")
    perm = np.random.default_rng(seed).permutation(len(x))
    return x[perm], y[perm]


def train_val_split(
    x: np.ndarray,
    y: np.ndarray,
    val_size: float,
    *,
    seed: int | np.random.Generator,
    how: str = "random",
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Hold out a validation subset: chosen deterministically from ``seed``, or the first rows.

    Both parts keep the original order of the examples; only the choice of which examples go to
    validation is random. The same ``(len(x), val_size, seed)`` always selects the same examples.

    Args:
      x: examples, (N, ...).
      y: labels, (N,).
      val_size: the validation size, a count (int) or a fraction of N (float in [0, 1)).
      seed: an int seed or a ``numpy.random.Generator`` (which is advanced, with either ``how``,
        so later draws do not depend on it).
      how: ``"random"`` (a seeded choice) or ``"first"``: the first ``n_val`` examples (what
        some reference code does; on MNIST an easier validation set than a random one).

    Returns:
      ``(x_train, y_train, x_val, y_val)`` with ``N - n_val`` and ``n_val`` examples.

    Raises:
      ValueError: if ``val_size`` is out of range, ``how`` unknown or ``x`` and ``y`` have
        different lengths.
    """
    n = len(x)
    if len(y) != n:
        raise ValueError(f"x holds {n} examples but y holds {len(y)}")
    if how not in VAL_SPLITS:
        raise ValueError(f"how must be one of {VAL_SPLITS}, got {how!r}")
    n_val = resolve_count(val_size, n, "val_size")
    val_idx = np.sort(np.random.default_rng(seed).permutation(n)[:n_val])
    if how == "first":
        val_idx = np.arange(n_val)
    keep = np.ones(n, dtype=bool)
    keep[val_idx] = False
    return x[keep], y[keep], x[val_idx], y[val_idx]
