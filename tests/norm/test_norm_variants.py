"""Batch-norm variants: renorm, ghost batches, no scale/offset, cumulative and unbiased statistics.

Every check runs on one small shape, (8, 5) (plus a masked variant), with NumPy test data, through
module-level jitted functions whose options are static, so each configuration compiles once; no
test runs the library eagerly.
"""

from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import jaxbn
from tests.helpers import rel_error, run_worker

N, D = 8, 5
MASK = np.array([1, 1, 0, 1, 1, 1, 0, 0], bool)  # 3 + 2 live rows in the groups of 4
STATIC = ("backward", "renorm", "vbs", "no_gamma", "no_beta", "momentum", "running_var")


def _problem(dtype=np.float64, seed=0):
    rng = np.random.default_rng(seed)
    x = 3 * rng.standard_normal((N, D)) + 1
    gamma = 1 + 0.3 * rng.standard_normal(D)
    beta = rng.standard_normal(D)
    c = rng.standard_normal((N, D))
    x, gamma, beta, c = (jnp.asarray(np.asarray(a, dtype)) for a in (x, gamma, beta, c))
    # running statistics away from the batch's, so that renorm's r and d are not 1 and 0
    state = jaxbn.BatchNormState(
        mean=jnp.asarray(np.linspace(-1.0, 2.0, D, dtype=dtype)),
        var=jnp.asarray(np.linspace(0.5, 12.0, D, dtype=dtype)),
        count=jnp.asarray(3, jnp.int32),
    )
    return x, gamma, beta, c, state


def _bn(x, gamma, beta, state, mask, rmax, dmax, *, backward, renorm, vbs, no_gamma, no_beta,
        momentum=0.9, running_var="biased"):  # fmt: skip
    return jaxbn.batch_norm(
        x,
        None if no_gamma else gamma,
        None if no_beta else beta,
        state,
        training=True,
        backward=backward,
        mask=mask,
        renorm=renorm,
        rmax=rmax,
        dmax=dmax,
        virtual_batch_size=vbs,
        momentum=momentum,
        running_var=running_var,
    )


@partial(jax.jit, static_argnames=STATIC)
def forward(x, gamma, beta, state, mask, rmax, dmax, **opts):
    return _bn(x, gamma, beta, state, mask, rmax, dmax, **opts)


@partial(jax.jit, static_argnames=STATIC)
def grads(x, gamma, beta, c, state, mask, rmax, dmax, **opts):
    def loss(x, gamma, beta):
        y, _ = _bn(x, gamma, beta, state, mask, rmax, dmax, **opts)
        return jnp.sum(y * c)

    return jax.grad(loss, argnums=(0, 1, 2))(x, gamma, beta)


@partial(jax.jit, static_argnames=STATIC)
def forward_and_grads(x, gamma, beta, c, state, mask, rmax, dmax, **opts):
    """``forward``'s (y, state) and ``grads``' (dx, dgamma, dbeta) in one compiled program."""
    y_state = forward(x, gamma, beta, state, mask, rmax, dmax, **opts)
    return y_state, grads(x, gamma, beta, c, state, mask, rmax, dmax, **opts)


# batch_norm itself, every option static (rmax and dmax too: Python floats, not traced ones)
bn = jax.jit(
    jaxbn.batch_norm,
    static_argnames=("training", "momentum", "eps", "renorm", "rmax", "dmax",
                     "virtual_batch_size", "running_var"),
)  # fmt: skip


def _opts(backward="closed_form", renorm=False, vbs=None, no_gamma=False, no_beta=False, **kw):
    return dict(backward=backward, renorm=renorm, vbs=vbs, no_gamma=no_gamma, no_beta=no_beta, **kw)


