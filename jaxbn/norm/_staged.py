"""The staged batch-norm backward: the forward graph walked node by node.

The forward is kept as a chain of primitive nodes (x -> x - mu -> (x - mu)^2 -> var ->
sqrt(var + eps) -> 1 / std -> x_hat -> gamma * x_hat -> + beta), and the backward accumulates
each node's local derivative, as the first backward of CS231n assignment 2 does. It gives the
closed form's numbers with more work; the formulas it uses (statistics, std) are ``_formulas``'.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

from jaxbn.norm._formulas import (
    Layout,
    broadcast_mask,
    compute_dtype,
    is_zero,
    param_grads,
    primal_values,
    psum,
    real_count,
    std,
)

__all__ = ["staged", "staged_bwd", "staged_fwd"]


@partial(jax.custom_vjp, nondiff_argnums=(4,))
def staged(x, gamma, beta, mask, lay: Layout):
    y, mean, var, _ = _staged_forward(x, gamma, beta, broadcast_mask(mask, lay), lay)
    return y, mean, var


def _staged_forward(x, gamma, beta, mask_b, lay: Layout):
    """The forward as a chain of primitive nodes, each kept for the backward walk."""
    ct = compute_dtype(x.dtype)
    xf = x.astype(ct)
    m = real_count(xf.shape, mask_b, lay)
    n_real = m
    if mask_b is not None:
        m = jnp.maximum(m, 1).astype(ct)  # no real element: mean = var = 0, not 0 / 0
    live = xf if mask_b is None else jnp.where(mask_b, xf, 0)
    mu = psum(jnp.sum(live, lay.stat_axes, keepdims=True), lay.axis_name) / m  # node 1
    xmu = xf - mu  # node 2
    sq = xmu**2  # node 3
    sq_live = sq if mask_b is None else jnp.where(mask_b, sq, 0)
    var = psum(jnp.sum(sq_live, lay.stat_axes, keepdims=True), lay.axis_name) / m  # node 4
    sqrtvar = std(var, lay.eps)  # node 5
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


def staged_fwd(x, gamma, beta, mask, lay: Layout):
    x, gamma, beta, mask = primal_values(x, gamma, beta, mask)
    y, mu, var, nodes = _staged_forward(x, gamma, beta, broadcast_mask(mask, lay), lay)
    m, *rest = nodes
    return (y, mu, var), (x, gamma, beta, mask, (jnp.asarray(m, mu.dtype), *rest))


def staged_bwd(lay: Layout, res, cts):
    x, gamma, beta, mask, nodes = res
    m, xmu, var, sqrtvar, ivar, x_hat = nodes
    d_y, d_mean, d_var = cts
    ct = xmu.dtype
    mask_b = broadcast_mask(mask, lay)

    def total(v):  # a sum node over the statistics axes (and across devices)
        return psum(jnp.sum(v, lay.stat_axes, keepdims=True), lay.axis_name)

    dy = jnp.zeros_like(xmu) if is_zero(d_y) else d_y.astype(ct)
    if mask_b is not None:
        # Select the real elements out of every product below (0 * NaN would be NaN).
        dy = jnp.where(mask_b, dy, 0)
        xmu, x_hat = jnp.where(mask_b, xmu, 0), jnp.where(mask_b, x_hat, 0)
    # node 9 (y = gx + beta) and node 8 (gx = gamma * x_hat)
    dgamma, dbeta = param_grads(dy, x_hat, gamma, beta, lay)
    dxhat = dy * jnp.reshape(gamma, lay.param_bshape).astype(ct)
    # node 7 (x_hat = xmu * ivar)
    divar = total(dxhat * xmu)
    dxmu = dxhat * ivar
    # node 6 (ivar = 1 / sqrtvar) and node 5 (sqrtvar = sqrt(var + eps))
    dsqrtvar = -divar / sqrtvar**2
    dvar = 0.5 * dsqrtvar / std(var, lay.eps)
    if not is_zero(d_var):
        dvar = dvar + d_var
    # node 4 (var = sum(sq) / m) and node 3 (sq = xmu ** 2)
    dsq = jnp.broadcast_to(dvar / m, xmu.shape)
    if mask_b is not None:
        dsq = jnp.where(mask_b, dsq, 0)
    dxmu = dxmu + 2 * xmu * dsq
    # node 2 (xmu = x - mu) and node 1 (mu = sum(x) / m)
    dmu = -total(dxmu)
    if not is_zero(d_mean):
        dmu = dmu + d_mean
    dx_from_mu = jnp.broadcast_to(dmu / m, xmu.shape)
    if mask_b is not None:
        dx_from_mu = jnp.where(mask_b, dx_from_mu, 0)
    dx = dxmu + dx_from_mu
    return dx.astype(x.dtype), dgamma, dbeta, None


staged.defvjp(staged_fwd, staged_bwd, symbolic_zeros=True)
