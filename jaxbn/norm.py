"""Batch normalization and layer normalization as pure functions with closed-form gradients.

Batch norm (Ioffe & Szegedy, 2015) and layer norm (Ba et al., 2016) share one computation: subtract
the mean over some axes, divide by the standard deviation over the same axes, then scale by
``gamma`` and shift by ``beta``. They differ only in which axes the statistics are taken over
(batch norm: every axis except the features; layer norm: the features) and so in which axes the
parameter gradients are summed over. One ``jax.custom_vjp`` core serves both; its backward is either
the closed-form ("simplified") formula or the staged, node-by-node walk of the forward graph.

Shapes in docstrings: N batch, D features, H, W spatial, C channels.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Hashable, Sequence
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.custom_derivatives import SymbolicZero
from jax.typing import ArrayLike, DTypeLike

from jaxbn import _checks

BACKWARDS = ("closed_form", "staged", "autodiff")

__all__ = [
    "BACKWARDS",
    "BatchNormState",
    "batch_norm",
    "batch_norm_state",
    "batch_norm_train",
    "layer_norm",
]


class BatchNormState(NamedTuple):
    """Running statistics of a batch-norm layer.

    Attributes:
      mean: feature-shaped (e.g. ``(D,)`` or ``(C,)``), float32 or wider: running mean.
      var: feature-shaped, float32 or wider: running biased variance.
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


# ---------------------------------------------------------------------------------------------
# The shared core: y, mean, var = normalize(x, gamma, beta, mask) over `stat_axes`.
# ---------------------------------------------------------------------------------------------


class _Layout(NamedTuple):
    """Static (hashable) description of one normalization call."""

    stat_axes: tuple[int, ...]  # axes the mean and variance reduce over
    param_axes: tuple[int, ...]  # axes dgamma and dbeta reduce over (the non-feature axes)
    param_bshape: tuple[int, ...]  # gamma/beta reshaped to broadcast against x
    mask_bshape: tuple[int, ...] | None  # mask reshaped to broadcast against x
    eps: float
    axis_name: Hashable | None  # collective axis for the statistics (batch norm only)


def _psum(v, axis_name):
    return v if axis_name is None else lax.psum(v, axis_name)


def _compute_dtype(dtype) -> jnp.dtype:
    """Statistics are computed in float32 or wider whatever the input dtype."""
    return jnp.promote_types(dtype, jnp.float32)


def _count(x_shape, mask_b, lay: _Layout):
    """Number of elements each statistic averages over (summed across `axis_name`)."""
    if mask_b is None:
        local = math.prod(x_shape[a] for a in lay.stat_axes)
        return local if lay.axis_name is None else local * lax.axis_size(lay.axis_name)
    n = jnp.sum(mask_b, lay.stat_axes, keepdims=True, dtype=jnp.int32)
    return _psum(n, lay.axis_name)


def _moments(x, mask_b, lay: _Layout, *, private: bool = False):
    """Two-pass mean and biased variance (never E[x^2] - E[x]^2), keepdims, plus the count m.

    Computed in float32 or wider. ``private=True`` gives the variance pass its own ``x`` and
    ``mean`` (see ``_private``), as the custom backwards' forward does. Masked-out elements are
    selected away (``where``, never multiplied by 0), so they may hold anything, NaN included. With
    a mask the count may be 0 (no real element): the mean and variance are then 0, not 0 / 0.
    """
    ct = _compute_dtype(x.dtype)
    m = _count(x.shape, mask_b, lay)
    if mask_b is not None:
        m = m.astype(ct)
    m_div = m if mask_b is None else jnp.maximum(m, 1)
    xf = x.astype(ct)
    live = xf if mask_b is None else jnp.where(mask_b, xf, 0)
    mean = _psum(jnp.sum(live, lay.stat_axes, keepdims=True), lay.axis_name) / m_div
    x_v, mean_v = _private(x, mean) if private else (x, mean)
    d = x_v.astype(ct) - mean_v
    if mask_b is not None:
        d = jnp.where(mask_b, d, 0)
    var = _psum(jnp.sum(d * d, lay.stat_axes, keepdims=True), lay.axis_name) / m_div
    return mean, var, m


