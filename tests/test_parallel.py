"""Data parallelism: 1-8 CPU devices reproduce the single-device run; mesh helpers."""

from pathlib import Path

import jax
import numpy as np
import pytest

from jaxbn import parallel
from tests.helpers import run_worker

WORKER = Path(__file__).with_name("parallel_worker.py")
FLOAT32_TOL = 1e-6  # float32 round-off from a different reduction order, nothing more


@pytest.fixture(scope="module")
def errors():
    return run_worker(WORKER, n_devices=8)


@pytest.mark.parametrize("n_devices", ["1", "2", "4", "8"])
def test_data_parallel_step_matches_single_device(errors, n_devices):
    assert errors["loss"][n_devices] <= FLOAT32_TOL
    for what, err in errors["step"][n_devices].items():
        assert err <= FLOAT32_TOL, (what, err)


def test_uneven_batch_uses_statistics_of_real_rows(errors):
    for what, err in errors["uneven"].items():
        assert err <= FLOAT32_TOL, (what, err)


@pytest.mark.parametrize("case", ["8x24", "4x10"])
def test_fit_on_mesh_matches_fit_without(errors, case):
    result = errors["fit"][case]
    assert result.pop("val_accuracy_equal") is True
    for what, err in result.items():
        assert err <= FLOAT32_TOL, (what, err)


def test_make_train_step_with_mesh(errors):
    assert errors["make_train_step_mesh"] <= FLOAT32_TOL


def test_pad_to_multiple():
    x, y = np.arange(10.0).reshape(5, 2), np.arange(5)
    xp, yp, mask = parallel.pad_to_multiple(4, x, y)
    assert xp.shape == (8, 2) and yp.shape == (8,)
    np.testing.assert_array_equal(mask, [True] * 5 + [False] * 3)
    np.testing.assert_array_equal(xp[:5], x)
    np.testing.assert_array_equal(xp[5:], 0)
    same_x, same_mask = parallel.pad_to_multiple(5, x)[0], parallel.pad_to_multiple(5, x)[1]
    assert same_x is x and bool(same_mask.all())


def test_helpers_reject_bad_input():
    with pytest.raises(ValueError, match="multiple must be a positive int, got 0"):
        parallel.pad_to_multiple(0, np.ones(3))
    with pytest.raises(ValueError, match="array 0 has 3 rows, array 1 has 2"):
        parallel.pad_to_multiple(2, np.ones(3), np.ones(2))
    with pytest.raises(ValueError, match=r"devices must be between 1 and the \d+ available"):
        parallel.data_mesh(jax.device_count() + 1)
    with pytest.raises(ValueError, match="at least one device"):
        parallel.data_mesh([])


def test_shard_batch_single_device_mesh():
    mesh = parallel.data_mesh(1)
    x, y, mask = parallel.shard_batch(mesh, np.ones((3, 2), np.float32), np.arange(3))
    np.testing.assert_array_equal(y, [0, 1, 2])
    assert x.shape == (3, 2) and bool(mask.all())
    assert x.sharding.spec == parallel.batch_sharding(mesh).spec


def test_process_batch_single_process_is_shard_batch():
    mesh = parallel.data_mesh(1)
    x, y = np.arange(6.0, dtype=np.float32).reshape(3, 2), np.arange(3)
    got, want = parallel.process_batch(mesh, x, y), parallel.shard_batch(mesh, x, y)
    assert len(got) == len(want) == 3
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(g, w)
    xp, yp, mask = parallel.process_batch(mesh, x, y, rows_per_process=5)
    assert xp.shape == (5, 2) and yp.shape == (5,)
    np.testing.assert_array_equal(mask, [True, True, True, False, False])
    np.testing.assert_array_equal(xp[3:], 0)
    assert xp.sharding.spec == parallel.batch_sharding(mesh).spec


def test_process_batch_rejects_bad_input():
    mesh = parallel.data_mesh(1)
    with pytest.raises(ValueError, match=r"rows_per_process must be >= this process's 3 rows"):
        parallel.process_batch(mesh, np.ones((3, 2)), rows_per_process=2)
    with pytest.raises(ValueError, match="rows_per_process must be an int or None, got 2.5"):
        parallel.process_batch(mesh, np.ones((3, 2)), rows_per_process=2.5)
    with pytest.raises(ValueError, match="array 0 has 3 rows, array 1 has 2"):
        parallel.process_batch(mesh, np.ones((3, 2)), np.ones(2))


def test_replicate_copy_and_first_replica_keep_typed_keys():
    mesh = parallel.data_mesh(1)
    tree = {"key": jax.random.key(3), "w": np.ones(2, np.float32)}
    rep = parallel.replicate(mesh, tree)
    assert jax.dtypes.issubdtype(rep["key"].dtype, jax.dtypes.prng_key)
    np.testing.assert_array_equal(jax.random.key_data(rep["key"]), jax.random.key_data(tree["key"]))
    assert rep["w"].sharding.is_equivalent_to(parallel.replicated_sharding(mesh), 1)
    copied = parallel.copy_tree(rep)
    assert copied["w"] is not rep["w"]
    assert copied["w"].unsafe_buffer_pointer() != rep["w"].unsafe_buffer_pointer()
    np.testing.assert_array_equal(
        jax.random.key_data(copied["key"]), jax.random.key_data(rep["key"])
    )
    assert parallel.first_replica(rep)["w"] is rep["w"]  # one process: nothing to pick


def test_run_on_main_process_runs_once_with_one_process():
    calls = []
    parallel.run_on_main_process(lambda: calls.append(1), name="test")
    assert calls == [1] and parallel.is_main_process()
