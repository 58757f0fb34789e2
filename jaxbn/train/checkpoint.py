"""Checkpoints: a ``TrainState``, the best parameters so far and JSON metadata in one ``.npz``.

Files are written atomically: to a temporary file in the same directory, flushed and synced, then
moved over the old one with ``os.replace``, so a reader sees either the previous checkpoint or the
new one, never a half-written file. Arrays are stored bit for bit (PRNG keys as their raw key data
plus the name of their implementation); a loader rebuilds the pytrees from a template and checks
every path, shape and dtype against it.

Failures: a missing file raises ``FileNotFoundError``; any other unreadable, corrupt, foreign or
mismatched file raises ``CheckpointError`` (a ``ValueError``) naming the path and what is wrong.
Every member is read and checked inside ``load_checkpoint``, so nothing fails later. A write that
fails raises the ``OSError`` of the operating system, its message naming the checkpoint file; the
previous checkpoint is untouched, and temp files left by a killed write are removed by the next
save (or by ``check_checkpoint_path``).
"""

from __future__ import annotations

import io
import json
import os
import tempfile
import zipfile
import zlib
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxbn._io import atomic_open, remove_stale_temps
from jaxbn.train.step import TrainState

__all__ = [
    "Checkpoint",
    "CheckpointError",
    "check_checkpoint_path",
    "load_checkpoint",
    "save_checkpoint",
]

_FORMAT = "jaxbn.checkpoint"
_VERSION = 1
_TREES = ("train_state", "best_params", "best_state")


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used: unreadable, corrupt, foreign or for another run.

    The message names the file and what is wrong with it.
    """


class Checkpoint(NamedTuple):
    """The contents of a checkpoint file.

    Attributes:
      train_state: the full ``TrainState`` (params, model state, optimizer state, step, key).
      best_params: parameters to keep (e.g. those with the best validation accuracy so far).
      best_state: the model state that goes with ``best_params``.
      meta: a JSON-serializable dict (``fit`` stores its history and run configuration here).
    """

    train_state: TrainState
    best_params: Any
    best_state: Any
    meta: dict


def _is_key(leaf) -> bool:
    dtype = getattr(leaf, "dtype", None)
    return dtype is not None and jnp.issubdtype(dtype, jax.dtypes.prng_key)


def _flatten(name: str, tree) -> tuple[dict[str, np.ndarray], list[dict]]:
    arrays, entries = {}, []
    for i, (path, leaf) in enumerate(jax.tree_util.tree_flatten_with_path(tree)[0]):
        impl = None
        if _is_key(leaf):
            impl = str(jax.random.key_impl(leaf))
            leaf = jax.random.key_data(leaf)
        arr = np.asarray(jax.device_get(leaf))
        arrays[f"{name}/{i}"] = arr
        entries.append(
            {
                "path": jax.tree_util.keystr(path),
                "shape": list(arr.shape),
                "dtype": arr.dtype.str,
                "key_impl": impl,
            }
        )
    return arrays, entries


def save_checkpoint(path: str | os.PathLike, checkpoint: Checkpoint) -> None:
    """Write ``checkpoint`` to ``path`` (an ``.npz`` file) atomically.

    Args:
      path: the destination file; its directory is created if needed.
      checkpoint: a ``Checkpoint``; ``meta`` must be JSON-serializable.

    Raises:
      TypeError: ``checkpoint`` is not a ``Checkpoint`` or ``meta`` is not JSON-serializable.
      OSError: the file cannot be written (the message names it); the old file is untouched.
    """
    if not isinstance(checkpoint, Checkpoint):
        raise TypeError(f"checkpoint must be a jaxbn.Checkpoint, got {type(checkpoint).__name__}")
    arrays: dict[str, np.ndarray] = {}
    header = {"format": _FORMAT, "version": _VERSION, "meta": checkpoint.meta, "trees": {}}
    for name in _TREES:
        tree_arrays, entries = _flatten(name, getattr(checkpoint, name))
        arrays.update(tree_arrays)
        header["trees"][name] = entries
    try:
        text = json.dumps(header)
    except TypeError as e:
        raise TypeError(f"checkpoint.meta must be JSON-serializable: {e}") from None
    arrays["header"] = np.array(text)
    path = os.fspath(path)
    try:
        remove_stale_temps(path)
        with atomic_open(path) as f:  # the umask's mode, not 0600
            np.savez(f, **arrays)  # pyright: ignore[reportArgumentType]  # names, not allow_pickle
    except OSError as e:
        raise _naming(e, f"cannot write checkpoint {path!r}") from e


def _naming(e: OSError, what: str) -> OSError:
    """The same kind of OSError, its message saying which file it is about."""
    return type(e)(e.errno, f"{what}: {e.strerror or e}") if e.errno else type(e)(f"{what}: {e}")


def check_checkpoint_path(path: str | os.PathLike) -> None:
    """Make sure a checkpoint can be written at ``path`` before any work depends on it.

    Creates the directory if needed, removes temp files left by a killed save, and creates and
    deletes a probe file there.

    Raises:
      OSError: the directory cannot be created or written to (the message names it).
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(directory, exist_ok=True)
        remove_stale_temps(path)
        fd, probe = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp",
                                     dir=directory)  # fmt: skip
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise _naming(e, f"cannot write checkpoints in {directory!r}") from e


