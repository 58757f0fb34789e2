"""fit: determinism, exact resume, checkpoints, NaN detection, early stop, best params, errors."""

import json
import os
import pickle

import jax
import numpy as np
import optax
import pytest

import jaxbn
from jaxbn.train import checkpoint as checkpoint_module


@pytest.fixture(autouse=True)
def _rank_promotion_raises():
    with jax.numpy_rank_promotion("raise"):
        yield


# One net, optimizer, L2 and data shape for most tests, so they share the compiled step.
NET = jaxbn.FullyConnectedNet((8, 8), 3, normalization="batchnorm", dropout=0.1)
OPT = optax.adam(1e-2)
L2 = 1e-3
N, D, B = 50, 4, 20  # 3 steps per epoch, the last one padded and masked (10 real rows)
STEPS = 3


def _blobs(n, seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    centers = np.array([[2.0, 0, 0, 0], [0, 2.0, 0, 0], [0, 0, 2.0, 0]])
    x = centers[y] + rng.normal(size=(n, D))
    return x.astype(np.float32), y.astype(np.int32)


X, Y = _blobs(N, 0)
XV, YV = _blobs(30, 1)


def run(**kwargs):
    args = {"epochs": 3, "batch_size": B, "l2": L2, "progress": False, **kwargs}
    x, y = args.pop("x", X), args.pop("y", Y)
    return jaxbn.fit(NET, OPT, x, y, XV, YV, **args)


def _history_without_times(h):
    d = h.to_dict()
    del d["epoch_seconds"], d["eval_seconds"]
    return d


def _assert_trees_identical(a, b):
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    assert len(la) == len(lb)
    for u, v in zip(la, lb, strict=True):
        if jax.dtypes.issubdtype(u.dtype, jax.dtypes.prng_key):
            u, v = jax.random.key_data(u), jax.random.key_data(v)
        assert u.dtype == v.dtype
        np.testing.assert_array_equal(np.asarray(u), np.asarray(v))


def _assert_runs_identical(r1, r2):
    assert _history_without_times(r1.history) == _history_without_times(r2.history)
    _assert_trees_identical(r1.train_state, r2.train_state)
    _assert_trees_identical((r1.best_params, r1.best_state), (r2.best_params, r2.best_state))


def test_same_seed_gives_the_same_run_bit_for_bit():
    a, b, c = run(seed=3), run(seed=3), run(seed=4)
    _assert_runs_identical(a, b)
    assert a.history.step_loss != c.history.step_loss
    h = a.history
    assert len(h.step_loss) == 3 * STEPS and h.epoch_steps == [3, 6, 9]
    assert len(h.train_loss) == len(h.val_accuracy) == len(h.epoch_seconds) == 3
    assert int(a.train_state.step) == 9


def test_resume_reproduces_the_uninterrupted_run(tmp_path):
    full = run(epochs=4, checkpoint_dir=tmp_path / "a")
    run(epochs=2, checkpoint_dir=tmp_path / "b")
    resumed = run(epochs=4, checkpoint_dir=tmp_path / "b", resume=True)
    _assert_runs_identical(full, resumed)
    # the last checkpoint of each run holds the same state
    ck_a = jaxbn.load_checkpoint(tmp_path / "a" / "checkpoint.npz", full.train_state)
    ck_b = jaxbn.load_checkpoint(tmp_path / "b" / "checkpoint.npz", full.train_state)
    _assert_trees_identical(ck_a.train_state, ck_b.train_state)
    _assert_trees_identical(ck_a.train_state, full.train_state)
    # resuming a finished run trains no further
    again = run(epochs=4, checkpoint_dir=tmp_path / "b", resume=True)
    _assert_runs_identical(full, again)


def test_resume_refuses_a_checkpoint_from_a_different_run(tmp_path):
    run(epochs=1, checkpoint_dir=tmp_path)
    with pytest.raises(ValueError, match=r"different run .*seed: checkpoint 0, now 1"):
        run(epochs=2, checkpoint_dir=tmp_path, resume=True, seed=1)


def test_checkpoint_round_trip_is_exact(tmp_path):
    ts = run(epochs=0).train_state  # a fresh state from fit's compiled init
    meta = {"note": "hello", "values": [1.5, None]}
    path = tmp_path / "sub" / "c.npz"
    jaxbn.save_checkpoint(path, jaxbn.Checkpoint(ts, ts.params, ts.state, meta))
    ck = jaxbn.load_checkpoint(path, ts)
    _assert_trees_identical(ck.train_state, ts)
    _assert_trees_identical((ck.best_params, ck.best_state), (ts.params, ts.state))
    assert ck.meta == meta
    assert jax.dtypes.issubdtype(ck.train_state.key.dtype, jax.dtypes.prng_key)
    assert os.listdir(path.parent) == ["c.npz"]


def test_checkpoint_loader_validates(tmp_path):
    ts = run(epochs=0).train_state  # a fresh state from fit's compiled init
    path = tmp_path / "c.npz"
    jaxbn.save_checkpoint(path, jaxbn.Checkpoint(ts, ts.params, ts.state, {}))
    other = jaxbn.FullyConnectedNet((8, 9), 3, normalization="batchnorm")
    template = jaxbn.init_train_state(other, OPT, jax.random.key(0), D)
    with pytest.raises(ValueError, match=r"train_state\.params\[1\]\['W'\] has shape \(8, 8\)"):
        jaxbn.load_checkpoint(path, template)
    sgd_template = jaxbn.init_train_state(NET, optax.sgd(0.1), jax.random.key(0), D)
    with pytest.raises(ValueError, match="different net or optimizer"):
        jaxbn.load_checkpoint(path, sgd_template)
    (tmp_path / "junk.npz").write_bytes(b"not a zip file")
    with pytest.raises(ValueError, match=r"not a readable \.npz file"):
        jaxbn.load_checkpoint(tmp_path / "junk.npz", ts)
    np.savez(tmp_path / "plain.npz", a=np.ones(2))
    with pytest.raises(ValueError, match="has no valid jaxbn header"):
        jaxbn.load_checkpoint(tmp_path / "plain.npz", ts)
    with pytest.raises(FileNotFoundError):
        jaxbn.load_checkpoint(tmp_path / "missing.npz", ts)


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    ts = run(epochs=0).train_state  # a fresh state from fit's compiled init
    path = tmp_path / "c.npz"
    jaxbn.save_checkpoint(path, jaxbn.Checkpoint(ts, ts.params, ts.state, {"v": 1}))

    def crash(f, **arrays):
        f.write(b"PK half a zip")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint_module.np, "savez", crash)
    with pytest.raises(OSError, match="disk full"):
        jaxbn.save_checkpoint(path, jaxbn.Checkpoint(ts, ts.params, ts.state, {"v": 2}))
    monkeypatch.undo()
    assert os.listdir(tmp_path) == ["c.npz"]  # no temporary file left behind
    assert jaxbn.load_checkpoint(path, ts).meta == {"v": 1}  # the old checkpoint is intact