def _mask(mask, lay: _Layout):
    return None if mask is None else jnp.reshape(mask, lay.mask_bshape)


def _reference(x, gamma, beta, mask, lay: _Layout):
    """The plain forward in jnp, differentiated by JAX: the oracle for the custom backwards."""
    ct = _compute_dtype(x.dtype)
    xf = x.astype(ct)
    mask_b = _mask(mask, lay)
    # Differentiate only the real elements: a NaN in a masked-out one must not reach any sum, as
    # 0 * NaN would.
    x_live = xf if mask_b is None else jnp.where(mask_b, xf, 0)
    mean, var, m = _moments(x_live, mask_b, lay)
    g = jnp.reshape(gamma, lay.param_bshape).astype(ct)
    b = jnp.reshape(beta, lay.param_bshape).astype(ct)
    y = g * ((x_live - mean) / jnp.sqrt(var + lay.eps)) + b
    if mask_b is not None:
        # Masked-out elements are normalized like the others but pass no gradient anywhere.
        y_all = lax.stop_gradient(g * ((xf - mean) / jnp.sqrt(var + lay.eps)) + b)
        y = jnp.where(mask_b, y, y_all)
        y = jnp.where(m > 0, y, lax.stop_gradient(b))  # no real element: beta
    return y.astype(x.dtype), mean, var


def _primal_values(x, gamma, beta, mask):
    # symbolic_zeros=True wraps each primal; the 'perturbed' bits are not needed: XLA drops
    # parameter gradients that nothing uses. The twins without symbolic zeros get plain arrays.
    return tuple(getattr(p, "value", p) for p in (x, gamma, beta, mask))


def _forward(x, gamma, beta, mask_b, lay: _Layout):
    """Shared forward of the custom variants: y, mean, var, inv_std, m and the compute pieces."""
    ct = _compute_dtype(x.dtype)
    mean, var, m = _moments(x, mask_b, lay, private=True)
    inv = lax.rsqrt(var + lay.eps)
    g = jnp.reshape(gamma, lay.param_bshape).astype(ct)
    b = jnp.reshape(beta, lay.param_bshape).astype(ct)
    # Give the y pass its own x - mean (see _private): shared with the variance's, it is written
    # out as a full-size temporary and read back instead of being fused into both passes.
    x, mean_y, inv_y, g, b = _private(x, mean, inv, g, b)
    # (x - mean) * (gamma * inv_std) + beta: one fused pass, and no cancellation when |mean| >> std.
    y = (x.astype(ct) - mean_y) * (g * inv_y) + b
    if mask_b is not None:
        y = jnp.where(m > 0, y, b)  # no real element: beta (finite whatever x holds)
        m = jnp.maximum(m, 1)  # the backward divides by m; every element is masked out then
    return y.astype(x.dtype), mean, var, inv, m


def _private(*arrays):
    """The arrays unchanged, but opaque to XLA's common-subexpression elimination.

    XLA's CPU backend merges identical expressions such as ``x - mean`` computed in two passes
    over x, and then materializes the merged array (a full-size write and re-read, plus a fresh
    buffer whose first touch page-faults) rather than recomputing it in each pass; it may also
    materialize a broadcast ``mean`` at full size. Passing a pass's inputs through an
    optimization barrier makes them distinct values, so each pass recomputes its elementwise
    prologue inside its own fused loop from the small ``mean`` vector.

    Each pass must route a different set of values, all of which it uses: XLA drops unused
    barrier operands, then merges barriers with the same operands. Under ``shard_map`` a
    barrier's outputs vary across devices if any input does: route only values that feed
    per-device work through it, never the returned statistics.

    What it bought (jaxlib 0.10.2 CPU, 2 cores; jitted forward + backward with the running
    statistics, A/B in one process against the code without the barriers): full-size reads and
    writes 10 + 4 -> 8 + 2, compiled temporaries 1 -> 0 input-sized arrays (16 MiB -> 0.01 MiB
    at (4096, 1024)); 1.4x (256, 1024), 1.7x (4096, 1024) and 1.8x (NHWC 64x56x56x64) faster
    with page faults taken out, 2.5x, 2.6x and 2.0x with glibc's default malloc.
    """
    return lax.optimization_barrier(arrays)


