"""Two-class 2-D toy sets for decision-boundary pictures: moons, circles and the "flower".

NumPy only and seeded: the same ``rng`` (or seed) gives the same points. The classes alternate
(example ``i`` has label ``i % 2``), so any ``n`` is balanced to within one point.
"""

from __future__ import annotations

import numbers

import numpy as np

__all__ = ["TOY_NAMES", "make_toy"]

TOY_NAMES = ("moons", "circles", "flower")


def _points(name: str, y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    n = len(y)
    if name == "moons":  # the upper arc around (0, 0) and the lower one around (1, 0.5)
        t = rng.uniform(0, np.pi, n)
        upper = np.stack([np.cos(t), np.sin(t)], 1)
        lower = np.stack([1 - np.cos(t), 0.5 - np.sin(t)], 1)
        return np.where(y[:, None] == 0, upper, lower)
    if name == "circles":  # radius 1 (class 0) and 0.5 (class 1)
        t = rng.uniform(0, 2 * np.pi, n)
        radius = np.where(y == 0, 1.0, 0.5)
        return radius[:, None] * np.stack([np.cos(t), np.sin(t)], 1)
    # flower: petals r = 4 sin(4 t), the classes on alternate petals, scaled by 1/4
    t = np.where(y == 0, 0.0, np.pi) + rng.uniform(0, np.pi, n)
    r = 4 * np.sin(4 * t)
    return np.stack([r * np.sin(t), r * np.cos(t)], 1) / 4


def make_toy(
    name: str, n: int, *, noise: float = 0.0, rng: np.random.Generator | int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``n`` points of a two-class 2-D set, plus Gaussian noise of std ``noise``.

    Args:
      name: ``"moons"`` (two interleaved half circles), ``"circles"`` (two concentric circles)
        or ``"flower"`` (the planar flower of the Coursera deep-learning course).
      n: number of points, >= 1; labels alternate 0, 1, 0, ...
      noise: standard deviation of the noise added to each coordinate, >= 0.
      rng: a NumPy ``Generator`` (drawn from, so consecutive calls give new points) or a seed.

    Returns:
      ``(x, y)``: float32 ``(n, 2)`` points and int32 ``(n,)`` labels in {0, 1}.

    Raises:
      ValueError: an unknown name, ``n < 1`` or a negative noise.
      TypeError: ``rng`` neither a Generator nor an int.
    """
    if name not in TOY_NAMES:
        raise ValueError(f"name must be one of {TOY_NAMES}, got {name!r}")
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    if not (isinstance(noise, numbers.Real) and noise >= 0):
        raise ValueError(f"noise must be a real number >= 0, got {noise!r}")
    if isinstance(rng, numbers.Integral) and not isinstance(rng, bool):
        rng = np.random.default_rng(int(rng))
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator or an int seed, got {rng!r}")
    y = np.arange(n) % 2
    x = _points(name, y, rng) + noise * rng.standard_normal((n, 2))
    return x.astype(np.float32), y.astype(np.int32)
