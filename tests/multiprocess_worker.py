"""One of the processes that test_multiprocess.py starts (2 processes x 2 CPU devices, loopback).

Every process runs the data-parallel programs on the mesh of all 4 devices; process 0 also runs
the single-device reference and prints the relative errors as JSON on its last line. Every
process prints its own view of the losses, so the test can check that all of them agree.

Usage: python tests/multiprocess_worker.py CHECKPOINT_DIR (with the launcher's variables set).
"""

import json
import sys
import time

from experiments.common.loopback import initialize_on_loopback, is_loopback, tcp_addresses

T0 = time.perf_counter()
PROCESS = initialize_on_loopback()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

import jaxbn  # noqa: E402
from jaxbn import parallel  # noqa: E402
from tests.helpers import rel_error  # noqa: E402

SHARES = (17, 13)  # each process's rows in the uneven step: 30 rows, padded to 2 x 18


def to_numpy(a) -> np.ndarray:
    if jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key):
        a = jax.random.key_data(a)
    return np.asarray(a)


def tree_error(a, b) -> float:
    """rel_error over a whole pytree flattened into one vector (see parallel_worker.py).

    For a ``TrainState``: over params, model state and optimizer state (the step counter and the
    key are compared exactly, by ``same_counters``).
    """
    if isinstance(a, jaxbn.TrainState):
        a, b = (a.params, a.state, a.opt_state), (b.params, b.state, b.opt_state)

    def flat(t):
        return np.concatenate(
            [np.ravel(to_numpy(x).astype(np.float64)) for x in jax.tree.leaves(t)]
        )

    return rel_error(flat(a), flat(b))


def same_counters(a, b) -> bool:
    """Equal step counters and dropout keys of two ``TrainState``s."""
    return int(a.step) == int(b.step) and bool(np.all(to_numpy(a.key) == to_numpy(b.key)))


def on_host(tree):
    """NumPy copies of a pytree's arrays (global replicated arrays read from this process)."""
    return jax.tree.map(to_numpy, parallel.first_replica(tree))


