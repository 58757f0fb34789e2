"""Data-parallel training on a 1-D device mesh, with batch statistics of the global batch.

Two routes give exactly the statistics of the whole batch:

* ``jax.jit`` with shardings (XLA SPMD): the batch is split along a 1-D ``"data"`` mesh, params
  and state are replicated, and the program is the single-device program. Every reduction over
  the batch, the batch-norm statistics and the backward's sums included, becomes a cross-device
  all-reduce inserted by the compiler. ``make_data_parallel_step`` uses this route.
* ``jax.shard_map`` with ``axis_name``: per-device code in which ``jaxbn.batch_norm(...,
  axis_name=...)`` sums the statistics across devices explicitly (see ``jaxbn.batch_norm``).

A global batch that does not divide the number of devices is padded with zero rows and a boolean
``mask`` marks the real ones: batch norm leaves padded rows out of its statistics (count-weighted,
so uneven shards are exact), and the loss and accuracy count real rows only.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

DATA_AXIS = "data"

__all__ = [
    "DATA_AXIS",
    "batch_sharding",
    "data_mesh",
    "indexed_step_runner",
    "make_data_parallel_step",
    "pad_to_multiple",
    "replicate",
    "replicated_sharding",
    "shard_batch",
]


def data_mesh(
    devices: int | Sequence[jax.Device] | None = None, *, axis_name: str = DATA_AXIS
) -> Mesh:
    """Build a 1-D mesh over devices for data parallelism.

    Args:
      devices: ``None`` for all local devices, an int ``n`` for the first ``n`` of them, or an
        explicit sequence of devices.
      axis_name: the mesh axis name (``"data"``).

    Returns:
      A ``jax.sharding.Mesh`` with one axis.

    Raises:
      ValueError: a device count outside ``[1, jax.device_count()]`` or an empty sequence.
    """
    available = jax.devices()
    if devices is None:
        chosen = available
    elif isinstance(devices, (int, np.integer)) and not isinstance(devices, bool):
        if not 1 <= devices <= len(available):
            raise ValueError(
                f"devices must be between 1 and the {len(available)} available devices, "
                f"got {devices}"
            )
        chosen = available[: int(devices)]
    else:
        chosen = list(devices)
        if not chosen:
            raise ValueError("devices must name at least one device, got an empty sequence")
    return Mesh(np.asarray(chosen), (axis_name,))


def _axis(mesh: Mesh) -> str:
    if len(mesh.axis_names) != 1:
        raise ValueError(f"mesh must be 1-D (one data axis), got axes {mesh.axis_names}")
    return mesh.axis_names[0]


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Sharding that splits the leading (batch) axis across the mesh."""
    return NamedSharding(mesh, P(_axis(mesh)))


def replicated_sharding(mesh: Mesh) -> NamedSharding:
    """Sharding that keeps a full copy on every device of the mesh."""
    return NamedSharding(mesh, P())


def replicate(mesh: Mesh, tree: Any) -> Any:
    """Put every array of a pytree (params, model state, optimizer state) on all devices."""
    return jax.device_put(tree, replicated_sharding(mesh))


