"""Data-parallel training on a 1-D device mesh, within one process or across processes and hosts.

Two routes give exactly the statistics of the whole batch: ``jax.jit`` with shardings (XLA
SPMD; ``make_data_parallel_step``), where the batch is split along a 1-D ``"data"`` mesh, the train
state is replicated and the compiler turns every reduction over the batch (batch-norm statistics
and backward sums included) into an all-reduce; and ``jax.shard_map`` per-device code with
``axis_name`` (``jaxbn.batch_norm``, ``jaxbn.train_step_fn``). A batch that does not fill the
devices evenly is padded with zero rows and a ``mask`` of real rows: batch norm, the loss and the
accuracy count real rows only (count-weighted, so uneven shards are exact).

With several processes (``jax.distributed.initialize``) a mesh may span every process's devices;
arrays on it are *global*, each process holding its devices' pieces. ``replicate`` fills every
device from each process's identical copy, ``process_batch`` builds a global batch from each
process's own rows, and the step also takes NumPy batches holding the whole batch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

DATA_AXIS = "data"

__all__ = [
    "DATA_AXIS",
    "batch_sharding",
    "copy_tree",
    "data_mesh",
    "first_replica",
    "indexed_step_runner",
    "is_main_process",
    "make_data_parallel_step",
    "pad_to_multiple",
    "process_batch",
    "replicate",
    "replicated_sharding",
    "run_on_main_process",
    "shard_batch",
]


def data_mesh(devices: int | Sequence[Any] | None = None, *, axis_name: str = DATA_AXIS) -> Mesh:
    """Build a 1-D mesh over devices for data parallelism.

    With several processes the mesh spans them all: ``n`` devices are taken evenly, ``n / P``
    from each of the ``P`` processes, and each process's devices are kept together, in process
    order (``process_batch`` relies on this).

    Args:
      devices: ``None`` for every device (of every process), an int ``n`` (divisible by the
        process count) for ``n`` of them, or an explicit sequence of devices.
      axis_name: the mesh axis name (``"data"``).

    Returns:
      A ``jax.sharding.Mesh`` with one axis.

    Raises:
      ValueError: a device count outside ``[1, jax.device_count()]``, not divisible by the
        process count, or an empty sequence.
    """
    available = sorted(jax.devices(), key=lambda d: (d.process_index, d.id))
    n_proc = jax.process_count()
    if devices is None:
        chosen = available
    elif isinstance(devices, (int, np.integer)) and _is_int(devices):
        if not 1 <= int(devices) <= len(available) or int(devices) % n_proc:
            raise ValueError(
                f"devices must be between 1 and the {len(available)} available devices and "
                f"divisible by the {n_proc} process(es), the same number from each; got {devices}"
            )
        per = int(devices) // n_proc
        by_process = [[d for d in available if d.process_index == p] for p in range(n_proc)]
        chosen = [d for devs in by_process for d in devs[:per]]
    else:
        chosen = list(devices)  # pyright: ignore[reportArgumentType]  # a sequence here
        if not chosen:
            raise ValueError("devices must name at least one device, got an empty sequence")
    return Mesh(np.asarray(chosen), (axis_name,))


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _axis(mesh: Mesh) -> str:
    if len(mesh.axis_names) != 1:
        raise ValueError(f"mesh must be 1-D (one data axis), got axes {mesh.axis_names}")
    return mesh.axis_names[0]


def _multi_process(mesh: Mesh) -> bool:
    return len({d.process_index for d in mesh.devices.flat}) > 1


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Sharding that splits the leading (batch) axis across the mesh."""
    return NamedSharding(mesh, P(_axis(mesh)))


def replicated_sharding(mesh: Mesh) -> NamedSharding:
    """Sharding that keeps a full copy on every device of the mesh."""
    return NamedSharding(mesh, P())


def _from_host(sharding: NamedSharding, host: Any) -> jax.Array:
    """A global array from a host array that every process holds in full (no communication)."""
    host = np.asarray(host)
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def _is_key(a) -> bool:
    dtype = getattr(a, "dtype", None)
    return dtype is not None and jnp.issubdtype(dtype, jax.dtypes.prng_key)


def _replicate_leaf(a, sharding: NamedSharding):
    if _is_key(a):  # typed PRNG keys travel as their raw key data
        data = _replicate_leaf(jax.random.key_data(a), sharding)
        return jax.random.wrap_key_data(data, impl=jax.random.key_impl(a))
    if isinstance(a, jax.Array) and not a.is_fully_addressable:
        if a.sharding.is_equivalent_to(sharding, a.ndim):
            return a
        return jax.jit(lambda v: v, out_shardings=sharding)(a)
    return _from_host(sharding, np.asarray(a))


def replicate(mesh: Mesh, tree: Any) -> Any:
    """Put every array of a pytree (params, model state, optimizer state, keys) on all devices.

    With a mesh spanning several processes, every process must pass the same values (e.g. the
    same seed): each fills its own devices from its own copy, with no communication.
    """
    sharding = replicated_sharding(mesh)
    if not _multi_process(mesh):
        return jax.device_put(tree, sharding)
    return jax.tree.map(lambda a: _replicate_leaf(a, sharding), tree)