def main(checkpoint_dir):
    assert jax.process_count() == 2 and jax.device_count() == 4, jax.devices()
    report = {"process": PROCESS, "seconds": {}}
    rng = np.random.default_rng(0)
    x_all = (rng.normal(size=(72 + sum(SHARES), 12)) * 2 + 1).astype(np.float32)
    y_all = rng.integers(0, 5, size=x_all.shape[0]).astype(np.int32)
    net = jaxbn.FullyConnectedNet((16, 8), 5, normalization="batchnorm")
    opt = optax.sgd(0.1, momentum=0.9)
    ts0 = jaxbn.init_train_state(net, opt, jax.random.key(0), 12)

    # data_mesh across processes: devices taken evenly, each process's together.
    mesh = parallel.data_mesh()
    assert [d.process_index for d in mesh.devices] == [0, 0, 1, 1]
    assert [d.process_index for d in parallel.data_mesh(2).devices] == [0, 1]
    try:
        parallel.data_mesh(3)
        raise AssertionError("data_mesh(3) on 2 processes must raise")
    except ValueError as e:
        assert "divisible by the 2 process(es)" in str(e)

    # 1. make_train_step(mesh=...): two whole-batch NumPy steps of 36 rows, then the uneven step
    #    from process_batch (17 + 13 real rows, 36 with padding): one compiled shape.
    t = time.perf_counter()
    step = jaxbn.make_train_step(net, opt, mesh=mesh)
    ts = parallel.replicate(mesh, ts0)
    losses = []
    for start in (0, 36):
        ts, m = step(ts, x_all[start : start + 36], y_all[start : start + 36])
        losses.append(float(m["loss"]))
    lo = 72 + sum(SHARES[:PROCESS])
    x_mine, y_mine = x_all[lo : lo + SHARES[PROCESS]], y_all[lo : lo + SHARES[PROCESS]]
    xg, yg, mask = parallel.process_batch(mesh, x_mine, y_mine)
    assert xg.shape == (36, 12) and int(jnp.sum(mask)) == 30
    try:
        step(ts, jnp.asarray(x_mine), jnp.asarray(y_mine))
        raise AssertionError("a process-local jax.Array must be refused")
    except ValueError as e:
        assert "process_batch" in str(e)
    ts, m = step(ts, xg, yg, mask)
    losses.append(float(m["loss"]))
    report["step_losses"] = losses
    report["accuracy"] = float(m["accuracy"])
    steps_result = on_host(ts)
    report["seconds"]["steps"] = time.perf_counter() - t

    # 2. The uneven step again with explicit per-device code: shard_map(train_step_fn(axis_name)).
    t = time.perf_counter()
    sm_step = jax.jit(
        jax.shard_map(
            jaxbn.train_step_fn(net, opt, axis_name="data"),
            mesh=mesh,
            in_specs=(P(), P("data"), P("data"), P("data")),
            out_specs=(P(), P()),
        )
    )
    sm_ts, sm_m = sm_step(parallel.replicate(mesh, ts0), xg, yg, mask)
    sm_result, sm_metrics = on_host((sm_ts, sm_m))

    # 3. A masked batch_norm value and gradient in shard_map, on the same global batch.
    c = jnp.asarray(np.random.default_rng(1).normal(size=(36, 12)).astype(np.float32))
    gamma, beta = jnp.linspace(0.5, 1.5, 12), jnp.linspace(-1.0, 1.0, 12)
    bn_state = jaxbn.batch_norm_state(12)

    def bn_loss(x, gamma, beta, c, mask, axis_name=None):
        out, new = jaxbn.batch_norm(
            x, gamma, beta, bn_state, training=True, mask=mask, axis_name=axis_name
        )
        total = jnp.sum(jnp.where(mask[:, None], out * c, 0.0))
        if axis_name is not None:
            total = jax.lax.psum(total, axis_name)
        return total, new

    def bn_value_and_grad(x, gamma, beta, c, mask, axis_name=None):
        grad_fn = jax.value_and_grad(bn_loss, argnums=(0, 1, 2), has_aux=True)
        (value, new), grads = grad_fn(x, gamma, beta, c, mask, axis_name)
        return value, new, grads

    sharded_bn = jax.jit(
        jax.shard_map(
            lambda *a: bn_value_and_grad(*a, axis_name="data"),
            mesh=mesh,
            in_specs=(P("data"), P(), P(), P("data"), P("data")),
            out_specs=(P(), P(), (P("data"), P(), P())),
        )
    )
    c_global = parallel.shard_batch(mesh, np.asarray(c))[0]
    gamma_r, beta_r = parallel.replicate(mesh, (gamma, beta))
    bn_result = sharded_bn(xg, gamma_r, beta_r, c_global, mask)
    # Each process reads its own rows of the per-row gradient.
    shards = sorted(bn_result[2][0].addressable_shards, key=lambda s: s.index[0].start)
    dx_rows = np.concatenate([np.asarray(s.data) for s in shards])
    bn_value, bn_new, (_, dgamma, dbeta) = on_host(
        (bn_result[0], bn_result[1], (None, bn_result[2][1], bn_result[2][2]))
    )
    report["seconds"]["shard_map"] = time.perf_counter() - t

    # 4. fit(mesh=...): one epoch with a checkpoint, then resume for a second one. 72 rows,
    #    batch 30: steps of 30, 30 and 12 real rows, each padded to 32 across the 4 devices.
    t = time.perf_counter()
    kwargs = dict(batch_size=30, seed=5, progress=True, checkpoint_dir=checkpoint_dir)
    x_tr, y_tr, x_val, y_val = x_all[:72], y_all[:72], x_all[:20], y_all[:20]
    first = jaxbn.fit(net, opt, x_tr, y_tr, x_val, y_val, epochs=1, mesh=mesh, **kwargs)
    resumed = jaxbn.fit(
        net, opt, x_tr, y_tr, x_val, y_val, epochs=2, resume=True, mesh=mesh, **kwargs
    )
    assert first.history.epochs_done == 1 and resumed.history.epochs_done == 2
    report["fit_step_losses"] = resumed.history.step_loss
    fit_result = on_host((resumed.train_state, resumed.best_params))
    report["seconds"]["fit"] = time.perf_counter() - t
    report["tcp"] = tcp_addresses()
    assert report["tcp"] and all(map(is_loopback, report["tcp"])), report["tcp"]

    if PROCESS == 0:  # the single-device reference, on this process's first device only
        t = time.perf_counter()
        errors = {}
        ref_step = jax.jit(jaxbn.train_step_fn(net, opt))
        ref = jax.tree.map(jnp.array, ts0)
        ref_losses = []
        for start in (0, 36, 72):
            stop = start + (36 if start < 72 else sum(SHARES))
            ref, ref_m = ref_step(ref, x_all[start:stop], y_all[start:stop])
            ref_losses.append(float(ref_m["loss"]))
        errors["step/loss"] = rel_error(ref_losses, losses)
        errors["step/accuracy"] = rel_error(float(ref_m["accuracy"]), report["accuracy"])
        errors["step/train_state"] = tree_error(ref, steps_result)
        report["same_counters"] = [same_counters(ref, steps_result)]

        ref1, ref1_m = ref_step(jax.tree.map(jnp.array, ts0), x_all[72:], y_all[72:])
        errors["shard_map_step/loss"] = rel_error(ref1_m["loss"], sm_metrics["loss"])
        errors["shard_map_step/accuracy"] = rel_error(ref1_m["accuracy"], sm_metrics["accuracy"])
        errors["shard_map_step/train_state"] = tree_error(ref1, sm_result)
        report["same_counters"].append(same_counters(ref1, sm_result))

        real = np.r_[0:17, 18:31]  # the 30 real rows' places in the global batch of 2 x 18
        x_real, c_real = np.asarray(x_all[72:]), np.asarray(c)[real]
        ones = jnp.ones(x_real.shape[0], bool)
        value, new, (dx, dg, db) = jax.jit(bn_value_and_grad)(x_real, gamma, beta, c_real, ones)
        errors["batch_norm/value"] = rel_error(value, bn_value)
        errors["batch_norm/state"] = tree_error(new, bn_new)
        errors["batch_norm/dgamma_dbeta"] = tree_error((dg, db), (dgamma, dbeta))
        mine = real[real < 18]  # process 0's real rows (its 18-row share comes first)
        errors["batch_norm/dx_process0_rows"] = rel_error(dx[: len(mine)], dx_rows[mine])

        ref_fit = jaxbn.fit(
            net, opt, x_tr, y_tr, x_val, y_val, epochs=2, batch_size=30, seed=5, progress=False
        )
        errors["fit/step_loss"] = rel_error(ref_fit.history.step_loss, resumed.history.step_loss)
        errors["fit/val_loss"] = rel_error(ref_fit.history.val_loss, resumed.history.val_loss)
        errors["fit/train_state"] = tree_error(ref_fit.train_state, fit_result[0])
        report["same_counters"].append(same_counters(ref_fit.train_state, fit_result[0]))
        errors["fit/best_params"] = tree_error(ref_fit.best_params, fit_result[1])
        report["errors"] = errors
        report["seconds"]["reference"] = time.perf_counter() - t
    report["seconds"]["total"] = time.perf_counter() - T0
    report["seconds"]["cpu"] = time.process_time()
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
