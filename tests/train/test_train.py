"""TrainState, the training step (jit, donation, vmap, mask) and batched evaluation."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxbn
from jaxbn.train import evaluation as train_module


@pytest.fixture(autouse=True)
def _rank_promotion_raises():
    with jax.numpy_rank_promotion("raise"):
        yield


# One net and optimizer shared by the tests, so the compiled programs are shared too.
NET = jaxbn.FullyConnectedNet((6, 7), 4, normalization="batchnorm")
LR, L2 = 0.1, 0.05
SGD = optax.sgd(LR)
STEP = jaxbn.make_train_step(NET, SGD, l2=L2)


OPTIMIZERS = {
    "sgd": (SGD, STEP),
    "momentum": (mom := optax.sgd(0.05, momentum=0.9), jaxbn.make_train_step(NET, mom, l2=L2)),
}


def _data(n=12, d=5, c=4, seed=1):
    rng = np.random.default_rng(seed)
    x = (rng.normal(size=(n, d)) + 1.0).astype(np.float32)
    return x, rng.integers(0, c, n).astype(np.int32)


def _fresh(seed=0):
    return jaxbn.init_train_state(NET, SGD, jax.random.key(seed), 5)


def test_init_train_state():
    ts = _fresh()
    init_key, train_key = jax.random.split(jax.random.key(0))
    params, state = NET.init(init_key, 5)
    jax.tree.map(np.testing.assert_array_equal, ts.params, params)
    jax.tree.map(np.testing.assert_array_equal, ts.state, state)
    assert ts.step.dtype == jnp.int32 and int(ts.step) == 0
    np.testing.assert_array_equal(jax.random.key_data(ts.key), jax.random.key_data(train_key))
    assert jax.tree.structure(ts.opt_state) == jax.tree.structure(SGD.init(params))


def test_sgd_step_is_params_minus_lr_times_the_gradient():
    x, y = _data()
    ts = _fresh()
    value_and_grad = jax.jit(
        jax.value_and_grad(jaxbn.compute_loss, 1, has_aux=True), static_argnums=0
    )
    (loss, (_, new_state)), grads = value_and_grad(NET, ts.params, ts.state, x, y, l2=L2)
    want = jax.tree.map(lambda p, g: p - LR * g, ts.params, grads)
    new, metrics = STEP(ts, x, y)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), new.params, want
    )
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), new.state, new_state)
    np.testing.assert_allclose(metrics["loss"], loss, rtol=1e-6)
    assert 0.0 <= float(metrics["accuracy"]) <= 1.0
    assert int(new.step) == 1 and int(new.state[0].count) == 1


def test_step_donates_the_input_state():
    x, y = _data()
    ts = _fresh()
    w = ts.params[0]["W"]
    new, _ = STEP(ts, x, y)
    assert w.is_deleted() and not new.params[0]["W"].is_deleted()


@pytest.mark.parametrize("name", ["sgd", "momentum"])  # Adam: every test in test_fit.py
def test_optimizers_fit_a_fixed_batch(name):
    optimizer, step = OPTIMIZERS[name]
    x, y = _data()
    ts = jaxbn.init_train_state(NET, optimizer, jax.random.key(0), 5)
    losses = []
    for _ in range(40):
        ts, m = step(ts, x, y)
        losses.append(float(m["loss"]))
    assert losses[-1] < 0.5 * losses[0], losses
    assert int(ts.step) == 40


def test_step_vmaps_over_a_stack_of_train_states():
    x, y = _data()
    stacked = jax.jit(jax.vmap(_fresh_from_key))(jax.random.split(jax.random.key(5), 3))
    vstep = jax.jit(jax.vmap(jaxbn.train_step_fn(NET, SGD, l2=L2), in_axes=(0, None, None)))
    new, metrics = vstep(stacked, x, y)
    assert metrics["loss"].shape == (3,)
    for i in range(3):
        one = jax.tree.map(lambda a, i=i: a[i], stacked)
        want, m = STEP(one, x, y)
        np.testing.assert_allclose(metrics["loss"][i], m["loss"], rtol=1e-6)
        for a, b in zip(jax.tree.leaves(new.params), jax.tree.leaves(want.params), strict=True):
            np.testing.assert_allclose(a[i], b, rtol=1e-5, atol=1e-6)


def _fresh_from_key(key):
    return jaxbn.init_train_state(NET, SGD, key, 5)


def test_masked_step_equals_a_step_on_the_real_rows():
    x, y = _data(n=12)
    xp = np.concatenate([x[:9], np.full((3, 5), 100.0, np.float32)])
    yp = np.concatenate([y[:9], np.zeros(3, y.dtype)])
    a, ma = STEP(_fresh(), x[:9], y[:9])
    b, mb = STEP(_fresh(), xp, yp, np.arange(12) < 9)
    np.testing.assert_allclose(mb["loss"], ma["loss"], rtol=1e-6)
    np.testing.assert_allclose(mb["accuracy"], ma["accuracy"], rtol=1e-6)
    for u, v in zip(
        jax.tree.leaves((a.params, a.state)), jax.tree.leaves((b.params, b.state)), strict=True
    ):
        np.testing.assert_allclose(u, v, rtol=1e-5, atol=1e-6)


_eval_logits = jax.jit(lambda p, s, x: NET.apply(p, s, x, training=False)[0])


def test_evaluate_matches_one_full_batch_and_compiles_once_for_any_size():
    ts = _fresh()
    x, y = _data(n=13)
    logits = np.asarray(_eval_logits(ts.params, ts.state, x), np.float64)
    z = logits - logits.max(1, keepdims=True)
    want_loss = np.mean(np.log(np.exp(z).sum(1)) - z[np.arange(13), y])
    want_acc = np.mean(logits.argmax(1) == y)
    got = jaxbn.evaluate(NET, ts.params, ts.state, x, y, batch_size=5)  # 5 + 5 + 3 (padded)
    np.testing.assert_allclose(got["accuracy"], want_acc, rtol=1e-6)
    np.testing.assert_allclose(got["loss"], want_loss, rtol=1e-6)
    compiled = train_module._eval_batch._cache_size()
    for n in (1, 7, 12):
        r = jaxbn.evaluate(NET, ts.params, ts.state, x[:n], np.asarray(y[:n]), batch_size=5)
        assert 0.0 <= r["accuracy"] <= 1.0 and np.isfinite(r["loss"])
    assert train_module._eval_batch._cache_size() == compiled


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: jaxbn.make_train_step(NET, SGD, l2=-1.0), ValueError, "l2 must be .* got -1.0"),
        (lambda: jaxbn.make_train_step(NET, object()), TypeError, "optimizer must be an optax"),
        (lambda: jaxbn.make_train_step("net", SGD), TypeError, "net must be a jaxbn"),
        (
            lambda: jaxbn.evaluate(
                NET, *_fresh()[:2], np.ones((4, 5), np.float32), np.zeros(3, int)
            ),
            ValueError,
            "x and y must have the same number of examples, got 4 and 3",
        ),
        (
            lambda: jaxbn.evaluate(
                NET, *_fresh()[:2], np.ones((4, 5)), np.zeros(4, int), batch_size=0
            ),
            ValueError,
            "batch_size must be a positive int, got 0",
        ),
        (
            lambda: jaxbn.evaluate(NET, *_fresh()[:2], np.ones((4, 5), int), np.zeros(4, int)),
            TypeError,
            "x must be a floating-point array",
        ),
        (
            lambda: jaxbn.evaluate(NET, *_fresh()[:2], np.ones((4, 5)), np.zeros(4)),
            TypeError,
            "y must be an integer array",
        ),
    ],
    ids=["l2", "optimizer", "net", "lengths", "batch_size", "int_x", "float_y"],
)
def test_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()