def _is_zero(ct) -> bool:
    return ct is None or isinstance(ct, SymbolicZero)


def _param_grads(gy, x_hat, gamma, beta, lay: _Layout):
    dgamma = jnp.sum(gy * x_hat, lay.param_axes).reshape(gamma.shape).astype(gamma.dtype)
    dbeta = jnp.sum(gy, lay.param_axes).reshape(beta.shape).astype(beta.dtype)
    return dgamma, dbeta


def _stat_cotangents(dx, d_mean, d_var, xc, m, mask_b):
    """Add the cotangents of the returned mean and var: d_mean / m + d_var * 2 (x - mean) / m."""
    if not _is_zero(d_mean):
        dx = dx + jnp.where(mask_b, d_mean / m, 0) if mask_b is not None else dx + d_mean / m
    if not _is_zero(d_var):
        extra = d_var * 2 * xc / m
        dx = dx + (extra if mask_b is None else jnp.where(mask_b, extra, 0))
    return dx


# --- closed form ------------------------------------------------------------------------------


@partial(jax.custom_vjp, nondiff_argnums=(4,))
def _normalize_closed(x, gamma, beta, mask, lay: _Layout):
    y, mean, var, _, _ = _forward(x, gamma, beta, _mask(mask, lay), lay)
    return y, mean, var


def _normalize_closed_fwd(x, gamma, beta, mask, lay: _Layout):
    x, gamma, beta, mask = _primal_values(x, gamma, beta, mask)
    y, mean, var, inv, m = _forward(x, gamma, beta, _mask(mask, lay), lay)
    # Residuals: x itself (already alive: no new full-size buffer) plus O(features) statistics.
    # x_hat is recomputed in the backward, which is cheaper than writing and re-reading it.
    res = (x, gamma, beta, mask, mean, inv, jnp.asarray(m, mean.dtype))
    return (y, mean, var), res


def _normalize_closed_bwd(lay: _Layout, res, cts):
    x, gamma, beta, mask, mean, inv, m = res
    d_y, d_mean, d_var = cts
    ct = mean.dtype
    mask_b = _mask(mask, lay)
    g = jnp.reshape(gamma, lay.param_bshape).astype(ct)

    def upstream(d_y):  # gy in the compute dtype, zero where masked out
        gy = d_y.astype(ct)
        return gy if mask_b is None else jnp.where(mask_b, gy, 0)

    if _is_zero(d_y):
        dgamma = dbeta = None
        s1 = s2 = jnp.zeros_like(mean)
    else:
        # Pass 1, the reductions, each with its own x - mean and gy (see _private).
        d_y_b, g_b = _private(d_y, g)
        dbeta = jnp.sum(upstream(d_y_b), lay.param_axes, keepdims=True)
        x_r, mean_r, inv_r, d_y_r = _private(x, mean, inv, d_y)
        gy, xc = upstream(d_y_r), x_r.astype(ct) - mean_r
        if mask_b is not None:  # select, never 0 * (x - mean): x may be NaN where masked out
            xc = jnp.where(mask_b, xc, 0)
        if lay.stat_axes == lay.param_axes:
            # Batch norm: inv_std is constant over the summed axes, so it scales the sum once per
            # feature instead of every element (-12% on that pass at (4096, 1024)). And
            # sum(d_xhat) = gamma * dbeta, sum(d_xhat * x_hat) = gamma * dgamma: the parameter
            # gradients' two sums serve dx too (2 reductions over the batch instead of 4).
            dgamma = inv_r * jnp.sum(gy * xc, lay.param_axes, keepdims=True)
            s1 = _psum(g_b * dbeta, lay.axis_name)
            s2 = _psum(g * dgamma, lay.axis_name)
        else:
            # Layer norm: per-example statistics, per-feature parameters, so the sums for dx run
            # over other axes than dgamma and dbeta; each gets its own pass.
            dgamma = jnp.sum(gy * (xc * inv_r), lay.param_axes, keepdims=True)
            s1 = jnp.sum(upstream(d_y_b) * g_b, lay.stat_axes, keepdims=True)
            x_s, mean_s, inv_s, d_y_s, g_s = _private(x, mean, inv, d_y, g)
            xc_s = x_s.astype(ct) - mean_s
            s2 = inv_s * jnp.sum(upstream(d_y_s) * g_s * xc_s, lay.stat_axes, keepdims=True)
        dgamma = dgamma.reshape(gamma.shape).astype(gamma.dtype)
        dbeta = dbeta.reshape(beta.shape).astype(beta.dtype)
    # Pass 2, dx, once the sums are known (a pass of its own: every element needs all of them).
    # The closed form
    #   dx = inv_std / m * (m * d_xhat - sum(d_xhat) - x_hat * sum(d_xhat * x_hat))
    # regrouped around per-feature (or per-example) coefficients, without x_hat:
    #   dx = (gamma * inv_std) * gy - inv_std * s1 / m - (x - mean) * (inv_std^2 * s2 / m)
    x_d, mean_d, inv_d, s1, s2 = _private(x, mean, inv, s1, s2)
    xc = x_d.astype(ct) - mean_d
    dx = -(inv_d * s1 / m) - xc * (inv_d * inv_d * s2 / m)
    if not _is_zero(d_y):
        (d_y_d,) = _private(d_y)
        dx = (g * inv_d) * upstream(d_y_d) + dx
    if mask_b is not None:
        dx = jnp.where(mask_b, dx, 0)
    dx = _stat_cotangents(dx, d_mean, d_var, xc, m, mask_b)
    return dx.astype(x.dtype), dgamma, dbeta, None


