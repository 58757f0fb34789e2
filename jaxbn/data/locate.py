"""Find the files of a file-based data set on disk, downloading the missing ones when allowed.

The directories searched come from :mod:`jaxbn.data.paths`; the files, hashes and mirrors from
:mod:`jaxbn.data.sources`. A partial copy is completed where it lies; otherwise files are
downloaded into the first directory of the data set's layout under the data root.
"""

from __future__ import annotations

import os
from pathlib import Path

from jaxbn.data.cifar import CIFAR10_DIRNAME, CIFAR10_TEST_FILE, CIFAR10_TRAIN_FILES
from jaxbn.data.download import (
    ChecksumError,
    extract_tar_safely,
    fetch_files,
    missing_files_message,
    sha256_file,
)
from jaxbn.data.errors import DatasetError, DatasetNotFoundError
from jaxbn.data.paths import LAYOUTS, candidate_dirs, data_root, find_file, find_files
from jaxbn.data.sources import SOURCES

__all__ = ["IDX_FILES", "locate_cifar10", "locate_idx_files"]

IDX_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)


def locate_idx_files(
    name: str,
    data_dir: str | os.PathLike[str] | None = None,
    *,
    download: bool = True,
    progress: bool = True,
) -> dict[str, Path]:
    """Return the paths of the four IDX files of "mnist" or "fashion_mnist".

    Args:
      name: "mnist" or "fashion_mnist".
      data_dir: the data root; see :func:`jaxbn.data.paths.data_root`.
      download: fetch missing files from the mirrors.
      progress: show download progress bars when tqdm is installed.

    Returns:
      A mapping from each canonical name in :data:`IDX_FILES` to the file found (possibly stored
      under a variant name such as the uncompressed one), all in one directory.

    Raises:
      DatasetNotFoundError: if files are missing and ``download`` is False or every mirror fails.
    """
    dirs = candidate_dirs(name, data_dir)
    found = find_files(dirs, IDX_FILES)
    if found is not None:
        return found
    own_dirs = dirs[: len(LAYOUTS[name].subdirs)]
    target = next(
        (d for d in own_dirs if any(find_file(d, f) for f in IDX_FILES)),
        own_dirs[0],
    )
    missing = [f for f in IDX_FILES if find_file(target, f) is None]
    source = SOURCES[name]
    if not download:
        raise DatasetNotFoundError(
            missing_files_message(source.label, missing, target, searched=dirs)
        )
    fetch_files(source, target, only=missing, progress=progress, searched=dirs)
    found = find_files([target], IDX_FILES)
    if found is None:  # only if the directory changed under our feet
        raise DatasetNotFoundError(f"{target}: {source.label} files vanished after downloading")
    return found


def locate_cifar10(
    data_dir: str | os.PathLike[str] | None = None,
    *,
    download: bool = True,
    progress: bool = True,
) -> Path:
    """Return a directory holding the six CIFAR-10 batch files, extracting or downloading them.

    The batches are looked for in ``<root>/cifar-10-batches-py/`` and then in ``<root>`` itself.
    If they are absent but ``<root>/cifar-10-python.tar.gz`` is present, it is checked against the
    official SHA-256 and extracted (and kept). Otherwise the archive is downloaded, checked,
    extracted and deleted.

    Args:
      data_dir: the data root; see :func:`jaxbn.data.paths.data_root`.
      download: fetch the archive (170 MB) when nothing usable is on disk.
      progress: show the download progress bar when tqdm is installed.

    Returns:
      The directory holding ``data_batch_1`` .. ``data_batch_5`` and ``test_batch``.

    Raises:
      DatasetNotFoundError: if nothing usable is on disk and the archive cannot be downloaded.
      ChecksumError: if an archive on disk is not the official one.
      DatasetError: if the archive is unsafe or lacks a batch file.
    """
    needed = (*CIFAR10_TRAIN_FILES, CIFAR10_TEST_FILE)
    dirs = candidate_dirs("cifar10", data_dir)
    for d in dirs:
        if all((d / n).is_file() for n in needed):
            return d
    root = data_root(data_dir)
    source = SOURCES["cifar10"]
    remote = source.files[0]
    archive = root / remote.name
    downloaded = False
    if archive.is_file():
        digest = sha256_file(archive)
        if digest != remote.sha256:
            raise ChecksumError(
                f"{archive}: sha256 {digest} differs from the official {remote.sha256}; "
                "delete the file to download it again"
            )
    elif download:
        fetch_files(source, root, progress=progress, searched=dirs)
        downloaded = True
    else:
        partial = next((d for d in dirs if any((d / n).is_file() for n in needed)), None)
        if partial is not None:  # a partial copy: name exactly the files it lacks
            missing = [n for n in needed if not (partial / n).is_file()]
            raise DatasetNotFoundError(
                missing_files_message(
                    source.label, missing, partial, searched=dirs, what="the missing batch files"
                )
            )
        missing = [f"{remote.name} (or the extracted {CIFAR10_DIRNAME}/)"]
        what = f"{remote.name} or the extracted {CIFAR10_DIRNAME}/ folder"
        raise DatasetNotFoundError(
            missing_files_message(source.label, missing, root, searched=dirs, what=what)
        )
    extract_tar_safely(archive, root)
    target = root / CIFAR10_DIRNAME
    absent = [n for n in needed if not (target / n).is_file()]
    if absent:
        raise DatasetError(f"{archive}: the archive does not contain {CIFAR10_DIRNAME}/{absent}")
    if downloaded:
        archive.unlink()
    return target