VARIANTS = {
    "renorm": dict(renorm=True),
    "ghost4": dict(vbs=4),
    "ghost2_renorm": dict(vbs=2, renorm=True),
    "renorm_mask": dict(renorm=True, masked=True),
    "ghost4_renorm_mask": dict(vbs=4, renorm=True, masked=True),
    "no_gamma": dict(no_gamma=True),
    "no_beta_renorm": dict(no_beta=True, renorm=True),
    "no_gamma_no_beta_ghost": dict(no_gamma=True, no_beta=True, vbs=4),
    "one_ghost_batch_renorm_mask": dict(vbs=N, renorm=True, masked=True),  # no group axis
}


def _split(variant):
    kw = dict(VARIANTS[variant])
    mask = MASK if kw.pop("masked", False) else None
    return kw, mask


# --- gradients ------------------------------------------------------------------------------


@pytest.mark.parametrize("backward", ["closed_form", "staged"])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_custom_backwards_match_autodiff_f64(x64, variant, backward):
    kw, mask = _split(variant)
    x, gamma, beta, c, state = _problem()
    args = (x, gamma, beta, c, state, mask, 1.5, 0.4)
    (y0, s0), want = forward_and_grads(*args, **_opts("autodiff", **kw))
    (y1, s1), got = forward_and_grads(*args, **_opts(backward, **kw))
    for name, a, b in zip(("dx", "dgamma", "dbeta"), got, want, strict=True):
        assert rel_error(a, b) < 1e-10, (name, rel_error(a, b))
    assert rel_error(y0, y1) < 1e-13 and rel_error(s0.var, s1.var) < 1e-13


@pytest.mark.parametrize("backward", jaxbn.BACKWARDS)
@pytest.mark.parametrize("variant", ["renorm", "ghost2_renorm", "ghost4_renorm_mask"])
def test_gradients_match_numerical_f64(x64, variant, backward):
    """check_grads (reverse mode, central differences) on x, gamma and beta.

    renorm's r and d carry no gradient by definition, so its gradient is the derivative of the
    function only where r and d are locally constant: running statistics far from every group's
    (variance 1e-4, mean 100) clip them all, to r = rmax = 1.5 and d = -dmax = -0.4.
    """
    kw, mask = _split(variant)
    x, gamma, beta, c, state = _problem()
    state = state._replace(mean=np.full(D, 100.0), var=np.full(D, 1e-4))
    if mask is not None:  # masked rows' outputs pass no gradient by design: leave them out
        c = np.where(mask[:, None], c, 0)

    def loss(x, gamma, beta):
        y, _ = _bn(x, gamma, beta, state, mask, 1.5, 0.4, **_opts(backward, **kw))
        return jnp.sum(y * c)

    check_grads(jax.jit(loss), (x, gamma, beta), order=1, modes=("rev",), eps=1e-6)


def test_renorm_backward_is_batch_norm_with_gamma_times_r(x64):
    """dx of renorm = plain BN's dx with gamma * r; dgamma = r sum(gy x_hat) + d sum(gy)."""
    x, gamma, beta, c, state = _problem()
    rmax, dmax = 1.5, 0.4
    xn, c = np.asarray(x), np.asarray(c)
    mean, var = xn.mean(0), xn.var(0)
    sigma_run = np.sqrt(np.asarray(state.var) + 1e-5)
    r = np.clip(np.sqrt(var + 1e-5) / sigma_run, 1 / rmax, rmax)
    d = np.clip((mean - np.asarray(state.mean)) / sigma_run, -dmax, dmax)
    assert np.any((r > 1 / rmax) & (r < rmax)) and np.any(r == rmax)  # both regimes
    assert np.any(np.abs(d) == dmax) and np.any(np.abs(d) < dmax)
    dx, dgamma, dbeta = grads(x, gamma, beta, c, state, None, rmax, dmax, **_opts(renorm=True))
    dx_bn, _, _ = grads(x, np.asarray(gamma) * r, beta, c, state, None, 1.0, 0.0, **_opts())
    x_hat = (xn - mean) / np.sqrt(var + 1e-5)
    assert rel_error(dx, dx_bn) < 1e-12
    assert rel_error(dgamma, r * np.sum(c * x_hat, 0) + d * np.sum(c, 0)) < 1e-12
    assert rel_error(dbeta, np.sum(c, 0)) < 1e-12