def pad_to_multiple(multiple: int, *arrays: np.ndarray | jax.Array):
    """Pad the leading axis of each array with zeros to a multiple of ``multiple``.

    Args:
      multiple: e.g. the number of devices; >= 1.
      *arrays: arrays with the same leading size N.

    Returns:
      ``(*padded, mask)`` where ``mask`` is an ``(N_padded,)`` bool array, True for the N real rows.
    """
    if isinstance(multiple, bool) or not isinstance(multiple, (int, np.integer)) or multiple < 1:
        raise ValueError(f"multiple must be a positive int, got {multiple!r}")
    if not arrays:
        raise ValueError("pad_to_multiple needs at least one array")
    n = arrays[0].shape[0]
    for i, a in enumerate(arrays):
        if a.shape[0] != n:
            raise ValueError(
                f"arrays must share their leading size: array 0 has {n} rows, array {i} has "
                f"{a.shape[0]}"
            )
    total = -(-n // multiple) * multiple
    xp = jnp if any(isinstance(a, jax.Array) for a in arrays) else np
    padded = [
        a if total == n else xp.concatenate([a, xp.zeros((total - n, *a.shape[1:]), a.dtype)])
        for a in arrays
    ]
    mask = xp.arange(total) < n
    return (*padded, mask)


def shard_batch(mesh: Mesh, *arrays, pad: bool = True):
    """Split arrays along their leading axis across the mesh, padding to fit.

    Args:
      mesh: a 1-D mesh (see ``data_mesh``).
      *arrays: arrays with the same leading size N (e.g. ``x (N, D)`` and ``y (N,)``).
      pad: pad N up to a multiple of the device count (needed unless it already divides).

    Returns:
      ``(*sharded, mask)``: the arrays on the mesh and an ``(N_padded,)`` bool mask of real rows,
      sharded the same way.

    Raises:
      ValueError: N does not divide the device count and ``pad`` is False.
    """
    n_dev = mesh.devices.size
    if not pad and arrays[0].shape[0] % n_dev:
        raise ValueError(
            f"the batch of {arrays[0].shape[0]} rows does not divide the {n_dev} devices; "
            "pass pad=True to pad it with masked rows"
        )
    *padded, mask = pad_to_multiple(n_dev, *arrays)
    sharding = batch_sharding(mesh)
    return tuple(jax.device_put(a, sharding) for a in (*padded, mask))


def make_data_parallel_step(net, optimizer, mesh: Mesh, *, l2: float = 0.0):
    """Build a jit-compiled training step that runs data-parallel on ``mesh``.

    The computation is exactly ``jaxbn.train_step_fn(net, optimizer, l2=l2)``: the batch is split
    across the devices, the train state is replicated, and XLA turns every reduction over the
    batch (the loss mean, the batch-norm statistics and the sums of its backward) into an
    all-reduce. A batch whose size does not divide the device count is padded with masked rows,
    so the statistics, the loss and the accuracy are those of the real rows. With dropout, the
    random masks are drawn for the padded batch, so they match a single-device run only when no
    padding is needed.

    Args:
      net: a ``jaxbn.FullyConnectedNet``.
      optimizer: an optax gradient transformation.
      mesh: a 1-D mesh (``data_mesh``).
      l2: L2 strength on the weights.

    Returns:
      ``step(train_state, x, y, mask=None) -> (train_state, metrics)``. ``x`` and ``y`` may be
      host or device arrays of any batch size N; the input ``train_state`` is donated. Put the
      initial train state on the mesh with ``replicate(mesh, train_state)``.
    """
    from jaxbn.train.step import train_step_fn  # deferred: jaxbn.train.step imports this module

    step = train_step_fn(net, optimizer, l2=l2)
    rep, bat = replicated_sharding(mesh), batch_sharding(mesh)
    compiled = jax.jit(
        step, in_shardings=(rep, bat, bat, bat), out_shardings=(rep, rep), donate_argnums=0
    )
    n_dev = mesh.devices.size

    def dp_step(train_state, x, y, mask=None):
        if mask is None:
            x, y, mask = pad_to_multiple(n_dev, x, y)
        elif x.shape[0] % n_dev:
            x, y, mask, _ = pad_to_multiple(n_dev, x, y, mask)
        return compiled(train_state, x, y, mask)

    return dp_step


def indexed_step_runner(net, optimizer, l2: float, mesh: Mesh):
    """``fit``'s step on ``mesh``: ``run(train_state, x_all, y_all, idx, mask)``.

    ``x_all`` and ``y_all`` (the training set) and the train state are replicated; the batch's
    row indices ``idx (B,)`` and its mask are padded to a multiple of the device count and split
    across the devices, so the gathered batch is sharded and every reduction over it is global.
    """
    from jaxbn.train.step import indexed_step  # deferred: jaxbn.train.step imports this module

    rep, bat = replicated_sharding(mesh), batch_sharding(mesh)
    compiled = jax.jit(
        partial(indexed_step, net, optimizer, l2),
        in_shardings=(rep, rep, rep, bat, bat),
        out_shardings=(rep, rep),
        donate_argnums=0,
    )
    n_dev = mesh.devices.size

    def run(train_state, x_all, y_all, idx, mask):
        if mask is None:
            mask = np.ones(idx.shape[0], bool)
        idx, mask, _ = pad_to_multiple(n_dev, np.asarray(idx), np.asarray(mask))
        return compiled(train_state, x_all, y_all, idx, mask)

    return run