def _unflatten(name: str, template, entries: list[dict], npz, path: str):
    leaves, treedef = jax.tree_util.tree_flatten_with_path(template)
    if len(entries) != len(leaves):
        raise CheckpointError(
            f"checkpoint {path!r}: {name} has {len(entries)} arrays but the template has "
            f"{len(leaves)}; was it written for a different net or optimizer?"
        )
    out = []
    for i, ((tpath, tleaf), entry) in enumerate(zip(leaves, entries, strict=True)):
        where = f"checkpoint {path!r}: {name}{entry['path']}"
        if entry["path"] != jax.tree_util.keystr(tpath):
            raise CheckpointError(
                f"{where} does not match the template's {name}{jax.tree_util.keystr(tpath)}"
            )
        if f"{name}/{i}" not in npz:
            raise CheckpointError(f"{where}: its array {name}/{i} is missing from the file")
        arr = npz[f"{name}/{i}"]
        if _is_key(tleaf):
            want_impl = str(jax.random.key_impl(tleaf))
            want_shape, want_dtype = (
                jax.random.key_data(tleaf).shape,
                jax.random.key_data(tleaf).dtype,
            )
            if entry["key_impl"] != want_impl:
                raise CheckpointError(
                    f"{where} holds a {entry['key_impl']} key, the template a {want_impl} key"
                )
        else:
            want_shape, want_dtype = np.shape(tleaf), np.dtype(jnp.result_type(tleaf))
        if arr.shape != tuple(want_shape) or arr.dtype != want_dtype:
            raise CheckpointError(
                f"{where} has shape {arr.shape} and dtype {arr.dtype}; the template expects "
                f"shape {tuple(want_shape)} and dtype {want_dtype}"
            )
        leaf = jnp.asarray(arr)
        if entry["key_impl"] is not None:
            leaf = jax.random.wrap_key_data(leaf, impl=entry["key_impl"])
        out.append(leaf)
    return jax.tree_util.tree_unflatten(treedef, out)


def load_checkpoint(path: str | os.PathLike, template: TrainState) -> Checkpoint:
    """Read a checkpoint written by ``save_checkpoint``, checking it against ``template``.

    Args:
      path: the ``.npz`` file.
      template: a ``TrainState`` of the same structure (e.g. from ``init_train_state`` with the
        same net and optimizer); its ``params`` and ``state`` are also the templates for
        ``best_params`` and ``best_state``.

    Returns:
      The ``Checkpoint``, with arrays identical bit for bit to those saved.

    Raises:
      FileNotFoundError: no file at ``path``.
      CheckpointError: (a ``ValueError``) an unreadable or corrupt file, not a jaxbn checkpoint,
        an unsupported version, or a tree whose paths, shapes or dtypes differ from the template;
        the message names the path and the first problem.
    """
    path = os.fspath(path)
    if not isinstance(template, TrainState):
        raise TypeError(f"template must be a jaxbn.TrainState, got {type(template).__name__}")
    arrays = _read_members(path)
    try:
        header = json.loads(str(arrays["header"]))
    except (KeyError, ValueError) as e:
        raise CheckpointError(f"checkpoint {path!r} has no valid jaxbn header: {e}") from None
    if not isinstance(header, dict) or header.get("format") != _FORMAT:
        fmt = header.get("format") if isinstance(header, dict) else type(header).__name__
        raise CheckpointError(f"{path!r} is not a jaxbn checkpoint (format {fmt!r})")
    if header.get("version") != _VERSION:
        raise CheckpointError(
            f"checkpoint {path!r} has version {header.get('version')!r}; this jaxbn reads "
            f"version {_VERSION}"
        )
    trees_meta, meta = header.get("trees"), header.get("meta")
    if not isinstance(meta, dict) or not (
        isinstance(trees_meta, dict) and all(isinstance(trees_meta.get(t), list) for t in _TREES)
    ):
        raise CheckpointError(f"checkpoint {path!r} has a damaged header (trees or meta)")
    templates = {
        "train_state": template,
        "best_params": template.params,
        "best_state": template.state,
    }
    try:
        trees = {
            name: _unflatten(name, templates[name], trees_meta[name], arrays, path)
            for name in _TREES
        }
    except (KeyError, TypeError) as e:
        raise CheckpointError(f"checkpoint {path!r} has a damaged header entry: {e!r}") from None
    return Checkpoint(meta=meta, **trees)


def _read_members(path: str) -> dict[str, np.ndarray]:
    """Read every array of the ``.npz`` at ``path`` now (a zip checks each member's CRC-32)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise
    except OSError as e:
        raise CheckpointError(f"checkpoint {path!r} cannot be read: {e.strerror or e}") from e
    if not data:
        raise CheckpointError(f"checkpoint {path!r} is empty (0 bytes)")
    try:
        loaded = np.load(io.BytesIO(data), allow_pickle=False)
        if isinstance(loaded, np.lib.npyio.NpzFile):
            with loaded:
                return {name: loaded[name] for name in loaded.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as e:
        raise CheckpointError(
            f"checkpoint {path!r} is not a readable .npz file: corrupt or not an archive "
            f"({type(e).__name__}: {e})"
        ) from None
    raise CheckpointError(f"checkpoint {path!r} is a .npy array, not an .npz archive")
