"""Reliability of the data loaders: case 10 (a partial CIFAR-10 folder names exactly the
missing files) and the load_dataset part of case 12 (seed / n_train validation)."""

import pickle

import numpy as np
import pytest

import jaxbn.data as jd
from jaxbn.data import cifar


def _write_batch(path, rows=4, seed=0):
    rng = np.random.default_rng(seed)
    batch = {
        b"data": rng.integers(0, 256, (rows, 3072), dtype=np.uint8),
        b"labels": [int(v) for v in rng.integers(0, 10, rows)],
    }
    path.write_bytes(pickle.dumps(batch))


@pytest.mark.parametrize("subdir", ["cifar-10-batches-py", ""], ids=["folder", "root"])
def test_cifar_partial_folder_names_exactly_the_missing_files(tmp_path, subdir):
    folder = tmp_path / "root" / subdir
    folder.mkdir(parents=True)
    for i, name in enumerate((*cifar.CIFAR10_TRAIN_FILES, cifar.CIFAR10_TEST_FILE)):
        if name != "data_batch_4":
            _write_batch(folder / name, seed=i)
    with pytest.raises(jd.DatasetNotFoundError) as info:
        jd.load_dataset("cifar10", tmp_path / "root", download=False)
    msg = str(info.value)
    first = msg.splitlines()[0]
    assert first == "CIFAR-10 files missing: data_batch_4.", first
    assert "cifar-10-python.tar.gz" not in msg  # not "the whole archive is missing"
    assert f"\n  {folder}".rstrip("/") + "\n" in msg  # where to put it


@pytest.mark.parametrize(
    ("kwargs", "error", "phrase"),
    [
        ({"seed": -1}, ValueError, r"seed must be an int in \[0, inf\], got -1"),
        ({"seed": 1.5}, TypeError, "seed must be an int, got 1.5"),
        ({"seed": True}, TypeError, "seed must be an int, got True"),
        ({"n_train": 2.5}, TypeError, "n_train must be an int, got 2.5"),
        ({"n_train": 0}, ValueError, r"n_train must be an int in \[1, inf\], got 0"),
    ],
    ids=["seed-negative", "seed-float", "seed-bool", "n_train-float", "n_train-zero"],
)
def test_load_dataset_checks_seed_and_n_train_before_reading(tmp_path, kwargs, error, phrase):
    # The data root is empty and downloads are off: the argument error must come first.
    with pytest.raises(error, match=phrase):
        jd.load_dataset("cifar10", tmp_path / "empty", download=False, **kwargs)


def test_load_dataset_accepts_numpy_int_seed():
    ds = jd.load_dataset("digits", seed=np.int64(3), n_train=np.int32(10), val_size=5)
    assert ds.x_train.shape[0] == 10