def _check_rows(arrays) -> int:
    if not arrays:
        raise ValueError("at least one array is needed, got none")
    n = arrays[0].shape[0]
    for i, a in enumerate(arrays):
        if a.shape[0] != n:
            raise ValueError(
                f"arrays must share their leading size: array 0 has {n} rows, array {i} has "
                f"{a.shape[0]}"
            )
    return n


def _pad_rows(total: int, arrays, xp):
    n = arrays[0].shape[0]
    padded = [
        a if total == n else xp.concatenate([a, xp.zeros((total - n, *a.shape[1:]), a.dtype)])
        for a in arrays
    ]
    return (*padded, xp.arange(total) < n)


def pad_to_multiple(multiple: int, *arrays: np.ndarray | jax.Array):
    """Pad the leading axis of each array with zeros to a multiple of ``multiple``.

    Args:
      multiple: e.g. the number of devices; >= 1.
      *arrays: arrays with the same leading size N.

    Returns:
      ``(*padded, mask)`` where ``mask`` is an ``(N_padded,)`` bool array, True for the N real rows.
    """
    if not _is_int(multiple) or multiple < 1:
        raise ValueError(f"multiple must be a positive int, got {multiple!r}")
    n = _check_rows(arrays)
    xp = jnp if any(isinstance(a, jax.Array) for a in arrays) else np
    return _pad_rows(-(-n // multiple) * multiple, arrays, xp)


def shard_batch(mesh: Mesh, *arrays, pad: bool = True):
    """Split a whole batch along its leading axis across the mesh, padding to fit.

    Every process passes the whole batch and keeps its devices' slices (own rows only:
    ``process_batch``).

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
    if not _multi_process(mesh):
        return tuple(jax.device_put(a, sharding) for a in (*padded, mask))
    return tuple(_from_host(sharding, np.asarray(a)) for a in (*padded, mask))


def process_batch(mesh: Mesh, *local_arrays, rows_per_process: int | None = None):
    """Build a global batch from each process's own rows; pad and mask the shares to one size.

    Every process passes its share (e.g. 17 rows on one, 13 on another); each is padded with
    zero rows to ``rows_per_process`` and masked, so batch norm, the loss and the accuracy see
    the real rows of the global batch (the shares in process order). One process: ``shard_batch``.

    Args:
      mesh: a 1-D mesh from ``data_mesh`` (each process's devices together).
      *local_arrays: this process's rows, arrays with the same leading size n.
      rows_per_process: the padded share size, >= every share and a multiple of the process's
        device count in the mesh. None: the largest share rounded up so, agreed by a small
        all-gather (give a fixed size to skip it and keep one compiled shape).

    Returns:
      ``(*global_arrays, mask)``: ``P * rows_per_process`` rows split across the mesh, and the
      bool mask of real rows.

    Raises:
      ValueError: mismatched rows, a bad ``rows_per_process``, or a mesh splitting a process.
    """
    arrays = [x if isinstance(x, jax.Array) else np.asarray(x) for x in local_arrays]
    n = _check_rows(arrays)
    devices = list(mesh.devices.flat)
    mine = [i for i, d in enumerate(devices) if d.process_index == jax.process_index()]
    if not mine:
        raise ValueError("mesh has none of this process's devices")
    if mine != list(range(mine[0], mine[0] + len(mine))):
        raise ValueError("mesh must keep each process's devices together: build it with data_mesh")
    n_local = len(mine)
    if rows_per_process is None:
        sizes = multihost_utils.process_allgather(np.int32(n)) if _multi_process(mesh) else [n]
        rows = -(-int(np.max(sizes)) // n_local) * n_local
    else:
        if not _is_int(rows_per_process):
            raise ValueError(f"rows_per_process must be an int or None, got {rows_per_process!r}")
        rows = int(rows_per_process)
        if rows < n or rows < 1 or rows % n_local:
            raise ValueError(
                f"rows_per_process must be >= this process's {n} rows and a positive multiple of "
                f"its {n_local} devices in the mesh, got {rows_per_process}"
            )
    sharding = batch_sharding(mesh)
    if not _multi_process(mesh):
        padded = _pad_rows(rows, arrays, jnp if isinstance(arrays[0], jax.Array) else np)
        return tuple(jax.device_put(a, sharding) for a in padded)
    padded = _pad_rows(rows, [np.asarray(a) for a in arrays], np)
    total = rows * (len(devices) // n_local)
    return tuple(
        jax.make_array_from_process_local_data(sharding, a, (total, *a.shape[1:])) for a in padded
    )


def _global_batch(mesh: Mesh, x, y, mask):
    """The step's inputs as arrays on the mesh (see ``make_data_parallel_step``)."""
    n_dev = mesh.devices.size
    arrays = (x, y) if mask is None else (x, y, mask)
    if not _multi_process(mesh):
        if mask is None:
            return pad_to_multiple(n_dev, x, y)
        return pad_to_multiple(n_dev, x, y, mask)[:3] if x.shape[0] % n_dev else (x, y, mask)
    local = [a for a in arrays if isinstance(a, jax.Array) and a.is_fully_addressable]
    if not any(isinstance(a, jax.Array) for a in arrays):  # NumPy: the whole batch, everywhere
        xs, ys, pad_mask = pad_to_multiple(n_dev, *map(np.asarray, (x, y)))
        if mask is not None:
            pad_mask = pad_to_multiple(n_dev, np.asarray(mask, bool))[0]
        return tuple(_from_host(batch_sharding(mesh), a) for a in (xs, ys, pad_mask))
    if local or any(not isinstance(a, jax.Array) for a in arrays) or x.shape[0] % n_dev:
        raise ValueError(
            "with a mesh spanning several processes the step takes NumPy arrays holding the "
            "whole batch (the same on every process) or global arrays from jaxbn.parallel."
            "process_batch(mesh, x_local, y_local) (each process's own rows, with their mask); "
            f"got x: {type(x).__name__}"
            + (" (process-local)" if local else f" of {x.shape[0]} rows for {n_dev} devices")
        )
    if mask is None:
        mask = _from_host(batch_sharding(mesh), np.ones(x.shape[0], bool))
    return x, y, mask


def make_data_parallel_step(step: Callable, mesh: Mesh) -> Callable:
    """Compile a training step to run data-parallel on ``mesh``.

    The computation is ``step``'s (e.g. ``jaxbn.train_step_fn(net, optimizer, l2=l2)``) on the
    whole batch, split across the devices, with the train state replicated. With dropout, the
    masks are drawn for the padded batch: they match one device only when nothing is padded.

    Args:
      step: ``step(train_state, x, y, mask) -> (train_state, metrics)``, un-jitted.
      mesh: a 1-D mesh (``data_mesh``).

    Returns:
      ``dp_step(train_state, x, y, mask=None) -> (train_state, metrics)``, donating the input
      ``train_state`` (``replicate`` the first). The batch: NumPy arrays of any size N holding
      the whole batch (the same on every process; padded with masked rows to fit), global
      ``jax.Array``s on the mesh, or ``process_batch``'s output with its mask. With several
      processes anything else raises a ``ValueError`` that names ``process_batch``.
    """
    rep, bat = replicated_sharding(mesh), batch_sharding(mesh)
    compiled = jax.jit(
        step, in_shardings=(rep, bat, bat, bat), out_shardings=(rep, rep), donate_argnums=0
    )

    def dp_step(train_state, x, y, mask=None):
        return compiled(train_state, *_global_batch(mesh, x, y, mask))

    return dp_step


def indexed_step_runner(indexed_step: Callable, mesh: Mesh) -> Callable:
    """``fit``'s step on ``mesh``: ``run(train_state, x_all, y_all, idx, mask)``.

    ``indexed_step`` trains on the rows ``idx`` of the replicated training set ``x_all, y_all``;
    ``idx (B,)`` and ``mask`` (NumPy, the same on every process) are padded to fit the devices
    and split across them, so the gathered batch is sharded and every reduction is global.
    """
    rep, bat = replicated_sharding(mesh), batch_sharding(mesh)
    compiled = jax.jit(
        indexed_step,
        in_shardings=(rep, rep, rep, bat, bat),
        out_shardings=(rep, rep),
        donate_argnums=0,
    )
    n_dev = mesh.devices.size

    def run(train_state, x_all, y_all, idx, mask):
        if mask is None:
            mask = np.ones(np.shape(idx)[0], bool)
        idx, mask, _ = pad_to_multiple(n_dev, np.asarray(idx), np.asarray(mask))
        return compiled(train_state, x_all, y_all, _from_host(bat, idx), _from_host(bat, mask))

    return run


@jax.jit
def _copy_global(a):
    return jnp.copy(a)


def _copy_leaf(a):
    if not isinstance(a, jax.Array) or a.is_fully_addressable:
        return jax.device_put(a, may_alias=False)
    if _is_key(a):
        return jax.random.wrap_key_data(
            _copy_global(jax.random.key_data(a)), impl=jax.random.key_impl(a)
        )
    return _copy_global(a)


def copy_tree(tree: Any) -> Any:
    """Copy every array into new buffers, global arrays too (then on every process)."""
    return jax.tree.map(_copy_leaf, tree)


def first_replica(tree: Any) -> Any:
    """Replicated global arrays as this process's first copy (to evaluate or save locally)."""

    def leaf(a):
        if isinstance(a, jax.Array) and not a.is_fully_addressable and a.is_fully_replicated:
            return a.addressable_data(0)
        return a

    return jax.tree.map(leaf, tree)


def is_main_process() -> bool:
    """True on process 0 (the one that writes files and shows progress)."""
    return jax.process_index() == 0


def run_on_main_process(fn: Callable[[], Any], *, name: str) -> None:
    """Run ``fn()`` on process 0 only, then wait until every process gets here (``name``).

    ``fn`` must not touch global arrays (use ``first_replica``).
    """
    if jax.process_count() == 1:
        fn()
        return
    try:
        if is_main_process():
            fn()
    finally:
        multihost_utils.sync_global_devices(name)
