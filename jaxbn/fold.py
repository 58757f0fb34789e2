"""Folding evaluation-mode batch norm into the affine map before it, for inference.

In evaluation mode batch norm is a fixed per-feature affine map,
``y = gamma * (z - mean) / sqrt(var + eps) + beta``. Applied to ``z = x W + b`` (or a
convolution with kernel ``W`` and bias ``b``) the two compose into one affine map with
``W' = W * s`` (each output feature's column or filter scaled) and ``b' = (b - mean) * s + beta``,
where ``s = gamma / sqrt(var + eps)``. The folded net computes the same function with one op per
layer instead of four (and without the statistics), which is what inference wants.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from jaxbn import _checks
from jaxbn.convnet import ConvNet
from jaxbn.nn import FullyConnectedNet
from jaxbn.norm import BatchNormState

__all__ = ["fold_batch_norm", "fold_net"]


def fold_batch_norm(
    W: ArrayLike,
    b: ArrayLike,
    gamma: ArrayLike,
    beta: ArrayLike,
    state: BatchNormState,
    *,
    eps: float = 1e-5,
) -> tuple[jax.Array, jax.Array]:
    """Fold evaluation-mode batch norm into the preceding dense or conv layer.

    ``x @ W2 + b2 == batch_norm(x @ W + b, gamma, beta, state, training=False, eps=eps)[0]`` for a
    dense weight, and likewise for a convolution with an HWIO kernel (the feature axis is
    the last axis of ``W`` in both cases). The arithmetic is done in the wider of the dtypes of
    ``W`` and the statistics; the results have the dtype of ``W``.

    Args:
      W: dense weight ``(D_in, D)`` or conv kernel ``(kh, kw, C_in, C)`` (HWIO).
      b: bias ``(D,)``.
      gamma, beta: batch norm's scale and shift ``(D,)``.
      state: the ``BatchNormState`` whose running ``mean`` and ``var`` ``(D,)`` evaluation uses.
      eps: batch norm's eps (the net's ``eps``), > 0.

    Returns:
      ``(W2, b2)``, shaped like ``W`` and ``b``.

    Raises:
      ValueError: shapes that do not agree on ``D``, or ``eps <= 0``.
      TypeError: a state that is not a ``BatchNormState``.
    """
    if not isinstance(state, BatchNormState):
        raise TypeError(f"state must be a jaxbn.BatchNormState, got {type(state).__name__}")
    eps = _checks.positive("eps", eps)
    W = _checks.floating_array("W", W)
    if W.ndim not in (2, 4):
        raise ValueError(f"W must be (D_in, D) or (kh, kw, C_in, C), got shape {tuple(W.shape)}")
    d = W.shape[-1]
    for name, v in (
        ("b", b),
        ("gamma", gamma),
        ("beta", beta),
        ("state.mean", state.mean),
        ("state.var", state.var),
    ):
        _checks.shape_is(name, v, (d,), "shape (D,) with D = W.shape[-1]")
    ct = jnp.promote_types(W.dtype, jnp.result_type(state.var))
    scale = jnp.asarray(gamma, ct) / jnp.sqrt(jnp.asarray(state.var, ct) + eps)
    W2 = W.astype(ct) * jnp.reshape(scale, (1,) * (W.ndim - 1) + (d,))
    b2 = (jnp.asarray(b, ct) - jnp.asarray(state.mean, ct)) * scale + jnp.asarray(beta, ct)
    return W2.astype(W.dtype), b2.astype(W.dtype)


def fold_net(
    net: FullyConnectedNet | ConvNet, params: Any, state: Any
) -> tuple[FullyConnectedNet | ConvNet, list[dict[str, jax.Array]], list[None]]:
    """Turn a batch-norm net into the equivalent net without normalization (for inference).

    Every normalized layer's ``W`` and ``b`` are replaced by ``fold_batch_norm``'s; ``gamma``,
    ``beta`` and the running statistics go. The returned net is ``net`` with
    ``normalization=None``; in evaluation mode it gives the same logits as ``net`` up to float
    round-off. (It is for inference: training it would train a net without batch norm.)

    Args:
      net: a ``FullyConnectedNet`` or ``ConvNet`` with ``normalization="batchnorm"``.
      params, state: its parameters and state (e.g. after ``jaxbn.recalibrate``).

    Returns:
      ``(plain_net, plain_params, plain_state)``; ``plain_state`` is a list of ``None``.

    Raises:
      TypeError: an unsupported net.
      ValueError: a net that is not a batch-norm net (layer norm depends on each example and
        does not fold), or params/state that do not match it.
    """
    if not isinstance(net, (FullyConnectedNet, ConvNet)):
        raise TypeError(
            f"net must be a jaxbn.FullyConnectedNet or jaxbn.ConvNet, got {type(net).__name__}"
        )
    if net.normalization != "batchnorm":
        raise ValueError(f"fold_net folds batch norm only, got normalization={net.normalization!r}")
    net._check_tree(params, state)
    plain = []
    for i, layer in enumerate(params):
        if i < len(state):
            W, b = fold_batch_norm(
                layer["W"], layer["b"], layer["gamma"], layer["beta"], state[i], eps=net.eps
            )
            plain.append({"W": W, "b": b})
        else:
            plain.append({"W": layer["W"], "b": layer["b"]})
    return dataclasses.replace(net, normalization=None), plain, [None] * len(state)