_normalize_closed.defvjp(_normalize_closed_fwd, _normalize_closed_bwd, symbolic_zeros=True)


# --- staged: the forward graph walked node by node -----------------------------------------


@partial(jax.custom_vjp, nondiff_argnums=(4,))
def _normalize_staged(x, gamma, beta, mask, lay: _Layout):
    y, mean, var, _ = _staged_forward(x, gamma, beta, _mask(mask, lay), lay)
    return y, mean, var


def _staged_forward(x, gamma, beta, mask_b, lay: _Layout):
    """The forward as a chain of primitive nodes, each kept for the backward walk."""
    ct = _compute_dtype(x.dtype)
    xf = x.astype(ct)
    m = _count(xf.shape, mask_b, lay)
    n_real = m
    if mask_b is not None:
        m = jnp.maximum(m, 1).astype(ct)  # no real element: mean = var = 0, not 0 / 0
    live = xf if mask_b is None else jnp.where(mask_b, xf, 0)
    mu = _psum(jnp.sum(live, lay.stat_axes, keepdims=True), lay.axis_name) / m  # node 1
    xmu = xf - mu  # node 2
    sq = xmu**2  # node 3
    sq_live = sq if mask_b is None else jnp.where(mask_b, sq, 0)
    var = _psum(jnp.sum(sq_live, lay.stat_axes, keepdims=True), lay.axis_name) / m  # node 4
    sqrtvar = jnp.sqrt(var + lay.eps)  # node 5
    ivar = 1.0 / sqrtvar  # node 6
    x_hat = xmu * ivar  # node 7
    g = jnp.reshape(gamma, lay.param_bshape).astype(ct)
    gx = g * x_hat  # node 8
    b = jnp.reshape(beta, lay.param_bshape).astype(ct)
    y = gx + b  # node 9
    if mask_b is not None:
        y = jnp.where(n_real > 0, y, b)  # no real element: beta
    nodes = (m, xmu, var, sqrtvar, ivar, x_hat)
    return y.astype(x.dtype), mu, var, nodes


def _normalize_staged_fwd(x, gamma, beta, mask, lay: _Layout):
    x, gamma, beta, mask = _primal_values(x, gamma, beta, mask)
    y, mu, var, nodes = _staged_forward(x, gamma, beta, _mask(mask, lay), lay)
    m, *rest = nodes
    return (y, mu, var), (x, gamma, beta, mask, (jnp.asarray(m, mu.dtype), *rest))