def test_no_scale_no_offset_gradients(x64):
    """gamma=None / beta=None behave as the constants 1 / 0, in the output and in dx."""
    x, gamma, beta, c, state = _problem()
    ones, zeros = np.ones(D), np.zeros(D)
    dx, _, _ = grads(x, gamma, beta, c, state, None, 3.0, 5.0, **_opts(no_gamma=True, no_beta=True))
    dx1, _, _ = grads(x, ones, zeros, c, state, None, 3.0, 5.0, **_opts())
    assert rel_error(dx, dx1) < 1e-14
    y, _ = forward(x, gamma, beta, state, None, 3.0, 5.0, **_opts(no_gamma=True, no_beta=True))
    y1, _ = forward(x, ones, zeros, state, None, 3.0, 5.0, **_opts())
    np.testing.assert_array_equal(y, y1)
    # eval mode too
    ye, _ = bn(x, None, None, state, training=False)
    ye1, _ = bn(x, ones, zeros, state, training=False)
    np.testing.assert_array_equal(ye, ye1)


# --- renorm forward -------------------------------------------------------------------------


def test_renorm_forward_formula(x64):
    x, gamma, beta, _, state = _problem()
    rmax, dmax = 1.5, 0.4
    y, new = forward(x, gamma, beta, state, None, rmax, dmax, **_opts(renorm=True))
    xn, eps = np.asarray(x), 1e-5
    mean, var = xn.mean(0), xn.var(0)
    sigma_run = np.sqrt(np.asarray(state.var) + eps)
    r = np.clip(np.sqrt(var + eps) / sigma_run, 1 / rmax, rmax)
    d = np.clip((mean - np.asarray(state.mean)) / sigma_run, -dmax, dmax)
    want = np.asarray(gamma) * ((xn - mean) / np.sqrt(var + eps) * r + d) + np.asarray(beta)
    assert rel_error(y, want) < 1e-13
    # the running statistics update exactly as in plain batch norm
    _, plain = forward(x, gamma, beta, state, None, rmax, dmax, **_opts())
    np.testing.assert_array_equal(new.mean, plain.mean)
    np.testing.assert_array_equal(new.var, plain.var)


def test_renorm_unclipped_normalizes_with_running_statistics(x64):
    x, gamma, beta, _, state = _problem()
    y, _ = forward(x, gamma, beta, state, None, 1e6, 1e6, **_opts(renorm=True))
    g, b, mu, v = (np.asarray(a) for a in (gamma, beta, state.mean, state.var))
    want = g * (np.asarray(x) - mu) / np.sqrt(v + 1e-5) + b
    assert rel_error(y, want) < 1e-12


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64], ids=["f32", "f64"])
def test_renorm_with_rmax_1_dmax_0_is_plain_batch_norm(x64, dtype):
    x, gamma, beta, c, state = _problem(dtype)
    args = (x, gamma, beta, c, state, MASK, 1.0, 0.0)
    (y0, s0), g0 = forward_and_grads(*args, **_opts())
    (y1, s1), g1 = forward_and_grads(*args, **_opts(renorm=True))
    tol = 1e-6 if dtype == jnp.float32 else 1e-14
    assert rel_error(y0, y1) < tol
    for a, b in zip(g0, g1, strict=True):
        assert rel_error(a, b) < tol
    np.testing.assert_array_equal(s0.mean, s1.mean)
    np.testing.assert_array_equal(s0.var, s1.var)


def test_traced_bounds_under_jit_and_vmap(x64):
    """rmax/dmax as traced scalars (jit arguments, vmapped schedules) match Python floats."""
    x, gamma, beta, _, state = _problem()
    opts = _opts(renorm=True)
    ys, _ = jax.vmap(lambda r, d: forward(x, gamma, beta, state, None, r, d, **opts))(
        jnp.array([1.0, 1.5]), jnp.array([0.0, 0.4])
    )
    for i, (r, d) in enumerate([(1.0, 0.0), (1.5, 0.4)]):
        y, _ = bn(x, gamma, beta, state, training=True, renorm=True, rmax=r, dmax=d)
        assert rel_error(ys[i], y) < 1e-14
    assert rel_error(ys[0], ys[1]) > 1e-3  # the bounds matter here


