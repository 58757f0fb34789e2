"""Checkpoints: a ``TrainState``, the best parameters so far and JSON metadata in one ``.npz``.

Files are written atomically: to a temporary file in the same directory, flushed and synced, then
moved over the old one with ``os.replace``, so a reader sees either the previous checkpoint or the
new one, never a half-written file. Arrays are stored bit for bit (PRNG keys as their raw key data
plus the name of their implementation); a loader rebuilds the pytrees from a template and checks
every path, shape and dtype against it.
"""

from __future__ import annotations

import json
import os
import zipfile
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxbn._io import atomic_open
from jaxbn.train.step import TrainState

__all__ = ["Checkpoint", "load_checkpoint", "save_checkpoint"]

_FORMAT = "jaxbn.checkpoint"
_VERSION = 1
_TREES = ("train_state", "best_params", "best_state")


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
    return jax.dtypes.issubdtype(getattr(leaf, "dtype", None), jax.dtypes.prng_key)


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
    _atomic_savez(os.fspath(path), arrays)


def _atomic_savez(path: str, arrays: dict[str, np.ndarray]) -> None:
    with atomic_open(path) as f:
        np.savez(f, **arrays)


def _unflatten(name: str, template, entries: list[dict], npz, path: str):
    leaves, treedef = jax.tree_util.tree_flatten_with_path(template)
    if len(entries) != len(leaves):
        raise ValueError(
            f"checkpoint {path!r}: {name} has {len(entries)} arrays but the template has "
            f"{len(leaves)}; was it written for a different net or optimizer?"
        )
    out = []
    for i, ((tpath, tleaf), entry) in enumerate(zip(leaves, entries, strict=True)):
        where = f"checkpoint {path!r}: {name}{entry['path']}"
        if entry["path"] != jax.tree_util.keystr(tpath):
            raise ValueError(
                f"{where} does not match the template's {name}{jax.tree_util.keystr(tpath)}"
            )
        arr = npz[f"{name}/{i}"]
        if _is_key(tleaf):
            want_impl = str(jax.random.key_impl(tleaf))
            want_shape, want_dtype = (
                jax.random.key_data(tleaf).shape,
                jax.random.key_data(tleaf).dtype,
            )
            if entry["key_impl"] != want_impl:
                raise ValueError(
                    f"{where} holds a {entry['key_impl']} key, the template a {want_impl} key"
                )
        else:
            want_shape, want_dtype = np.shape(tleaf), np.dtype(jnp.result_type(tleaf))
        if arr.shape != tuple(want_shape) or arr.dtype != want_dtype:
            raise ValueError(
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
      ValueError: not a jaxbn checkpoint, an unsupported version, or a tree whose paths, shapes or
        dtypes differ from the template (the message names the first mismatch).
    """
    path = os.fspath(path)
    if not isinstance(template, TrainState):
        raise TypeError(f"template must be a jaxbn.TrainState, got {type(template).__name__}")
    try:
        npz = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise ValueError(f"checkpoint {path!r} is not a readable .npz file: {e}") from None
    with npz:
        try:
            header = json.loads(str(npz["header"]))
        except (KeyError, ValueError) as e:
            raise ValueError(f"checkpoint {path!r} has no valid jaxbn header: {e}") from None
        if header.get("format") != _FORMAT:
            raise ValueError(
                f"{path!r} is not a jaxbn checkpoint (format {header.get('format')!r})"
            )
        if header.get("version") != _VERSION:
            raise ValueError(
                f"checkpoint {path!r} has version {header.get('version')!r}; this jaxbn reads "
                f"version {_VERSION}"
            )
        templates = {
            "train_state": template,
            "best_params": template.params,
            "best_state": template.state,
        }
        trees = {
            name: _unflatten(name, templates[name], header["trees"][name], npz, path)
            for name in _TREES
        }
    return Checkpoint(meta=header["meta"], **trees)
