"""Batch norm and layer norm: gradients, numerics, running statistics and error paths.

Test data come from NumPy, and the library runs under module-level jitted functions whose options
are static and whose data (cotangents and masks included) are arguments, so tests with the same
shapes and options share one compilation. Only the tests about eager behaviour run eagerly.
"""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import jaxbn
from tests.helpers import central_differences, rel_error

CUSTOM = ("closed_form", "staged")

# (name, x shape, feature axis, how to draw x)
BN_CASES = [
    ("2x3", (2, 3), -1, "randn"),
    ("4x5_offset", (4, 5), -1, "5randn+12"),
    ("100x500", (100, 500), -1, "randn"),
    ("nhwc", (2, 4, 5, 3), -1, "randn"),
    ("nchw", (3, 4, 2, 2), 1, "randn"),
]
SMALL_BN_CASES = [c for c in BN_CASES if c[0] != "100x500"]


def _problem(shape, axis, how, dtype=np.float64, seed=0):
    """x, gamma, beta and a fixed upstream cotangent c for the loss sum(y * c), from NumPy."""
    rng = np.random.default_rng(seed)
    feature_shape = (shape[axis],)
    x = rng.standard_normal(shape)
    if how == "5randn+12":
        x = 5 * x + 12
    gamma = 1 + 0.5 * rng.standard_normal(feature_shape)
    beta = rng.standard_normal(feature_shape)
    c = rng.standard_normal(shape)
    return tuple(jnp.asarray(np.asarray(a, dtype)) for a in (x, gamma, beta, c))


def _randn(seed, shape, dtype=np.float32):
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape).astype(dtype))


# The library under jit, its options static.
bn = jax.jit(jaxbn.batch_norm, static_argnames=("training", "momentum", "eps", "axis", "backward"))
bn_train = jax.jit(jaxbn.batch_norm_train, static_argnames=("eps", "axis", "backward"))
ln = jax.jit(jaxbn.layer_norm, static_argnames=("eps", "axis", "backward"))


def _bn_loss(x, gamma, beta, c, mask=None, *, backward, axis):
    y, _, _ = jaxbn.batch_norm_train(x, gamma, beta, axis=axis, mask=mask, backward=backward)
    return jnp.sum(y * c)


def _ln_loss(x, gamma, beta, c, *, backward, axis):
    return jnp.sum(jaxbn.layer_norm(x, gamma, beta, axis=axis, backward=backward) * c)


STATIC = ("argnums", "backward", "axis", "use_state")


@partial(jax.jit, static_argnums=0, static_argnames=STATIC)
def grads(loss, *args, argnums=(0, 1, 2), **opts):
    """The gradient of a module-level ``loss(*args, **opts)`` (by default in x, gamma, beta)."""
    return jax.grad(loss, argnums)(*args, **opts)


@partial(jax.jit, static_argnums=0, static_argnames=STATIC)
def numerical_grads(loss, x, gamma, beta, *data, **opts):
    """Central differences of ``loss`` in x, gamma and beta, the other arguments held fixed."""
    return central_differences(lambda *p: loss(*p, *data, **opts), (x, gamma, beta))


# --------------------------------------------------------------------------- float64 gradients


@pytest.mark.parametrize("backward", CUSTOM)
@pytest.mark.parametrize(("name", "shape", "axis", "how"), BN_CASES, ids=[c[0] for c in BN_CASES])
def test_bn_custom_grads_match_autodiff_f64(x64, backward, name, shape, axis, how):
    x, gamma, beta, c = _problem(shape, axis, how)
    got = grads(_bn_loss, x, gamma, beta, c, backward=backward, axis=axis)
    want = grads(_bn_loss, x, gamma, beta, c, backward="autodiff", axis=axis)
    for g, w in zip(got, want, strict=True):
        assert g.dtype == jnp.float64
        assert rel_error(g, w) <= 1e-10


@pytest.mark.parametrize("backward", jaxbn.BACKWARDS)
@pytest.mark.parametrize(
    ("name", "shape", "axis", "how"), SMALL_BN_CASES, ids=[c[0] for c in SMALL_BN_CASES]
)
def test_bn_grads_match_central_differences(x64, backward, name, shape, axis, how):
    x, gamma, beta, c = _problem(shape, axis, how)
    got = grads(_bn_loss, x, gamma, beta, c, backward=backward, axis=axis)
    want = numerical_grads(_bn_loss, x, gamma, beta, c, backward=backward, axis=axis)
    for g, w in zip(got, want, strict=True):  # dx, dgamma, dbeta
        assert rel_error(g, w) <= 1e-7