# --- ghost batches ---------------------------------------------------------------------------


def test_ghost_batches_are_per_group_batch_norm(x64):
    x, gamma, beta, _, state = _problem()
    y, new = forward(x, gamma, beta, state, None, 3.0, 5.0, **_opts(vbs=4))
    groups = np.asarray(x).reshape(2, 4, D)
    parts = [bn(group, gamma, beta, state, training=True)[0] for group in groups]
    assert rel_error(y, np.concatenate(parts)) < 1e-14
    # running statistics: the mean over groups of the groups' mean and (biased) variance
    mean, var = np.asarray(state.mean), np.asarray(state.var)
    assert rel_error(new.mean, 0.9 * mean + 0.1 * groups.mean(1).mean(0)) < 1e-14
    assert rel_error(new.var, 0.9 * var + 0.1 * groups.var(1).mean(0)) < 1e-14


@pytest.mark.parametrize("masked", [False, True])
def test_one_ghost_batch_is_batch_norm(x64, masked):
    """virtual_batch_size = N (one group, computed without a group axis) is plain batch norm."""
    x, gamma, beta, c, state = _problem()
    mask = MASK if masked else None
    args = (x, gamma, beta, c, state, mask, 3.0, 5.0)
    (y0, s0), g0 = forward_and_grads(*args, **_opts())
    (y1, s1), g1 = forward_and_grads(*args, **_opts(vbs=N))
    assert rel_error(y0, y1) < 1e-14
    assert rel_error(s0.mean, s1.mean) < 1e-14 and rel_error(s0.var, s1.var) < 1e-14
    for a, b in zip(g0, g1, strict=True):
        assert rel_error(a, b) < 1e-14


