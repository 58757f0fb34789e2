"""Per-layer activation diagnostics of a ``FullyConnectedNet``: statistics and histograms.

What the CS231n notes look at when they show how the weight initialization shapes a deep net:
each hidden layer's activations, their mean and standard deviation, their histogram, and how
many units no longer respond: dead ReLUs (zero for every example) and saturated tanh/sigmoid
units (near the flat ends of the curve, where the gradient vanishes).
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from jaxbn.losses import softmax_cross_entropy
from jaxbn.nn import FullyConnectedNet, Params, State

__all__ = [
    "SATURATION",
    "LayerStats",
    "activation_statistics",
    "histogram_range",
    "layer_histograms",
    "layer_statistics",
    "symmetry_step",
]

SATURATION = 0.99  # tanh |h| > 0.99, sigmoid h < 0.01 or h > 0.99: the flat ends


class LayerStats(NamedTuple):
    """Statistics of L layers' activations; every field is ``(L,)``.

    Attributes:
      mean, std: over all examples and units of the layer.
      zero: fraction of the values exactly 0 (ReLU: a negative input).
      dead: fraction of the units that are 0 for every example (dead ReLUs).
      saturated: fraction of the values at a flat end of the activation (tanh ``|h| > 0.99``,
        sigmoid ``h < 0.01`` or ``h > 0.99``; always 0 for ReLU, which has no upper end).
    """

    mean: jax.Array
    std: jax.Array
    zero: jax.Array
    dead: jax.Array
    saturated: jax.Array


def layer_statistics(activations: ArrayLike, *, activation: str) -> LayerStats:
    """Statistics of stacked activations ``(L, N, H)``: L layers, N examples, H units each.

    Raises:
      ValueError: activations not 3-D, or an unknown activation.
    """
    hs = jnp.asarray(activations)
    if hs.ndim != 3:
        raise ValueError(f"activations must be (layers, N, units), got shape {hs.shape}")
    axes = (1, 2)
    if activation == "tanh":
        saturated = jnp.mean(jnp.abs(hs) > SATURATION, axes)
    elif activation == "sigmoid":
        saturated = jnp.mean((hs < 1 - SATURATION) | (hs > SATURATION), axes)
    elif activation == "relu":
        saturated = jnp.zeros(hs.shape[0], jnp.float32)
    else:
        raise ValueError(f"activation must be 'relu', 'sigmoid' or 'tanh', got {activation!r}")
    return LayerStats(
        mean=jnp.mean(hs, axes),
        std=jnp.std(hs, axes),
        zero=jnp.mean(hs == 0, axes),
        dead=jnp.mean(jnp.all(hs == 0, axis=1), axis=1),
        saturated=saturated,
    )


@partial(jax.jit, static_argnames=("net", "training"))
def activation_statistics(
    net: FullyConnectedNet, params: Params, state: State, x: ArrayLike, *, training: bool = True
) -> tuple[jax.Array, LayerStats]:
    """Run ``net`` on ``x`` and describe every hidden layer's output.

    Args:
      net: a net with at least one hidden layer, all of one width H.
      params, state: as ``net.init`` returns them.
      x: ``(N, D)`` inputs.
      training: batch statistics (True) or running statistics (False) in batch norm.

    Returns:
      ``(activations, stats)``: the stacked activations ``(L, N, H)`` and their ``LayerStats``.

    Raises:
      ValueError: a net without hidden layers or with layers of different widths.
    """
    if len(set(net.hidden_dims)) != 1:
        raise ValueError(
            f"net.hidden_dims must be one width repeated, got {net.hidden_dims} (stack them "
            "yourself from net.hidden for other shapes)"
        )
    hs, _ = net.hidden(params, state, x, training=training)
    hs = jnp.stack(hs)
    return hs, layer_statistics(hs, activation=net.activation)


def histogram_range(activation: str, first_layer: ArrayLike) -> tuple[float, float]:
    """A shared x range for a row of histograms: tanh [-1, 1], sigmoid [0, 1], ReLU [0, p99.5].

    For ReLU the top is the 99.5th percentile of the positive values of ``first_layer``.
    """
    if activation == "tanh":
        return -1.0, 1.0
    if activation == "sigmoid":
        return 0.0, 1.0
    values = np.asarray(first_layer)
    positive = values[values > 0]
    top = float(np.percentile(positive, 99.5)) if positive.size else 1.0
    return 0.0, top if top > 0 else 1.0


def layer_histograms(
    activations: ArrayLike, *, bins: int, value_range: tuple[float, float], drop_zeros: bool
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per layer ``(counts, edges)`` over ``value_range``; values outside it count in the end bins.

    ``drop_zeros`` leaves exact zeros out (for ReLU, whose zeros would dwarf the rest; their
    share is ``LayerStats.zero``). Computed on the host with NumPy.
    """
    lo, hi = value_range
    out = []
    for h in np.asarray(activations):
        v = h.ravel()
        if drop_zeros:
            v = v[v != 0] if lo < 0 else v[v > 0]
        counts, edges = np.histogram(np.clip(v, lo, hi), bins=bins, range=(lo, hi))
        out.append((counts, edges))
    return out


@partial(jax.jit, static_argnames="net")
def symmetry_step(
    net: FullyConnectedNet, params: Params, state: State, x: ArrayLike, y: ArrayLike, *, lr
) -> tuple[Params, jax.Array]:
    """Measure how alike the units of each hidden layer are, then take one SGD step.

    The symmetry problem: with a zero or constant init every unit of a layer computes the same
    function and receives the same gradient, so they stay identical however long they train.
    A spread is the largest ``|a[:, j] - a[:, 0]|`` over the units ``j`` (columns) of a layer's
    activations ``(N, H)`` or of its weight gradient ``(D_in, H)``: 0 for identical units.

    Args:
      net, params, state: the network; batch norm runs in training mode.
      x: ``(N, D)`` inputs; y: ``(N,)`` int labels (softmax cross-entropy, no L2).
      lr: the learning rate of the plain SGD step ``W <- W - lr * dW``, on the weights only
        (biases, gamma and beta are left as they are).

    Returns:
      ``(new_params, stats)``: ``stats`` ``(4,)`` is the activation spread, the weight-gradient
      spread, ``max |h|`` and ``max |dW|``, each the largest over the hidden layers, before the
      step.
    """
    hs, _ = net.hidden(params, state, x, training=True)

    def loss_fn(p):
        logits, _ = net.apply(p, state, x, training=True)
        return softmax_cross_entropy(logits, y)

    grads = jax.grad(loss_fn)(params)
    dws = [g["W"] for g in grads[:-1]]

    def spread(a):
        return jnp.max(jnp.abs(a - a[:, :1]))

    def largest(f, arrays):
        return jnp.max(jnp.stack([f(a) for a in arrays]))

    def max_abs(a):
        return jnp.max(jnp.abs(a))

    stats = jnp.stack(
        [largest(spread, hs), largest(spread, dws), largest(max_abs, hs), largest(max_abs, dws)]
    )
    new = [{**p, "W": p["W"] - lr * g["W"]} for p, g in zip(params, grads, strict=True)]
    return new, stats
