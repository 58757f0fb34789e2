"""Download the canonical data files, verify them by SHA-256 and unpack CIFAR-10 safely.

Each file is streamed into a temporary file in its destination directory, hashed on the way,
fsync'ed and renamed into place with ``os.replace``: a crash, a network error or a checksum mismatch
never leaves a partial or wrong file under the canonical name. Mirrors are tried in order (see
:mod:`jaxbn.data.sources` for the table of files and mirrors).
"""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from jaxbn._io import atomic_open
from jaxbn.data.errors import DatasetError, DatasetNotFoundError, file_error
from jaxbn.data.paths import DATA_ENV
from jaxbn.data.sources import MIRROR_ENV, RemoteSource, resolve_mirrors

__all__ = [
    "ChecksumError",
    "download_file",
    "extract_tar_safely",
    "fetch_files",
    "missing_files_message",
    "sha256_file",
]

_CHUNK = 1 << 20


class ChecksumError(DatasetError):
    """A downloaded file does not have the expected SHA-256."""


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Return the SHA-256 of a file as lowercase hex."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _progress_bar(total: int | None, desc: str, enabled: bool):
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc=desc, unit="B", unit_scale=True, unit_divisor=1024, leave=False)


def download_file(
    url: str,
    dest: str | os.PathLike[str],
    *,
    sha256: str,
    size: int | None = None,
    progress: bool = True,
    timeout: float = 30.0,
) -> Path:
    """Download ``url`` to ``dest`` atomically, checking its SHA-256.

    The bytes go to a hidden temporary file next to ``dest`` which is fsync'ed and renamed onto
    ``dest`` only when its hash matches; on any failure the temporary file is removed and ``dest``
    is left untouched.

    Args:
      url: the URL to fetch.
      dest: the final path; its directory is created once the server answers.
      sha256: the expected SHA-256, hex.
      size: the expected size, for the progress bar when the server sends no Content-Length.
      progress: show a tqdm progress bar on stderr when tqdm is installed.
      timeout: seconds to wait for the server at each step.

    Returns:
      ``dest`` as a Path.

    Raises:
      ChecksumError: if the downloaded bytes do not match ``sha256``.
      OSError: if the connection or the write fails (``urllib.error.URLError`` included), or
        ``ConnectionError`` if fewer bytes arrive than the server announced.
      http.client.HTTPException: if the server breaks the protocol (e.g. a truncated body).
    """
    dest = Path(dest)
    h = hashlib.sha256()
    with urllib.request.urlopen(url, timeout=timeout) as resp, atomic_open(dest) as out:
        header = resp.headers.get("Content-Length")
        announced = int(header) if header and header.isdigit() else None
        bar = _progress_bar(announced or size, dest.name, progress)
        received = 0
        try:
            while chunk := resp.read(_CHUNK):
                out.write(chunk)
                h.update(chunk)
                received += len(chunk)
                if bar is not None:
                    bar.update(len(chunk))
        finally:
            if bar is not None:
                bar.close()
        if announced is not None and received != announced:
            raise ConnectionError(
                f"{url}: transfer truncated: received {received} of {announced} bytes"
            )
        digest = h.hexdigest()
        if digest != sha256.lower():  # raising here discards the file: dest stays untouched
            raise ChecksumError(f"{url}: sha256 mismatch: expected {sha256}, got {digest}")
    return dest


def missing_files_message(
    label: str,
    missing: Sequence[str],
    directory: Path,
    *,
    searched: Sequence[Path] = (),
    failures: Sequence[str] = (),
    what: str = "the files (gzip-compressed or not)",
) -> str:
    """Explain which files are missing, why they could not be fetched and where to put them.

    Args:
      label: the data set's name for humans.
      missing: the canonical names of the missing files.
      directory: where the files should be put.
      searched: every directory that was searched.
      failures: one line per failed download attempt; none means downloading was not allowed.
      what: how to call the files in the instruction ("put <what> in <directory>").

    Returns:
      A multi-line message.
    """
    lines = [f"{label} files missing: {', '.join(missing)}."]
    if searched:
        lines.append("Searched: " + ", ".join(str(d) for d in searched) + ".")
    if failures:
        lines.append("Download failed:")
        lines += [f"  {f}" for f in failures]
    else:
        lines.append("Downloading was not allowed (download=False).")
    lines += [
        f"To use local copies, put {what} in",
        f"  {directory}",
        f"(or choose another data root with data_dir=... or the {DATA_ENV} environment variable).",
        f"To download from another server, set {MIRROR_ENV} to its base URL.",
    ]
    return "\n".join(lines)


