"""One pure, jit-compiled training step over a ``TrainState``, and batched evaluation.

The step is built in two layers so that other code can wrap it::

    step = train_step_fn(net, optimizer, l2=l2)     # plain function: vmap / shard_map it
    step = make_train_step(net, optimizer, l2=l2)   # the same, jitted, donating the state

Shapes: N batch, D features, C classes.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.typing import ArrayLike

from jaxbn.losses import accuracy, l2_penalty, softmax_cross_entropy
from jaxbn.nn import FullyConnectedNet

__all__ = [
    "TrainState",
    "compute_loss",
    "evaluate",
    "init_train_state",
    "make_train_step",
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


def _check_net(net) -> FullyConnectedNet:
    if not isinstance(net, FullyConnectedNet):
        raise TypeError(f"net must be a jaxbn.FullyConnectedNet, got {type(net).__name__}")
    return net


def _check_optimizer(optimizer) -> optax.GradientTransformation:
    if not (
        callable(getattr(optimizer, "init", None)) and callable(getattr(optimizer, "update", None))
    ):
        raise TypeError(
            "optimizer must be an optax.GradientTransformation (e.g. optax.adam(1e-3)), "
            f"got {type(optimizer).__name__}"
        )
    return optimizer


def _check_l2(l2) -> float:
    if isinstance(l2, bool) or not isinstance(l2, numbers.Real):
        raise TypeError(f"l2 must be a Python float, got {l2!r} of type {type(l2).__name__}")
    if not (math.isfinite(l2) and l2 >= 0):
        raise ValueError(f"l2 must be a finite number >= 0, got {l2!r}")
    return float(l2)


def init_train_state(
    net: FullyConnectedNet,
    optimizer: optax.GradientTransformation,
    key: jax.Array,
    input_dim: int,
) -> TrainState:
    """Initialize the net and the optimizer; step 0.

    ``key`` is split in two: one half initializes the parameters, the other becomes
    ``TrainState.key`` (the dropout key stream).

    Args:
      net: the network configuration.
      optimizer: an optax gradient transformation.
      key: a ``jax.random`` key (``jax.random.key(seed)``).
      input_dim: ``D``, features per example.

    Returns:
      A ``TrainState``.
    """
    net, optimizer = _check_net(net), _check_optimizer(optimizer)
    init_key, train_key = jax.random.split(key)
    params, state = net.init(init_key, input_dim)
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
    logits, new_state = _check_net(net).apply(
        params, state, x, training=training, key=key, mask=mask, rmax=rmax, dmax=dmax
    )
    loss = softmax_cross_entropy(logits, y, mask=mask) + l2_penalty(params, l2)
    return loss, (logits, new_state)


def _check_schedule(renorm_schedule):
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
      renorm_schedule: None, or a function of ``train_state.step`` (an int32 scalar, traced)
        returning ``(rmax, dmax)`` for a renorm net's step, e.g. the paper's ramp from (1, 0)
        to (3, 5); None keeps the net's bounds.

    Returns:
      ``step(train_state, x, y, mask=None) -> (train_state, metrics)`` where ``x`` is
      ``(N, D)``, ``y`` is ``(N,)`` int, ``mask`` an optional ``(N,)`` bool of real rows (padding
      rows are left out of the loss, the accuracy and the batch-norm statistics), and ``metrics``
      is ``{"loss": total loss (data + L2), "accuracy": batch accuracy}`` in training mode.
    """
    net, optimizer, l2 = _check_net(net), _check_optimizer(optimizer), _check_l2(l2)
    renorm_schedule = _check_schedule(renorm_schedule)

    def step(
        train_state: TrainState, x: ArrayLike, y: ArrayLike, mask: ArrayLike | None = None
    ) -> tuple[TrainState, dict[str, jax.Array]]:
        key = jax.random.fold_in(train_state.key, train_state.step)
        bounds = {}
        if renorm_schedule is not None:
            bounds = dict(zip(("rmax", "dmax"), renorm_schedule(train_state.step), strict=True))
        (loss, (logits, model_state)), grads = jax.value_and_grad(compute_loss, 1, has_aux=True)(
            net, train_state.params, train_state.state, x, y, key=key, l2=l2, mask=mask, **bounds
        )
        updates, opt_state = optimizer.update(grads, train_state.opt_state, train_state.params)
        params = optax.apply_updates(train_state.params, updates)
        new = TrainState(
            params=params,
            state=model_state,
            opt_state=opt_state,
            step=train_state.step + 1,
            key=train_state.key,
        )
        return new, {"loss": loss, "accuracy": accuracy(logits, y, mask=mask)}

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
        from jaxbn.parallel import make_data_parallel_step  # deferred: parallel imports train

        if renorm_schedule is not None:
            raise ValueError("renorm_schedule is not supported with a mesh yet; pass one or other")
        return make_data_parallel_step(net, optimizer, mesh, l2=l2)
    step = train_step_fn(net, optimizer, l2=l2, renorm_schedule=renorm_schedule)
    return jax.jit(step, donate_argnums=0)