@pytest.mark.parametrize("backward", CUSTOM)
def test_bn_check_grads_second_order(x64, backward):
    x, gamma, beta, _ = _problem((4, 5), -1, "5randn+12")

    def f(x, gamma, beta):
        return bn_train(x, gamma, beta, backward=backward)[0]

    check_grads(f, (x, gamma, beta), order=2, modes=("rev",))


def _grad_of_grads_loss(x, gamma, beta, c, *, backward):
    dx, dgamma, dbeta = jax.grad(_bn_loss, (0, 1, 2))(x, gamma, beta, c, backward=backward, axis=-1)
    return jnp.sum(jnp.sin(dx)) + jnp.sum(dgamma**2) + jnp.sum(dbeta * gamma)


@pytest.mark.parametrize("backward", CUSTOM)
def test_bn_gradient_of_gradient_matches_autodiff(x64, backward):
    """Reverse over reverse: differentiate a function of the gradients."""
    x, gamma, beta, c = _problem((6, 4), -1, "randn")
    got = grads(_grad_of_grads_loss, x, gamma, beta, c, backward=backward)
    want = grads(_grad_of_grads_loss, x, gamma, beta, c, backward="autodiff")
    for g, w in zip(got, want, strict=True):
        assert rel_error(g, w) <= 1e-10


def _statistics_loss(x, gamma, beta, c, wm, wv, *, backward):
    y, mean, var = jaxbn.batch_norm_train(x, gamma, beta, backward=backward)
    return jnp.sum(y * c) + jnp.sum(mean * wm) + jnp.sum(var * wv)


@pytest.mark.parametrize("backward", CUSTOM)
def test_bn_statistics_cotangents_match_autodiff(x64, backward):
    """The returned batch mean and variance are differentiable, and their cotangents are exact."""
    x, gamma, beta, c = _problem((5, 3), -1, "5randn+12")
    weights = jnp.array([1.0, -2.0, 0.5]), jnp.array([0.3, 1.0, -1.5])
    got = grads(_statistics_loss, x, gamma, beta, c, *weights, backward=backward)
    want = grads(_statistics_loss, x, gamma, beta, c, *weights, backward="autodiff")
    for g, w in zip(got, want, strict=True):
        assert rel_error(g, w) <= 1e-10


def test_autodiff_backward_supports_forward_mode(x64):
    x, gamma, beta, _ = _problem((4, 5), -1, "randn")

    @jax.jit
    def jvp(x, tangent):
        f = partial(jaxbn.batch_norm_train, gamma=gamma, beta=beta, backward="autodiff")
        return jax.jvp(lambda v: f(v)[0], (x,), (tangent,))[1]

    # Normalization removes a constant shift of every element of a feature.
    np.testing.assert_allclose(jvp(x, np.ones(x.shape)), 0.0, atol=1e-12)


# --------------------------------------------------------------------------- float32 and dtypes


@pytest.mark.parametrize("backward", CUSTOM)
def test_bn_float32_grads_close_to_autodiff(backward):
    x, gamma, beta, c = _problem((64, 32), -1, "randn", dtype=np.float32)
    got = grads(_bn_loss, x, gamma, beta, c, backward=backward, axis=-1)
    want = grads(_bn_loss, x, gamma, beta, c, backward="autodiff", axis=-1)
    for g, w in zip(got, want, strict=True):
        assert g.dtype == jnp.float32
        assert rel_error(g, w) <= 1e-5


@pytest.mark.parametrize("backward", jaxbn.BACKWARDS)
def test_bn_jit_matches_eager(backward):
    """The one test that runs the library eagerly on purpose: eager and jit give the same."""
    x, gamma, beta, c = _problem((16, 8), -1, "randn", dtype=np.float32)
    state = jaxbn.batch_norm_state(8)

    def step(x, gamma, beta, state):
        def loss(x, gamma, beta):
            y, new_state = jaxbn.batch_norm(x, gamma, beta, state, training=True, backward=backward)
            return jnp.sum(y * c), new_state

        return jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True)(x, gamma, beta)

    eager = step(x, gamma, beta, state)
    jitted = jax.jit(step)(x, gamma, beta, state)
    for a, b in zip(jax.tree.leaves(eager), jax.tree.leaves(jitted), strict=True):
        np.testing.assert_allclose(a, b, rtol=2e-6, atol=2e-6)


