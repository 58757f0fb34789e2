"""Every batch-norm and layer-norm formula, in one place.

Batch norm (Ioffe & Szegedy, 2015) and layer norm (Ba et al., 2016) share one computation: subtract
the mean over some axes, divide by the standard deviation over the same axes, then scale by
``gamma`` and shift by ``beta``. They differ only in which axes the statistics are taken over
(batch norm: every axis except the features; layer norm: the features) and so in which axes the
parameter gradients are summed over. A static ``Layout`` says which. One ``jax.custom_vjp`` core
serves both; its backward is the closed-form ("simplified") formula or the staged, node-by-node
walk of the forward graph, and a plain-jnp reference differentiated by JAX is the third choice
and the tests' oracle. Evaluation mode and the running-statistics update are here too.

Nothing in this module validates its arguments: ``batch_norm.py`` and ``layer_norm.py`` do.

Shapes in docstrings: N batch, D features, H, W spatial, C channels.
"""

from __future__ import annotations

import math
from collections.abc import Hashable
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
from jax.custom_derivatives import SymbolicZero

BACKWARDS = ("closed_form", "staged", "autodiff")


class Layout(NamedTuple):
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


def _count(x_shape, mask_b, lay: Layout):
    """Number of elements each statistic averages over (summed across `axis_name`)."""
    if mask_b is None:
        local = math.prod(x_shape[a] for a in lay.stat_axes)
        return local if lay.axis_name is None else local * lax.axis_size(lay.axis_name)
    n = jnp.sum(mask_b, lay.stat_axes, keepdims=True, dtype=jnp.int32)
    return _psum(n, lay.axis_name)