@partial(jax.jit, static_argnums=0)
def _eval_batch(net, params, state, x, y, mask):
    logits, _ = net.apply(params, state, x, training=False)
    loss_sum = softmax_cross_entropy(logits, y, mask=mask, reduction="sum")
    correct = accuracy(logits, y, mask=mask, reduction="sum")
    return loss_sum, correct


def _check_batch_size(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


def _check_xy(x, y, x_name: str = "x", y_name: str = "y") -> tuple[Any, Any]:
    """Check a data set's static facts: floating ``(N, ...)`` inputs, ``(N,)`` integer labels."""
    if not hasattr(x, "dtype") or not hasattr(x, "shape"):
        x = np.asarray(x)
    if not hasattr(y, "dtype") or not hasattr(y, "shape"):
        y = np.asarray(y)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(
            f"{x_name} must be a floating-point array (scale integer pixels first), got dtype "
            f"{x.dtype}"
        )
    if x.ndim < 2:
        raise ValueError(f"{x_name} must have shape (N, D) or (N, ...), got shape {tuple(x.shape)}")
    if not jnp.issubdtype(y.dtype, jnp.integer):
        raise TypeError(f"{y_name} must be an integer array of class labels, got dtype {y.dtype}")
    if y.ndim != 1:
        raise ValueError(f"{y_name} must have shape (N,), got shape {tuple(y.shape)}")
    if x.shape[0] != y.shape[0]:
        raise ValueError(
            f"{x_name} and {y_name} must have the same number of examples, got {x.shape[0]} and "
            f"{y.shape[0]}"
        )
    return x, y


def evaluate(
    net: FullyConnectedNet,
    params: Any,
    state: Any,
    x: ArrayLike,
    y: ArrayLike,
    *,
    batch_size: int = 1000,
) -> dict[str, float]:
    """Compute the mean cross-entropy and the accuracy in evaluation mode, batch by batch.

    Every batch has exactly ``batch_size`` rows: the last one is padded with zeros and a mask
    leaves the padding out of the sums, so one compiled function serves every batch and every
    data-set size. The loss is the data loss only (no L2 term). Sums are accumulated on the host
    in float64.

    Args:
      net: the network configuration.
      params, state: the net's parameters and model state.
      x: ``(N, D)`` or ``(N, ...)`` floating inputs (NumPy or JAX).
      y: ``(N,)`` integer labels.
      batch_size: rows per compiled evaluation batch, >= 1.

    Returns:
      ``{"loss": float, "accuracy": float}`` (both NaN when ``N == 0``).

    Raises:
      ValueError: mismatched lengths, bad shapes or a non-positive ``batch_size``.
      TypeError: non-floating ``x`` or non-integer ``y``.
    """
    net = _check_net(net)
    batch_size = _check_batch_size("batch_size", batch_size)
    x, y = _check_xy(x, y)
    n = int(x.shape[0])
    if n == 0:
        return {"loss": math.nan, "accuracy": math.nan}
    x_host, y_host = np.asarray(x), np.asarray(y).astype(np.int32)  # one program for any labels
    sums = []
    for start in range(0, n, batch_size):
        xb, yb = x_host[start : start + batch_size], y_host[start : start + batch_size]
        real = xb.shape[0]
        if real < batch_size:
            pad = batch_size - real
            xb = np.concatenate([xb, np.zeros((pad, *xb.shape[1:]), xb.dtype)])
            yb = np.concatenate([yb, np.zeros((pad,), yb.dtype)])
        mask = np.arange(batch_size) < real
        sums.append(_eval_batch(net, params, state, xb, yb, mask))
    sums = jax.device_get(sums)
    loss = math.fsum(float(s[0]) for s in sums) / n
    correct = math.fsum(float(s[1]) for s in sums)
    return {"loss": loss, "accuracy": correct / n}