def test_large_offset_variance_is_accurate_in_float32():
    """Two-pass variance: 1e4 + N(0, 1) in float32 gives the variance to better than 1%."""
    x = np.asarray(1e4 + np.random.default_rng(1).standard_normal((4096, 4)), np.float32)
    _, mean, var = bn_train(x, np.ones(4, np.float32), np.zeros(4, np.float32))
    want = np.var(np.asarray(x, np.float64), axis=0)
    assert np.max(np.abs(np.asarray(var) - want) / want) < 0.01
    np.testing.assert_allclose(mean, np.mean(np.asarray(x, np.float64), axis=0), rtol=1e-6)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("backward", jaxbn.BACKWARDS)
def test_half_precision_in_half_out_float32_state(dtype, backward):
    x, gamma, beta, c = _problem((32, 8), -1, "randn", dtype=np.float32)
    x_half, c_half = (jnp.asarray(np.asarray(a).astype(dtype)) for a in (x, c))
    state = jaxbn.batch_norm_state(8)
    y, new_state = bn(x_half, gamma, beta, state, training=True)
    assert y.dtype == dtype
    assert new_state.mean.dtype == new_state.var.dtype == jnp.float32
    y32, _ = bn(x, gamma, beta, state, training=True)
    np.testing.assert_allclose(np.asarray(y, np.float32), y32, atol=0.05, rtol=0.02)
    dx = grads(_bn_loss, x_half, gamma, beta, c_half, backward=backward, axis=-1)[0]
    assert dx.dtype == dtype
    assert np.all(np.isfinite(np.asarray(dx, np.float32)))


def test_float64_stays_float64(x64):
    x, gamma, beta, _ = _problem((8, 3), -1, "randn")
    state = jaxbn.batch_norm_state(3, jnp.float64)
    y, new_state = bn(x, gamma, beta, state, training=True)
    assert y.dtype == new_state.mean.dtype == new_state.var.dtype == jnp.float64
    y_eval, _ = bn(x, gamma, beta, new_state, training=False)
    assert y_eval.dtype == jnp.float64


# --------------------------------------------------------------------------- state semantics


def test_batch_norm_state_defaults():
    state = jaxbn.batch_norm_state((3, 2))
    assert state.mean.shape == state.var.shape == (3, 2)
    assert state.mean.dtype == jnp.float32
    np.testing.assert_array_equal(state.mean, 0.0)
    np.testing.assert_array_equal(state.var, 1.0)
    assert state.count.dtype == jnp.int32 and int(state.count) == 0


@pytest.mark.parametrize("backward", jaxbn.BACKWARDS)
def test_running_statistics_after_one_step(x64, backward):
    x = jnp.array([[1.0, 10.0], [3.0, 10.0], [5.0, 13.0], [7.0, 15.0]], jnp.float64)
    state = jaxbn.batch_norm_state(2, jnp.float64)
    state = state._replace(mean=jnp.array([1.0, -1.0]), var=jnp.array([2.0, 0.5]))
    _, new = bn(x, np.ones(2), np.zeros(2), state, training=True, momentum=0.75, backward=backward)
    batch_mean = np.array([4.0, 12.0])
    batch_var = np.array([5.0, 4.5])  # biased: divide by N = 4
    np.testing.assert_allclose(new.mean, 0.75 * np.array([1.0, -1.0]) + 0.25 * batch_mean)
    np.testing.assert_allclose(new.var, 0.75 * np.array([2.0, 0.5]) + 0.25 * batch_var)
    assert int(new.count) == 1


def test_training_output_is_normalized_per_feature():
    x = 3 * _randn(2, (50, 4, 4, 6)) + 7
    y, _ = bn(x, np.ones(6), np.zeros(6), jaxbn.batch_norm_state(6), training=True)
    y = np.asarray(y, np.float64)
    np.testing.assert_allclose(np.mean(y, axis=(0, 1, 2)), 0.0, atol=1e-5)
    np.testing.assert_allclose(np.var(y, axis=(0, 1, 2)), 1.0, atol=1e-3)