def _normalize_staged_bwd(lay: _Layout, res, cts):
    x, gamma, beta, mask, nodes = res
    m, xmu, var, sqrtvar, ivar, x_hat = nodes
    d_y, d_mean, d_var = cts
    ct = xmu.dtype
    mask_b = _mask(mask, lay)

    def total(v):  # a sum node over the statistics axes (and across devices)
        return _psum(jnp.sum(v, lay.stat_axes, keepdims=True), lay.axis_name)

    dy = jnp.zeros_like(xmu) if _is_zero(d_y) else d_y.astype(ct)
    if mask_b is not None:
        # Select the real elements out of every product below (0 * NaN would be NaN).
        dy = jnp.where(mask_b, dy, 0)
        xmu, x_hat = jnp.where(mask_b, xmu, 0), jnp.where(mask_b, x_hat, 0)
    # node 9 (y = gx + beta) and node 8 (gx = gamma * x_hat)
    dgamma, dbeta = _param_grads(dy, x_hat, gamma, beta, lay)
    dxhat = dy * jnp.reshape(gamma, lay.param_bshape).astype(ct)
    # node 7 (x_hat = xmu * ivar)
    divar = total(dxhat * xmu)
    dxmu = dxhat * ivar
    # node 6 (ivar = 1 / sqrtvar) and node 5 (sqrtvar = sqrt(var + eps))
    dsqrtvar = -divar / sqrtvar**2
    dvar = 0.5 * dsqrtvar / jnp.sqrt(var + lay.eps)
    if not _is_zero(d_var):
        dvar = dvar + d_var
    # node 4 (var = sum(sq) / m) and node 3 (sq = xmu ** 2)
    dsq = jnp.broadcast_to(dvar / m, xmu.shape)
    if mask_b is not None:
        dsq = jnp.where(mask_b, dsq, 0)
    dxmu = dxmu + 2 * xmu * dsq
    # node 2 (xmu = x - mu) and node 1 (mu = sum(x) / m)
    dmu = -total(dxmu)
    if not _is_zero(d_mean):
        dmu = dmu + d_mean
    dx_from_mu = jnp.broadcast_to(dmu / m, xmu.shape)
    if mask_b is not None:
        dx_from_mu = jnp.where(mask_b, dx_from_mu, 0)
    dx = dxmu + dx_from_mu
    return dx.astype(x.dtype), dgamma, dbeta, None


_normalize_staged.defvjp(_normalize_staged_fwd, _normalize_staged_bwd, symbolic_zeros=True)


_IMPLEMENTATIONS = {
    "closed_form": _normalize_closed,
    "staged": _normalize_staged,
    "autodiff": _reference,
}

# The same custom_vjps without symbolic zeros: the backward then gets materialized zero cotangents
# (a little more work). Only for JAX's eager (un-jitted) shard_map, which rejects symbolic zeros.
_normalize_closed_dense = jax.custom_vjp(_normalize_closed.fun, nondiff_argnums=(4,))
_normalize_closed_dense.defvjp(_normalize_closed_fwd, _normalize_closed_bwd)
_normalize_staged_dense = jax.custom_vjp(_normalize_staged.fun, nondiff_argnums=(4,))
_normalize_staged_dense.defvjp(_normalize_staged_fwd, _normalize_staged_bwd)
_DENSE = {"closed_form": _normalize_closed_dense, "staged": _normalize_staged_dense}


def _varying_axes(a) -> frozenset:
    """Mesh axes `a` varies over inside shard_map (empty outside it, or with check_vma=False)."""
    aval = jax.typeof(a)
    mat = getattr(aval, "manual_axis_type", None)
    if mat is not None:
        return frozenset(mat.varying)
    return frozenset(getattr(aval, "vma", ()) or ())


def _vary_like(p, x):
    """Mark a replicated parameter as varying where `x` varies.

    Inside ``shard_map`` (with its default type checking) a custom backward must return a parameter
    cotangent of the parameter's own type; the per-shard dgamma varies across devices. Casting the
    parameter to varying first lets JAX insert the cross-device sum when it transposes the cast,
    exactly as it does for plain jnp code.
    """
    missing = _varying_axes(x) - _varying_axes(p)
    return lax.pcast(p, tuple(sorted(missing)), to="varying") if missing else p