@pytest.mark.parametrize(
    "bad", [np.nan, pytest.param(np.inf, marks=pytest.mark.slow)], ids=["nan", "inf"]
)  # inf: the same check as nan with a second compiled optimizer, full suite only
def test_non_finite_loss_names_the_first_bad_step(bad):
    # fit rejects NaN/Inf inputs up front, so poison the first update instead: the loss of step 1
    # (epoch 1, batch 2) is then the first one that is not finite.
    poison = optax.scale_by_schedule(lambda count: jax.numpy.where(count == 0, bad, 1.0))
    opt = optax.chain(OPT, poison)
    with pytest.raises(jaxbn.NonFiniteLossError, match="at step 1 \\(epoch 1, batch 2 of 3") as e:
        jaxbn.fit(NET, opt, X, Y, XV, YV, epochs=3, batch_size=B, l2=L2, progress=False)
    assert isinstance(e.value, FloatingPointError)
    assert str(pickle.loads(pickle.dumps(e.value))) == str(e.value)
    assert (e.value.step, e.value.epoch, e.value.batch) == (1, 1, 2)
    assert not np.isfinite(e.value.loss)


def test_target_loss_stops_after_the_epoch_or_at_a_check(tmp_path):
    r = run(epochs=5, target_loss=10.0)  # reached at the first evaluation
    assert r.history.stopped_at_step == STEPS and r.history.epochs_done == 1
    r = run(epochs=5, target_loss=10.0, eval_every=2, checkpoint_dir=tmp_path)
    h = r.history
    assert h.stopped_at_step == 2 and len(h.step_loss) == 2 and int(r.train_state.step) == 2
    assert [c["step"] for c in h.checks] == [2] and h.checks[0]["loss"] <= 10.0
    assert (
        h.val_loss[-1] == h.checks[0]["loss"]
    )  # the partial epoch is evaluated on the same params
    resumed = run(epochs=5, target_loss=10.0, eval_every=2, checkpoint_dir=tmp_path, resume=True)
    assert int(resumed.train_state.step) == 2
    never = run(epochs=2, target_loss=0.0, eval_every=2)
    assert never.history.stopped_at_step is None
    assert [c["step"] for c in never.history.checks] == [2, 4, 6]