def test_nchw_axis1_equals_nhwc():
    x = _randn(3, (4, 3, 5, 5))
    gamma, beta = jnp.array([1.0, 2.0, 0.5]), jnp.array([0.0, 1.0, -1.0])
    state = jaxbn.batch_norm_state(3)
    y1, s1 = bn(x, gamma, beta, state, training=True, axis=1)
    y2, s2 = bn(np.asarray(x).transpose(0, 2, 3, 1), gamma, beta, state, training=True)
    np.testing.assert_allclose(y1, np.asarray(y2).transpose(0, 3, 1, 2), atol=1e-5)
    np.testing.assert_allclose(s1.var, s2.var, rtol=1e-5)


def test_evaluation_before_training_is_identity_like():
    """Running stats start at mean 0, var 1: evaluation is gamma * x / sqrt(1 + eps) + beta.

    Eager on purpose: evaluation hands back the very state object it was given.
    """
    x = _randn(4, (5, 3))
    gamma, beta = jnp.array([2.0, 1.0, 0.5]), jnp.array([1.0, 0.0, -1.0])
    state = jaxbn.batch_norm_state(3)
    y, same = jaxbn.batch_norm(x, gamma, beta, state, training=False)
    want = np.asarray(gamma)[None] * np.asarray(x) / np.sqrt(1 + 1e-5) + np.asarray(beta)[None]
    np.testing.assert_allclose(y, want, rtol=1e-6, atol=1e-6)
    assert same is state


def test_evaluation_uses_running_statistics(x64):
    x = _randn(5, (5, 2), np.float64)
    state = jaxbn.BatchNormState(
        mean=jnp.array([1.0, -2.0]), var=jnp.array([4.0, 0.25]), count=jnp.array(3, jnp.int32)
    )
    y, _ = bn(x, np.ones(2), np.zeros(2), state, training=False, eps=1e-3)
    want = (np.asarray(x) - np.asarray(state.mean)) / np.sqrt(np.asarray(state.var) + 1e-3)
    np.testing.assert_allclose(y, want, rtol=1e-12)


def _state_reading_loss(x, gamma, beta, mean, var, c, *, backward, use_state):
    state = jaxbn.BatchNormState(mean, var, jnp.zeros((), jnp.int32))
    y, new = jaxbn.batch_norm(x, gamma, beta, state, training=True, backward=backward)
    extra = jnp.sum(new.mean * 3.0) + jnp.sum(new.var**2) if use_state else 0.0
    return jnp.sum(y * c) + extra


