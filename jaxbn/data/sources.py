"""The canonical files of each downloadable data set: names, SHA-256 hashes and mirrors.

The environment variable ``JAXBN_DATA_MIRROR`` (one or more base URLs separated by spaces) replaces
the built-in mirrors; a data set's files are then fetched from ``<base>/<mirror_subdir>/<name>``,
for instance ``http://intranet/datasets/mnist/train-images-idx3-ubyte.gz``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import NamedTuple

__all__ = ["MIRROR_ENV", "SOURCES", "RemoteFile", "RemoteSource", "resolve_mirrors"]

MIRROR_ENV = "JAXBN_DATA_MIRROR"


class RemoteFile(NamedTuple):
    """One file to download.

    Attributes:
      name: the file name, both on the mirror and on disk.
      sha256: its expected SHA-256, lowercase hex.
      size: its size in bytes, for the progress bar when the server sends no length.
    """

    name: str
    sha256: str
    size: int | None = None


class RemoteSource(NamedTuple):
    """The files of one data set and where to download them.

    Attributes:
      label: a human-readable name for messages ("MNIST").
      files: the files, each fetched as ``<mirror><name>``.
      mirrors: base URLs, each ending with "/", tried in order.
      mirror_subdir: the folder under a ``JAXBN_DATA_MIRROR`` base URL holding these files.
    """

    label: str
    files: tuple[RemoteFile, ...]
    mirrors: tuple[str, ...]
    mirror_subdir: str


# The MNIST hashes are those of the original .gz release (see the project's data README; their md5
# values match the ones published with the data). The Fashion-MNIST hashes are those of the .gz
# files published by Zalando Research (md5 8d4fb7e6..., 25c81989..., bef4ecab..., bb300cfd...).
# The CIFAR-10 hash is that of cifar-10-python.tar.gz (md5 c58f30108f718f92721af3b95e74349a).
SOURCES: dict[str, RemoteSource] = {
    "mnist": RemoteSource(
        label="MNIST",
        files=(
            RemoteFile(
                "train-images-idx3-ubyte.gz",
                "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
                9_912_422,
            ),
            RemoteFile(
                "train-labels-idx1-ubyte.gz",
                "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
                28_881,
            ),
            RemoteFile(
                "t10k-images-idx3-ubyte.gz",
                "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
                1_648_877,
            ),
            RemoteFile(
                "t10k-labels-idx1-ubyte.gz",
                "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
                4_542,
            ),
        ),
        mirrors=(
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "https://storage.googleapis.com/cvdf-datasets/mnist/",
            "http://yann.lecun.com/exdb/mnist/",
        ),
        mirror_subdir="mnist",
    ),
    "fashion_mnist": RemoteSource(
        label="Fashion-MNIST",
        files=(
            RemoteFile(
                "train-images-idx3-ubyte.gz",
                "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
                26_421_880,
            ),
            RemoteFile(
                "train-labels-idx1-ubyte.gz",
                "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
                29_515,
            ),
            RemoteFile(
                "t10k-images-idx3-ubyte.gz",
                "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
                4_422_102,
            ),
            RemoteFile(
                "t10k-labels-idx1-ubyte.gz",
                "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
                5_148,
            ),
        ),
        mirrors=(
            "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
            "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        ),
        mirror_subdir="fashion-mnist",
    ),
    "cifar10": RemoteSource(
        label="CIFAR-10",
        files=(
            RemoteFile(
                "cifar-10-python.tar.gz",
                "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce",
                170_498_071,
            ),
        ),
        mirrors=("https://www.cs.toronto.edu/~kriz/",),
        mirror_subdir="cifar-10",
    ),
}


def resolve_mirrors(source: RemoteSource, mirrors: Sequence[str] | None = None) -> tuple[str, ...]:
    """Return the base URLs to try: ``mirrors``, else ``$JAXBN_DATA_MIRROR``, else the built-ins.

    Args:
      source: the data set's download description.
      mirrors: explicit base URLs, used as given (file names are appended directly).

    Returns:
      Base URLs, each ending with "/". A ``JAXBN_DATA_MIRROR`` base ``B`` becomes
      ``B/<mirror_subdir>/``.
    """
    if mirrors is not None:
        bases = list(mirrors)
    elif os.environ.get(MIRROR_ENV, "").strip():
        bases = [f"{b.rstrip('/')}/{source.mirror_subdir}" for b in os.environ[MIRROR_ENV].split()]
    else:
        bases = list(source.mirrors)
    return tuple(b if b.endswith("/") else b + "/" for b in bases)
