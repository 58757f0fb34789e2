"""The batch-norm variants' formulas: batch renormalization, ghost batches, the running updates.

The second half of ``_formulas`` (which holds plain batch norm and layer norm), split off to keep
each file under 400 lines. Everything here reuses its ``Layout``, moments plumbing and
optimization barriers.

Batch renormalization (Ioffe, 2017) corrects each batch's normalization toward the running
statistics with two per-feature constants (no gradient flows through them):
``r = clip(sigma_B / sigma_run, 1/rmax, rmax)``, ``d = clip((mu_B - mu_run) / sigma_run, -dmax,
dmax)``, ``y = gamma * (x_hat * r + d) + beta``, ``sigma = sqrt(var + eps)``. Since ``r`` and
``d`` are constants, the backward is batch norm's with ``gamma`` replaced by ``gamma * r``; only
``dgamma`` sees ``d``.

Ghost batches (Hoffer et al., 2017) normalize consecutive groups of rows, each with its own
statistics. ``batch_norm`` reshapes ``x`` from ``(N, ...)`` to ``(G, V, ...)``; the layout then
reduces the statistics over the group's axes only (axis 1 and the other non-feature axes) and
the parameter gradients over those and axis 0. Under ``axis_name`` the groups lie within each
device, so the statistics stay local. A group whose rows are all masked out has count 0: its
statistics are computed with a count of 1 (they are unused: every row of it is masked out) and
it is left out of the running statistics.

The custom backwards here need the statistics axes to be a subset of the parameter axes (true
for batch norm with or without groups): the two per-group sums ``sum(gy)`` and
``sum(gy * (x - mean))`` then serve ``dx``, ``dgamma`` and ``dbeta`` alike.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
from jax import lax

from jaxbn.norm import _dispatch as D
from jaxbn.norm import _formulas as F
from jaxbn.norm._formulas import Layout, opaque_to_cse


def ghost_layout(x_shape, feature_axes, eps, with_mask) -> Layout:
    """The layout of a grouped ``x`` ``(G, V, ...)``: statistics per group, parameters global.

    ``feature_axes`` index the grouped shape (so are >= 2).
    """
    others = tuple(a for a in range(len(x_shape)) if a not in feature_axes)
    return F.layout(x_shape, others[1:], others, eps, None, with_mask)


def _moments(x, mask_b, lay: Layout, *, private: bool = False):
    """Two-pass mean and biased variance per statistics group (keepdims), and the count m.

    Masked elements enter the sums through ``jnp.where`` (never a product), so NaN or Inf in
    padding cannot reach the statistics. The count is clamped to 1 for empty groups.
    """
    ct = F.compute_dtype(x.dtype)
    m = F.real_count(x.shape, mask_b, lay)
    if mask_b is not None:
        m = jnp.maximum(m, 1).astype(ct)
    xf = x.astype(ct)
    live = xf if mask_b is None else jnp.where(mask_b, xf, 0)
    mean = F.psum(jnp.sum(live, lay.stat_axes, keepdims=True), lay.axis_name) / m
    x_v, mean_v = opaque_to_cse(x, mean) if private else (x, mean)
    dev = x_v.astype(ct) - mean_v
    d2 = dev * dev if mask_b is None else jnp.where(mask_b, dev * dev, 0)
    var = F.psum(jnp.sum(d2, lay.stat_axes, keepdims=True), lay.axis_name) / m
    return mean, var, m


def _correction(mean, var, ren, lay: Layout):
    """Renorm's ``(r, d)``, without gradient; ``(1, 0)`` when ``ren`` is None."""
    if ren is None:
        return None, None
    run_mean, run_var, rmax, dmax = (lax.stop_gradient(v) for v in ren)
    ct = mean.dtype
    sigma_run = F.std(jnp.reshape(run_var, lay.param_bshape).astype(ct), lay.eps)
    rmax, dmax = rmax.astype(ct), dmax.astype(ct)
    r = jnp.clip(F.std(lax.stop_gradient(var), lay.eps) / sigma_run, 1 / rmax, rmax)
    mu_run = jnp.reshape(run_mean, lay.param_bshape).astype(ct)
    d = jnp.clip((lax.stop_gradient(mean) - mu_run) / sigma_run, -dmax, dmax)
    return lax.stop_gradient(r), lax.stop_gradient(d)


