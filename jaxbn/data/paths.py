"""Decide where data sets live on disk.

The *data root* is, in order of precedence:

1. the ``data_dir`` argument, when given;
2. the ``JAXBN_DATA`` environment variable, when set and non-empty;
3. the per-user cache ``$XDG_CACHE_HOME/jaxbn``, or ``~/.cache/jaxbn`` when ``XDG_CACHE_HOME``
   is unset.

Each data set is looked for in a few directories derived from the root (see :data:`LAYOUTS`), then
in read-only system directories such as Debian's ``/usr/share/datasets/fashion-mnist``. Downloads
go to the first directory of the root's list.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

__all__ = [
    "DATA_ENV",
    "LAYOUTS",
    "Layout",
    "cache_dir",
    "candidate_dirs",
    "data_root",
    "file_variants",
    "find_file",
    "find_files",
]

DATA_ENV = "JAXBN_DATA"


class Layout(NamedTuple):
    """Where the files of one data set may sit, relative to the data root.

    Attributes:
      subdirs: directories under the root to search, in order; ``""`` is the root itself. The first
        is where missing files are downloaded.
      system_dirs: absolute directories searched after the root (read-only, never written).
    """

    subdirs: tuple[str, ...]
    system_dirs: tuple[str, ...] = ()


# Fashion-MNIST uses the same file names as MNIST, so it is never looked for in the root itself.
LAYOUTS: dict[str, Layout] = {
    "mnist": Layout(subdirs=("mnist", "")),
    "fashion_mnist": Layout(
        subdirs=("fashion-mnist", "fashion_mnist"),
        system_dirs=("/usr/share/datasets/fashion-mnist",),
    ),
    "cifar10": Layout(subdirs=("cifar-10-batches-py", "")),
}


def cache_dir() -> Path:
    """Return the per-user cache directory for jaxbn data (not created).

    Returns:
      ``$XDG_CACHE_HOME/jaxbn`` if ``XDG_CACHE_HOME`` is an absolute path, else ``~/.cache/jaxbn``.
    """
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(xdg) if os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "jaxbn"


def data_root(data_dir: str | os.PathLike[str] | None = None) -> Path:
    """Return the data root: ``data_dir``, else ``$JAXBN_DATA``, else :func:`cache_dir`.

    Args:
      data_dir: an explicit directory; ``~`` is expanded.

    Returns:
      The root directory (it may not exist yet).
    """
    if data_dir is not None:
        return Path(data_dir).expanduser()
    env = os.environ.get(DATA_ENV, "")
    if env:
        return Path(env).expanduser()
    return cache_dir()


def candidate_dirs(name: str, data_dir: str | os.PathLike[str] | None = None) -> list[Path]:
    """List the directories searched for a data set, in order.

    Args:
      name: a key of :data:`LAYOUTS` ("mnist", "fashion_mnist", "cifar10").
      data_dir: an explicit data root (see :func:`data_root`).

    Returns:
      The root-relative directories first (the first one is where downloads go), then the system
      directories.

    Raises:
      ValueError: if ``name`` has no layout.
    """
    if name not in LAYOUTS:
        raise ValueError(f"no directory layout for data set {name!r}; known: {sorted(LAYOUTS)}")
    layout = LAYOUTS[name]
    root = data_root(data_dir)
    dirs = [root / sub if sub else root for sub in layout.subdirs]
    return dirs + [Path(d) for d in layout.system_dirs]


def file_variants(filename: str) -> tuple[str, ...]:
    """Return the names a canonical IDX file may be stored under.

    Besides the canonical ``train-images-idx3-ubyte.gz`` this accepts the decompressed name
    ``train-images-idx3-ubyte`` and the dotted name ``train-images.idx3-ubyte`` that some unpackers
    produce. Compression is detected from the content, not from the name.

    Args:
      filename: the canonical file name.

    Returns:
      The accepted names, canonical first.
    """
    stem = filename.removesuffix(".gz")
    names = [filename, stem, stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"]
    return tuple(dict.fromkeys(names))


def find_file(directory: Path, filename: str) -> Path | None:
    """Return the first existing file among :func:`file_variants` in ``directory``, or None.

    Args:
      directory: the directory to search.
      filename: the canonical file name.

    Returns:
      The path of the file found, or None.
    """
    for variant in file_variants(filename):
        path = directory / variant
        if path.is_file():
            return path
    return None


def find_files(directories: Sequence[Path], filenames: Sequence[str]) -> dict[str, Path] | None:
    """Find a directory holding every one of ``filenames`` (under any accepted variant).

    Args:
      directories: the directories to try, in order.
      filenames: the canonical file names.

    Returns:
      A mapping from canonical name to the path found, all in the first complete directory, or None
      when no directory holds them all.
    """
    for directory in directories:
        found = {name: find_file(directory, name) for name in filenames}
        if all(p is not None for p in found.values()):
            return {name: p for name, p in found.items() if p is not None}
    return None
