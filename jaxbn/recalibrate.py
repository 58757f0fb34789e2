"""Exact recalibration ("precise BN"): running statistics recomputed over a whole data set.

The running averages a batch-norm net carries out of training are an exponential moving average
of batch statistics taken under weights that kept changing; they lag the final weights (and start
at mean 0, variance 1). ``recalibrate`` replaces them by the exact population mean and biased
variance of each layer's input over a data set, computed in evaluation mode, as the eval-mode
net will see them.

Because a layer's input depends on the statistics of the layers before it, the layers are done in
order: pass ``l`` runs the first ``l`` layers in evaluation mode, with the already recalibrated
statistics, over the whole data set. With ``L`` batch-norm layers that is ``L`` passes over the
data, and ``L (L + 1) / 2`` layer evaluations per example in all: about ``(L + 1) / 2`` times one
evaluation pass. Each pass streams the data in batches of ``batch_size`` rows (the last one padded
and masked, so one compiled program serves every batch); each batch gives ``(count, mean, M2)``
per feature on the device (two-pass, float32 or wider), and the batches are merged on the host in
float64 with Chan et al.'s parallel formula, so the result does not depend on the batch size
beyond float round-off.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from jax.typing import ArrayLike

from jaxbn.convnet import ConvNet
from jaxbn.nn import FullyConnectedNet
from jaxbn.norm import BatchNormState, batch_norm

__all__ = ["population_statistics", "recalibrate"]

_ACTIVATIONS = {"relu": jax.nn.relu, "sigmoid": jax.nn.sigmoid, "tanh": jnp.tanh}


def _check_batch_size(batch_size) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    return batch_size


def _moments(h: jax.Array, mask: jax.Array, axis: int):
    """Per-feature (count, mean, M2) of ``h`` over every axis but ``axis``; rows where mask=False
    (mask is ``(N,)``) count nowhere, whatever they hold (NaN included)."""
    ct = jnp.promote_types(h.dtype, jnp.float32)
    h = jnp.moveaxis(h.astype(ct), axis, -1)
    rows = jnp.broadcast_to(jnp.reshape(mask, (-1,) + (1,) * (h.ndim - 1)), h.shape)
    n = jnp.sum(rows[..., 0], dtype=jnp.int32)  # real rows x positions, per feature
    red = tuple(range(h.ndim - 1))
    mean = jnp.sum(jnp.where(rows, h, 0), red, keepdims=True) / jnp.maximum(n, 1).astype(ct)
    d = jnp.where(rows, h - mean, 0)
    return n, jnp.reshape(mean, h.shape[-1:]), jnp.sum(d * d, red)


def _merge(acc, batch):
    """Chan, Golub & LeVeque's pairwise update of (count, mean, M2), in float64 on the host."""
    n_b, mean_b, m2_b = int(batch[0]), np.asarray(batch[1], np.float64), np.asarray(batch[2])
    if n_b == 0:
        return acc
    if acc is None:
        return n_b, mean_b, m2_b.astype(np.float64)
    n_a, mean_a, m2_a = acc
    n = n_a + n_b
    delta = mean_b - mean_a
    return n, mean_a + delta * (n_b / n), m2_a + m2_b + delta * delta * (n_a * n_b / n)


