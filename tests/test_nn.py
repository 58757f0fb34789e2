"""FullyConnectedNet: configuration checks, init, apply, vmap, and the whole net's gradient."""

import dataclasses
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxbn


@pytest.fixture(autouse=True)
def _rank_promotion_raises():
    with jax.numpy_rank_promotion("raise"):
        yield


@pytest.fixture
def x64():
    jax.config.update("jax_enable_x64", True)
    try:
        yield
    finally:
        jax.config.update("jax_enable_x64", False)


def rel_error(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.max(np.abs(a - b)) / max(np.max(np.abs(a) + np.abs(b)), 1e-8)


# One shape family for most tests: compiled programs (and RNG programs, slow to compile on CPU)
# are shared between them.
NET = jaxbn.FullyConnectedNet((6, 7), 4, normalization="batchnorm")
DROP = dataclasses.replace(NET, dropout=0.25)
D, N = 5, 12


def _data(n=N, d=D, c=4, seed=1):
    rng = np.random.default_rng(seed)
    x = 3.0 * rng.normal(size=(n, d)) + 1.0
    return x.astype(np.float32), rng.integers(0, c, n).astype(np.int32)


@partial(jax.jit, static_argnums=(0, 4))
def _apply(net, params, state, x, training, key=None, mask=None):
    return net.apply(params, state, x, training=training, key=key, mask=mask)


# --- configuration ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"hidden_dims": 100}, TypeError, r"hidden_dims .* got 100"),
        ({"hidden_dims": "100"}, TypeError, r"hidden_dims .* got '100'"),
        ({"hidden_dims": (100, 0)}, ValueError, r"hidden_dims .* got \(100, 0\)"),
        ({"hidden_dims": (100, 2.5)}, ValueError, r"hidden_dims .* got \(100, 2.5\)"),
        ({"num_classes": 1}, ValueError, r"num_classes .* got 1"),
        ({"normalization": "batch"}, ValueError, r"normalization .* got 'batch'"),
        ({"activation": "gelu"}, ValueError, r"activation .* got 'gelu'"),
        ({"dropout": 1.0}, ValueError, r"dropout .* got 1.0"),
        ({"dropout": -0.1}, ValueError, r"dropout .* got -0.1"),
        ({"weight_init": "kaiming"}, ValueError, r"weight_init .* got 'kaiming'"),
        ({"weight_init": -1.0}, ValueError, r"weight_init .* got -1.0"),
        ({"weight_init": True}, TypeError, r"weight_init .* got True"),
        ({"momentum": 1.5}, ValueError, r"momentum .* got 1.5"),
        ({"eps": 0.0}, ValueError, r"eps .* got 0.0"),
        ({"bn_backward": "fast"}, ValueError, r"bn_backward .* got 'fast'"),
    ],
    ids=[
        "dims_int",
        "dims_str",
        "dims_zero",
        "dims_float",
        "one_class",
        "normalization",
        "activation",
        "dropout_one",
        "dropout_negative",
        "init_name",
        "init_negative",
        "init_bool",
        "momentum",
        "eps",
        "bn_backward",
    ],
)
def test_bad_config_raises_naming_field_and_value(kwargs, error, match):
    args = {"hidden_dims": (8,), "num_classes": 3, **kwargs}
    with pytest.raises(error, match=match):
        jaxbn.FullyConnectedNet(args.pop("hidden_dims"), args.pop("num_classes"), **args)


def test_config_is_frozen_hashable_and_a_static_argument():
    a = jaxbn.FullyConnectedNet([8, 8], 3, normalization="batchnorm", weight_init=1)
    b = jaxbn.FullyConnectedNet((8, 8), 3, normalization="batchnorm", weight_init=1.0)
    assert a.hidden_dims == (8, 8) and a.weight_init == 1.0
    assert a == b and hash(a) == hash(b)
    with pytest.raises(AttributeError):
        a.dropout = 0.5
    f = jax.jit(lambda net, x: x * net.num_layers, static_argnums=0)
    assert float(f(a, 2.0)) == 6.0 and float(f(b, 2.0)) == 6.0
    assert f._cache_size() == 1