def _moments(x, mask_b, lay: Layout, *, private: bool = False):
    """Two-pass mean and biased variance (never E[x^2] - E[x]^2), keepdims, plus the count m.

    Computed in float32 or wider. ``private=True`` gives the variance pass its own ``x`` and
    ``mean`` (see ``opaque_to_cse``), as the custom backwards' forward does. Masked-out elements are
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
    x_v, mean_v = opaque_to_cse(x, mean) if private else (x, mean)
    d = x_v.astype(ct) - mean_v
    if mask_b is not None:
        d = jnp.where(mask_b, d, 0)
    var = _psum(jnp.sum(d * d, lay.stat_axes, keepdims=True), lay.axis_name) / m_div
    return mean, var, m


def _mask(mask, lay: Layout):
    return None if mask is None else jnp.reshape(mask, lay.mask_bshape)


def _reference(x, gamma, beta, mask, lay: Layout):
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


def _forward(x, gamma, beta, mask_b, lay: Layout):
    """Shared forward of the custom variants: y, mean, var, inv_std, m and the compute pieces."""
    ct = _compute_dtype(x.dtype)
    mean, var, m = _moments(x, mask_b, lay, private=True)
    inv = lax.rsqrt(var + lay.eps)
    g = jnp.reshape(gamma, lay.param_bshape).astype(ct)
    b = jnp.reshape(beta, lay.param_bshape).astype(ct)
    # Give the y pass its own x - mean (see opaque_to_cse): shared with the variance's, it is
    # written out as a full-size temporary and read back instead of being fused into both passes.
    x, mean_y, inv_y, g, b = opaque_to_cse(x, mean, inv, g, b)
    # (x - mean) * (gamma * inv_std) + beta: one fused pass, and no cancellation when |mean| >> std.
    y = (x.astype(ct) - mean_y) * (g * inv_y) + b
    if mask_b is not None:
        y = jnp.where(m > 0, y, b)  # no real element: beta (finite whatever x holds)
        m = jnp.maximum(m, 1)  # the backward divides by m; every element is masked out then
    return y.astype(x.dtype), mean, var, inv, m


def opaque_to_cse(*arrays):
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


def _param_grads(gy, x_hat, gamma, beta, lay: Layout):
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
def _normalize_closed(x, gamma, beta, mask, lay: Layout):
    y, mean, var, _, _ = _forward(x, gamma, beta, _mask(mask, lay), lay)
    return y, mean, var


def _normalize_closed_fwd(x, gamma, beta, mask, lay: Layout):
    x, gamma, beta, mask = _primal_values(x, gamma, beta, mask)
    y, mean, var, inv, m = _forward(x, gamma, beta, _mask(mask, lay), lay)
    # Residuals: x itself (already alive: no new full-size buffer) plus O(features) statistics.
    # x_hat is recomputed in the backward, which is cheaper than writing and re-reading it.
    res = (x, gamma, beta, mask, mean, inv, jnp.asarray(m, mean.dtype))
    return (y, mean, var), res


def _normalize_closed_bwd(lay: Layout, res, cts):
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
        # Pass 1, the reductions, each with its own x - mean and gy (see opaque_to_cse).
        d_y_b, g_b = opaque_to_cse(d_y, g)
        dbeta = jnp.sum(upstream(d_y_b), lay.param_axes, keepdims=True)
        x_r, mean_r, inv_r, d_y_r = opaque_to_cse(x, mean, inv, d_y)
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
            x_s, mean_s, inv_s, d_y_s, g_s = opaque_to_cse(x, mean, inv, d_y, g)
            xc_s = x_s.astype(ct) - mean_s
            s2 = inv_s * jnp.sum(upstream(d_y_s) * g_s * xc_s, lay.stat_axes, keepdims=True)
        dgamma = dgamma.reshape(gamma.shape).astype(gamma.dtype)
        dbeta = dbeta.reshape(beta.shape).astype(beta.dtype)
    # Pass 2, dx, once the sums are known (a pass of its own: every element needs all of them).
    # The closed form
    #   dx = inv_std / m * (m * d_xhat - sum(d_xhat) - x_hat * sum(d_xhat * x_hat))
    # regrouped around per-feature (or per-example) coefficients, without x_hat:
    #   dx = (gamma * inv_std) * gy - inv_std * s1 / m - (x - mean) * (inv_std^2 * s2 / m)
    x_d, mean_d, inv_d, s1, s2 = opaque_to_cse(x, mean, inv, s1, s2)
    xc = x_d.astype(ct) - mean_d
    dx = -(inv_d * s1 / m) - xc * (inv_d * inv_d * s2 / m)
    if not _is_zero(d_y):
        (d_y_d,) = opaque_to_cse(d_y)
        dx = (g * inv_d) * upstream(d_y_d) + dx
    if mask_b is not None:
        dx = jnp.where(mask_b, dx, 0)
    dx = _stat_cotangents(dx, d_mean, d_var, xc, m, mask_b)
    return dx.astype(x.dtype), dgamma, dbeta, None


_normalize_closed.defvjp(_normalize_closed_fwd, _normalize_closed_bwd, symbolic_zeros=True)


# --- staged: the forward graph walked node by node -----------------------------------------


@partial(jax.custom_vjp, nondiff_argnums=(4,))
def _normalize_staged(x, gamma, beta, mask, lay: Layout):
    y, mean, var, _ = _staged_forward(x, gamma, beta, _mask(mask, lay), lay)
    return y, mean, var


def _staged_forward(x, gamma, beta, mask_b, lay: Layout):
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


def _normalize_staged_fwd(x, gamma, beta, mask, lay: Layout):
    x, gamma, beta, mask = _primal_values(x, gamma, beta, mask)
    y, mu, var, nodes = _staged_forward(x, gamma, beta, _mask(mask, lay), lay)
    m, *rest = nodes
    return (y, mu, var), (x, gamma, beta, mask, (jnp.asarray(m, mu.dtype), *rest))


def _normalize_staged_bwd(lay: Layout, res, cts):
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


def normalize(x, gamma, beta, mask, lay: Layout, backward: str):
    """Normalize ``x`` over ``lay.stat_axes``: ``(y, mean, var)``, differentiable in all three.

    ``backward`` picks the gradient (one of ``BACKWARDS``); ``mean`` and ``var`` keep their
    reduced dimensions (keepdims) and are float32 or wider.
    """
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


# --- evaluation mode and the running statistics ----------------------------------------------


def eval_forward(x, gamma, beta, mean, var, lay: Layout):
    """Normalize with given (running) statistics: ``gamma * (x - mean) / sqrt(var + eps) + beta``.

    ``mean`` and ``var`` are of the feature shape; computed in float32 or wider, ``y`` typed like x.
    """
    ct = _compute_dtype(x.dtype)

    def b(v):
        return jnp.reshape(v, lay.param_bshape).astype(ct)

    scale = b(gamma) * lax.rsqrt(b(var) + lay.eps)
    y = (x.astype(ct) - b(mean)) * scale + b(beta)
    return y.astype(x.dtype)


def running_update(old, batch, momentum: float, update=True):
    """The running average ``momentum * old + (1 - momentum) * batch`` (momentum weights OLD).

    Where ``update`` is False (a bool array broadcasting against ``old``) ``old`` is kept.
    """
    return jnp.where(update, momentum * old + (1.0 - momentum) * batch, old)


def has_real_elements(mask, axis_name=None):
    """A bool scalar: does any device's batch hold a real (unmasked) element? (True: no mask.)"""
    if mask is None:
        return jnp.ones((), jnp.bool_)
    return _psum(jnp.sum(mask, dtype=jnp.int32), axis_name) > 0


def layout(x_shape, stat_axes, param_axes, eps, axis_name=None, with_mask=False) -> Layout:
    """The static ``Layout`` of a call on ``x_shape``; features are the axes not in param_axes."""
    ndim = len(x_shape)
    return Layout(
        stat_axes=tuple(stat_axes),
        param_axes=tuple(param_axes),
        param_bshape=tuple(1 if a in param_axes else x_shape[a] for a in range(ndim)),
        mask_bshape=tuple(x_shape[a] if a in stat_axes else 1 for a in range(ndim))
        if with_mask
        else None,
        eps=eps,
        axis_name=axis_name,
    )
