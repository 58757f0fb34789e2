"""One pure, jit-compiled training step over a ``TrainState``.

The step is built in two layers so that other code can wrap it::

    step = train_step_fn(net, optimizer, l2=l2)     # plain function: vmap / shard_map it
    step = make_train_step(net, optimizer, l2=l2)   # the same, jitted, donating the state

Shapes: N batch, D features, C classes.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Hashable
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.typing import ArrayLike

from jaxbn import _checks, parallel
from jaxbn.convnet import ConvNet
from jaxbn.losses import accuracy, l2_penalty, softmax_cross_entropy
from jaxbn.nn import FullyConnectedNet

__all__ = [
    "TrainState",
    "check_params_shapes",
    "check_schedule",
    "compiled_init",
    "compute_loss",
    "indexed_step",
    "indexed_step_runner",
    "init_train_state",
    "make_train_step",
    "net_input",
    "train_step_fn",
]


class TrainState(NamedTuple):
    """Everything a training run carries from one step to the next.

    Attributes:
      params: the net's parameters (a list of per-layer dicts of arrays).
      state: the net's model state (per hidden layer: ``BatchNormState`` or ``None``).
      opt_state: the optax optimizer state for ``params``.
      step: int32 scalar: the number of steps taken so far.
      key: a ``jax.random`` key; step ``s`` draws its dropout masks from
        ``jax.random.fold_in(key, s)``, so the key itself never changes and any step can be
        replayed from a checkpoint.
    """

    params: Any
    state: Any
    opt_state: Any
    step: jax.Array
    key: jax.Array


StepFn = Callable[..., tuple[TrainState, dict[str, jax.Array]]]


def init_train_state(
    net: FullyConnectedNet,
    optimizer: optax.GradientTransformation,
    key: jax.Array,
    input_dim: int | tuple[int, ...],
) -> TrainState:
    """Initialize the net and the optimizer; step 0.

    ``key`` is split in two: one half initializes the parameters, the other becomes
    ``TrainState.key`` (the dropout key stream).

    Args:
      net: the network configuration.
      optimizer: an optax gradient transformation.
      key: a ``jax.random`` key (``jax.random.key(seed)``).
      input_dim: ``D``, features per example; for a ``ConvNet`` one example's shape
        ``(H, W, C)`` (``x.shape[1:]``).

    Returns:
      A ``TrainState``.
    """
    net, optimizer = _checks.net(net), _checks.optimizer(optimizer)
    init_key, train_key = jax.random.split(key)
    params, state = net.init(init_key, input_dim)  # pyright: ignore[reportArgumentType]
    return TrainState(
        params=params,
        state=state,
        opt_state=optimizer.init(params),
        step=jnp.zeros((), jnp.int32),
        key=train_key,
    )


def compute_loss(
    net: FullyConnectedNet,
    params: Any,
    state: Any,
    x: ArrayLike,
    y: ArrayLike,
    *,
    training: bool = True,
    key: jax.Array | None = None,
    l2: float | ArrayLike = 0.0,
    mask: ArrayLike | None = None,
    rmax: float | ArrayLike | None = None,
    dmax: float | ArrayLike | None = None,
) -> tuple[jax.Array, tuple[jax.Array, Any]]:
    """Compute the training objective: mean softmax cross-entropy plus ``0.5 * l2 * sum(W ** 2)``.

    This is the function ``train_step_fn`` differentiates (with respect to ``params``); its
    auxiliary output suits ``jax.value_and_grad(..., has_aux=True)``.

    Args:
      net: the network configuration.
      params, state: the net's parameters and model state.
      x: ``(N, D)`` or ``(N, ...)`` inputs.
      y: ``(N,)`` integer labels.
      training: Python bool, as in ``FullyConnectedNet.apply``.
      key: dropout key (needed when training a net with dropout).
      l2: the L2 strength on the weights: a Python float >= 0, or a scalar array (may be
        traced, e.g. vmapped over a sweep; see ``l2_penalty``).
      mask: optional ``(N,)`` bool of real rows; the others count nowhere.
      rmax, dmax: per-call renorm bounds (see ``FullyConnectedNet.apply``); None: the net's.

    Returns:
      ``(loss, (logits, new_state))``: a scalar, ``(N, C)`` logits and the updated model state.
    """
    bounds: dict[str, Any] = {} if rmax is None and dmax is None else {"rmax": rmax, "dmax": dmax}
    logits, new_state = _checks.net(net).apply(
        params, state, x, training=training, key=key, mask=mask, **bounds
    )
    loss = softmax_cross_entropy(logits, y, mask=mask) + l2_penalty(params, l2)
    return loss, (logits, new_state)


def _sharded_loss(net, params, state, x, y, *, key, l2, mask, axis_name, **bounds):
    """``compute_loss`` for one shard of the batch inside ``shard_map``: the global mean.

    The data loss and the number correct are summed over the real rows of every shard
    (``psum`` over ``axis_name``) and divided by the global count of real rows.
    """
    logits, new_state = net.apply(
        params, state, x, training=True, key=key, mask=mask, axis_name=axis_name, **bounds
    )
    count = jnp.float32(x.shape[0]) if mask is None else jnp.sum(mask, dtype=jnp.float32)
    count = jnp.maximum(jax.lax.psum(count, axis_name), 1.0)
    data = jax.lax.psum(softmax_cross_entropy(logits, y, mask=mask, reduction="sum"), axis_name)
    correct = jax.lax.psum(accuracy(logits, y, mask=mask, reduction="sum"), axis_name)
    return data / count + l2_penalty(params, l2), (correct / count, new_state)


def check_schedule(renorm_schedule: Callable | None) -> Callable | None:
    if renorm_schedule is not None and not callable(renorm_schedule):
        raise TypeError(
            "renorm_schedule must be a function of the step returning (rmax, dmax), or None; "
            f"got {renorm_schedule!r}"
        )
    return renorm_schedule


def train_step_fn(
    net: FullyConnectedNet,
    optimizer: optax.GradientTransformation,
    *,
    l2: float = 0.0,
    axis_name: Hashable | None = None,
    renorm_schedule: Callable[[jax.Array], tuple[Any, Any]] | None = None,
) -> StepFn:
    """Build the un-jitted training step ``step(train_state, x, y, mask=None)``.

    The step computes ``loss = softmax_cross_entropy(logits, y) + 0.5 * l2 * sum(W ** 2)`` in
    training mode (batch statistics, dropout keyed by ``fold_in(train_state.key, step)``),
    differentiates it, applies one optimizer update and returns the new state and the metrics.
    It is a pure function of its arguments: ``jax.jit``, ``jax.vmap`` (e.g. over a stack of
    ``TrainState``s) or ``shard_map`` it as needed.

    Args:
      net: the network configuration.
      optimizer: an optax gradient transformation (``optax.sgd``, ``optax.sgd(lr, momentum=0.9)``,
        ``optax.adam``, ...).
      l2: the L2 strength on the weights, >= 0.
      axis_name: for explicit per-device code in ``jax.shard_map`` over a batch split along
        this mesh axis: batch norm uses the statistics of the whole batch, and the loss and
        accuracy are sums over every shard's real rows (``psum``) divided by their global
        count, so the step equals the single-device step on the whole batch. Keep shard_map's
        default ``check_vma=True`` (the gradients of the replicated params are then summed
        over the shards) and give the train state ``P()`` and the batch ``P(axis_name)``. Each
        shard draws its own dropout masks (the key folded with the shard's index), so with
        dropout it differs from one device.
      renorm_schedule: None, or a function of ``train_state.step`` (an int32 scalar, traced)
        returning ``(rmax, dmax)`` for a renorm net's step, e.g. the paper's ramp from (1, 0)
        to (3, 5); None keeps the net's bounds.

    Returns:
      ``step(train_state, x, y, mask=None) -> (train_state, metrics)`` where ``x`` is
      ``(N, D)``, ``y`` is ``(N,)`` int, ``mask`` an optional ``(N,)`` bool of real rows (padding
      rows are left out of the loss, the accuracy and the batch-norm statistics), and ``metrics``
      is ``{"loss": total loss (data + L2), "accuracy": batch accuracy}`` in training mode.
    """
    net, optimizer, l2 = (
        _checks.net(net),
        _checks.optimizer(optimizer),
        _checks.nonneg_finite("l2", l2),
    )
    renorm_schedule = check_schedule(renorm_schedule)

    def step(
        train_state: TrainState, x: ArrayLike, y: ArrayLike, mask: ArrayLike | None = None
    ) -> tuple[TrainState, dict[str, jax.Array]]:
        key = jax.random.fold_in(train_state.key, train_state.step)
        bounds = {}
        if renorm_schedule is not None:
            bounds = dict(zip(("rmax", "dmax"), renorm_schedule(train_state.step), strict=True))
        if axis_name is None:
            (loss, (logits, model_state)), grads = jax.value_and_grad(
                compute_loss, 1, has_aux=True
            )(net, train_state.params, train_state.state, x, y, key=key, l2=l2, mask=mask,
              **bounds)  # fmt: skip
            acc = accuracy(logits, y, mask=mask)
        else:  # each shard its own dropout masks: fold in the shard's index
            key = jax.random.fold_in(key, jax.lax.axis_index(axis_name))
            (loss, (acc, model_state)), grads = jax.value_and_grad(
                _sharded_loss, 1, has_aux=True
            )(net, train_state.params, train_state.state, x, y, key=key, l2=l2, mask=mask,
              axis_name=axis_name, **bounds)  # fmt: skip
        updates, opt_state = optimizer.update(grads, train_state.opt_state, train_state.params)
        params = optax.apply_updates(train_state.params, updates)
        new = TrainState(
            params=params,
            state=model_state,
            opt_state=opt_state,
            step=train_state.step + 1,
            key=train_state.key,
        )
        return new, {"loss": loss, "accuracy": acc}

    return step


def make_train_step(
    net: FullyConnectedNet,
    optimizer: optax.GradientTransformation,
    *,
    l2: float = 0.0,
    mesh: jax.sharding.Mesh | None = None,
    renorm_schedule: Callable[[jax.Array], tuple[Any, Any]] | None = None,
) -> StepFn:
    """Build the jit-compiled training step; the input ``TrainState`` is donated.

    See ``train_step_fn`` for the computation. Because the state is donated, the arrays of the
    ``train_state`` passed in are invalid after the call: keep only the returned one (copy first,
    ``jax.tree.map(jnp.copy, ts)``, to keep an old one).

    Args:
      net: the network configuration.
      optimizer: an optax gradient transformation.
      l2: the L2 strength on the weights, >= 0.
      mesh: optional 1-D device mesh (``jaxbn.parallel.data_mesh``): the step then runs
        data-parallel with global batch statistics (see
        ``jaxbn.parallel.make_data_parallel_step``); replicate the train state on it first.
      renorm_schedule: None or a function of the step returning ``(rmax, dmax)`` (see
        ``train_step_fn``); not yet with ``mesh``.

    Returns:
      ``step(train_state, x, y, mask=None) -> (train_state, metrics)``, compiled once per input
      shape (and once more the first time a ``mask`` is given).

    Example:
      >>> import jax, optax, jaxbn
      >>> net = jaxbn.FullyConnectedNet((32,), 10, normalization="batchnorm")
      >>> opt = optax.adam(1e-3)
      >>> ts = jaxbn.init_train_state(net, opt, jax.random.key(0), 784)
      >>> step = jaxbn.make_train_step(net, opt)
      >>> x, y = jax.random.normal(jax.random.key(1), (64, 784)), jax.numpy.arange(64) % 10
      >>> ts, metrics = step(ts, x, y)
      >>> int(ts.step)
      1
    """
    if mesh is not None:
        step = train_step_fn(net, optimizer, l2=l2, renorm_schedule=renorm_schedule)
        return parallel.make_data_parallel_step(step, mesh)
    step = train_step_fn(net, optimizer, l2=l2, renorm_schedule=renorm_schedule)
    return jax.jit(step, donate_argnums=0)


def indexed_step(net, optimizer, l2, train_state, x_all, y_all, idx, mask, schedule=None):
    """One training step on the rows ``idx`` ``(B,)`` of a device-resident training set."""
    step = train_step_fn(net, optimizer, l2=l2, renorm_schedule=schedule)
    return step(train_state, x_all[idx], y_all[idx], mask)


_cached_indexed_step = jax.jit(
    indexed_step, static_argnums=(0, 1, 2), static_argnames="schedule", donate_argnums=3
)
_cached_init = jax.jit(init_train_state, static_argnums=(0, 1, 3))


def _hashable(value) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


def indexed_step_runner(net, optimizer, l2: float, schedule=None):
    """``indexed_step`` jitted (state donated), compiled once per (net, optimizer, l2, schedule)
    when those are hashable.

    Returns ``run(train_state, x_all, y_all, idx, mask)``.
    """
    if not _hashable((optimizer, schedule)):
        step = partial(indexed_step, net, optimizer, l2, schedule=schedule)
        return jax.jit(step, donate_argnums=0)
    return partial(_cached_indexed_step, net, optimizer, l2, schedule=schedule)


def compiled_init(net, optimizer, key, input_dim):
    """``init_train_state`` as one compiled program (cached across calls when hashable)."""
    if not _hashable(optimizer):
        return init_train_state(net, optimizer, key, input_dim)
    return _cached_init(net, optimizer, key, input_dim)


@functools.lru_cache(maxsize=32)
def _init_shapes(net, input_dim):
    return jax.eval_shape(lambda key: net.init(key, input_dim), jax.random.key(0))


def net_input(net, example_shape: tuple[int, ...]):
    """What ``net.init`` takes for examples of ``example_shape``: the shape itself for a
    ``ConvNet``, the flattened size ``D`` for a ``FullyConnectedNet``."""
    return tuple(example_shape) if isinstance(net, ConvNet) else math.prod(example_shape)


def check_params_shapes(net, params, state, input_dim, prefix: str = "") -> None:
    """Require ``params`` and ``state`` to have the structure and shapes ``net.init`` gives.

    ``prefix`` goes before the argument names in messages (e.g. ``"train_state."``).
    """
    net._check_tree(params, state)
    want_params, want_state = _init_shapes(net, input_dim)
    why = f"this net for {input_dim} input features"
    _checks.tree_shapes_match(f"{prefix}params", params, want_params, why)
    _checks.tree_shapes_match(f"{prefix}state", state, want_state, why)