def _reference(x, gamma, beta, mask, ren, lay: Layout):
    """The variants' plain forward in jnp, differentiated by JAX: the tests' oracle."""
    ct = F.compute_dtype(x.dtype)
    xf = x.astype(ct)
    mask_b = F.broadcast_mask(mask, lay)
    mean, var, _ = _moments(xf, mask_b, lay)
    x_hat = (xf - mean) / F.std(var, lay.eps)
    r, d = _correction(mean, var, ren, lay)
    z = x_hat if ren is None else x_hat * r + d
    y = jnp.reshape(gamma, lay.param_bshape).astype(ct) * z
    y = y + jnp.reshape(beta, lay.param_bshape).astype(ct)
    if mask_b is not None:
        y = jnp.where(mask_b, y, lax.stop_gradient(y))
    return y.astype(x.dtype), mean, var


def _forward(x, gamma, beta, mask_b, ren, lay: Layout):
    ct = F.compute_dtype(x.dtype)
    mean, var, m = _moments(x, mask_b, lay, private=True)
    inv = F.inv_std(var, lay.eps)
    r, d = _correction(mean, var, ren, lay)
    g = jnp.reshape(gamma, lay.param_bshape).astype(ct)
    b = jnp.reshape(beta, lay.param_bshape).astype(ct)
    scale = g * inv if r is None else (g * r) * inv
    shift = b if d is None else b + g * d
    x, mean_y, scale, shift = opaque_to_cse(x, mean, scale, shift)
    y = (x.astype(ct) - mean_y) * scale + shift
    return y.astype(x.dtype), mean, var, inv, m, r, d


def _where(mask_b, v):
    return v if mask_b is None else jnp.where(mask_b, v, 0)


# --- closed form: batch norm's backward with gamma * r in place of gamma ----------------------


@partial(jax.custom_vjp, nondiff_argnums=(5,))
def _variant_closed(x, gamma, beta, mask, ren, lay: Layout):
    y, mean, var, *_ = _forward(x, gamma, beta, F.broadcast_mask(mask, lay), ren, lay)
    return y, mean, var


def _variant_closed_fwd(x, gamma, beta, mask, ren, lay: Layout):
    x, gamma, beta, mask = F.primal_values(x, gamma, beta, mask)
    ren = None if ren is None else tuple(v.value for v in ren)
    y, mean, var, inv, m, r, d = _forward(x, gamma, beta, F.broadcast_mask(mask, lay), ren, lay)
    res = (x, gamma, beta, mask, mean, inv, jnp.asarray(m, mean.dtype), r, d)
    return (y, mean, var), res


def _variant_closed_bwd(lay: Layout, res, cts):
    x, gamma, beta, mask, mean, inv, m, r, d = res
    d_y, d_mean, d_var = cts
    ct = mean.dtype
    mask_b = F.broadcast_mask(mask, lay)
    g = jnp.reshape(gamma, lay.param_bshape).astype(ct)
    g_eff = g if r is None else g * r  # per group and feature

    def reduce_params(v):  # from per-group sums to the parameters' shape
        return jnp.sum(v, lay.param_axes).reshape(gamma.shape)

    if F.is_zero(d_y):
        dgamma = dbeta = None
        s1 = s2 = jnp.zeros_like(mean)
    else:
        # One pass, two per-group sums: sum(gy) and sum(gy * (x - mean)), each with its own
        # inputs (see opaque_to_cse).
        (d_y_b,) = opaque_to_cse(d_y)
        sum_gy = jnp.sum(_where(mask_b, d_y_b.astype(ct)), lay.stat_axes, keepdims=True)
        x_r, mean_r, d_y_r = opaque_to_cse(x, mean, d_y)
        gy_xc = d_y_r.astype(ct) * (x_r.astype(ct) - mean_r)
        sum_gyxc = jnp.sum(_where(mask_b, gy_xc), lay.stat_axes, keepdims=True)
        dgamma_g = inv * sum_gyxc if r is None else (r * inv) * sum_gyxc + d * sum_gy
        # Sum the per-group values, not x again: the barrier keeps XLA from folding the two
        # sums into one more pass over the full-size cotangent.
        dgamma_g, sum_gy_p = opaque_to_cse(dgamma_g, sum_gy)
        dgamma = reduce_params(dgamma_g).astype(gamma.dtype)
        dbeta = reduce_params(sum_gy_p).astype(beta.dtype)
        # sum(d_xhat) and sum(d_xhat * x_hat) over the whole group (across devices too)
        s1 = g_eff * F.psum(sum_gy, lay.axis_name)
        s2 = g_eff * inv * F.psum(sum_gyxc, lay.axis_name)
    # dx = (g_eff * inv) * gy - inv * s1 / m - (x - mean) * (inv^2 * s2 / m), as in batch norm.
    x_d, mean_d, inv_d, s1, s2, g_eff_d = opaque_to_cse(x, mean, inv, s1, s2, g_eff)
    xc = x_d.astype(ct) - mean_d
    dx = -(inv_d * s1 / m) - xc * (inv_d * inv_d * s2 / m)
    if not F.is_zero(d_y):
        (d_y_d,) = opaque_to_cse(d_y)
        dx = (g_eff_d * inv_d) * d_y_d.astype(ct) + dx
    dx = _where(mask_b, dx)
    dx = F.stat_cotangents(dx, d_mean, d_var, xc, m, mask_b)
    return dx.astype(x.dtype), dgamma, dbeta, None, None