@pytest.mark.parametrize("backward", jaxbn.BACKWARDS)
def test_state_cotangents_flow_nowhere(x64, backward):
    """A loss that also reads the returned state gets the same gradients as one that does not."""
    x, gamma, beta, c = _problem((6, 3), -1, "randn")
    args = (x, gamma, beta, np.zeros(3), np.ones(3), c)
    with_state, without = (
        grads(_state_reading_loss, *args, argnums=(0, 1, 2, 3, 4), backward=backward, use_state=u)
        for u in (True, False)
    )
    for a, b in zip(with_state, without, strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(with_state[3], 0.0)
    np.testing.assert_array_equal(with_state[4], 0.0)


def test_state_is_a_pytree_that_jits_and_vmaps():
    xs = _randn(6, (3, 8, 4))  # 3 independent layers
    states = jax.jit(jax.vmap(lambda _: jaxbn.batch_norm_state(4)))(np.arange(3))

    @jax.jit
    @jax.vmap
    def run(x, state):
        return jaxbn.batch_norm(x, jnp.ones(4), jnp.zeros(4), state, training=True)

    _, new = run(xs, states)
    np.testing.assert_allclose(new.mean, 0.1 * np.mean(xs, axis=1), rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(new.count, 1)


# --------------------------------------------------------------------------- mask


@pytest.mark.parametrize("backward", jaxbn.BACKWARDS)
def test_mask_gives_statistics_of_real_rows(x64, backward):
    # 4 real rows of 5: the real rows alone are BN_CASES' 4x5_offset shape (shared compilations)
    x, gamma, beta, c = _problem((7, 5), -1, "5randn+12")
    mask = np.array([True, True, False, True, False, False, True])
    real = x[mask]
    y, mean, var = bn_train(x, gamma, beta, mask=mask, backward=backward)
    y_real, mean_real, var_real = bn_train(real, gamma, beta, backward=backward)
    np.testing.assert_allclose(mean, mean_real, rtol=1e-14)
    np.testing.assert_allclose(var, var_real, rtol=1e-13)
    np.testing.assert_allclose(np.asarray(y)[mask], y_real, rtol=1e-13, atol=1e-13)

    got = grads(_bn_loss, x, gamma, beta, c, mask=mask, backward=backward, axis=-1)
    want = grads(_bn_loss, real, gamma, beta, c[mask], backward=backward, axis=-1)
    np.testing.assert_array_equal(np.asarray(got[0])[~mask], 0.0)
    assert rel_error(np.asarray(got[0])[mask], want[0]) <= 1e-12
    assert rel_error(got[1], want[1]) <= 1e-12
    assert rel_error(got[2], want[2]) <= 1e-12


def test_mask_ignores_nonfinite_padding():
    x = np.array([[1.0], [3.0], [np.nan], [np.inf]], np.float32)
    mask = np.array([True, True, False, False])
    _, mean, var = bn_train(x, np.ones(1), np.zeros(1), mask=mask)
    np.testing.assert_allclose(mean, [2.0])
    np.testing.assert_allclose(var, [1.0])


# --------------------------------------------------------------------------- layer norm


LN_CASES = [
    ("2x3", (2, 3), -1, "randn"),
    ("4x5_offset", (4, 5), -1, "5randn+12"),
    ("nhwc_channels", (2, 4, 5, 3), -1, "randn"),
]


@pytest.mark.parametrize("backward", CUSTOM)
@pytest.mark.parametrize(("name", "shape", "axis", "how"), LN_CASES, ids=[c[0] for c in LN_CASES])
def test_ln_grads_match_autodiff_and_central_differences(x64, backward, name, shape, axis, how):
    x, gamma, beta, c = _problem(shape, axis, how)
    got = grads(_ln_loss, x, gamma, beta, c, backward=backward, axis=axis)
    want = grads(_ln_loss, x, gamma, beta, c, backward="autodiff", axis=axis)
    numerical = numerical_grads(_ln_loss, x, gamma, beta, c, backward=backward, axis=axis)
    for g, w, n in zip(got, want, numerical, strict=True):  # dx, dgamma, dbeta
        assert rel_error(g, w) <= 1e-10
        assert rel_error(g, n) <= 1e-7


def test_ln_check_grads_second_order(x64):
    # the shape of test_bn_check_grads_second_order's: check_grads' own eager ops compile once
    x, gamma, beta, _ = _problem((4, 5), -1, "5randn+12")
    check_grads(ln, (x, gamma, beta), order=2, modes=("rev",))


def test_ln_normalizes_each_example_and_matches_definition(x64):
    x = 4 * _randn(7, (6, 10), np.float64) + 3
    gamma, beta = np.linspace(0.5, 2, 10), np.linspace(-1, 1, 10)
    y = ln(x, gamma, beta, eps=1e-5)
    x_np = np.asarray(x)
    mu = x_np.mean(axis=1, keepdims=True)
    want = gamma * (x_np - mu) / np.sqrt(((x_np - mu) ** 2).mean(axis=1, keepdims=True) + 1e-5)
    np.testing.assert_allclose(y, want + beta, rtol=1e-12, atol=1e-12)


def test_ln_float32_and_bf16():
    x, gamma, beta, c = _problem((16, 32), -1, "randn", dtype=np.float32)
    got = grads(_ln_loss, x, gamma, beta, c, backward="closed_form", axis=-1)
    want = grads(_ln_loss, x, gamma, beta, c, backward="autodiff", axis=-1)
    assert rel_error(got[0], want[0]) <= 1e-5  # dx
    y16 = ln(jnp.asarray(np.asarray(x).astype(jnp.bfloat16)), gamma, beta)
    assert y16.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(y16, np.float32), ln(x, gamma, beta), atol=0.05)


# --------------------------------------------------------------------------- error paths


def _ok():
    return np.ones((4, 3), np.float32), np.ones(3), np.zeros(3), jaxbn.batch_norm_state(3)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"momentum": 1.5}, ValueError, r"momentum must be in \[0, 1\], got 1.5"),
        ({"momentum": -0.1}, ValueError, "momentum"),
        ({"momentum": "0.9"}, TypeError, "momentum"),
        ({"eps": 0.0}, ValueError, r"eps must be > 0, got 0.0"),
        ({"eps": -1e-5}, ValueError, "eps"),
        ({"backward": "numeric"}, ValueError, "backward must be one of .* got 'numeric'"),
        ({"axis": 2}, ValueError, "axis=2 is out of range"),
        ({"axis": (1, 1)}, ValueError, "repeated"),
        ({"training": "yes"}, TypeError, "training must be a Python bool"),
        ({"training": jnp.array(True)}, TypeError, "training must be a Python bool"),
    ],
    ids=lambda v: str(v) if not isinstance(v, dict) else "-".join(map(str, v)),
)
def test_batch_norm_rejects_bad_hyperparameters(kwargs, error, match):
    x, gamma, beta, state = _ok()
    kw = {"training": True, **kwargs}
    with pytest.raises(error, match=match):
        jaxbn.batch_norm(x, gamma, beta, state, **kw)


