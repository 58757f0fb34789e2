"""Read IDX files, the format of MNIST and Fashion-MNIST, raw or gzip-compressed.

An IDX file is a 4-byte magic number, one big-endian uint32 per dimension, then the elements in
row-major order. The magic number is ``0x00 0x00 <type code> <number of dimensions>``; MNIST uses
type code ``0x08`` (unsigned byte) with 3 dimensions for images (magic ``0x00000803``: count, rows,
columns) and 1 for labels (magic ``0x00000801``: count).

Whether a file is gzip-compressed is decided by its first two bytes (``1f 8b``), never by its name,
so ``train-images-idx3-ubyte`` may be compressed and ``*.gz`` may be raw. Every check failure raises
:class:`~jaxbn.data.errors.DatasetError` with the file path in the message.
"""

from __future__ import annotations

import gzip
import os
import zlib
from collections.abc import Sequence

import numpy as np

from jaxbn.data.errors import DatasetError, file_error

__all__ = [
    "IDX_IMAGES_MAGIC",
    "IDX_LABELS_MAGIC",
    "load_idx_pair",
    "read_idx",
    "read_idx_images",
    "read_idx_labels",
    "read_maybe_gzip",
]

GZIP_MAGIC = b"\x1f\x8b"
UBYTE_CODE = 0x08
IDX_IMAGES_MAGIC = 0x00000803
IDX_LABELS_MAGIC = 0x00000801

# Names of the element types the IDX format defines, for error messages only.
_TYPE_NAMES = {
    0x08: "unsigned byte",
    0x09: "signed byte",
    0x0B: "int16",
    0x0C: "int32",
    0x0D: "float32",
    0x0E: "float64",
}


def read_maybe_gzip(path: str | os.PathLike[str]) -> bytes:
    """Return the contents of a file, decompressed when it starts with the gzip magic bytes.

    Args:
      path: the file to read.

    Returns:
      The raw bytes, or the decompressed bytes of every gzip member.

    Raises:
      DatasetError: if the gzip stream is corrupt or truncated.
      FileNotFoundError: if the file does not exist.
    """
    with open(path, "rb") as f:
        data = f.read()
    if not data.startswith(GZIP_MAGIC):
        return data
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as e:
        raise file_error(path, f"corrupt gzip stream ({e})") from e


def read_idx(path: str | os.PathLike[str], *, ndim: int, what: str = "elements") -> np.ndarray:
    """Read an IDX file of unsigned bytes with a known number of dimensions.

    Args:
      path: the file, raw or gzip-compressed.
      ndim: the number of dimensions the header must declare (3 for images, 1 for labels).
      what: what the elements are, for error messages ("pixels", "labels").

    Returns:
      A writable uint8 array whose shape is the one declared in the header.

    Raises:
      DatasetError: if the magic number, element type or dimension count is wrong, or if the
        payload is shorter or longer than the header says.
    """
    buf = read_maybe_gzip(path)
    expected_magic = (UBYTE_CODE << 8) | ndim
    if len(buf) < 4:
        raise file_error(path, f"too short for an IDX header: {len(buf)} bytes")
    magic = int.from_bytes(buf[:4], "big")
    if buf[:2] != b"\x00\x00":
        raise file_error(
            path,
            f"bad magic number 0x{magic:08X}, expected 0x{expected_magic:08X}: not an IDX file",
        )
    code, found_ndim = buf[2], buf[3]
    if code != UBYTE_CODE:
        name = _TYPE_NAMES.get(code, "unknown type")
        raise file_error(
            path,
            f"bad magic number 0x{magic:08X}: element type code 0x{code:02X} ({name}), "
            f"expected 0x{UBYTE_CODE:02X} (unsigned byte)",
        )
    if found_ndim != ndim:
        raise file_error(
            path,
            f"bad magic number 0x{magic:08X}: {found_ndim} dimensions, expected {ndim} "
            f"(magic 0x{expected_magic:08X})",
        )
    header_size = 4 + 4 * ndim
    if len(buf) < header_size:
        raise file_error(
            path, f"header truncated: expected {header_size} bytes, found {len(buf)} in all"
        )
    shape = tuple(int.from_bytes(buf[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(shape, dtype=np.int64))
    found = len(buf) - header_size
    if found != expected:
        dims = " x ".join(str(d) for d in shape)
        raise file_error(
            path,
            f"expected {expected} bytes of {what} after the header ({dims}), found {found}",
        )
    return (
        np.frombuffer(buf, dtype=np.uint8, count=expected, offset=header_size).reshape(shape).copy()
    )


def read_idx_images(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an IDX image file (magic ``0x00000803``).

    Args:
      path: the file, raw or gzip-compressed.

    Returns:
      uint8 array of shape (N, H, W).

    Raises:
      DatasetError: if the file is not a well-formed IDX image file.
    """
    return read_idx(path, ndim=3, what="pixels")


def read_idx_labels(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an IDX label file (magic ``0x00000801``).

    Args:
      path: the file, raw or gzip-compressed.

    Returns:
      uint8 array of shape (N,).

    Raises:
      DatasetError: if the file is not a well-formed IDX label file.
    """
    return read_idx(path, ndim=1, what="labels")


def load_idx_pair(
    images_path: str | os.PathLike[str],
    labels_path: str | os.PathLike[str],
    *,
    num_classes: int = 10,
    image_shape: Sequence[int] | None = (28, 28),
) -> tuple[np.ndarray, np.ndarray]:
    """Read an image file and its label file and check that they belong together.

    Args:
      images_path: the IDX image file.
      labels_path: the IDX label file.
      num_classes: labels must lie in ``0 .. num_classes - 1``.
      image_shape: the (H, W) every image must have, or None to accept any.

    Returns:
      ``(images, labels)``: uint8 (N, H, W) and int32 (N,).

    Raises:
      DatasetError: if either file is malformed, the image size is not ``image_shape``, the counts
        differ, or a label is out of range.
    """
    images = read_idx_images(images_path)
    labels = read_idx_labels(labels_path)
    if image_shape is not None and images.shape[1:] != tuple(image_shape):
        h, w = images.shape[1:]
        eh, ew = image_shape
        raise file_error(images_path, f"images are {h}x{w}, expected {eh}x{ew}")
    if images.shape[0] != labels.shape[0]:
        raise DatasetError(
            f"{os.fspath(images_path)} holds {images.shape[0]} images but "
            f"{os.fspath(labels_path)} holds {labels.shape[0]} labels"
        )
    bad = np.flatnonzero(labels >= num_classes)
    if bad.size:
        i = int(bad[0])
        raise file_error(
            labels_path,
            f"{bad.size} labels outside 0..{num_classes - 1}, the first at index {i}: {labels[i]}",
        )
    return images, labels.astype(np.int32)