_variant_closed.defvjp(_variant_closed_fwd, _variant_closed_bwd, symbolic_zeros=True)


# --- staged: the forward graph walked node by node -----------------------------------------


def _staged_forward(x, gamma, beta, mask_b, ren, lay: Layout):
    ct = F.compute_dtype(x.dtype)
    xf = x.astype(ct)
    mu, var, m = _moments(xf, mask_b, lay)  # nodes 1-4: mu, xmu = x - mu, xmu^2, var
    xmu = xf - mu
    sqrtvar = F.std(var, lay.eps)  # node 5
    ivar = 1.0 / sqrtvar  # node 6
    x_hat = xmu * ivar  # node 7
    r, d = _correction(mu, var, ren, lay)
    z = x_hat if r is None else x_hat * r + d  # node 8 (renorm's constants)
    g = jnp.reshape(gamma, lay.param_bshape).astype(ct)
    y = g * z + jnp.reshape(beta, lay.param_bshape).astype(ct)  # nodes 9 and 10
    return y.astype(x.dtype), mu, var, (m, xmu, var, sqrtvar, ivar, z, r)


@partial(jax.custom_vjp, nondiff_argnums=(5,))
def _variant_staged(x, gamma, beta, mask, ren, lay: Layout):
    y, mu, var, _ = _staged_forward(x, gamma, beta, F.broadcast_mask(mask, lay), ren, lay)
    return y, mu, var


def _variant_staged_fwd(x, gamma, beta, mask, ren, lay: Layout):
    x, gamma, beta, mask = F.primal_values(x, gamma, beta, mask)
    ren = None if ren is None else tuple(v.value for v in ren)
    y, mu, var, nodes = _staged_forward(x, gamma, beta, F.broadcast_mask(mask, lay), ren, lay)
    m, *rest = nodes
    return (y, mu, var), (x, gamma, beta, mask, (jnp.asarray(m, mu.dtype), *rest))


def _variant_staged_bwd(lay: Layout, res, cts):
    x, gamma, beta, mask, (m, xmu, var, sqrtvar, ivar, z, r) = res
    d_y, d_mean, d_var = cts
    ct = xmu.dtype
    mask_b = F.broadcast_mask(mask, lay)

    def total(v):  # a sum node over one group's statistics axes (and across devices)
        return F.psum(jnp.sum(_where(mask_b, v), lay.stat_axes, keepdims=True), lay.axis_name)

    dy = jnp.zeros_like(xmu) if F.is_zero(d_y) else _where(mask_b, d_y.astype(ct))
    # nodes 10 and 9: y = g * z + beta
    dgamma = jnp.sum(_where(mask_b, dy * z), lay.param_axes).reshape(gamma.shape)
    dbeta = jnp.sum(dy, lay.param_axes).reshape(beta.shape)
    dz = dy * jnp.reshape(gamma, lay.param_bshape).astype(ct)
    # node 8: z = x_hat * r + d, r and d constants
    dxhat = dz if r is None else dz * r
    # node 7: x_hat = xmu * ivar
    divar = total(dxhat * xmu)
    dxmu = dxhat * ivar
    # nodes 6 and 5: ivar = 1 / sqrtvar, sqrtvar = sqrt(var + eps)
    dvar = 0.5 * (-divar / sqrtvar**2) / F.std(var, lay.eps)
    if not F.is_zero(d_var):
        dvar = dvar + d_var
    # nodes 4 and 3: var = sum(xmu^2) / m
    dxmu = dxmu + 2 * xmu * _where(mask_b, jnp.broadcast_to(dvar / m, xmu.shape))
    # nodes 2 and 1: xmu = x - mu, mu = sum(x) / m
    dmu = -total(dxmu)
    if not F.is_zero(d_mean):
        dmu = dmu + d_mean
    dx = _where(mask_b, dxmu + jnp.broadcast_to(dmu / m, xmu.shape))
    return dx.astype(x.dtype), dgamma.astype(gamma.dtype), dbeta.astype(beta.dtype), None, None


