"""Reliability of fit, evaluate and checkpoints.

Cases: 3 (divergence in an epoch's last update), 4 (NaN/Inf in x_train / x_val, target_loss=nan),
6 (corrupt checkpoints), 7 (params of another net), 8 (evaluate's labels), 9 (unwritable
checkpoint_dir, failed saves, stale temp files, file mode), 12 (batch_size=1 with batch norm).
"""

import os
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxbn

# One small net and data shape shared by the tests, so they share compiled functions.
NET = jaxbn.FullyConnectedNet((6,), 3, normalization="batchnorm")
N, D = 24, 4


def _blobs(n, seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    x = 2.0 * np.eye(3, D)[y] + rng.normal(size=(n, D))
    return x.astype(np.float32), y.astype(np.int32)


X, Y = _blobs(N, 0)
XV, YV = _blobs(12, 1)


def _fit(opt=None, **kwargs):
    args = {"epochs": 1, "batch_size": N, "progress": False, **kwargs}
    x, y = args.pop("x", X), args.pop("y", Y)
    return jaxbn.fit(NET, opt or optax.sgd(0.1), x, y, XV, YV, **args)


@pytest.fixture(scope="module")
def fresh():
    """A fresh TrainState of NET, and a checkpoint file holding it."""
    return jaxbn.init_train_state(NET, optax.sgd(0.1), jax.random.key(0), D)


class _Trained(Exception):
    pass


def _refusing_optimizer():
    """An optimizer whose update raises: proves that fit failed before any training step."""

    def update(updates, state, params=None):
        raise _Trained("a training step ran")

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


# --- case 3 ----------------------------------------------------------------------------------


def test_divergence_in_the_only_update_raises_before_any_checkpoint(tmp_path):
    with pytest.raises(jaxbn.NonFiniteLossError, match="end of epoch 1") as e:
        _fit(optax.sgd(1e38), checkpoint_dir=tmp_path)
    assert e.value.epoch == 1 and e.value.evaluated == "training"
    assert not np.isfinite(e.value.loss)
    assert os.listdir(tmp_path) == []  # nothing written, no temp file either


def test_divergence_in_a_later_epoch_keeps_the_last_good_checkpoint(tmp_path):
    # One step per epoch; the update of step 1 (epoch 2's last) is the one that diverges.
    opt = optax.sgd(lambda count: jnp.where(count >= 1, 1e38, 0.1))
    with pytest.raises(jaxbn.NonFiniteLossError, match="end of epoch 2") as e:
        _fit(opt, epochs=3, checkpoint_dir=tmp_path)
    assert e.value.epoch == 2
    ts = jaxbn.init_train_state(NET, opt, jax.random.key(0), D)
    ckpt = jaxbn.load_checkpoint(tmp_path / "checkpoint.npz", ts)
    assert int(ckpt.train_state.step) == 1 and len(ckpt.meta["history"]["train_loss"]) == 1
    assert all(np.all(np.isfinite(a)) for a in jax.tree.leaves(ckpt.train_state.params))


# --- case 4 ----------------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["x_train", "x_val"])
@pytest.mark.parametrize("bad", [np.nan, -np.inf], ids=["nan", "inf"])
def test_non_finite_inputs_are_rejected_up_front(which, bad):
    x = (X if which == "x_train" else XV).copy()
    x[5, 2] = bad
    x[7, 0] = bad
    data = (x, Y, XV, YV) if which == "x_train" else (X, Y, x, YV)
    msg = rf"{which} must hold only finite values, got .* at index \(5, 2\)"
    with pytest.raises(ValueError, match=msg):
        jaxbn.fit(NET, _refusing_optimizer(), *data, epochs=1, batch_size=N, progress=False)


def test_target_loss_nan_is_rejected():
    with pytest.raises(ValueError, match="target_loss must be a number or None, got nan"):
        _fit(_refusing_optimizer(), target_loss=float("nan"))


# --- case 6 ----------------------------------------------------------------------------------


def _corruptions(good: bytes, path):
    """name -> bytes of a damaged or foreign file."""
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo("train_state/0.npy")
    # the member's data starts after its 30-byte local header, name and extra field
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    flipped = bytearray(good)
    flipped[start + info.file_size - 1] ^= 0x01  # one bit of the last value of an array
    header = bytearray(good)
    with zipfile.ZipFile(path) as zf:
        hinfo = zf.getinfo("header.npy")
    hstart = hinfo.header_offset + 30 + len(hinfo.filename.encode()) + len(hinfo.extra)
    header[hstart + hinfo.file_size - 3] ^= 0x20
    return {
        "bit-flip": bytes(flipped),
        "header-bit-flip": bytes(header),
        "empty": b"",
        "truncated": good[: len(good) // 2],
        "text": b"hello, not a checkpoint\n",
    }


def test_corrupt_checkpoints_raise_checkpoint_error_naming_the_file(tmp_path, fresh):
    good_path = tmp_path / "good.npz"
    jaxbn.save_checkpoint(good_path, jaxbn.Checkpoint(fresh, fresh.params, fresh.state, {}))
    good = good_path.read_bytes()
    for name, data in _corruptions(good, good_path).items():
        path = tmp_path / f"{name}.npz"
        path.write_bytes(data)
        with pytest.raises(jaxbn.CheckpointError) as e:
            jaxbn.load_checkpoint(path, fresh)
        assert str(path) in str(e.value), name
        assert isinstance(e.value, ValueError)
    npy = tmp_path / "array.npy"
    np.save(npy, np.ones(3))
    with pytest.raises(jaxbn.CheckpointError, match=r"\.npy array, not an \.npz archive"):
        jaxbn.load_checkpoint(npy, fresh)
    np.savez(tmp_path / "foreign.npz", header=np.array('{"format": "other"}'))
    with pytest.raises(jaxbn.CheckpointError, match="is not a jaxbn checkpoint"):
        jaxbn.load_checkpoint(tmp_path / "foreign.npz", fresh)


def test_fit_resume_from_a_corrupt_checkpoint_raises_checkpoint_error(tmp_path):
    (tmp_path / "checkpoint.npz").write_bytes(b"")
    with pytest.raises(jaxbn.CheckpointError, match="is empty"):
        _fit(_refusing_optimizer(), checkpoint_dir=tmp_path, resume=True)


# --- case 7 and 8 ----------------------------------------------------------------------------

OTHER = jaxbn.FullyConnectedNet((5,), 3, normalization="batchnorm")  # same layout, other widths


def test_fit_rejects_a_train_state_of_another_net():
    ts = jaxbn.init_train_state(OTHER, optax.sgd(0.1), jax.random.key(0), D)
    with pytest.raises(ValueError, match=r"train_state\.params\[0\]\['W'\] has shape \(4, 5\)"):
        _fit(_refusing_optimizer(), train_state=ts)


def test_evaluate_rejects_params_of_another_net(fresh):
    params, state = OTHER.init(jax.random.key(0), D)
    with pytest.raises(ValueError, match=r"^params\[0\]\['W'\] has shape \(4, 5\)"):
        jaxbn.evaluate(NET, params, state, X, Y)
    with pytest.raises(ValueError, match="for 7 input features"):  # another input size
        jaxbn.evaluate(NET, fresh.params, fresh.state, np.zeros((3, 7), np.float32), Y[:3])


def test_evaluate_checks_labels(fresh):
    msg = r"y must hold class indices in \[0, 3\), got values in \[1, 3\]"
    with pytest.raises(ValueError, match=msg):
        jaxbn.evaluate(NET, fresh.params, fresh.state, X[:8], np.arange(8) % 3 + 1)


# --- case 9 ----------------------------------------------------------------------------------


def test_unwritable_checkpoint_dir_fails_before_training(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(OSError, match="cannot write checkpoints in") as e:
        _fit(_refusing_optimizer(), checkpoint_dir=blocker / "run")
    assert str(blocker / "run") in str(e.value)


def test_failed_save_names_the_checkpoint_file(tmp_path, fresh):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    path = blocker / "checkpoint.npz"
    with pytest.raises(OSError, match="cannot write checkpoint") as e:
        jaxbn.save_checkpoint(path, jaxbn.Checkpoint(fresh, fresh.params, fresh.state, {}))
    assert str(path) in str(e.value)


def test_stale_temp_files_are_removed_by_the_next_save_and_by_resume(tmp_path, fresh):
    stale = tmp_path / ".checkpoint.npz.k1ll3d.tmp"
    other = tmp_path / ".other.npz.abc.tmp"  # not ours: kept
    stale.write_bytes(b"PK half")
    other.write_bytes(b"PK half")
    ckpt = jaxbn.Checkpoint(fresh, fresh.params, fresh.state, {})
    jaxbn.save_checkpoint(tmp_path / "checkpoint.npz", ckpt)
    assert sorted(os.listdir(tmp_path)) == [".other.npz.abc.tmp", "checkpoint.npz"]
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / ".checkpoint.npz.x.tmp").write_bytes(b"PK")
    with pytest.raises(_Trained):  # resume with no checkpoint yet: starts training
        _fit(_refusing_optimizer(), checkpoint_dir=run_dir, resume=True)
    assert os.listdir(run_dir) == []


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_checkpoint_file_mode_follows_the_umask(tmp_path, fresh, umask):
    old = os.umask(umask)
    try:
        path = tmp_path / "c.npz"
        jaxbn.save_checkpoint(path, jaxbn.Checkpoint(fresh, fresh.params, fresh.state, {}))
    finally:
        os.umask(old)
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~umask


# --- case 12 (fit part) ----------------------------------------------------------------------


def test_batch_size_1_with_batch_norm_names_batch_size():
    with pytest.raises(ValueError, match="batch_size must be >= 2 for a net with batch norm"):
        _fit(_refusing_optimizer(), batch_size=1)
