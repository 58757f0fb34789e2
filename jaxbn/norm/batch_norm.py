"""Batch normalization with explicit running statistics: the state, the checks, the public calls.

The formulas live in ``_formulas``; this module validates the static facts of a call, builds its
``Layout`` and threads the running statistics through.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Hashable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.typing import ArrayLike, DTypeLike

from jaxbn import _checks
from jaxbn.norm import _dispatch as D
from jaxbn.norm import _formulas as F
from jaxbn.norm import _variants as V

__all__ = ["RUNNING_VARS", "BatchNormState", "batch_norm", "batch_norm_state", "batch_norm_train"]

RUNNING_VARS = ("biased", "unbiased")


class BatchNormState(NamedTuple):
    """Running statistics of a batch-norm layer.

    Attributes:
      mean: feature-shaped (e.g. ``(D,)`` or ``(C,)``), float32 or wider: running mean.
      var: feature-shaped, float32 or wider: running variance (biased, or unbiased with
        ``running_var="unbiased"``).
      count: int32 scalar: number of training-mode updates so far.
    """

    mean: jax.Array
    var: jax.Array
    count: jax.Array


def batch_norm_state(
    num_features: int | Sequence[int], dtype: DTypeLike = jnp.float32
) -> BatchNormState:
    """Create the initial running statistics: mean 0, variance 1, count 0.

    Args:
      num_features: the feature shape: an int ``D`` or a tuple such as ``(C,)`` or ``(H, W)``.
      dtype: floating dtype of ``mean`` and ``var``; float32 or wider.

    Returns:
      A ``BatchNormState``.

    Raises:
      ValueError: if a feature size is not a positive int.
      TypeError: if ``num_features`` is neither an int nor a sequence, or ``dtype`` is not a
        floating type of at least 32 bits.
    """
    if isinstance(num_features, numbers.Integral):
        shape = (num_features,)
    elif isinstance(num_features, Sequence) and not isinstance(num_features, str):
        shape = tuple(num_features)
    else:
        raise TypeError(
            f"num_features must be a positive int or a tuple of them, got {num_features!r} of "
            f"type {type(num_features).__name__}"
        )
    if not shape or any(
        isinstance(n, (bool, np.bool_)) or not isinstance(n, numbers.Integral) or n < 1
        for n in shape
    ):
        raise ValueError(
            f"num_features must be a positive int or a tuple of them, got {num_features!r}"
        )
    shape = tuple(int(n) for n in shape)
    dtype = jnp.dtype(dtype)
    if not jnp.issubdtype(dtype, jnp.floating) or dtype.itemsize < 4:
        raise TypeError(f"dtype must be float32 or wider, got {dtype}")
    return BatchNormState(
        mean=jnp.zeros(shape, dtype), var=jnp.ones(shape, dtype), count=jnp.zeros((), jnp.int32)
    )


def _check_mask(mask, x_shape, axes):
    if mask is None:
        return None
    reduced_shape = tuple(n for a, n in enumerate(x_shape) if a not in axes)
    _checks.shape_is("mask", mask, reduced_shape, "shape of the reduced (non-feature) axes")
    mask = jnp.asarray(mask)
    if mask.dtype != jnp.bool_:
        raise TypeError(f"mask must be a boolean array, got dtype {mask.dtype}")
    return mask


def _params(gamma, beta, feature_shape, x_dtype):
    """Check gamma and beta; None (no scale, no offset) becomes the constant 1 or 0.

    A constant has no gradient to compute: nothing asks for it, and XLA drops its sums.
    """
    ct = jnp.promote_types(x_dtype, jnp.float32)
    g = jnp.ones(feature_shape, ct) if gamma is None else gamma
    b = jnp.zeros(feature_shape, ct) if beta is None else beta
    return _checks.params(g, b, feature_shape)


def _bound(name, value, lo):
    """rmax / dmax: a real number >= lo, or a scalar array (checked when it is concrete)."""
    if isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_)):
        value = float(value)
        if not value >= lo:
            raise ValueError(f"{name} must be >= {lo:g}, got {value!r}")
        return jnp.asarray(value)
    if not hasattr(value, "shape") or np.shape(value) != ():
        raise TypeError(f"{name} must be a float or a scalar array, got {value!r}")
    value = jnp.asarray(value)
    if not jnp.issubdtype(value.dtype, jnp.floating):
        raise TypeError(f"{name} must be a floating-point scalar, got dtype {value.dtype}")
    if not isinstance(value, jax.core.Tracer) and not float(value) >= lo:  # pyright: ignore[reportAttributeAccessIssue]
        raise ValueError(f"{name} must be >= {lo:g}, got {float(value)!r}")
    return value


def _prepare_bn(x, gamma, beta, *, eps, axis, axis_name, mask, backward, training=True):
    x = _checks.floating_array("x", x)
    eps = _checks.positive_finite("eps", eps)
    _checks.one_of("backward", backward, F.BACKWARDS)
    axes = _checks.feature_axes(axis, x.ndim)
    feature_shape = tuple(x.shape[a] for a in axes)
    gamma, beta = _params(gamma, beta, feature_shape, x.dtype)
    mask = _check_mask(mask, x.shape, axes)
    if training and mask is None:
        per_feature = math.prod(n for a, n in enumerate(x.shape) if a not in axes)
        if axis_name is not None:
            per_feature *= lax.axis_size(axis_name)
        if per_feature < 2:
            raise ValueError(
                "batch_norm in training mode needs more than one value per feature to compute "
                f"batch statistics; got x of shape {tuple(x.shape)} with axis={axis!r} "
                f"({per_feature} value per feature)"
            )
    reduced = tuple(a for a in range(x.ndim) if a not in axes)
    lay = F.layout(x.shape, reduced, reduced, eps, axis_name, with_mask=mask is not None)
    return x, gamma, beta, mask, lay, feature_shape


def _ghost(x, mask, size, feature_axes, eps):
    """Group ``x`` ``(N, ...)`` into ``(N // size, size, ...)``; return it, the mask, the layout."""
    size = _checks.positive_int("virtual_batch_size", size)
    if 0 in feature_axes:
        raise ValueError(
            "virtual_batch_size groups the rows of axis 0, which must not be a feature axis; got "
            f"axis={feature_axes!r}"
        )
    n = x.shape[0]
    if n % size:
        raise ValueError(
            f"virtual_batch_size={size} does not divide the batch size {n} (x.shape[0], per "
            "device under axis_name); pad the batch to a multiple and pass a mask"
        )
    per_group = size * math.prod(k for a, k in enumerate(x.shape) if a not in (0, *feature_axes))
    if mask is None and per_group < 2:
        raise ValueError(
            f"virtual_batch_size={size} leaves {per_group} value per feature in each group; "
            "batch statistics need at least 2"
        )
    if n == size:
        # One group: this device's rows in x's own shape (a size-1 group axis sends XLA CPU's
        # reductions down a path up to 10x slower); batch_contribution still averages devices.
        reduced = tuple(a for a in range(x.ndim) if a not in feature_axes)
        return x, mask, F.layout(x.shape, reduced, reduced, eps, None, mask is not None)
    grouped = (n // size, size, *x.shape[1:])
    xg = jnp.reshape(x, grouped)
    mg = None if mask is None else jnp.reshape(mask, (n // size, size, *mask.shape[1:]))
    lay = V.ghost_layout(grouped, tuple(a + 1 for a in feature_axes), eps, mg is not None)
    return xg, mg, lay


def batch_norm_train(
    x: ArrayLike,
    gamma: ArrayLike | None,
    beta: ArrayLike | None,
    *,
    eps: float = 1e-5,
    axis: int | Sequence[int] = -1,
    axis_name: Hashable | None = None,
    mask: ArrayLike | None = None,
    backward: str = "closed_form",
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Normalize with the batch statistics; return them too, differentiably.

    ``y = gamma * (x - mean) / sqrt(var + eps) + beta`` with ``mean`` and biased ``var`` taken over
    every axis except ``axis``. This is the stateless core of ``batch_norm`` in training mode. The
    returned statistics are differentiable: their cotangents add ``d_mean / m`` and
    ``d_var * 2 (x - mean) / m`` to ``dx`` (m = elements per feature).

    Args:
      x: input, e.g. ``(N, D)``, NHWC ``(N, H, W, C)`` or NCHW with ``axis=1``. Any float dtype;
        statistics are computed in float32 or wider and ``y`` has the dtype of ``x``.
      gamma, beta: scale and shift, of the feature shape; None for no scale (1) / no shift (0).
      eps: added to the variance; > 0.
      axis: the feature axis or a tuple of feature axes.
      axis_name: a mapped axis (``shard_map`` or ``pmap``) over which the statistics and the
        backward's sums are global, so that shards of a batch compute what the whole batch does.
      mask: optional boolean array over the reduced axes (``(N,)`` for ``(N, D)``, ``(N, H, W)`` for
        NHWC); False elements do not count in the statistics and get no gradient; they may hold
        anything, NaN and Inf included. With no True element, ``y`` is ``beta`` and the returned
        ``mean`` and ``var`` are 0.
      backward: ``"closed_form"``, ``"staged"`` or ``"autodiff"`` (see ``batch_norm``).

    Returns:
      ``(y, mean, var)``: ``y`` shaped like ``x``; ``mean`` and ``var`` of the feature shape, in
      float32 or wider.
    """
    x, gamma, beta, mask, lay, feature_shape = _prepare_bn(
        x, gamma, beta, eps=eps, axis=axis, axis_name=axis_name, mask=mask, backward=backward
    )
    y, mean, var = D.normalize(x, gamma, beta, mask, lay, backward)
    return y, mean.reshape(feature_shape), var.reshape(feature_shape)


def batch_norm(
    x: ArrayLike,
    gamma: ArrayLike | None,
    beta: ArrayLike | None,
    state: BatchNormState,
    *,
    training: bool,
    momentum: float | None = 0.9,
    eps: float = 1e-5,
    axis: int | Sequence[int] = -1,
    axis_name: Hashable | None = None,
    backward: str = "closed_form",
    mask: ArrayLike | None = None,
    renorm: bool = False,
    rmax: float | ArrayLike = 3.0,
    dmax: float | ArrayLike = 5.0,
    virtual_batch_size: int | None = None,
    running_var: str = "biased",
) -> tuple[jax.Array, BatchNormState]:
    """Apply batch normalization (Ioffe & Szegedy, 2015); return the output and the new state.

    Training mode normalizes with the statistics of this batch,
    ``y = gamma * (x - mean_B) / sqrt(var_B + eps) + beta``, and updates the running statistics:
    ``new = momentum * old + (1 - momentum) * batch`` (momentum weights the OLD value: our 0.9 is
    PyTorch's ``momentum=0.1``), with the biased batch variance. Evaluation mode normalizes with
    the running statistics and returns ``state`` unchanged. The returned state carries no gradient.

    Failure behaviour (all jit-safe, decided with ``where``, never a Python branch):

    - Masked-out elements may hold anything, NaN and Inf included: they are selected away, never
      multiplied by 0, so they change neither the statistics, nor the real rows' output, nor any
      gradient (their own gradient is exactly 0).
    - A batch with no real element (``mask`` all False, on every device under ``axis_name``)
      returns ``beta`` broadcast to the shape of ``x``, zero gradients, and ``state`` unchanged
      (``count`` too).
    - A feature whose batch mean or variance is NaN or Inf (a NaN/Inf in a real element) keeps
      its old running mean and variance, so one bad batch does not poison evaluation forever;
      ``count`` still increases. Its output and gradients stay what the math gives (NaN), which
      shows the bad batch to whoever looks at the loss.

    Variants (training mode; evaluation is the same for all):

    - ``renorm=True``: batch renormalization (Ioffe, 2017). With ``sigma = sqrt(var + eps)``,
      ``r = clip(sigma_B / sigma_run, 1/rmax, rmax)`` and
      ``d = clip((mean_B - mean_run) / sigma_run, -dmax, dmax)``, both without gradient,
      ``y = gamma * (x_hat * r + d) + beta``. The running statistics update as without it.
      ``rmax=1, dmax=0`` is plain batch norm.
    - ``virtual_batch_size=V``: ghost batch norm (Hoffer et al., 2017): consecutive groups of
      ``V`` rows of axis 0 (rows ``k V .. k V + V - 1``) are normalized each with its own
      statistics (and its own renorm ``r``, ``d``). The running statistics move with the mean
      over the groups of the groups' means and (biased or unbiased) variances, as tf.keras's
      ``virtual_batch_size`` does (its groups are strided: row ``i`` in group ``i mod (N/V)``;
      the same statistics up to that row order). Under ``axis_name`` the groups are taken in
      each device's rows and the running statistics average the groups of all devices.
    - ``momentum=None``: the running statistics are the cumulative average of every batch seen
      (PyTorch's ``momentum=None``): step ``k`` (``state.count + 1``) weighs its batch by ``1/k``.
    - ``running_var="unbiased"``: the running variance averages the unbiased batch variance
      ``m / (m - 1) * var_B`` (``m`` elements per feature, after the mask), as PyTorch stores
      it; normalization still uses the biased one.

    Args:
      x: input: ``(N, D)``, NHWC ``(N, H, W, C)`` (``axis=-1``), NCHW (``axis=1``), ... Any float
        dtype; statistics are float32 or wider and ``y`` has the dtype of ``x``.
      gamma, beta: scale and shift, of the feature shape (``x.shape`` at ``axis``); None for no
        scale / no shift (flax ``use_scale=False``, PyTorch ``affine=False``).
      state: a ``BatchNormState`` of the feature shape (see ``batch_norm_state``).
      training: Python bool: batch statistics (True) or running statistics (False).
      momentum: weight of the old running value, in [0, 1]; None for the cumulative average.
      eps: added to the variance, > 0.
      axis: the feature axis or a tuple of feature axes; every other axis is reduced over.
      axis_name: a mapped axis (``shard_map``/``pmap``) across which the batch statistics and the
        backward's sums are global: N devices holding N shards of a batch compute exactly what one
        device computes on the whole batch.
      backward: the gradient: ``"closed_form"`` (custom_vjp with the simplified formula),
        ``"staged"`` (custom_vjp walking the forward graph node by node) or ``"autodiff"`` (plain
        jnp differentiated by JAX; supports forward mode too). All three give the same numbers.
      mask: optional boolean array over the reduced axes; elements where it is False do not count
        in the statistics and get zero gradient (for padded or uneven batches).
      renorm: Python bool: batch renormalization.
      rmax, dmax: renorm's clipping bounds, ``rmax >= 1``, ``dmax >= 0``: Python floats or
        scalar arrays (traced values welcome, e.g. a schedule of the step).
      virtual_batch_size: None, or the ghost-batch size ``V``; it must divide ``x.shape[0]``
        (pad and mask otherwise: a group whose rows are all masked is left out).
      running_var: ``"biased"`` or ``"unbiased"`` (see above).

    Returns:
      ``(y, new_state)``: ``y`` shaped and typed like ``x``.

    Raises:
      TypeError: non-floating ``x``, a non-bool ``training`` or ``renorm``, a state that is not a
        BatchNormState, an ``axis`` that is not an int or a tuple of ints.
      ValueError: shapes that do not match the feature shape, ``momentum`` outside [0, 1],
        an ``eps`` that is not finite and > 0, an unknown ``backward`` or ``running_var``,
        ``rmax < 1``, ``dmax < 0``, a ``virtual_batch_size`` that does not divide the batch, or
        one value per feature in training mode (without a mask).

    Example:
      >>> import jax, jax.numpy as jnp, jaxbn
      >>> x = jax.random.normal(jax.random.key(0), (8, 3))
      >>> gamma, beta, state = jnp.ones(3), jnp.zeros(3), jaxbn.batch_norm_state(3)
      >>> y, state = jaxbn.batch_norm(x, gamma, beta, state, training=True)
      >>> int(state.count)
      1
    """
    training = _checks.python_bool("training", training)
    renorm = _checks.python_bool("renorm", renorm)
    if momentum is not None:
        momentum = _checks.in_closed_range("momentum", momentum, 0.0, 1.0)
    _checks.one_of("running_var", running_var, RUNNING_VARS)
    rmax, dmax = _bound("rmax", rmax, 1.0), _bound("dmax", dmax, 0.0)
    ghost = virtual_batch_size is not None
    x, gamma, beta, mask, lay, feature_shape = _prepare_bn(
        x,
        gamma,
        beta,
        eps=eps,
        axis=axis,
        axis_name=axis_name,
        mask=mask,
        backward=backward,
        training=training and not ghost,
    )
    state = _check_state(state, feature_shape)
    if not training:
        return F.eval_forward(x, gamma, beta, state.mean, state.var, lay), state
    old = lax.stop_gradient(state)
    xg, maskg = x, mask
    if ghost:
        axes = _checks.feature_axes(axis, x.ndim)
        xg, maskg, lay = _ghost(x, mask, virtual_batch_size, axes, eps)
    if renorm or ghost:
        ren = (old.mean, old.var, rmax, dmax) if renorm else None
        y, mean, var = V.normalize(xg, gamma, beta, maskg, ren, lay, backward)
        y = jnp.reshape(y, x.shape)
    else:
        y, mean, var = D.normalize(x, gamma, beta, mask, lay, backward)
    m = V.count(xg.shape, maskg, lay)
    mean, var = V.batch_contribution(
        lax.stop_gradient(mean),
        lax.stop_gradient(var),
        m,
        lay,
        unbiased=running_var == "unbiased",
        group_axis_name=axis_name if ghost else None,
    )
    mean = mean.reshape(feature_shape).astype(state.mean.dtype)
    var = var.reshape(feature_shape).astype(state.var.dtype)
    # A feature whose batch statistics are NaN/Inf keeps its running value; a batch with no real
    # element (all of mask False, across every device) changes nothing, count included.
    counted = F.has_real_elements(mask, axis_name)
    update = jnp.isfinite(mean) & jnp.isfinite(var) & counted
    new_state = BatchNormState(
        mean=jnp.where(update, V.running_update(old.mean, mean, momentum, old.count), old.mean),
        var=jnp.where(update, V.running_update(old.var, var, momentum, old.count), old.var),
        count=old.count + counted.astype(old.count.dtype),
    )
    return y, new_state


def _check_state(state, feature_shape) -> BatchNormState:
    if not isinstance(state, BatchNormState):
        raise TypeError(
            "state must be a jaxbn.BatchNormState (see jaxbn.batch_norm_state), "
            f"got {type(state).__name__}"
        )
    for name in ("mean", "var"):
        v = getattr(state, name)
        _checks.shape_is(f"state.{name}", v, feature_shape, "feature shape")
        dtype = jnp.result_type(v)
        if not jnp.issubdtype(dtype, jnp.floating) or dtype.itemsize < 4:
            raise TypeError(f"state.{name} must be float32 or wider, got dtype {dtype}")
    _checks.shape_is("state.count", state.count, (), "shape of a scalar")
    return state
