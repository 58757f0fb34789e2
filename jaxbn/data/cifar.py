"""Read the "python version" of CIFAR-10 (``cifar-10-batches-py/``) without trusting its pickles.

Each batch file is a pickle of a dict with (among others) ``b"data"``, a uint8 array of shape
(N, 3072) whose rows hold the 1024 red, then 1024 green, then 1024 blue values of a 32x32 image in
row-major order, and ``b"labels"``, a list of N ints in 0..9. ``batches.meta`` holds
``b"label_names"``. The files were written by Python 2, so they are read with ``encoding="bytes"``.

Unpickling can run arbitrary code, so :class:`RestrictedUnpickler` resolves only the few globals a
pickled NumPy array needs and refuses every other one.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from jaxbn.data.errors import DatasetError, file_error

__all__ = [
    "CIFAR10_CLASSES",
    "CIFAR10_DIRNAME",
    "CIFAR10_TEST_FILE",
    "CIFAR10_TRAIN_FILES",
    "RestrictedUnpickler",
    "load_cifar10_batch",
    "load_cifar10_dir",
    "load_cifar10_meta",
    "restricted_load",
]

CIFAR10_DIRNAME = "cifar-10-batches-py"
CIFAR10_TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_TEST_FILE = "test_batch"
CIFAR10_META_FILE = "batches.meta"
CIFAR10_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)

# The callables NumPy names in the pickle of an array, taken from NumPy itself so that their
# private module paths (numpy.core before 2.0, numpy._core since) never need importing.
_PROBE = np.zeros(1, dtype=np.uint8)
_RECONSTRUCT = _PROBE.__reduce__()[0]  # protocols 0-4: _reconstruct(ndarray, shape, dtype)
_FROMBUFFER = _PROBE.__reduce_ex__(5)[0]  # protocol 5: _frombuffer(buffer, dtype, shape, order)
del _PROBE

_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy.core.numeric", "_frombuffer"): _FROMBUFFER,
    ("numpy._core.numeric", "_frombuffer"): _FROMBUFFER,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that rebuilds dicts, lists, bytes, numbers and NumPy arrays, and nothing else.

    Plain containers and scalars need no global lookup; a NumPy array needs its reconstruction
    function, ``numpy.ndarray`` and ``numpy.dtype``. Any other global (``os.system``,
    ``builtins.eval``, a class with a ``__reduce__``...) raises ``pickle.UnpicklingError``.
    """

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refusing to load global {module}.{name}: only NumPy array reconstruction "
                "is allowed in a data file"
            ) from None


def restricted_load(path: str | os.PathLike[str]) -> Any:
    """Unpickle a file with :class:`RestrictedUnpickler` and ``encoding="bytes"``.

    Args:
      path: the pickle file.

    Returns:
      The unpickled object.

    Raises:
      DatasetError: if the pickle names a forbidden global or is malformed.
    """
    with open(path, "rb") as f:
        try:
            return RestrictedUnpickler(f, encoding="bytes").load()
        except pickle.UnpicklingError as e:
            raise file_error(path, f"unsafe or malformed pickle: {e}") from e
        except (EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError) as e:
            raise file_error(path, f"malformed pickle ({type(e).__name__}: {e})") from e


def _key(d: dict, name: str) -> Any:
    # Python 2 pickles come back with bytes keys; pickles written by Python 3 may have str keys.
    if name.encode() in d:
        return d[name.encode()]
    return d[name]


def load_cifar10_batch(path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray]:
    """Read one CIFAR-10 batch file (``data_batch_1`` .. ``data_batch_5``, ``test_batch``).

    Args:
      path: the batch file.

    Returns:
      ``(images, labels)``: uint8 (N, 32, 32, 3) in NHWC order and int32 (N,) in 0..9.

    Raises:
      DatasetError: if the pickle is unsafe, a key is missing, ``data`` is not uint8 (N, 3072), the
        label count differs from N, or a label is out of range.
    """
    batch = restricted_load(path)
    if not isinstance(batch, dict):
        raise file_error(path, f"expected a pickled dict, found {type(batch).__name__}")
    try:
        data, labels = _key(batch, "data"), _key(batch, "labels")
    except KeyError:
        keys = sorted(repr(k) for k in batch)
        raise file_error(path, f"expected keys b'data' and b'labels', found {keys}") from None
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2:
        desc = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise file_error(path, f"b'data' must be a uint8 array of shape (N, 3072), found {desc}")
    if data.shape[1] != 3 * 32 * 32:
        raise file_error(path, f"b'data' rows must hold 3072 values, found {data.shape[1]}")
    try:
        y = np.asarray(labels)
    except (TypeError, ValueError) as e:
        raise file_error(path, f"b'labels' is not a list of ints ({e})") from e
    if y.ndim != 1 or y.dtype.kind not in "iu":
        raise file_error(path, f"b'labels' must be a list of ints, found {y.dtype} {y.shape}")
    if y.shape[0] != data.shape[0]:
        raise file_error(path, f"{data.shape[0]} images but {y.shape[0]} labels")
    bad = np.flatnonzero((y < 0) | (y > 9))
    if bad.size:
        i = int(bad[0])
        raise file_error(path, f"label {y[i]} at index {i} is outside 0..9")
    # (N, 3072) -> (N, C=3, H=32, W=32) channel planes -> NHWC.
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), y.astype(np.int32)


def load_cifar10_meta(path: str | os.PathLike[str]) -> tuple[str, ...]:
    """Read the class names from ``batches.meta``.

    Args:
      path: the ``batches.meta`` file.

    Returns:
      The 10 class names, as str.

    Raises:
      DatasetError: if the pickle is unsafe or has no list of 10 names under ``b"label_names"``.
    """
    meta = restricted_load(path)
    try:
        names = _key(meta, "label_names")
    except (KeyError, TypeError):
        raise file_error(path, "expected a dict with the key b'label_names'") from None
    if not isinstance(names, list) or len(names) != 10:
        raise file_error(path, f"b'label_names' must be a list of 10 names, found {names!r:.80}")
    return tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names)


def load_cifar10_dir(
    directory: str | os.PathLike[str],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, tuple[str, ...]]:
    """Read a whole ``cifar-10-batches-py`` directory.

    Args:
      directory: the directory holding ``data_batch_1`` .. ``data_batch_5``, ``test_batch`` and,
        optionally, ``batches.meta``.

    Returns:
      ``(x_train, y_train, x_test, y_test, class_names)``: uint8 (50000, 32, 32, 3), int32 (50000,),
      uint8 (10000, 32, 32, 3), int32 (10000,) for the real data set (fewer rows for smaller
      batches), and the class names (from ``batches.meta`` when present, else the standard ones).

    Raises:
      DatasetError: if a batch file is missing or malformed.
    """
    directory = Path(directory)
    missing = [
        n for n in (*CIFAR10_TRAIN_FILES, CIFAR10_TEST_FILE) if not (directory / n).is_file()
    ]
    if missing:
        raise DatasetError(f"{directory}: missing CIFAR-10 batch files {missing}")
    parts = [load_cifar10_batch(directory / n) for n in CIFAR10_TRAIN_FILES]
    x_train = np.concatenate([p[0] for p in parts])
    y_train = np.concatenate([p[1] for p in parts])
    x_test, y_test = load_cifar10_batch(directory / CIFAR10_TEST_FILE)
    meta = directory / CIFAR10_META_FILE
    names = load_cifar10_meta(meta) if meta.is_file() else CIFAR10_CLASSES
    return x_train, y_train, x_test, y_test, names
