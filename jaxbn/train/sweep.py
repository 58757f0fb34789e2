"""Train K configurations of one network together: stacked states, one vmapped step, a scan.

A sweep holds K ``TrainState``s stacked along a leading axis (every leaf ``(K, ...)``): the
configurations differ in their parameters (e.g. each its own weight scale), their model state and
their optimizer state (e.g. each its own learning rate, held there by
``optax.inject_hyperparams``), and share the network's structure, the data and the batches. One
jit-compiled program ``vmap``s ``jaxbn.train_step_fn`` over the K states and ``lax.scan``s it over
the steps of each epoch and over the epochs, so K small networks cost one compilation and run as
one batched computation instead of K.

Example:
  >>> import jax, jax.numpy as jnp, numpy as np, optax, jaxbn
  >>> from jaxbn import sweep
  >>> net = jaxbn.FullyConnectedNet((8,), 3)
  >>> opt = optax.sgd(0.1)
  >>> keys = jax.random.split(jax.random.key(0), 4)              # K = 4 initializations
  >>> params, state = jax.vmap(lambda k: net.init(k, 5))(keys)
  >>> states = sweep.init_sweep(net, opt, params, state)
  >>> x, y = np.ones((20, 5), np.float32), np.arange(20) % 3
  >>> order = np.arange(20).reshape(1, 2, 10)                    # 1 epoch of 2 steps of 10
  >>> states, out = sweep.make_sweep(net, opt)(states, x, y, order)
  >>> out["loss"].shape                                           # (K, epochs, steps)
  (4, 1, 2)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import optax
from jax import lax
from jax.typing import ArrayLike

from jaxbn.nn import FullyConnectedNet
from jaxbn.train.step import TrainState, train_step_fn

__all__ = ["init_sweep", "make_sweep", "stack", "sweep_size", "take"]

Measure = Callable[[TrainState, jax.Array, jax.Array], Any]


def stack(trees: Sequence[Any]) -> Any:
    """Stack pytrees of one structure along a new leading axis: K trees -> one tree of (K, ...)."""
    if not trees:
        raise ValueError("trees must hold at least one pytree, got an empty sequence")
    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *trees)


def take(tree: Any, i: int) -> Any:
    """Configuration ``i`` of a stacked tree: every leaf ``a`` becomes ``a[i]``."""
    return jax.tree.map(lambda a: a[i], tree)


def sweep_size(states: TrainState) -> int:
    """K, the number of configurations in stacked train states."""
    return int(jnp.shape(states.step)[0])


def init_sweep(
    net: FullyConnectedNet,
    optimizer: optax.GradientTransformation,
    params: Any,
    state: Any,
    *,
    key: jax.Array | None = None,
) -> TrainState:
    """Stacked ``TrainState``s from stacked parameters and model states.

    Args:
      net: the network the parameters belong to.
      optimizer: the optax transformation; its state is initialized per configuration (vmapped).
        With ``optax.inject_hyperparams`` set each configuration's value in
        ``states.opt_state.hyperparams`` afterwards, e.g. a ``(K,)`` array of learning rates.
      params, state: as ``net.init`` returns them, every leaf with a leading axis of size K.
      key: the dropout key of every configuration (default ``jax.random.key(0)``).

    Returns:
      A ``TrainState`` whose leaves all have a leading axis K; ``step`` is ``(K,)`` zeros.

    Raises:
      ValueError: leaves whose leading axes differ.
    """
    sizes = {jnp.shape(a)[0] if jnp.ndim(a) else None for a in jax.tree.leaves((params, state))}
    if len(sizes) != 1 or None in sizes:
        raise ValueError(
            f"params and state must share one leading axis (K configurations), got sizes {sizes}"
        )
    key = jax.random.key(0) if key is None else key

    def one(p, s):
        return TrainState(
            params=p,
            state=s,
            opt_state=optimizer.init(p),
            step=jnp.zeros((), jnp.int32),
            key=key,
        )

    return jax.vmap(one)(params, state)


def make_sweep(
    net: FullyConnectedNet,
    optimizer: optax.GradientTransformation,
    *,
    l2: float = 0.0,
    measure: Measure | None = None,
    donate: bool = True,
) -> Callable[..., tuple[TrainState, dict[str, Any]]]:
    """Build ``run(states, x, y, order) -> (states, out)``: K configurations, E epochs of T steps.

    Every configuration takes the same steps ``jaxbn.train_step_fn(net, optimizer, l2=l2)`` on
    the same batches ``x[order[e, t]]`` (or each on its own, ``x[order[k, e, t]]``, when ``order``
    has a leading K axis); otherwise they differ only in their state.

    Args:
      net: the network configuration.
      optimizer: the optax transformation the states were initialized with.
      l2: the L2 strength on the weights, >= 0.
      measure: optional ``measure(train_state, x, y) -> pytree`` of one configuration, called on
        the whole ``x, y`` before the first step and after every epoch (e.g. the accuracy).
      donate: donate the input states to the program (they are invalid after the call).

    Returns:
      The jitted ``run``. Arguments: ``states`` stacked ``TrainState``s (``init_sweep``), ``x``
      ``(N, D)`` and ``y`` ``(N,)`` the data on which every batch is drawn, ``order`` ``(E, T,
      B)`` int row indices of each step's batch, shared, or ``(K, E, T, B)``: one batch sequence
      per configuration. Results: the new states and ``out`` with
      ``"loss"`` ``(K, E, T)`` (each step's training loss) and, with ``measure``, ``"measure"``:
      its pytree with leading axes ``(K, E + 1)`` (column 0 before training).
    """
    step = train_step_fn(net, optimizer, l2=l2)

    def run_one(ts, x, y, order):
        def epoch(ts, order_e):
            def body(ts, idx):
                ts, metrics = step(ts, x[idx], y[idx])
                return ts, metrics["loss"]

            ts, losses = lax.scan(body, ts, order_e)
            return ts, (losses, None if measure is None else measure(ts, x, y))

        first = None if measure is None else measure(ts, x, y)
        ts, (losses, measured) = lax.scan(epoch, ts, order)
        out = {"loss": losses}
        if measure is not None:
            out["measure"] = jax.tree.map(
                lambda a0, a: jnp.concatenate([a0[None], a]), first, measured
            )
        return ts, out

    shared = jax.vmap(run_one, in_axes=(0, None, None, None))
    each = jax.vmap(run_one, in_axes=(0, None, None, 0))

    def run(states: TrainState, x: ArrayLike, y: ArrayLike, order: ArrayLike):
        order = jnp.asarray(order)
        if order.ndim not in (3, 4):
            raise ValueError(
                "order must be (epochs, steps, batch) or (K, epochs, steps, batch) row indices, "
                f"got shape {order.shape}"
            )
        return (shared if order.ndim == 3 else each)(states, x, y, order)

    return jax.jit(run, donate_argnums=0 if donate else ())