# --- init ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("normalization", [None, "batchnorm", "layernorm"], ids=str)
def test_init_layout(normalization):
    net = dataclasses.replace(NET, normalization=normalization)
    params, state = net.init(jax.random.key(0), D)
    assert [p["W"].shape for p in params] == [(5, 6), (6, 7), (7, 4)]
    for i, p in enumerate(params):
        assert p["W"].dtype == jnp.float32
        np.testing.assert_array_equal(p["b"], np.zeros(p["W"].shape[1]))
        if normalization is not None and i < 2:
            np.testing.assert_array_equal(p["gamma"], np.ones(p["W"].shape[1]))
            np.testing.assert_array_equal(p["beta"], np.zeros(p["W"].shape[1]))
        else:
            assert set(p) == {"W", "b"}
    assert len(state) == 2
    for s, d in zip(state, (6, 7), strict=True):
        if normalization == "batchnorm":
            assert isinstance(s, jaxbn.BatchNormState)
            np.testing.assert_array_equal(s.mean, np.zeros(d))
            np.testing.assert_array_equal(s.var, np.ones(d))
        else:
            assert s is None


@pytest.mark.parametrize("weight_init", ["he", "xavier", 0.01], ids=["he", "xavier", "fixed"])
def test_init_scales_one_standard_normal_draw_by_each_layers_std(weight_init):
    # The statistics of the draws are tested in test_init.py; here: the wiring.
    params, _ = dataclasses.replace(NET, weight_init=weight_init).init(jax.random.key(0), D)
    z = np.asarray(jax.random.normal(jax.random.key(0), (5 * 6 + 6 * 7 + 7 * 4,)))
    offset = 0
    for p, (d_in, d_out) in zip(params, [(5, 6), (6, 7), (7, 4)], strict=True):
        want = jaxbn.init_std(weight_init, d_in) * z[offset : offset + d_in * d_out]
        np.testing.assert_allclose(p["W"], want.reshape(d_in, d_out), rtol=1e-6)
        offset += d_in * d_out
    assert (
        abs(
            jaxbn.init_std(weight_init, 5) - {"he": 0.632, "xavier": 0.447, 0.01: 0.01}[weight_init]
        )
        < 1e-3
    )


def test_init_dtype_and_errors():
    with pytest.raises(ValueError, match="input_dim must be a positive int, got 0"):
        NET.init(jax.random.key(0), 0)
    with pytest.raises(TypeError, match="dtype must be a floating dtype, got int32"):
        NET.init(jax.random.key(0), D, dtype=jnp.int32)
    shapes = jax.eval_shape(lambda k: NET.init(k, D, dtype=jnp.bfloat16), jax.random.key(0))
    params, state = shapes
    assert params[0]["W"].dtype == jnp.bfloat16 and state[0].mean.dtype == jnp.float32


# --- apply --------------------------------------------------------------------------------------


def _np_forward(params, x, bn=False, eps=1e-5):
    h = np.asarray(x, np.float64)
    means = []
    for p in params[:-1]:
        h = h @ np.asarray(p["W"], np.float64) + np.asarray(p["b"], np.float64)
        if bn:
            mu, var = h.mean(0), h.var(0)
            means.append((mu, var))
            h = np.asarray(p["gamma"]) * (h - mu) / np.sqrt(var + eps) + np.asarray(p["beta"])
        h = np.maximum(h, 0)
    return h @ np.asarray(params[-1]["W"], np.float64) + np.asarray(params[-1]["b"]), means