_variant_staged.defvjp(_variant_staged_fwd, _variant_staged_bwd, symbolic_zeros=True)

_IMPLEMENTATIONS = {
    "closed_form": _variant_closed,
    "staged": _variant_staged,
    "autodiff": _reference,
}


def normalize(x, gamma, beta, mask, ren, lay: Layout, backward: str):
    """Normalize ``x`` per statistics group, with renorm's correction when ``ren`` is given.

    Args:
      x, gamma, beta, mask: as ``_formulas.normalize`` (``x`` grouped for ghost batches).
      ren: None, or ``(running_mean, running_var, rmax, dmax)``: the running statistics (feature
        shape) and the clipping bounds (scalar arrays); none of them gets a gradient.
      lay: a layout whose statistics axes are a subset of its parameter axes.
      backward: one of ``BACKWARDS``.

    Returns:
      ``(y, mean, var)``, the statistics per group (keepdims), float32 or wider.
    """
    gamma, beta = D.vary_like(gamma, x), D.vary_like(beta, x)
    if mask is not None:
        mask = D.vary_like(mask, x)
    return _IMPLEMENTATIONS[backward](x, gamma, beta, mask, ren, lay)


# --- the running statistics ---------------------------------------------------------------


def count(x_shape, mask, lay: Layout):
    """Elements per statistics group (an int, or an array with ``mask``); 0 for an empty group."""
    return F.real_count(x_shape, F.broadcast_mask(mask, lay), lay)


def batch_contribution(mean, var, m, lay: Layout, *, unbiased: bool, group_axis_name=None):
    """What a training step feeds the running statistics: ``(mean, var)``, keepdims.

    ``mean`` and ``var`` are per statistics group (keepdims); ``m`` their count (``count``).
    ``unbiased`` scales the variance by ``m / (m - 1)`` (PyTorch's). With several groups
    (ghost batches) the contribution is the mean over the groups that hold any live element
    of the groups' means and of their variances (tf.keras's rule), averaged across
    ``group_axis_name`` too when the groups are spread over devices (also when each device holds
    a single group, whose layout has no group axis).
    """
    if unbiased:
        var = var * jnp.where(m > 1, m / jnp.maximum(m - 1, 1), 1)
    group_axes = tuple(a for a in lay.param_axes if a not in lay.stat_axes)
    if group_axes or group_axis_name is not None:
        # Average the per-group statistics themselves: without the barrier XLA folds the two
        # sums into another pass over x. (Per-group statistics vary across devices anyway.)
        mean, var = opaque_to_cse(mean, var)
        live = jnp.broadcast_to(jnp.asarray(m) > 0, mean.shape).astype(mean.dtype)
        n = F.psum(jnp.sum(live, group_axes, keepdims=True), group_axis_name)

        def average(v):
            total = jnp.sum(jnp.where(live > 0, v, 0), group_axes, keepdims=True)
            return F.psum(total, group_axis_name) / jnp.maximum(n, 1)

        mean, var = average(mean), average(var)
    return mean, var


def running_update(old, batch, momentum: float | None, count):
    """``momentum * old + (1 - momentum) * batch``, or with ``momentum=None`` the cumulative
    average ``(1 - 1/k) * old + batch / k`` where ``k = count + 1`` batches have been seen
    (PyTorch's ``momentum=None``; the first batch replaces the initial value).
    """
    if momentum is not None:
        return F.running_update(old, batch, momentum)
    f = 1.0 / (count + 1).astype(old.dtype)
    return (1.0 - f) * old + f * batch
