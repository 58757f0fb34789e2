"""The batch-norm and layer-norm formulas, in one place.

Batch norm (Ioffe & Szegedy, 2015) and layer norm (Ba et al., 2016) share one computation: subtract
the mean over some axes, divide by the standard deviation over the same axes, then scale by
``gamma`` and shift by ``beta``. They differ only in which axes the statistics are taken over
(batch norm: every axis except the features; layer norm: the features) and so in which axes the
parameter gradients are summed over. A static ``Layout`` says which. Here: the statistics, the
standard deviation, the closed-form ("simplified") custom_vjp, the plain-jnp reference that JAX
differentiates (the third backward and the tests' oracle), evaluation mode and the running
update. ``_staged`` walks the same forward node by node, ``_variants`` adds batch
renormalization and ghost batches on these pieces, and ``_dispatch`` picks the backward.

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
    mask_bshape: tuple[int, ...] | None  # mask (over the non-feature axes) broadcast against x
    eps: float
    axis_name: Hashable | None  # collective axis for the statistics (batch norm only)


def psum(v, axis_name):
    return v if axis_name is None else lax.psum(v, axis_name)


def compute_dtype(dtype) -> jnp.dtype:
    """Statistics are computed in float32 or wider whatever the input dtype."""
    return jnp.promote_types(dtype, jnp.float32)


def real_count(x_shape, mask_b, lay: Layout):
    """Number of elements each statistic averages over (summed across `axis_name`)."""
    if mask_b is None:
        local = math.prod(x_shape[a] for a in lay.stat_axes)
        return local if lay.axis_name is None else local * lax.axis_size(lay.axis_name)
    n = jnp.sum(mask_b, lay.stat_axes, keepdims=True, dtype=jnp.int32)
    return psum(n, lay.axis_name)


def _moments(x, mask_b, lay: Layout, *, private: bool = False):
    """Two-pass mean and biased variance (never E[x^2] - E[x]^2), keepdims, plus the count m.

    Computed in float32 or wider. ``private=True`` gives the variance pass its own ``x`` and
    ``mean`` (see ``opaque_to_cse``), as the custom backwards' forward does. Masked-out elements are
    selected away (``where``, never multiplied by 0), so they may hold anything, NaN included. With
    a mask the count may be 0 (no real element): the mean and variance are then 0, not 0 / 0.
    """
    ct = compute_dtype(x.dtype)
    m = real_count(x.shape, mask_b, lay)
    if mask_b is not None:
        m = jnp.asarray(m, ct)
    m_div = m if mask_b is None else jnp.maximum(m, 1)
    xf = x.astype(ct)
    live = xf if mask_b is None else jnp.where(mask_b, xf, 0)
    mean = psum(jnp.sum(live, lay.stat_axes, keepdims=True), lay.axis_name) / m_div
    x_v, mean_v = opaque_to_cse(x, mean) if private else (x, mean)
    d = x_v.astype(ct) - mean_v
    if mask_b is not None:
        d = jnp.where(mask_b, d, 0)
    var = psum(jnp.sum(d * d, lay.stat_axes, keepdims=True), lay.axis_name) / m_div
    return mean, var, m


def broadcast_mask(mask, lay: Layout):
    return None if mask is None else jnp.reshape(mask, lay.mask_bshape)


def reference(x, gamma, beta, mask, lay: Layout):
    """The plain forward in jnp, differentiated by JAX: the oracle for the custom backwards."""
    ct = compute_dtype(x.dtype)
    xf = x.astype(ct)
    mask_b = broadcast_mask(mask, lay)
    # Differentiate only the real elements: a NaN in a masked-out one must not reach any sum, as
    # 0 * NaN would.
    x_live = xf if mask_b is None else jnp.where(mask_b, xf, 0)
    mean, var, m = _moments(x_live, mask_b, lay)
    g = jnp.reshape(gamma, lay.param_bshape).astype(ct)
    b = jnp.reshape(beta, lay.param_bshape).astype(ct)
    y = g * ((x_live - mean) / std(var, lay.eps)) + b
    if mask_b is not None:
        # Masked-out elements are normalized like the others but pass no gradient anywhere.
        y_all = lax.stop_gradient(g * ((xf - mean) / std(var, lay.eps)) + b)
        y = jnp.where(mask_b, y, y_all)
        y = jnp.where(m > 0, y, lax.stop_gradient(b))  # no real element: beta
    return y.astype(x.dtype), mean, var


def primal_values(x, gamma, beta, mask):
    # symbolic_zeros=True wraps each primal; the 'perturbed' bits are not needed: XLA drops
    # parameter gradients that nothing uses. The twins without symbolic zeros get plain arrays.
    return tuple(getattr(p, "value", p) for p in (x, gamma, beta, mask))


def _forward(x, gamma, beta, mask_b, lay: Layout):
    """Shared forward of the custom variants: y, mean, var, inv_std, m and the compute pieces."""
    ct = compute_dtype(x.dtype)
    mean, var, m = _moments(x, mask_b, lay, private=True)
    inv = inv_std(var, lay.eps)
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


def std(var, eps):
    """The standard deviation that normalizes: ``sqrt(var + eps)``."""
    return jnp.sqrt(var + eps)


def inv_std(var, eps):
    """Its reciprocal, ``1 / sqrt(var + eps)``, in one op."""
    return lax.rsqrt(var + eps)


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


def is_zero(ct) -> bool:
    return ct is None or isinstance(ct, SymbolicZero)


def param_grads(gy, x_hat, gamma, beta, lay: Layout):
    dgamma = jnp.sum(gy * x_hat, lay.param_axes).reshape(gamma.shape).astype(gamma.dtype)
    dbeta = jnp.sum(gy, lay.param_axes).reshape(beta.shape).astype(beta.dtype)
    return dgamma, dbeta


def stat_cotangents(dx, d_mean, d_var, xc, m, mask_b):
    """Add the cotangents of the returned mean and var: d_mean / m + d_var * 2 (x - mean) / m."""
    if not is_zero(d_mean):
        dx = dx + jnp.where(mask_b, d_mean / m, 0) if mask_b is not None else dx + d_mean / m
    if not is_zero(d_var):
        extra = d_var * 2 * xc / m
        dx = dx + (extra if mask_b is None else jnp.where(mask_b, extra, 0))
    return dx


# --- closed form ------------------------------------------------------------------------------


@partial(jax.custom_vjp, nondiff_argnums=(4,))
def closed_form(x, gamma, beta, mask, lay: Layout):
    y, mean, var, _, _ = _forward(x, gamma, beta, broadcast_mask(mask, lay), lay)
    return y, mean, var


def closed_form_fwd(x, gamma, beta, mask, lay: Layout):
    x, gamma, beta, mask = primal_values(x, gamma, beta, mask)
    y, mean, var, inv, m = _forward(x, gamma, beta, broadcast_mask(mask, lay), lay)
    # Residuals: x itself (already alive: no new full-size buffer) plus O(features) statistics.
    # x_hat is recomputed in the backward, which is cheaper than writing and re-reading it.
    res = (x, gamma, beta, mask, mean, inv, jnp.asarray(m, mean.dtype))
    return (y, mean, var), res


def closed_form_bwd(lay: Layout, res, cts):
    x, gamma, beta, mask, mean, inv, m = res
    d_y, d_mean, d_var = cts
    ct = mean.dtype
    mask_b = broadcast_mask(mask, lay)
    g = jnp.reshape(gamma, lay.param_bshape).astype(ct)

    def upstream(d_y):  # gy in the compute dtype, zero where masked out
        gy = d_y.astype(ct)
        return gy if mask_b is None else jnp.where(mask_b, gy, 0)

    if is_zero(d_y):
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
            s1 = psum(g_b * dbeta, lay.axis_name)
            s2 = psum(g * dgamma, lay.axis_name)
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
    if not is_zero(d_y):
        (d_y_d,) = opaque_to_cse(d_y)
        dx = (g * inv_d) * upstream(d_y_d) + dx
    if mask_b is not None:
        dx = jnp.where(mask_b, dx, 0)
    dx = stat_cotangents(dx, d_mean, d_var, xc, m, mask_b)
    return dx.astype(x.dtype), dgamma, dbeta, None


closed_form.defvjp(closed_form_fwd, closed_form_bwd, symbolic_zeros=True)


# --- evaluation mode and the running statistics ----------------------------------------------


def eval_forward(x, gamma, beta, mean, var, lay: Layout):
    """Normalize with given (running) statistics: ``gamma * (x - mean) / sqrt(var + eps) + beta``.

    ``mean`` and ``var`` are of the feature shape; computed in float32 or wider, ``y`` typed like x.
    """
    ct = compute_dtype(x.dtype)

    def b(v):
        return jnp.reshape(v, lay.param_bshape).astype(ct)

    scale = b(gamma) * inv_std(b(var), lay.eps)
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
    return psum(jnp.sum(mask, dtype=jnp.int32), axis_name) > 0


def layout(x_shape, stat_axes, param_axes, eps, axis_name=None, with_mask=False) -> Layout:
    """The static ``Layout`` of a call on ``x_shape``; features are the axes not in param_axes.

    A mask covers the non-feature axes (for batch norm those are the statistics axes too; for
    ghost batches they include the group axis).
    """
    ndim = len(x_shape)
    return Layout(
        stat_axes=tuple(stat_axes),
        param_axes=tuple(param_axes),
        param_bshape=tuple(1 if a in param_axes else x_shape[a] for a in range(ndim)),
        mask_bshape=tuple(x_shape[a] if a in param_axes else 1 for a in range(ndim))
        if with_mask
        else None,
        eps=eps,
        axis_name=axis_name,
    )