def test_ghost_batches_match_tf_keras_formula(x64):
    """tf.keras (virtual_batch_size=V, training) reshapes x (N, D) to (V, N // V, D), takes the
    moments over axis 0 (so its group j holds rows j, j + N/V, ...), normalizes, and moves the
    moving statistics toward the mean over axis 1 of the groups' moments:
    moving = momentum * moving + (1 - momentum) * new. Computed here by hand in NumPy; jaxbn's
    groups are consecutive, so it gets the same groups as consecutive rows."""
    x, gamma, beta, _, state = _problem()
    v, eps, momentum = 4, 1e-3, 0.99
    xt = np.asarray(x)  # the rows in tf's order
    groups = xt.reshape(v, N // v, D)
    mean, var = groups.mean(0, keepdims=True), groups.var(0, keepdims=True)
    y_tf = ((groups - mean) / np.sqrt(var + eps) * np.asarray(gamma) + np.asarray(beta)).reshape(
        N, D
    )
    moving_mean = momentum * np.asarray(state.mean) + (1 - momentum) * mean.mean(1)[0]
    moving_var = momentum * np.asarray(state.var) + (1 - momentum) * var.mean(1)[0]
    # row order for jaxbn: tf's group j (rows j, j + N/v, ...) becomes rows j*v .. j*v + v - 1
    perm = np.arange(N).reshape(v, N // v).T.reshape(-1)
    y, new = bn(
        xt[perm], gamma, beta, state, training=True, momentum=momentum, eps=eps,
        virtual_batch_size=v,
    )  # fmt: skip
    assert rel_error(np.asarray(y), y_tf[perm]) < 1e-13
    assert rel_error(new.mean, moving_mean) < 1e-14
    assert rel_error(new.var, moving_var) < 1e-14


def test_ghost_with_mask_leaves_empty_groups_out(x64):
    x, gamma, beta, c, state = _problem()
    mask = np.array([1, 1, 0, 1, 0, 0, 0, 0], bool)  # second group empty
    xn = np.asarray(x).copy()
    xn[~mask] = np.nan  # padding never leaks
    y, new = forward(xn, gamma, beta, state, mask, 3.0, 5.0, **_opts(vbs=4))
    live = np.asarray(x)[mask]
    mean, var = np.asarray(state.mean), np.asarray(state.var)
    assert rel_error(new.mean, 0.9 * mean + 0.1 * live.mean(0)) < 1e-14
    assert rel_error(new.var, 0.9 * var + 0.1 * live.var(0)) < 1e-14
    y_live, _ = bn(live, gamma, beta, state, training=True)
    assert rel_error(np.asarray(y)[mask], y_live) < 1e-14
    g = [np.asarray(a) for a in grads(xn, gamma, beta, c, state, mask, 3.0, 5.0, **_opts(vbs=4))]
    assert all(np.all(np.isfinite(a)) for a in g)
    assert np.max(np.abs(g[0][~mask])) == 0.0  # masked rows: exactly zero gradient


# --- running statistics: cumulative and unbiased ---------------------------------------------


def test_momentum_none_is_the_cumulative_average(x64):
    xs = [_problem(seed=s)[0] for s in range(3)]
    _, gamma, beta, _, _ = _problem()
    state = jaxbn.batch_norm_state(D, jnp.float64)
    for x in xs:
        _, state = forward(x, gamma, beta, state, None, 3.0, 5.0, **_opts(momentum=None))
    assert int(state.count) == 3
    assert rel_error(state.mean, np.mean([np.mean(x, 0) for x in xs], 0)) < 1e-14
    assert rel_error(state.var, np.mean([np.var(x, 0) for x in xs], 0)) < 1e-14


def test_unbiased_running_variance(x64):
    x, gamma, beta, _, _ = _problem()
    state = jaxbn.batch_norm_state(D, jnp.float64)
    for mask, rows in ((None, np.asarray(x)), (MASK, np.asarray(x)[MASK])):
        _, new = forward(x, gamma, beta, state, mask, 3.0, 5.0, **_opts(running_var="unbiased"))
        assert rel_error(new.var, 0.9 + 0.1 * rows.var(0, ddof=1)) < 1e-14
    # with ghost batches: each group's unbiased variance, averaged
    _, new = forward(x, gamma, beta, state, None, 3.0, 5.0, **_opts(vbs=4, running_var="unbiased"))
    want = np.mean([np.var(np.asarray(x)[i : i + 4], 0, ddof=1) for i in (0, 4)], 0)
    assert rel_error(new.var, 0.9 + 0.1 * want) < 1e-14


# --- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (dict(renorm=True, rmax=0.5), ValueError, "rmax must be >= 1, got 0.5"),
        (dict(renorm=True, rmax=jnp.asarray(0.5)), ValueError, "rmax must be >= 1"),
        (dict(renorm=True, dmax=-1.0), ValueError, "dmax must be >= 0, got -1.0"),
        (dict(rmax="3"), TypeError, "rmax must be a float"),
        (dict(renorm=1), TypeError, "renorm must be a Python bool"),
        (dict(virtual_batch_size=3), ValueError, "=3 does not divide the batch size 8"),
        (dict(virtual_batch_size=0), ValueError, "virtual_batch_size must be a positive int"),
        (dict(virtual_batch_size=1), ValueError, "at least 2"),
        (dict(virtual_batch_size=4, axis=0), ValueError, "axis 0"),
        (dict(running_var="sample"), ValueError, "running_var must be one of"),
        (dict(momentum=1.5), ValueError, "momentum must be in"),
    ],
    ids=lambda v: None,
)  # fmt: skip
def test_bad_options(kwargs, error, match):
    x = np.ones((N, D), np.float32)
    state = jaxbn.batch_norm_state(D if kwargs.get("axis", -1) == -1 else N)
    p = np.ones(D if kwargs.get("axis", -1) == -1 else N, np.float32)
    with pytest.raises(error, match=match):
        jaxbn.batch_norm(x, p, p, state, training=True, **kwargs)


# --- the net, the step, fit -------------------------------------------------------------------