def test_single_value_per_feature_in_training_raises():
    x, gamma, beta, state = _ok()
    with pytest.raises(ValueError, match=r"more than one value per feature.*\(1, 3\)"):
        jaxbn.batch_norm(x[:1], gamma, beta, state, training=True)
    # Evaluation with one example is fine.
    y, _ = bn(x[:1], gamma, beta, state, training=False)
    assert y.shape == (1, 3)


@pytest.mark.parametrize(
    ("which", "value", "match"),
    [
        ("gamma", np.ones(4), r"gamma must have the feature shape \(3,\), got shape \(4,\)"),
        ("beta", np.ones((3, 1)), r"beta must have the feature shape \(3,\), got shape \(3, 1\)"),
        ("state", jaxbn.batch_norm_state(5), r"state.mean must have the feature shape \(3,\)"),
    ],
    ids=["gamma", "beta", "state"],
)
def test_shape_mismatch_raises(which, value, match):
    x, gamma, beta, state = _ok()
    args = {"gamma": gamma, "beta": beta, "state": state, which: value}
    with pytest.raises(ValueError, match=match):
        jaxbn.batch_norm(x, args["gamma"], args["beta"], args["state"], training=True)


def test_bad_types_raise():
    x, gamma, beta, state = _ok()
    with pytest.raises(TypeError, match="x must be a floating-point array, got dtype int32"):
        jaxbn.batch_norm(np.ones((4, 3), np.int32), gamma, beta, state, training=True)
    with pytest.raises(TypeError, match="state must be a jaxbn.BatchNormState"):
        jaxbn.batch_norm(x, gamma, beta, (state.mean, state.var), training=True)
    with pytest.raises(TypeError, match="state.var must be float32 or wider"):
        half = state._replace(var=np.ones(3, np.float16))
        jaxbn.batch_norm(x, gamma, beta, half, training=True)
    with pytest.raises(TypeError, match="mask must be a boolean array"):
        jaxbn.batch_norm(x, gamma, beta, state, training=True, mask=np.ones(4))
    with pytest.raises(ValueError, match=r"mask must have the shape .* \(4,\), got shape \(3,\)"):
        jaxbn.batch_norm(x, gamma, beta, state, training=True, mask=np.ones(3, bool))


def test_batch_norm_state_rejects_bad_input():
    with pytest.raises(ValueError, match="num_features"):
        jaxbn.batch_norm_state(0)
    with pytest.raises(ValueError, match="num_features"):
        jaxbn.batch_norm_state((3, 2.5))
    with pytest.raises(TypeError, match="float32 or wider, got float16"):
        jaxbn.batch_norm_state(3, jnp.float16)


def test_layer_norm_rejects_bad_input():
    x = np.ones((4, 3), np.float32)
    with pytest.raises(ValueError, match=r"gamma must have the feature shape \(3,\)"):
        jaxbn.layer_norm(x, np.ones(4), np.zeros(3))
    with pytest.raises(ValueError, match="eps must be > 0"):
        jaxbn.layer_norm(x, np.ones(3), np.zeros(3), eps=0)
    with pytest.raises(TypeError, match="x must be a floating-point array"):
        jaxbn.layer_norm(np.ones((4, 3), np.int8), np.ones(3), np.zeros(3))
    with pytest.raises(ValueError, match="backward must be one of"):
        jaxbn.layer_norm(x, np.ones(3), np.zeros(3), backward="fast")
