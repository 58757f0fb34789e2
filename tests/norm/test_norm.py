"""Batch norm and layer norm: gradients, numerics, running statistics and error paths."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import jaxbn
from tests.helpers import central_difference, jgrad, rel_error

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


def _draw(key, shape, how, dtype=jnp.float64):
    x = jax.random.normal(key, shape, dtype)
    return 5 * x + 12 if how == "5randn+12" else x


def _problem(shape, axis, how, dtype=jnp.float64, seed=0):
    """x, gamma, beta and a fixed upstream cotangent c for the loss sum(y * c)."""
    kx, kg, kb, kc = jax.random.split(jax.random.key(seed), 4)
    feature_shape = (shape[axis],)
    x = _draw(kx, shape, how, dtype)
    gamma = 1 + 0.5 * jax.random.normal(kg, feature_shape, dtype)
    beta = jax.random.normal(kb, feature_shape, dtype)
    c = jax.random.normal(kc, shape, dtype)
    return x, gamma, beta, c


def _bn_loss(backward, axis, c):
    def loss(x, gamma, beta):
        y, _, _ = jaxbn.batch_norm_train(x, gamma, beta, axis=axis, backward=backward)
        return jnp.sum(y * c)

    return loss


# --------------------------------------------------------------------------- float64 gradients


@pytest.mark.parametrize("backward", CUSTOM)
@pytest.mark.parametrize(("name", "shape", "axis", "how"), BN_CASES, ids=[c[0] for c in BN_CASES])
def test_bn_custom_grads_match_autodiff_f64(x64, backward, name, shape, axis, how):
    x, gamma, beta, c = _problem(shape, axis, how)
    got = jgrad(_bn_loss(backward, axis, c), argnums=(0, 1, 2))(x, gamma, beta)
    want = jgrad(_bn_loss("autodiff", axis, c), argnums=(0, 1, 2))(x, gamma, beta)
    for g, w in zip(got, want, strict=True):
        assert g.dtype == jnp.float64
        assert rel_error(g, w) <= 1e-10


@pytest.mark.parametrize("backward", jaxbn.BACKWARDS)
@pytest.mark.parametrize(
    ("name", "shape", "axis", "how"), SMALL_BN_CASES, ids=[c[0] for c in SMALL_BN_CASES]
)
def test_bn_grads_match_central_differences(x64, backward, name, shape, axis, how):
    x, gamma, beta, c = _problem(shape, axis, how)
    loss = _bn_loss(backward, axis, c)
    dx, dgamma, dbeta = jgrad(loss, argnums=(0, 1, 2))(x, gamma, beta)
    assert rel_error(dx, central_difference(lambda v: loss(v, gamma, beta), x)) <= 1e-7
    assert rel_error(dgamma, central_difference(lambda v: loss(x, v, beta), gamma)) <= 1e-7
    assert rel_error(dbeta, central_difference(lambda v: loss(x, gamma, v), beta)) <= 1e-7


@pytest.mark.parametrize("backward", CUSTOM)
def test_bn_check_grads_second_order(x64, backward):
    x, gamma, beta, _ = _problem((4, 5), -1, "5randn+12")

    def f(x, gamma, beta):
        return jaxbn.batch_norm_train(x, gamma, beta, backward=backward)[0]

    check_grads(jax.jit(f), (x, gamma, beta), order=2, modes=("rev",))


@pytest.mark.parametrize("backward", CUSTOM)
def test_bn_gradient_of_gradient_matches_autodiff(x64, backward):
    """Reverse over reverse: differentiate a function of the gradients."""
    x, gamma, beta, c = _problem((6, 4), -1, "randn")

    def outer(bw):
        def h(x, gamma, beta):
            dx, dgamma, dbeta = jgrad(_bn_loss(bw, -1, c), argnums=(0, 1, 2))(x, gamma, beta)
            return jnp.sum(jnp.sin(dx)) + jnp.sum(dgamma**2) + jnp.sum(dbeta * gamma)

        return jgrad(h, argnums=(0, 1, 2))(x, gamma, beta)

    for g, w in zip(outer(backward), outer("autodiff"), strict=True):
        assert rel_error(g, w) <= 1e-10


@pytest.mark.parametrize("backward", CUSTOM)
def test_bn_statistics_cotangents_match_autodiff(x64, backward):
    """The returned batch mean and variance are differentiable, and their cotangents are exact."""
    x, gamma, beta, c = _problem((5, 3), -1, "5randn+12")
    wm, wv = jnp.array([1.0, -2.0, 0.5]), jnp.array([0.3, 1.0, -1.5])

    def loss(bw):
        def f(x, gamma, beta):
            y, mean, var = jaxbn.batch_norm_train(x, gamma, beta, backward=bw)
            return jnp.sum(y * c) + jnp.sum(mean * wm) + jnp.sum(var * wv)

        return f

    got = jgrad(loss(backward), argnums=(0, 1, 2))(x, gamma, beta)
    want = jgrad(loss("autodiff"), argnums=(0, 1, 2))(x, gamma, beta)
    for g, w in zip(got, want, strict=True):
        assert rel_error(g, w) <= 1e-10


def test_autodiff_backward_supports_forward_mode(x64):
    x, gamma, beta, _ = _problem((4, 5), -1, "randn")

    def f(x):
        return jaxbn.batch_norm_train(x, gamma, beta, backward="autodiff")[0]

    jvp_out = jax.jvp(f, (x,), (jnp.ones_like(x),))[1]
    # Normalization removes a constant shift of every element of a feature.
    np.testing.assert_allclose(jvp_out, 0.0, atol=1e-12)


# --------------------------------------------------------------------------- float32 and dtypes


@pytest.mark.parametrize("backward", CUSTOM)
def test_bn_float32_grads_close_to_autodiff(backward):
    x, gamma, beta, c = _problem((64, 32), -1, "randn", dtype=jnp.float32)
    got = jgrad(_bn_loss(backward, -1, c), argnums=(0, 1, 2))(x, gamma, beta)
    want = jgrad(_bn_loss("autodiff", -1, c), argnums=(0, 1, 2))(x, gamma, beta)
    for g, w in zip(got, want, strict=True):
        assert g.dtype == jnp.float32
        assert rel_error(g, w) <= 1e-5


@pytest.mark.parametrize("backward", jaxbn.BACKWARDS)
def test_bn_jit_matches_eager(backward):
    x, gamma, beta, c = _problem((16, 8), -1, "randn", dtype=jnp.float32)
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
    x = 1e4 + jax.random.normal(jax.random.key(1), (4096, 4), jnp.float32)
    _, mean, var = jaxbn.batch_norm_train(x, jnp.ones(4), jnp.zeros(4))
    want = np.var(np.asarray(x, np.float64), axis=0)
    assert np.max(np.abs(np.asarray(var) - want) / want) < 0.01
    np.testing.assert_allclose(mean, np.mean(np.asarray(x, np.float64), axis=0), rtol=1e-6)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("backward", jaxbn.BACKWARDS)
def test_half_precision_in_half_out_float32_state(dtype, backward):
    x, gamma, beta, c = _problem((32, 8), -1, "randn", dtype=jnp.float32)
    state = jaxbn.batch_norm_state(8)
    y, new_state = jaxbn.batch_norm(x.astype(dtype), gamma, beta, state, training=True)
    assert y.dtype == dtype
    assert new_state.mean.dtype == new_state.var.dtype == jnp.float32
    y32, _ = jaxbn.batch_norm(x, gamma, beta, state, training=True)
    np.testing.assert_allclose(np.asarray(y, np.float32), y32, atol=0.05, rtol=0.02)
    dx = jgrad(_bn_loss(backward, -1, c.astype(dtype)))(x.astype(dtype), gamma, beta)
    assert dx.dtype == dtype
    assert bool(jnp.all(jnp.isfinite(dx.astype(jnp.float32))))


def test_float64_stays_float64(x64):
    x, gamma, beta, _ = _problem((8, 3), -1, "randn")
    state = jaxbn.batch_norm_state(3, jnp.float64)
    y, new_state = jaxbn.batch_norm(x, gamma, beta, state, training=True)
    assert y.dtype == new_state.mean.dtype == new_state.var.dtype == jnp.float64
    y_eval, _ = jaxbn.batch_norm(x, gamma, beta, new_state, training=False)
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
    _, new = jaxbn.batch_norm(
        x, jnp.ones(2), jnp.zeros(2), state, training=True, momentum=0.75, backward=backward
    )
    batch_mean = np.array([4.0, 12.0])
    batch_var = np.array([5.0, 4.5])  # biased: divide by N = 4
    np.testing.assert_allclose(new.mean, 0.75 * np.array([1.0, -1.0]) + 0.25 * batch_mean)
    np.testing.assert_allclose(new.var, 0.75 * np.array([2.0, 0.5]) + 0.25 * batch_var)
    assert int(new.count) == 1


def test_training_output_is_normalized_per_feature():
    x = 3 * jax.random.normal(jax.random.key(2), (50, 4, 4, 6)) + 7
    y, _ = jax.jit(jaxbn.batch_norm, static_argnames="training")(
        x, jnp.ones(6), jnp.zeros(6), jaxbn.batch_norm_state(6), training=True
    )
    np.testing.assert_allclose(jnp.mean(y, axis=(0, 1, 2)), 0.0, atol=1e-5)
    np.testing.assert_allclose(jnp.var(y, axis=(0, 1, 2)), 1.0, atol=1e-3)


def test_nchw_axis1_equals_nhwc():
    x = jax.random.normal(jax.random.key(3), (4, 3, 5, 5))
    gamma, beta = jnp.array([1.0, 2.0, 0.5]), jnp.array([0.0, 1.0, -1.0])
    state = jaxbn.batch_norm_state(3)
    y1, s1 = jaxbn.batch_norm(x, gamma, beta, state, training=True, axis=1)
    y2, s2 = jaxbn.batch_norm(x.transpose(0, 2, 3, 1), gamma, beta, state, training=True)
    np.testing.assert_allclose(y1, y2.transpose(0, 3, 1, 2), atol=1e-5)
    np.testing.assert_allclose(s1.var, s2.var, rtol=1e-5)


def test_evaluation_before_training_is_identity_like():
    """Running stats start at mean 0, var 1: evaluation is gamma * x / sqrt(1 + eps) + beta."""
    x = jax.random.normal(jax.random.key(4), (5, 3))
    gamma, beta = jnp.array([2.0, 1.0, 0.5]), jnp.array([1.0, 0.0, -1.0])
    state = jaxbn.batch_norm_state(3)
    y, same = jaxbn.batch_norm(x, gamma, beta, state, training=False)
    want = np.asarray(gamma)[None] * np.asarray(x) / np.sqrt(1 + 1e-5) + np.asarray(beta)[None]
    np.testing.assert_allclose(y, want, rtol=1e-6, atol=1e-6)
    assert same is state


def test_evaluation_uses_running_statistics(x64):
    x = jax.random.normal(jax.random.key(5), (5, 2), jnp.float64)
    state = jaxbn.BatchNormState(
        mean=jnp.array([1.0, -2.0]), var=jnp.array([4.0, 0.25]), count=jnp.array(3, jnp.int32)
    )
    y, _ = jaxbn.batch_norm(x, jnp.ones(2), jnp.zeros(2), state, training=False, eps=1e-3)
    want = (np.asarray(x) - np.asarray(state.mean)) / np.sqrt(np.asarray(state.var) + 1e-3)
    np.testing.assert_allclose(y, want, rtol=1e-12)


@pytest.mark.parametrize("backward", jaxbn.BACKWARDS)
def test_state_cotangents_flow_nowhere(x64, backward):
    """A loss that also reads the returned state gets the same gradients as one that does not."""
    x, gamma, beta, c = _problem((6, 3), -1, "randn")
    count = jnp.zeros((), jnp.int32)

    def make_loss(use_state):
        def loss(x, gamma, beta, mean, var):
            state = jaxbn.BatchNormState(mean, var, count)
            y, new = jaxbn.batch_norm(x, gamma, beta, state, training=True, backward=backward)
            extra = jnp.sum(new.mean * 3.0) + jnp.sum(new.var**2) if use_state else 0.0
            return jnp.sum(y * c) + extra

        return jgrad(loss, argnums=(0, 1, 2, 3, 4))

    args = (x, gamma, beta, jnp.zeros(3), jnp.ones(3))
    with_state, without = make_loss(True)(*args), make_loss(False)(*args)
    for a, b in zip(with_state, without, strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(with_state[3], 0.0)
    np.testing.assert_array_equal(with_state[4], 0.0)


def test_state_is_a_pytree_that_jits_and_vmaps():
    xs = jax.random.normal(jax.random.key(6), (3, 8, 4))  # 3 independent layers
    states = jax.vmap(lambda _: jaxbn.batch_norm_state(4))(jnp.arange(3))

    @jax.jit
    @jax.vmap
    def run(x, state):
        return jaxbn.batch_norm(x, jnp.ones(4), jnp.zeros(4), state, training=True)

    _, new = run(xs, states)
    np.testing.assert_allclose(new.mean, 0.1 * jnp.mean(xs, axis=1), rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(new.count, 1)


# --------------------------------------------------------------------------- mask


@pytest.mark.parametrize("backward", jaxbn.BACKWARDS)
def test_mask_gives_statistics_of_real_rows(x64, backward):
    x, gamma, beta, c = _problem((7, 3), -1, "5randn+12")
    mask = jnp.array([True, True, False, True, True, False, True])
    real = x[np.asarray(mask)]
    train = jax.jit(jaxbn.batch_norm_train, static_argnames="backward")
    y, mean, var = train(x, gamma, beta, mask=mask, backward=backward)
    y_real, mean_real, var_real = train(real, gamma, beta, backward=backward)
    np.testing.assert_allclose(mean, mean_real, rtol=1e-14)
    np.testing.assert_allclose(var, var_real, rtol=1e-13)
    np.testing.assert_allclose(y[np.asarray(mask)], y_real, rtol=1e-13, atol=1e-13)

    def loss(mask, c):
        def f(x, gamma, beta):
            y = jaxbn.batch_norm_train(x, gamma, beta, mask=mask, backward=backward)[0]
            return jnp.sum(y * c)

        return jgrad(f, argnums=(0, 1, 2))

    grads = loss(mask, c)(x, gamma, beta)
    grads_real = loss(None, c[np.asarray(mask)])(real, gamma, beta)
    np.testing.assert_array_equal(grads[0][~np.asarray(mask)], 0.0)
    assert rel_error(grads[0][np.asarray(mask)], grads_real[0]) <= 1e-12
    assert rel_error(grads[1], grads_real[1]) <= 1e-12
    assert rel_error(grads[2], grads_real[2]) <= 1e-12


def test_mask_ignores_nonfinite_padding():
    x = jnp.array([[1.0], [3.0], [jnp.nan], [jnp.inf]])
    mask = jnp.array([True, True, False, False])
    _, mean, var = jaxbn.batch_norm_train(x, jnp.ones(1), jnp.zeros(1), mask=mask)
    np.testing.assert_allclose(mean, [2.0])
    np.testing.assert_allclose(var, [1.0])


# --------------------------------------------------------------------------- layer norm


LN_CASES = [
    ("2x3", (2, 3), -1, "randn"),
    ("4x5_offset", (4, 5), -1, "5randn+12"),
    ("nhwc_channels", (2, 4, 5, 3), -1, "randn"),
]


def _ln_loss(backward, axis, c):
    def loss(x, gamma, beta):
        return jnp.sum(jaxbn.layer_norm(x, gamma, beta, axis=axis, backward=backward) * c)

    return loss


@pytest.mark.parametrize("backward", CUSTOM)
@pytest.mark.parametrize(("name", "shape", "axis", "how"), LN_CASES, ids=[c[0] for c in LN_CASES])
def test_ln_grads_match_autodiff_and_central_differences(x64, backward, name, shape, axis, how):
    x, gamma, beta, c = _problem(shape, axis, how)
    loss = _ln_loss(backward, axis, c)
    got = jgrad(loss, argnums=(0, 1, 2))(x, gamma, beta)
    want = jgrad(_ln_loss("autodiff", axis, c), argnums=(0, 1, 2))(x, gamma, beta)
    for g, w in zip(got, want, strict=True):
        assert rel_error(g, w) <= 1e-10
    assert rel_error(got[0], central_difference(lambda v: loss(v, gamma, beta), x)) <= 1e-7
    assert rel_error(got[1], central_difference(lambda v: loss(x, v, beta), gamma)) <= 1e-7
    assert rel_error(got[2], central_difference(lambda v: loss(x, gamma, v), beta)) <= 1e-7


def test_ln_check_grads_second_order(x64):
    x, gamma, beta, _ = _problem((3, 6), -1, "5randn+12")
    check_grads(jax.jit(jaxbn.layer_norm), (x, gamma, beta), order=2, modes=("rev",))


def test_ln_normalizes_each_example_and_matches_definition(x64):
    x = 4 * jax.random.normal(jax.random.key(7), (6, 10), jnp.float64) + 3
    gamma, beta = jnp.linspace(0.5, 2, 10), jnp.linspace(-1, 1, 10)
    y = jaxbn.layer_norm(x, gamma, beta, eps=1e-5)
    x_np, g_np, b_np = np.asarray(x), np.asarray(gamma), np.asarray(beta)
    mu = x_np.mean(axis=1, keepdims=True)
    want = (
        g_np * (x_np - mu) / np.sqrt(((x_np - mu) ** 2).mean(axis=1, keepdims=True) + 1e-5) + b_np
    )
    np.testing.assert_allclose(y, want, rtol=1e-12, atol=1e-12)


def test_ln_float32_and_bf16():
    x, gamma, beta, c = _problem((16, 32), -1, "randn", dtype=jnp.float32)
    got = jgrad(_ln_loss("closed_form", -1, c))(x, gamma, beta)
    want = jgrad(_ln_loss("autodiff", -1, c))(x, gamma, beta)
    assert rel_error(got, want) <= 1e-5
    y16 = jaxbn.layer_norm(x.astype(jnp.bfloat16), gamma, beta)
    assert y16.dtype == jnp.bfloat16
    np.testing.assert_allclose(
        np.asarray(y16, np.float32), jaxbn.layer_norm(x, gamma, beta), atol=0.05
    )


# --------------------------------------------------------------------------- error paths


def _ok():
    return jnp.ones((4, 3)), jnp.ones(3), jnp.zeros(3), jaxbn.batch_norm_state(3)


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
    y, _ = jaxbn.batch_norm(x[:1], gamma, beta, state, training=False)
    assert y.shape == (1, 3)


@pytest.mark.parametrize(
    ("which", "value", "match"),
    [
        ("gamma", jnp.ones(4), r"gamma must have the feature shape \(3,\), got shape \(4,\)"),
        ("beta", jnp.ones((3, 1)), r"beta must have the feature shape \(3,\), got shape \(3, 1\)"),
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
        jaxbn.batch_norm(jnp.ones((4, 3), jnp.int32), gamma, beta, state, training=True)
    with pytest.raises(TypeError, match="state must be a jaxbn.BatchNormState"):
        jaxbn.batch_norm(x, gamma, beta, (state.mean, state.var), training=True)
    with pytest.raises(TypeError, match="state.var must be float32 or wider"):
        half = state._replace(var=state.var.astype(jnp.float16))
        jaxbn.batch_norm(x, gamma, beta, half, training=True)
    with pytest.raises(TypeError, match="mask must be a boolean array"):
        jaxbn.batch_norm(x, gamma, beta, state, training=True, mask=jnp.ones(4))
    with pytest.raises(ValueError, match=r"mask must have the shape .* \(4,\), got shape \(3,\)"):
        jaxbn.batch_norm(x, gamma, beta, state, training=True, mask=jnp.ones(3, bool))


def test_batch_norm_state_rejects_bad_input():
    with pytest.raises(ValueError, match="num_features"):
        jaxbn.batch_norm_state(0)
    with pytest.raises(ValueError, match="num_features"):
        jaxbn.batch_norm_state((3, 2.5))
    with pytest.raises(TypeError, match="float32 or wider, got float16"):
        jaxbn.batch_norm_state(3, jnp.float16)


def test_layer_norm_rejects_bad_input():
    x = jnp.ones((4, 3))
    with pytest.raises(ValueError, match=r"gamma must have the feature shape \(3,\)"):
        jaxbn.layer_norm(x, jnp.ones(4), jnp.zeros(3))
    with pytest.raises(ValueError, match="eps must be > 0"):
        jaxbn.layer_norm(x, jnp.ones(3), jnp.zeros(3), eps=0)
    with pytest.raises(TypeError, match="x must be a floating-point array"):
        jaxbn.layer_norm(jnp.ones((4, 3), jnp.int8), jnp.ones(3), jnp.zeros(3))
    with pytest.raises(ValueError, match="backward must be one of"):
        jaxbn.layer_norm(x, jnp.ones(3), jnp.zeros(3), backward="fast")