def fetch_files(
    source: RemoteSource,
    directory: str | os.PathLike[str],
    *,
    only: Sequence[str] | None = None,
    mirrors: Sequence[str] | None = None,
    progress: bool = True,
    timeout: float = 30.0,
    searched: Sequence[Path] = (),
) -> dict[str, Path]:
    """Download the files of ``source`` into ``directory``, trying each mirror in turn.

    Args:
      source: what to download (for instance ``SOURCES["mnist"]``).
      directory: where to write the files.
      only: the names of the files to fetch (default: all of ``source.files``).
      mirrors: base URLs overriding :func:`resolve_mirrors`'s defaults.
      progress: show a progress bar per file when tqdm is installed.
      timeout: seconds to wait for a server at each step.
      searched: the directories already searched, for the error message.

    Returns:
      A mapping from file name to downloaded path.

    Raises:
      DatasetNotFoundError: if some file could not be fetched from any mirror; the message lists
        the missing files, every failed attempt (network error or checksum mismatch) and the
        directory where the files can be put by hand.
    """
    directory = Path(directory)
    wanted = [f for f in source.files if only is None or f.name in only]
    bases = resolve_mirrors(source, mirrors)
    done: dict[str, Path] = {}
    failures: list[str] = []
    unreachable: set[str] = set()  # mirrors that refused or timed out: not retried for later files
    for f in wanted:
        for base in bases:
            url = base + f.name
            if base in unreachable:
                continue
            try:
                done[f.name] = download_file(
                    url,
                    directory / f.name,
                    sha256=f.sha256,
                    size=f.size,
                    progress=progress,
                    timeout=timeout,
                )
                break
            except ChecksumError as e:
                failures.append(str(e))
            except urllib.error.HTTPError as e:  # the server answered: try it for the other files
                failures.append(f"{url}: HTTP {e.code} {e.reason}")
                e.close()
            except (OSError, http.client.HTTPException, ValueError) as e:
                failures.append(f"{url}: {type(e).__name__}: {e}")
                unreachable.add(base)
    missing = [f.name for f in wanted if f.name not in done]
    if missing:
        if not failures:
            failures = ["no mirror left to try"]
        msg = missing_files_message(
            source.label, missing, directory, searched=searched, failures=failures
        )
        raise DatasetNotFoundError(msg)
    return done


def extract_tar_safely(
    archive: str | os.PathLike[str], target: str | os.PathLike[str]
) -> list[Path]:
    """Extract a tar archive into ``target``, refusing anything that could escape it.

    Every member must be a regular file or a directory whose normalised path stays inside
    ``target`` (no absolute names, no ``..``, no links, no devices); otherwise nothing is
    extracted. Files are unpacked into a temporary directory inside ``target`` first and then
    renamed into place one by one, so an interrupted extraction leaves no half-written file.
    Files already present in ``target`` are kept.

    Args:
      archive: the tar file (compressed or not).
      target: the directory to extract into; created if needed.

    Returns:
      The paths of the regular files now in place, in archive order.

    Raises:
      DatasetError: if the archive is unreadable or a member is unsafe.
    """
    target = Path(target)
    target.mkdir(parents=True, exist_ok=True)
    root = os.path.realpath(target)
    placed: list[Path] = []
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = tar.getmembers()
            for m in members:
                if not (m.isfile() or m.isdir()):
                    raise file_error(
                        archive, f"refusing member {m.name!r}: not a file or directory"
                    )
                full = os.path.normpath(os.path.join(root, m.name))
                if os.path.isabs(m.name) or os.path.commonpath([root, full]) != root:
                    raise file_error(archive, f"refusing member {m.name!r}: outside {target}")
            tmp = Path(tempfile.mkdtemp(prefix=".extract-", dir=target))
            try:
                if hasattr(tarfile, "data_filter"):  # Python >= 3.10.12 / 3.11.4
                    tar.extractall(tmp, members=members, filter="data")
                else:
                    tar.extractall(tmp, members=members)
                for m in members:
                    if m.isfile():
                        final = target / m.name
                        final.parent.mkdir(parents=True, exist_ok=True)
                        if not final.exists():
                            os.replace(tmp / m.name, final)
                        placed.append(final)
                    elif m.isdir():
                        (target / m.name).mkdir(parents=True, exist_ok=True)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    except (tarfile.TarError, EOFError) as e:
        raise file_error(archive, f"unreadable tar archive ({e})") from e
    return placed