def test_net_options_and_per_call_bounds():
    x = np.random.default_rng(1).standard_normal((8, 6)).astype(np.float32)
    plain = jaxbn.FullyConnectedNet((7,), 3, normalization="batchnorm")
    renorm = jaxbn.FullyConnectedNet((7,), 3, normalization="batchnorm", renorm=True, rmax=2.0)
    params, state = plain.init(jax.random.key(0), 6)
    out0, s0 = jax.jit(plain.apply, static_argnames="training")(params, state, x, training=True)
    apply = jax.jit(renorm.apply, static_argnames="training")
    out1, s1 = apply(params, state, x, training=True, rmax=jnp.asarray(1.0), dmax=0.0)
    assert rel_error(out0, out1) < 1e-6
    np.testing.assert_allclose(s0[0].var, s1[0].var, rtol=1e-6)
    ghost = jaxbn.FullyConnectedNet(
        (7,), 3, normalization="batchnorm", virtual_batch_size=4, running_var="unbiased",
        momentum=None,
    )  # fmt: skip
    _, sg = jax.jit(ghost.apply, static_argnames="training")(params, state, x, training=True)
    h = x @ np.asarray(params[0]["W"]) + np.asarray(params[0]["b"])[None, :]
    want = np.mean([np.var(h[i : i + 4], 0, ddof=1) for i in (0, 4)], 0)
    np.testing.assert_allclose(sg[0].var, want, rtol=1e-5)
    with pytest.raises(ValueError, match="rmax must be >= 1"):
        jaxbn.FullyConnectedNet((7,), 3, normalization="batchnorm", renorm=True, rmax=0.9)
    with pytest.raises(ValueError, match="apply to batch norm only"):
        jaxbn.FullyConnectedNet((7,), 3, normalization="layernorm", renorm=True)


def test_renorm_schedule_in_step_and_fit():
    import optax

    x = np.random.default_rng(1).standard_normal((16, 6)).astype(np.float32)
    y = np.arange(16) % 3
    net = jaxbn.FullyConnectedNet((7,), 3, normalization="batchnorm", renorm=True)
    net_bn = jaxbn.FullyConnectedNet((7,), 3, normalization="batchnorm", renorm=True, rmax=1.0,
                                     dmax=0.0)  # fmt: skip
    opt = optax.sgd(0.1)
    seen = []

    def schedule(step):  # traced: (1, 0) at step 0, then looser
        seen.append(step)
        return 1.0 + jnp.minimum(step, 2) * 1.0, jnp.minimum(step, 2) * 2.5

    ts0 = jaxbn.init_train_state(net, opt, jax.random.key(0), 6)
    ts1 = jax.jit(partial(jax.tree.map, jnp.copy))(ts0)  # make_train_step donates ts0
    a, _ = jaxbn.make_train_step(net, opt, renorm_schedule=schedule)(ts0, x, y)
    b, _ = jaxbn.make_train_step(net_bn, opt)(ts1, x, y)
    assert isinstance(seen[0], jax.core.Tracer)
    for p, q in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params), strict=True):
        np.testing.assert_allclose(p, q, rtol=1e-6, atol=1e-7)
    with pytest.raises(TypeError, match="renorm_schedule must be a function"):
        jaxbn.make_train_step(net, opt, renorm_schedule=(3.0, 5.0))
    kw = dict(epochs=1, batch_size=8, progress=False)
    r0 = jaxbn.fit(net, opt, x, y, renorm_schedule=lambda s: (1.0, 0.0), **kw)
    r1 = jaxbn.fit(net_bn, opt, x, y, **kw)
    np.testing.assert_allclose(r0.history.step_loss, r1.history.step_loss, rtol=1e-6)


# --- shard_map ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_variants_under_shard_map_match_one_device():
    """4 forced CPU devices (a subprocess): renorm and ghost batches with axis_name and a mask."""
    report = run_worker(Path(__file__).parents[1] / "variants_worker.py", n_devices=4)
    assert len(report) == 12
    for case, errors in report.items():
        for name, err in errors.items():
            assert err < 1e-12, (case, name, err)