@pytest.mark.parametrize("normalization", [None, "batchnorm"], ids=str)
def test_apply_matches_a_numpy_forward_and_updates_running_stats(normalization):
    net = dataclasses.replace(NET, normalization=normalization)
    params, state = net.init(jax.random.key(0), D)
    x, _ = _data()
    logits, new_state = _apply(net, params, state, x, True)
    want, stats = _np_forward(params, x, bn=normalization == "batchnorm")
    np.testing.assert_allclose(logits, want, rtol=1e-5, atol=1e-5)
    if normalization == "batchnorm":
        for s, (mu, var) in zip(new_state, stats, strict=True):
            np.testing.assert_allclose(s.mean, 0.1 * mu, rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(s.var, 0.9 + 0.1 * var, rtol=1e-5, atol=1e-6)
            assert int(s.count) == 1


def test_eval_mode_uses_running_stats_ignores_dropout_and_keeps_state():
    params, state = DROP.init(jax.random.key(0), D)
    x, _ = _data()
    a, s_a = DROP.apply(params, state, x, training=False, key=jax.random.key(1))
    assert s_a[0] is state[0] and s_a[1] is state[1]
    b, _ = _apply(DROP, params, state, x, False)
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
    # running stats are mean 0, var 1: each batch norm computes h / sqrt(1 + eps)
    h = x
    for p in params[:-1]:
        h = np.maximum((h @ np.asarray(p["W"])) / np.sqrt(1 + 1e-5), 0)
    np.testing.assert_allclose(a, h @ np.asarray(params[-1]["W"]), rtol=1e-5, atol=1e-5)


def test_dropout_is_driven_by_the_key():
    params, state = DROP.init(jax.random.key(0), D)
    x, _ = _data()
    a, _ = _apply(DROP, params, state, x, True, jax.random.key(1))
    b, _ = _apply(DROP, params, state, x, True, jax.random.key(1))
    c, _ = _apply(DROP, params, state, x, True, jax.random.key(2))
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    with pytest.raises(ValueError, match=r"key must be a jax.random key .* dropout=0.25, got None"):
        DROP.apply(params, state, x, training=True)


def test_apply_flattens_trailing_axes():
    params, state = NET.init(jax.random.key(0), D)
    x, _ = _data()
    a, _ = NET.apply(params, state, x, training=False)
    b, _ = NET.apply(params, state, x.reshape(N, 1, D), training=False)
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    ("case", "error", "match"),
    [
        ("width", ValueError, "x has 6 features per example .* first layer expects 5"),
        ("training", TypeError, "training must be a Python bool"),
        ("int_x", TypeError, "x must be a floating-point array"),
        ("params", ValueError, r"params must be a list of 3 layer dicts .* got 2"),
        ("keys", ValueError, r"params\[0\] must be a dict with keys \['W', 'b', 'beta', 'gamma'\]"),
        ("state", ValueError, r"state\[1\] must be a BatchNormState, got NoneType"),
    ],
    ids=["width", "training", "int_x", "params", "keys", "state"],
)
def test_apply_errors(case, error, match):
    net = jaxbn.FullyConnectedNet((6, 7), 4, normalization="batchnorm")
    params, state = net.init(jax.random.key(0), 5)
    x, _ = _data()
    kwargs = {"training": True}
    if case == "width":
        x = jnp.ones((3, 6))
    elif case == "training":
        kwargs["training"] = 1
    elif case == "int_x":
        x = jnp.ones((3, 5), jnp.int32)
    elif case == "params":
        params = params[:2]
    elif case == "keys":
        params = [{"W": params[0]["W"], "b": params[0]["b"]}, *params[1:]]
    elif case == "state":
        state = [state[0], None]
    with pytest.raises(error, match=match):
        net.apply(params, state, x, **kwargs)


# --- transformations ----------------------------------------------------------------------------