def test_best_params_are_those_of_the_best_validation_epoch():
    r = run(epochs=4)
    h = r.history
    assert h.best_epoch == int(np.argmax(h.val_accuracy)) + 1
    assert h.best_val_accuracy == max(h.val_accuracy)
    m = jaxbn.evaluate(NET, r.best_params, r.best_state, XV, YV)
    assert m["accuracy"] == h.best_val_accuracy and m["loss"] == h.val_loss[h.best_epoch - 1]


def test_random_sampling_mode():
    a = run(sampling="random", epochs=2)
    b = run(sampling="random", epochs=2)
    assert len(a.history.step_loss) == 2 * (N // B)  # max(N // B, 1) steps per epoch
    _assert_runs_identical(a, b)
    with pytest.raises(ValueError, match="batch_size must be <= the 50 training examples"):
        run(sampling="random", batch_size=51)


def test_history_is_json_serializable():
    h = run(epochs=1).history
    again = jaxbn.History.from_dict(json.loads(json.dumps(h.to_dict())))
    assert again == h


def test_progress_bar_is_the_only_output(capsys):
    run(epochs=1, progress=False)
    out = capsys.readouterr()
    assert out.out == "" and out.err == ""
    run(epochs=1, progress=True)
    out = capsys.readouterr()
    assert out.out == "" and "3/3" in out.err


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"epochs": -1}, ValueError, "epochs must be a non-negative int, got -1"),
        ({"batch_size": 0}, ValueError, "batch_size must be a positive int, got 0"),
        ({"seed": -1}, ValueError, "seed must be a non-negative int, got -1"),
        ({"sampling": "sorted"}, ValueError, "sampling must be one of .* got 'sorted'"),
        ({"eval_every": 0}, ValueError, "eval_every must be a positive int, got 0"),
        ({"l2": -0.5}, ValueError, "l2 must be a finite number >= 0, got -0.5"),
        ({"resume": True}, ValueError, "resume=True needs a checkpoint_dir"),
        ({"y": Y[:-1]}, ValueError, "x_train and y_train must have the same number .* 50 and 49"),
        ({"y": Y + 1}, ValueError, r"y_train must hold class indices in \[0, 3\), got .*\[1, 3\]"),
        ({"x": X.astype(np.int32)}, TypeError, "x_train must be a floating-point array"),
        ({"target_loss": "low"}, TypeError, "target_loss must be a float or None, got 'low'"),
    ],
    ids=[
        "epochs",
        "batch_size",
        "seed",
        "sampling",
        "eval_every",
        "l2",
        "resume",
        "lengths",
        "labels",
        "int_x",
        "target",
    ],
)
def test_fit_errors(kwargs, error, match):
    with pytest.raises(error, match=match):
        run(**kwargs)


def test_validation_data_errors():
    with pytest.raises(ValueError, match="x_val and y_val must be given together"):
        jaxbn.fit(NET, OPT, X, Y, XV, None, epochs=1, batch_size=B)
    with pytest.raises(ValueError, match=r"x_val rows have shape \(3,\), x_train rows \(4,\)"):
        jaxbn.fit(NET, OPT, X, Y, XV[:, :3], YV, epochs=1, batch_size=B)


@pytest.mark.slow  # end to end: 50 training steps of a 5-layer net
def test_a_five_layer_batchnorm_net_overfits_50_examples():
    net = jaxbn.FullyConnectedNet((100,) * 5, 10, normalization="batchnorm")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 20)).astype(np.float32)
    y = rng.integers(0, 10, 50).astype(np.int32)
    r = jaxbn.fit(net, optax.adam(1e-2), x, y, epochs=25, batch_size=25, progress=False)
    assert r.history.train_accuracy[-1] == 1.0  # evaluation mode, running statistics
