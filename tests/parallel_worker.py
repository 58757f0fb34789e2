"""Run by test_parallel.py in a subprocess with 8 forced CPU devices; prints JSON errors.

A data-parallel training step on 1, 2, 4 and 8 devices must give the same loss, params and
batch-norm state as one device on the whole batch; an uneven batch (30 rows on 8 devices) must
give the statistics of its 30 real rows; fit() on a mesh must match fit() without one.
"""

import json
import os
import sys

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"

import jax
import jax.numpy as jnp
import numpy as np
import optax

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jaxbn
from jaxbn import parallel
from tests.helpers import rel_error


def tree_error(a, b) -> float:
    """Relative error over a whole pytree, flattened into one vector.

    Leaf by leaf would be meaningless for the hidden biases that feed batch norm: their exact
    gradient is zero (the mean subtraction cancels them), so they move only by round-off.
    """

    def flat(t):
        return np.concatenate([np.ravel(np.asarray(x, np.float64)) for x in jax.tree.leaves(t)])

    return rel_error(flat(a), flat(b))


def run_steps(step, ts, batches):
    losses = []
    for x, y in batches:
        ts, metrics = step(ts, x, y)
        losses.append(float(metrics["loss"]))
    return ts, np.asarray(losses)


def main():
    assert jax.device_count() == 8, jax.devices()
    net = jaxbn.FullyConnectedNet((32, 16), 10, normalization="batchnorm")
    opt = optax.sgd(0.05, momentum=0.9)
    rng = np.random.default_rng(0)
    x_all = rng.normal(size=(96, 20)).astype(np.float32) * 2 + 1
    y_all = rng.integers(0, 10, size=96).astype(np.int32)
    ts0 = jaxbn.init_train_state(net, opt, jax.random.key(0), 20)
    copy = lambda tree: jax.tree.map(jnp.array, tree)  # noqa: E731  (steps donate their input)
    results = {"step": {}, "loss": {}}

    even = [(x_all[i : i + 32], y_all[i : i + 32]) for i in (0, 32, 64)]
    single = jax.jit(jaxbn.train_step_fn(net, opt))
    ts_ref, loss_ref = run_steps(single, copy(ts0), even)
    for n in (1, 2, 4, 8):
        mesh = parallel.data_mesh(n)
        dp = parallel.make_data_parallel_step(jaxbn.train_step_fn(net, opt), mesh)
        ts, losses = run_steps(dp, parallel.replicate(mesh, copy(ts0)), even)
        results["step"][str(n)] = {
            "params": tree_error(ts_ref.params, ts.params),
            "state": tree_error(ts_ref.state, ts.state),
            "opt_state": tree_error(ts_ref.opt_state, ts.opt_state),
        }
        results["loss"][str(n)] = rel_error(loss_ref, losses)

    # 30 rows on 8 devices: padded to 32, the 2 padding rows masked out.
    uneven = [(x_all[:30], y_all[:30])]
    ts_ref, loss_ref = run_steps(single, copy(ts0), uneven)
    mesh = parallel.data_mesh(8)
    dp = parallel.make_data_parallel_step(jaxbn.train_step_fn(net, opt), mesh)
    ts, losses = run_steps(dp, parallel.replicate(mesh, copy(ts0)), uneven)
    batch_mean = np.asarray(
        x_all[:30] @ np.asarray(ts0.params[0]["W"]) + np.asarray(ts0.params[0]["b"])
    ).mean(0)
    results["uneven"] = {
        "loss": rel_error(loss_ref, losses),
        "params": tree_error(ts_ref.params, ts.params),
        "state": tree_error(ts_ref.state, ts.state),
        # The first layer's running mean after one step: 0.9 * 0 + 0.1 * mean of the 30 real rows.
        "first_layer_running_mean": rel_error(ts.state[0].mean, 0.1 * batch_mean),
    }
    # fit() on a mesh of 8 (batch 24 = 3 rows per device; 96 rows: the last batch is full) and a
    # mesh of 4 with batch 10 (padded to 12, and a short last batch of 6 padded to 8) vs no mesh.
    x_val, y_val = x_all[:40], y_all[:40]
    results["fit"] = {}
    for n_dev, batch_size in ((8, 24), (4, 10)):
        kwargs = dict(epochs=3, batch_size=batch_size, seed=3, progress=False)
        ref = jaxbn.fit(net, opt, x_all, y_all, x_val, y_val, **kwargs)
        got = jaxbn.fit(
            net, opt, x_all, y_all, x_val, y_val, mesh=parallel.data_mesh(n_dev), **kwargs
        )
        h_ref, h_got = ref.history, got.history
        results["fit"][f"{n_dev}x{batch_size}"] = {
            "step_loss": rel_error(h_ref.step_loss, h_got.step_loss),
            "val_loss": rel_error(h_ref.val_loss, h_got.val_loss),
            "val_accuracy_equal": h_ref.val_accuracy == h_got.val_accuracy,
            "params": tree_error(ref.train_state.params, got.train_state.params),
            "state": tree_error(ref.train_state.state, got.train_state.state),
        }
    # make_train_step(mesh=...) is the data-parallel step.
    mesh = parallel.data_mesh(8)
    step = jaxbn.make_train_step(net, opt, mesh=mesh)
    ts, losses = run_steps(step, parallel.replicate(mesh, copy(ts0)), even)
    ts_ref, loss_ref = run_steps(single, copy(ts0), even)
    results["make_train_step_mesh"] = tree_error(ts_ref.params, ts.params)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