def test_vmap_over_stacked_nets_equals_one_net_at_a_time():
    nets = [NET.init(k, D) for k in jax.random.split(jax.random.key(0), 3)]
    params, state = jax.tree.map(lambda *a: np.stack(a), *nets)
    assert params[0]["W"].shape == (3, 5, 6) and state[1].mean.shape == (3, 7)
    x, _ = _data()
    apply = jax.jit(jax.vmap(lambda p, s: NET.apply(p, s, x, training=True)))
    logits, new_state = apply(params, state)
    for i, (p_i, s_i) in enumerate(nets):
        l_i, ns_i = _apply(NET, p_i, s_i, x, True)
        np.testing.assert_allclose(logits[i], l_i, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(new_state[0].var[i], ns_i[0].var, rtol=1e-5)


def test_axis_name_gives_whole_batch_statistics_across_shards():
    params, state = NET.init(jax.random.key(0), D)
    x, _ = _data()
    whole, whole_state = _apply(NET, params, state, x, True)
    sharded = jax.vmap(
        lambda xs: NET.apply(params, state, xs, training=True, axis_name="batch"),
        axis_name="batch",
    )
    logits, new_state = jax.jit(sharded)(x.reshape(2, N // 2, D))
    np.testing.assert_allclose(logits.reshape(N, 4), whole, rtol=1e-5, atol=1e-5)
    for shard in range(2):
        np.testing.assert_allclose(
            new_state[1].mean[shard], whole_state[1].mean, rtol=1e-5, atol=1e-6
        )


def test_mask_leaves_padding_rows_out_of_batch_statistics():
    params, state = NET.init(jax.random.key(0), D)
    x, _ = _data()
    padded = np.concatenate([x[:9], np.full((3, D), 1e3, np.float32)])
    mask = np.arange(N) < 9
    a, sa = _apply(NET, params, state, x[:9], True)
    b, sb = _apply(NET, params, state, padded, True, None, mask)
    np.testing.assert_allclose(b[:9], a, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(sb[0].var, sa[0].var, rtol=1e-5)


# --- the whole net's gradient vs central differences (float64) -------------------------------

_H = 1e-6


@partial(jax.jit, static_argnums=0)
def _loss_and_grad(net, params, state, x, y, reg):
    """One program per net (reg is traced): the loss for the differences, the gradient once."""
    key = jax.random.key(3)  # a fixed dropout key: the loss is a deterministic function

    def loss(p):
        return jaxbn.compute_loss(net, p, state, x, y, key=key, l2=reg)[0]

    return jax.value_and_grad(loss)(params)


def _central_differences(net, params, *args):
    """Numerical gradient, one element at a time, on NumPy copies of the parameters."""
    params = jax.tree.map(np.array, params)
    grads = jax.tree.map(np.zeros_like, params)
    for layer, g in zip(params, grads, strict=True):
        for name, value in layer.items():
            for idx in np.ndindex(value.shape):
                orig = value[idx]
                value[idx] = orig + _H
                plus = float(_loss_and_grad(net, params, *args)[0])
                value[idx] = orig - _H
                minus = float(_loss_and_grad(net, params, *args)[0])
                value[idx] = orig
                g[name][idx] = (plus - minus) / (2 * _H)
    return grads


@pytest.mark.parametrize("reg", [0.0, 3.14], ids=["reg0", "reg3.14"])
@pytest.mark.parametrize("normalization", ["batchnorm", "layernorm"], ids=str)
def test_whole_net_gradient_matches_central_differences(x64, normalization, reg):
    net = jaxbn.FullyConnectedNet(
        (7, 8), 5, normalization=normalization, dropout=0.25, weight_init=5e-2
    )
    rng = np.random.default_rng(0)
    dims = [(6, 7), (7, 8), (8, 5)]
    params = []
    for i, (d_in, d_out) in enumerate(dims):
        layer = {"W": 5e-2 * rng.normal(size=(d_in, d_out)), "b": 0.1 * rng.normal(size=d_out)}
        if i < 2:  # gamma and beta away from 1 and 0 so that their gradients are generic
            layer["gamma"] = 1.0 + 0.2 * rng.normal(size=d_out)
            layer["beta"] = 0.2 * rng.normal(size=d_out)
        params.append(layer)
    bn = normalization == "batchnorm"
    state = [
        jaxbn.BatchNormState(np.zeros(d), np.ones(d), np.int32(0)) if bn else None for d in (7, 8)
    ]
    x = 3.0 * rng.normal(size=(12, 6)) + 1.0
    y = rng.integers(0, 5, 12).astype(np.int32)
    args = (state, x, y, np.float64(reg))  # reg is traced: one program serves both values
    _, analytic = _loss_and_grad(net, params, *args)
    numeric = _central_differences(net, params, *args)
    assert analytic[0]["W"].dtype == jnp.float64
    for i, (a, n) in enumerate(zip(analytic, numeric, strict=True)):
        hidden = i < len(params) - 1
        for name in a:
            if bn and hidden and name == "b":
                # A bias right before batch norm is removed by the mean subtraction: its true
                # gradient is identically 0, so a relative error would compare roundoff with
                # roundoff. Check that both sides are zero up to roundoff instead.
                assert np.max(np.abs(a[name])) <= 1e-12 * np.max(np.abs(a["W"]))
                assert np.max(np.abs(n[name])) <= 1e-8
                continue
            tol = 1e-7 if name in ("gamma", "beta") else 1e-6
            err = rel_error(a[name], n[name])
            assert err <= tol, f"layer {i} {name}: relative error {err:.3g} > {tol:g}"
            assert np.max(np.abs(a[name])) > 1e-4  # a real, nonzero gradient was compared
