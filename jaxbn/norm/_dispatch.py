"""Which backward runs: closed form, staged or autodiff; and the shard_map typing around them.

``normalize`` is the one entry the public functions call. It marks replicated parameters as
varying where ``x`` varies (inside ``shard_map``), and falls back to twins without symbolic
zeros where JAX's eager ``shard_map`` cannot trace them.
"""

from __future__ import annotations

import jax
from jax import lax

from jaxbn.norm import _formulas as F
from jaxbn.norm import _staged as S
from jaxbn.norm._formulas import Layout

__all__ = ["normalize", "vary_like", "varying_axes"]

_IMPLEMENTATIONS = {
    "closed_form": F.closed_form,
    "staged": S.staged,
    "autodiff": F.reference,
}


# The same custom_vjps without symbolic zeros: the backward then gets materialized zero cotangents
# (a little more work). Only for JAX's eager (un-jitted) shard_map, which rejects symbolic zeros.
_normalize_closed_dense = jax.custom_vjp(F.closed_form.fun, nondiff_argnums=(4,))  # pyright: ignore[reportAttributeAccessIssue]
_normalize_closed_dense.defvjp(F.closed_form_fwd, F.closed_form_bwd)
_normalize_staged_dense = jax.custom_vjp(S.staged.fun, nondiff_argnums=(4,))  # pyright: ignore[reportAttributeAccessIssue]
_normalize_staged_dense.defvjp(S.staged_fwd, S.staged_bwd)
_DENSE = {"closed_form": _normalize_closed_dense, "staged": _normalize_staged_dense}


def varying_axes(a) -> frozenset:
    """Mesh axes `a` varies over inside shard_map (empty outside it, or with check_vma=False)."""
    aval = jax.typeof(a)
    mat = getattr(aval, "manual_axis_type", None)
    if mat is not None:
        return frozenset(mat.varying)
    return frozenset(getattr(aval, "vma", ()) or ())


def vary_like(p, x):
    """Mark a replicated parameter as varying where `x` varies.

    Inside ``shard_map`` (with its default type checking) a custom backward must return a parameter
    cotangent of the parameter's own type; the per-shard dgamma varies across devices. Casting the
    parameter to varying first lets JAX insert the cross-device sum when it transposes the cast,
    exactly as it does for plain jnp code.
    """
    missing = varying_axes(x) - varying_axes(p)
    return lax.pcast(p, tuple(sorted(missing)), to="varying") if missing else p


def normalize(x, gamma, beta, mask, lay: Layout, backward: str):
    """Normalize ``x`` over ``lay.stat_axes``: ``(y, mean, var)``, differentiable in all three.

    ``backward`` picks the gradient (one of ``BACKWARDS``); ``mean`` and ``var`` keep their
    reduced dimensions (keepdims) and are float32 or wider.
    """
    gamma, beta = vary_like(gamma, x), vary_like(beta, x)
    if mask is not None:
        mask = vary_like(mask, x)
    try:
        return _IMPLEMENTATIONS[backward](x, gamma, beta, mask, lay)
    except NotImplementedError as e:
        # Eager jax.shard_map (not under jit) cannot trace a custom_vjp with symbolic zeros and
        # raises before doing anything; retrace with the dense twin.
        if backward not in _DENSE or "symbolic_zeros" not in str(e):
            raise
        return _DENSE[backward](x, gamma, beta, mask, lay)
