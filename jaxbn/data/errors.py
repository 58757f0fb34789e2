"""Exceptions raised by the dataset layer.

Every error the readers raise is a :class:`DatasetError`, itself a ``ValueError``, and its message
starts with the offending file (or directory) so that the user can tell which of several files is
at fault.
"""

from __future__ import annotations

import os

__all__ = ["DatasetError", "DatasetNotFoundError", "file_error"]


class DatasetError(ValueError):
    """A data file is malformed, inconsistent with its partner, or otherwise unusable."""


class DatasetNotFoundError(DatasetError, FileNotFoundError):
    """The files of a data set are not on disk and could not be downloaded.

    It is both a :class:`DatasetError` (so ``except ValueError`` catches every data problem) and a
    ``FileNotFoundError`` (so ``except OSError`` does too). Its message lists the missing files, the
    directory where they are expected and the environment variables that move that directory.
    """


def file_error(path: str | os.PathLike[str], problem: str) -> DatasetError:
    """Build a :class:`DatasetError` whose message is ``"<path>: <problem>"``.

    Args:
      path: the file at fault.
      problem: what is wrong with it, in a phrase.

    Returns:
      The exception, for the caller to raise.
    """
    return DatasetError(f"{os.fspath(path)}: {problem}")
