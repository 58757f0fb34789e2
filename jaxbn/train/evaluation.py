"""Batched evaluation in evaluation mode: mean cross-entropy and accuracy over a data set.

Shapes: N examples, D features, C classes.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Any

import jax
import numpy as np
from jax.typing import ArrayLike

from jaxbn import _checks
from jaxbn.losses import accuracy, softmax_cross_entropy
from jaxbn.nn import FullyConnectedNet
from jaxbn.train.step import check_params_shapes, net_input

__all__ = ["evaluate"]


@partial(jax.jit, static_argnums=0)
def _eval_batch(net, params, state, x, y, mask):
    logits, _ = net.apply(params, state, x, training=False)
    loss_sum = softmax_cross_entropy(logits, y, mask=mask, reduction="sum")
    correct = accuracy(logits, y, mask=mask, reduction="sum")
    return loss_sum, correct


def evaluate(
    net: FullyConnectedNet,
    params: Any,
    state: Any,
    x: ArrayLike,
    y: ArrayLike,
    *,
    batch_size: int = 1000,
) -> dict[str, float]:
    """Compute the mean cross-entropy and the accuracy in evaluation mode, batch by batch.

    Every batch has exactly ``batch_size`` rows: the last one is padded with zeros and a mask
    leaves the padding out of the sums, so one compiled function serves every batch and every
    data-set size. The loss is the data loss only (no L2 term). Sums are accumulated on the host
    in float64.

    Args:
      net: the network configuration.
      params, state: the net's parameters and model state.
      x: ``(N, D)`` or ``(N, ...)`` floating inputs (NumPy or JAX).
      y: ``(N,)`` integer labels.
      batch_size: rows per compiled evaluation batch, >= 1.

    Returns:
      ``{"loss": float, "accuracy": float}`` (both NaN when ``N == 0``).

    Raises:
      ValueError: mismatched lengths, bad shapes, a non-positive ``batch_size``, labels outside
        ``[0, net.num_classes)``, or ``params``/``state`` whose shapes are not this net's.
      TypeError: non-floating ``x`` or non-integer ``y``.
    """
    net = _checks.net(net)
    batch_size = _checks.positive_int("batch_size", batch_size)
    x, y = _checks.xy(x, y)
    shape = tuple(np.shape(x))
    check_params_shapes(net, params, state, net_input(net, shape[1:]))
    n = shape[0]
    if n == 0:
        return {"loss": math.nan, "accuracy": math.nan}
    x_host, y_host = np.asarray(x), np.asarray(y)
    _checks.class_labels("y", y_host, net.num_classes)
    y_host = y_host.astype(np.int32)  # one program for any labels
    sums = []
    for start in range(0, n, batch_size):
        xb, yb = x_host[start : start + batch_size], y_host[start : start + batch_size]
        real = xb.shape[0]
        if real < batch_size:
            pad = batch_size - real
            xb = np.concatenate([xb, np.zeros((pad, *xb.shape[1:]), xb.dtype)])
            yb = np.concatenate([yb, np.zeros((pad,), yb.dtype)])
        mask = np.arange(batch_size) < real
        sums.append(_eval_batch(net, params, state, xb, yb, mask))
    sums = jax.device_get(sums)
    loss = math.fsum(float(s[0]) for s in sums) / n
    correct = math.fsum(float(s[1]) for s in sums)
    return {"loss": loss, "accuracy": correct / n}