def _normalize(x, gamma, beta, mask, lay: _Layout, backward: str):
    gamma, beta = _vary_like(gamma, x), _vary_like(beta, x)
    if mask is not None:
        mask = _vary_like(mask, x)
    try:
        return _IMPLEMENTATIONS[backward](x, gamma, beta, mask, lay)
    except NotImplementedError as e:
        # Eager jax.shard_map (not under jit) cannot trace a custom_vjp with symbolic zeros and
        # raises before doing anything; retrace with the dense twin.
        if backward not in _DENSE or "symbolic_zeros" not in str(e):
            raise
        return _DENSE[backward](x, gamma, beta, mask, lay)


# ---------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------


def _check_backward(backward) -> str:
    if backward not in BACKWARDS:
        raise ValueError(f"backward must be one of {BACKWARDS}, got {backward!r}")
    return backward


def _check_params(gamma, beta, feature_shape):
    for name, p in (("gamma", gamma), ("beta", beta)):
        _checks.shape_is(name, p, feature_shape, "feature shape")
        _checks.floating_array(name, p)
    return jnp.asarray(gamma), jnp.asarray(beta)


def _bn_layout(x_shape, axes, eps, axis_name, with_mask) -> _Layout:
    reduced = tuple(a for a in range(len(x_shape)) if a not in axes)
    param_bshape = tuple(x_shape[a] if a in axes else 1 for a in range(len(x_shape)))
    mask_bshape = tuple(1 if a in axes else x_shape[a] for a in range(len(x_shape)))
    return _Layout(
        stat_axes=reduced,
        param_axes=reduced,
        param_bshape=param_bshape,
        mask_bshape=mask_bshape if with_mask else None,
        eps=eps,
        axis_name=axis_name,
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


def _prepare_bn(x, gamma, beta, *, eps, axis, axis_name, mask, backward, training=True):
    x = _checks.floating_array("x", x)
    eps = _checks.positive_finite("eps", eps)
    _check_backward(backward)
    axes = _checks.feature_axes(axis, x.ndim)
    feature_shape = tuple(x.shape[a] for a in axes)
    gamma, beta = _check_params(gamma, beta, feature_shape)
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
    lay = _bn_layout(x.shape, axes, eps, axis_name, mask is not None)
    return x, gamma, beta, mask, lay, feature_shape


def batch_norm_train(
    x: ArrayLike,
    gamma: ArrayLike,
    beta: ArrayLike,
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
      gamma, beta: scale and shift, of the feature shape.
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
    y, mean, var = _normalize(x, gamma, beta, mask, lay, backward)
    return y, mean.reshape(feature_shape), var.reshape(feature_shape)


def batch_norm(
    x: ArrayLike,
    gamma: ArrayLike,
    beta: ArrayLike,
    state: BatchNormState,
    *,
    training: bool,
    momentum: float = 0.9,
    eps: float = 1e-5,
    axis: int | Sequence[int] = -1,
    axis_name: Hashable | None = None,
    backward: str = "closed_form",
    mask: ArrayLike | None = None,
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

    Args:
      x: input: ``(N, D)``, NHWC ``(N, H, W, C)`` (``axis=-1``), NCHW (``axis=1``), ... Any float
        dtype; statistics are float32 or wider and ``y`` has the dtype of ``x``.
      gamma, beta: scale and shift, of the feature shape (``x.shape`` at ``axis``).
      state: a ``BatchNormState`` of the feature shape (see ``batch_norm_state``).
      training: Python bool: batch statistics (True) or running statistics (False).
      momentum: weight of the old running value, in [0, 1].
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

    Returns:
      ``(y, new_state)``: ``y`` shaped and typed like ``x``.

    Raises:
      TypeError: non-floating ``x``, a non-bool ``training``, a state that is not a BatchNormState,
        an ``axis`` that is not an int or a tuple of ints.
      ValueError: shapes that do not match the feature shape, ``momentum`` outside [0, 1],
        an ``eps`` that is not finite and > 0, an unknown ``backward``, or one value per feature
        in training mode (without a mask).

    Example:
      >>> import jax, jax.numpy as jnp, jaxbn
      >>> x = jax.random.normal(jax.random.key(0), (8, 3))
      >>> gamma, beta, state = jnp.ones(3), jnp.zeros(3), jaxbn.batch_norm_state(3)
      >>> y, state = jaxbn.batch_norm(x, gamma, beta, state, training=True)
      >>> int(state.count)
      1
    """
    training = _checks.python_bool("training", training)
    momentum = _checks.in_closed_range("momentum", momentum, 0.0, 1.0)
    x, gamma, beta, mask, lay, feature_shape = _prepare_bn(
        x,
        gamma,
        beta,
        eps=eps,
        axis=axis,
        axis_name=axis_name,
        mask=mask,
        backward=backward,
        training=training,
    )
    state = _check_state(state, feature_shape)
    if not training:
        ct = _compute_dtype(x.dtype)
        scale = jnp.reshape(gamma, lay.param_bshape).astype(ct) * lax.rsqrt(
            jnp.reshape(state.var, lay.param_bshape).astype(ct) + eps
        )
        xc = x.astype(ct) - jnp.reshape(state.mean, lay.param_bshape).astype(ct)
        y = xc * scale + jnp.reshape(beta, lay.param_bshape).astype(ct)
        return y.astype(x.dtype), state
    y, mean, var = _normalize(x, gamma, beta, mask, lay, backward)
    mean = lax.stop_gradient(mean).reshape(feature_shape).astype(state.mean.dtype)
    var = lax.stop_gradient(var).reshape(feature_shape).astype(state.var.dtype)
    old = lax.stop_gradient(state)
    # A feature whose batch statistics are NaN/Inf keeps its running value; a batch with no real
    # element (all of mask False, across every device) changes nothing, count included.
    update = jnp.isfinite(mean) & jnp.isfinite(var)
    counted = jnp.ones((), jnp.bool_)
    if mask is not None:
        counted = jnp.reshape(_count(x.shape, _mask(mask, lay), lay), (-1,))[0] > 0
        update = update & counted
    new_state = BatchNormState(
        mean=jnp.where(update, momentum * old.mean + (1.0 - momentum) * mean, old.mean),
        var=jnp.where(update, momentum * old.var + (1.0 - momentum) * var, old.var),
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


def layer_norm(
    x: ArrayLike,
    gamma: ArrayLike,
    beta: ArrayLike,
    *,
    eps: float = 1e-5,
    axis: int | Sequence[int] = -1,
    backward: str = "closed_form",
) -> jax.Array:
    """Apply layer normalization (Ba et al., 2016): per-example statistics over the feature axes.

    ``y = gamma * (x - mean_F) / sqrt(var_F + eps) + beta`` where ``mean_F`` and the biased
    ``var_F`` are taken over ``axis`` for each example separately. There is no running state:
    training and evaluation compute the same thing.

    Args:
      x: input, e.g. ``(N, D)``; any float dtype (statistics in float32 or wider).
      gamma, beta: of the feature shape (``x.shape`` at ``axis``).
      eps: added to the variance, > 0.
      axis: the feature axis or a tuple of feature axes (normalized over).
      backward: ``"closed_form"`` (default), ``"staged"`` or ``"autodiff"``.

    Returns:
      ``y``, shaped and typed like ``x``.
    """
    x = _checks.floating_array("x", x)
    eps = _checks.positive_finite("eps", eps)
    _check_backward(backward)
    axes = _checks.feature_axes(axis, x.ndim)
    feature_shape = tuple(x.shape[a] for a in axes)
    gamma, beta = _check_params(gamma, beta, feature_shape)
    lay = _Layout(
        stat_axes=axes,
        param_axes=tuple(a for a in range(x.ndim) if a not in axes),
        param_bshape=tuple(x.shape[a] if a in axes else 1 for a in range(x.ndim)),
        mask_bshape=None,
        eps=eps,
        axis_name=None,
    )
    y, _, _ = _normalize(x, gamma, beta, None, lay, backward)
    return y