def population_statistics(
    features: Callable[[jax.Array, jax.Array], jax.Array],
    x: ArrayLike,
    *,
    batch_size: int = 1000,
    axis: int = -1,
    mesh: Mesh | None = None,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Exact mean and biased variance, per feature, of ``features(x_batch, mask)`` over all of x.

    Args:
      features: a jittable ``(x_batch, mask) -> h``; ``x_batch`` is ``(batch_size, ...)`` and
        ``mask`` its ``(batch_size,)`` bool of real rows. ``h`` has the batch on axis 0 and the
        features on ``axis``; every other axis is reduced over as well (e.g. H, W).
      x: ``(N, ...)`` inputs (NumPy or JAX), streamed ``batch_size`` rows at a time.
      batch_size: rows per compiled batch; the last batch is padded with zeros and masked.
      axis: the feature axis of ``h``.
      mesh: optional 1-D device mesh: each batch is split over its devices (``batch_size`` must
        be a multiple of the device count) and the sums are global.

    Returns:
      ``(mean, var, count)``: float64 NumPy arrays of the feature shape and the number of values
      each statistic averages over.
    """
    step = jax.jit(lambda xb, m: _moments(features(xb, m), m, axis))
    mean, var, count = _stream(step, x, batch_size, mesh)
    return mean, var, count


def _stream(step: Callable, x, batch_size, mesh) -> tuple[np.ndarray, np.ndarray, int]:
    """Run ``step(x_batch, mask) -> (count, mean, M2)`` over x in padded batches; merge on host."""
    batch_size = _check_batch_size(batch_size)
    if not isinstance(x, jax.Array):
        x = np.asarray(x)
    n = int(x.shape[0])
    if n == 0:
        raise ValueError("x must hold at least one example, got 0")
    put = None
    if mesh is not None:
        if batch_size % mesh.size:
            raise ValueError(
                f"batch_size must be a multiple of the mesh's {mesh.size} devices, got {batch_size}"
            )
        put = NamedSharding(mesh, PartitionSpec(mesh.axis_names[0]))
    xp = jnp if isinstance(x, jax.Array) else np
    acc = None
    for start in range(0, n, batch_size):
        xb = x[start : start + batch_size]
        real = int(xb.shape[0])
        if real < batch_size:
            xb = xp.concatenate([xb, xp.zeros((batch_size - real, *xb.shape[1:]), xb.dtype)])
        mask = np.arange(batch_size) < real
        if put is not None:
            xb, mask = jax.device_put(xb, put), jax.device_put(mask, put)
        acc = _merge(acc, jax.device_get(step(xb, mask)))
    assert acc is not None  # n >= 1, so the loop ran at least once
    count, mean, m2 = acc
    return mean, m2 / count, count


def _fc_norm_input(net: FullyConnectedNet, params, state, x, layer: int):
    """The input of hidden layer ``layer``'s batch norm, earlier layers in evaluation mode."""
    act = _ACTIVATIONS[net.activation]
    h = jnp.reshape(x, (x.shape[0], -1))
    for i in range(layer):
        p = params[i]
        h, _ = batch_norm(
            h @ p["W"] + p["b"][None, :],
            p["gamma"],
            p["beta"],
            state[i],
            training=False,
            eps=net.eps,
        )
        h = act(h)
    return h @ params[layer]["W"] + params[layer]["b"][None, :]


@partial(jax.jit, static_argnums=(0, 1))
def _layer_moments(net, layer: int, params, state, xb, mask):
    """(count, mean, M2) of layer ``layer``'s pre-norm input over one batch (compiled once per
    net, layer and batch shape, across ``recalibrate`` calls)."""
    if isinstance(net, ConvNet):
        h = net.apply(params, state, xb, training=False, stop_before_norm=layer)[0]
        axis = net.channel_axis if layer < len(net.channels) else -1
    else:
        h, axis = _fc_norm_input(net, params, state, xb, layer), -1
    return _moments(h, mask, axis)


def recalibrate(
    net: FullyConnectedNet | ConvNet,
    params: Any,
    state: Any,
    x: ArrayLike,
    *,
    batch_size: int = 1000,
    mesh: Mesh | None = None,
) -> list[BatchNormState | None]:
    """Replace every batch-norm layer's running statistics by exact population statistics over x.

    Layer by layer, in order (see the module docstring for the cost): the running mean and
    variance of layer ``l`` become the mean and the biased variance, over every example of ``x``
    (and every position, for a conv layer), of layer ``l``'s pre-normalization activations, with
    layers ``< l`` in evaluation mode using their recalibrated statistics. After it, the
    evaluation-mode net normalizes each layer's input over ``x`` to exactly zero mean and unit
    variance (before ``gamma`` and ``beta``). ``count`` is left as it was (it counts training
    updates). Labels are not needed; dropout is off.

    Args:
      net: a batch-norm ``FullyConnectedNet`` or ``ConvNet``.
      params, state: the trained parameters and state.
      x: the data set, ``(N, ...)`` as ``net.apply`` takes it (typically the training set).
      batch_size: rows per compiled batch (any N: the last batch is padded and masked).
      mesh: optional 1-D device mesh to split each batch over (see ``population_statistics``).

    Returns:
      The new state, a list like ``state``, the statistics in ``state``'s dtypes.

    Raises:
      TypeError: ``net`` is not a FullyConnectedNet or ConvNet.
      ValueError: a net without batch norm, params/state that do not match it, an empty ``x``.

    Example:
      >>> state = jaxbn.recalibrate(net, params, state, x_train, batch_size=1000)  # doctest: +SKIP
    """
    if not isinstance(net, (FullyConnectedNet, ConvNet)):
        raise TypeError(
            f"net must be a jaxbn.FullyConnectedNet or jaxbn.ConvNet, got {type(net).__name__}"
        )
    if net.normalization != "batchnorm":
        raise ValueError(
            f"recalibrate needs a batch-norm net, got normalization={net.normalization!r}"
        )
    net._check_tree(params, state)
    new_state = list(state)
    for layer, old in enumerate(state):
        frozen = list(new_state)  # the layers before `layer` are already recalibrated
        step = partial(_layer_moments, net, layer, params, frozen)
        mean, var, _ = _stream(step, x, batch_size, mesh)
        new_state[layer] = BatchNormState(
            mean=jnp.asarray(mean, old.mean.dtype),
            var=jnp.asarray(var, old.var.dtype),
            count=old.count,
        )
    return new_state
