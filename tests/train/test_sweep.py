"""jaxbn.train.sweep: K configurations trained together equal each one trained alone."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxbn
from jaxbn.train import sweep

K, N, D, E, T, B = 3, 24, 6, 2, 3, 8


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((N, D)).astype(np.float32)
    y = (np.arange(N) % 4).astype(np.int32)
    order = rng.integers(0, N, (E, T, B)).astype(np.int32)
    return x, y, order


def measure_fn(net):
    def measure(ts, x, y):
        logits, _ = net.apply(ts.params, ts.state, x, training=False)
        return {
            "accuracy": jaxbn.accuracy(logits, y),
            "loss": jaxbn.softmax_cross_entropy(logits, y),
        }

    return measure


def alone(net, opt, ts, x, y, order, measure):
    """The same training, one configuration, with the ordinary jitted step in a Python loop."""
    step = jaxbn.make_train_step(net, opt)
    measures, losses = [jax.jit(measure)(ts, x, y)], []
    for e in range(E):
        for t in range(T):
            ts, m = step(ts, x[order[e, t]], y[order[e, t]])
            losses.append(m["loss"])
        measures.append(jax.jit(measure)(ts, x, y))
    return ts, np.reshape(losses, (E, T)), measures


def assert_close(a, b):
    if jnp.issubdtype(jnp.asarray(a).dtype, jax.dtypes.prng_key):
        a, b = jax.random.key_data(a), jax.random.key_data(b)
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-5, atol=1e-6)


@pytest.mark.slow  # end to end: K training runs and each alone
@pytest.mark.parametrize("normalization", [None, "batchnorm"])
def test_each_vmapped_run_equals_the_run_alone(data, normalization):
    x, y, order = data
    net = jaxbn.FullyConnectedNet((5,), 4, normalization=normalization, weight_init=1.0)
    opt = optax.sgd(0.1)
    keys = jax.random.split(jax.random.key(1), K)
    scales = jnp.asarray([1.0, 0.3, 0.05])
    params, state = jax.vmap(lambda k: net.init(k, D))(keys)
    params = [{**p, "W": p["W"] * scales[:, None, None]} for p in params]
    measure = measure_fn(net)
    states = sweep.init_sweep(net, opt, params, state)
    keep = jax.tree.map(jnp.copy, states)  # the run donates its input
    final, out = sweep.make_sweep(net, opt, measure=measure)(states, x, y, order)
    assert out["loss"].shape == (K, E, T) and out["measure"]["accuracy"].shape == (K, E + 1)
    assert np.asarray(final.step).tolist() == [E * T] * K
    for i in range(K):
        ts, losses, measures = alone(net, opt, sweep.take(keep, i), x, y, order, measure)
        assert_close(out["loss"][i], losses)
        for e, m in enumerate(measures):
            assert_close(out["measure"]["loss"][i, e], m["loss"])
            assert_close(out["measure"]["accuracy"][i, e], m["accuracy"])
        jax.tree.map(assert_close, sweep.take(final, i), ts)
    # The configurations really differ (not K copies of one run).
    assert len({round(float(v), 6) for v in out["loss"][:, -1, -1]}) == K


@pytest.mark.slow  # end to end: K training runs and each alone
def test_per_configuration_learning_rates(data):
    x, y, order = data
    net = jaxbn.FullyConnectedNet((5,), 4, normalization="layernorm")
    template = optax.inject_hyperparams(optax.adam)(learning_rate=0.0)
    params, state = net.init(jax.random.key(2), D)
    lrs = [1e-3, 1e-2, 3e-2]
    states = sweep.init_sweep(net, template, *sweep.stack([(params, state)] * K))
    hyper = {**states.opt_state.hyperparams, "learning_rate": jnp.asarray(lrs)}
    states = states._replace(opt_state=states.opt_state._replace(hyperparams=hyper))
    final, out = sweep.make_sweep(net, template)(states, x, y, order[:1])
    for i, lr in enumerate(lrs):
        opt = optax.adam(lr)  # alone: a plain Adam with this learning rate
        ts = jaxbn.init_train_state(net, opt, jax.random.key(0), D)._replace(
            params=jax.tree.map(jnp.copy, params)
        )
        step = jaxbn.make_train_step(net, opt)
        for t in range(T):
            ts, m = step(ts, x[order[0, t]], y[order[0, t]])
            assert_close(out["loss"][i, 0, t], m["loss"])
        jax.tree.map(assert_close, sweep.take(final, i).params, ts.params)


def test_stack_take_and_errors():
    trees = [{"a": jnp.full((2,), i), "b": (jnp.asarray(i),)} for i in range(3)]
    stacked = sweep.stack(trees)
    assert stacked["a"].shape == (3, 2) and stacked["b"][0].tolist() == [0, 1, 2]
    assert sweep.take(stacked, 2)["a"].tolist() == [2, 2]
    with pytest.raises(ValueError, match="at least one"):
        sweep.stack([])
    net = jaxbn.FullyConnectedNet((3,), 2)
    params, state = net.init(jax.random.key(0), 4)
    with pytest.raises(ValueError, match="leading axis"):
        sweep.init_sweep(net, optax.sgd(0.1), params, state)  # not stacked: no common K
    states = sweep.init_sweep(net, optax.sgd(0.1), *sweep.stack([(params, state)] * 2))
    assert sweep.sweep_size(states) == 2
    with pytest.raises(ValueError, match="order must be"):
        sweep.make_sweep(net, optax.sgd(0.1))(states, np.ones((4, 4)), np.zeros(4, int), [[0]])


@pytest.mark.slow  # end to end: K training runs and each alone
def test_per_configuration_batch_order_equals_each_run_alone(data):
    x, y, _ = data
    net = jaxbn.FullyConnectedNet((5,), 4, normalization="batchnorm")
    opt = optax.sgd(0.1)
    params, state = net.init(jax.random.key(3), D)
    orders = np.random.default_rng(1).integers(0, N, (K, E, T, B)).astype(np.int32)
    states = sweep.init_sweep(net, opt, *sweep.stack([(params, state)] * K))
    keep = jax.tree.map(jnp.copy, states)
    measure = measure_fn(net)
    final, out = sweep.make_sweep(net, opt, measure=measure)(states, x, y, orders)
    for i in range(K):
        ts, losses, _ = alone(net, opt, sweep.take(keep, i), x, y, orders[i], measure)
        assert_close(out["loss"][i], losses)
        jax.tree.map(assert_close, sweep.take(final, i).params, ts.params)
    # Same start, different batches: the runs differ.
    assert len({round(float(v), 6) for v in out["loss"][:, -1, -1]}) == K
