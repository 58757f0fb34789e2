"""The training loop: epochs of minibatch steps, validation, history, checkpoints and resume.

Determinism: the batches of epoch ``e`` come from ``numpy.random.default_rng([seed, e])``, the
initial parameters and dropout keys from ``jax.random.key(seed)``; the same call with the same
seed gives the same history and parameters bit for bit, and a run resumed from the checkpoint of
epoch ``k`` reproduces the uninterrupted run exactly (on the same machine and software).
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
import os
import time
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh

from jaxbn.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from jaxbn.history import History
from jaxbn.nn import FullyConnectedNet
from jaxbn.train import (
    TrainState,
    _check_batch_size,
    _check_l2,
    _check_net,
    _check_optimizer,
    _check_schedule,
    _check_xy,
    evaluate,
    init_train_state,
    train_step_fn,
)

__all__ = ["CHECKPOINT_NAME", "SAMPLINGS", "FitResult", "NonFiniteLossError", "fit"]

SAMPLINGS = ("shuffle", "random")
CHECKPOINT_NAME = "checkpoint.npz"
_SYNC_EVERY = 100  # steps between host syncs (progress bar, NaN check)


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or Inf.

    Attributes:
      step: the ``TrainState.step`` value of the first step whose loss was not finite (0-based).
      epoch: its epoch, counting from 1.
      batch: its batch within the epoch, counting from 1.
      loss: the offending value.
    """

    def __init__(self, step: int, epoch: int, batch: int, steps_per_epoch: int, loss: float):
        self.step, self.epoch, self.batch, self.loss = step, epoch, batch, loss
        self._args = (step, epoch, batch, steps_per_epoch, loss)
        super().__init__(
            f"the training loss became {loss} at step {step} (epoch {epoch}, batch {batch} of "
            f"{steps_per_epoch}; steps count from 0 like TrainState.step). Check the inputs for "
            "NaN/Inf or lower the learning rate or the weight scale."
        )

    def __reduce__(self):
        return type(self), self._args


class FitResult(NamedTuple):
    """What ``fit`` returns.

    Attributes:
      train_state: the final ``TrainState``.
      history: the ``History``.
      best_params, best_state: the parameters and model state of the epoch with the best
        validation accuracy (the final ones without validation data).
    """

    train_state: TrainState
    history: History
    best_params: Any
    best_state: Any


def _nonneg_int(name: str, value, upper: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise ValueError(f"{name} must be a non-negative int, got {value!r}")
    if upper is not None and value >= upper:
        raise ValueError(f"{name} must be < {upper}, got {value!r}")
    return int(value)


def _check_labels(name: str, y: np.ndarray, num_classes: int) -> None:
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(
            f"{name} must hold class indices in [0, {num_classes}), got values in "
            f"[{y.min()}, {y.max()}]"
        )


def _epoch_order(seed, epoch, n, batch_size, sampling, steps):
    """Row indices of each step of an epoch, ``(steps, batch_size)``, and the last batch's size."""
    rng = np.random.default_rng([seed, epoch])
    if sampling == "random":
        order = np.stack([rng.choice(n, batch_size, replace=False) for _ in range(steps)])
        return order.astype(np.int32), batch_size
    perm = rng.permutation(n)
    order = np.zeros(steps * batch_size, np.int64)
    order[:n] = perm
    return order.reshape(steps, batch_size).astype(np.int32), n - (steps - 1) * batch_size


def _indexed_step(net, optimizer, l2, train_state, x_all, y_all, idx, mask, schedule=None):
    """One training step on the rows ``idx`` ``(B,)`` of the device-resident training set."""
    step = train_step_fn(net, optimizer, l2=l2, renorm_schedule=schedule)
    return step(train_state, x_all[idx], y_all[idx], mask)


_cached_step = jax.jit(
    _indexed_step, static_argnums=(0, 1, 2), static_argnames="schedule", donate_argnums=3
)


def _step_runner(net, optimizer, l2, schedule=None):
    """The jitted step, compiled once per (net, optimizer, l2) across ``fit`` calls if hashable."""
    try:
        hash((optimizer, schedule))
    except TypeError:
        step = partial(_indexed_step, net, optimizer, l2, schedule=schedule)
        return jax.jit(step, donate_argnums=0)
    return partial(_cached_step, net, optimizer, l2, schedule=schedule)


_cached_init = jax.jit(init_train_state, static_argnums=(0, 1, 3))


def _init(net, optimizer, key, input_dim):
    """``init_train_state`` as one compiled program (cached across calls when hashable)."""
    try:
        hash(optimizer)
    except TypeError:
        return init_train_state(net, optimizer, key, input_dim)
    return _cached_init(net, optimizer, key, input_dim)


def _copy(tree):
    """Copy every array (new buffers, so donating the original leaves the copy intact)."""
    return jax.tree.map(lambda a: jax.device_put(a, may_alias=False), tree)


def _make_bar(progress: bool, total: int, initial: int):
    if not progress:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:  # tqdm is optional: no bar without it
        return None
    return tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True)


def fit(
    net: FullyConnectedNet,
    optimizer: optax.GradientTransformation,
    x_train,
    y_train,
    x_val=None,
    y_val=None,
    *,
    epochs: int,
    batch_size: int,
    seed: int = 0,
    l2: float = 0.0,
    sampling: str = "shuffle",
    target_loss: float | None = None,
    eval_every: int | None = None,
    eval_batch_size: int = 1000,
    checkpoint_dir: str | os.PathLike | None = None,
    resume: bool = False,
    train_state: TrainState | None = None,
    progress: bool = True,
    mesh: Mesh | None = None,
    renorm_schedule=None,
) -> FitResult:
    """Train ``net`` with minibatch steps; evaluate after each epoch; keep the best parameters.

    Each epoch takes ``steps_per_epoch`` steps of ``make_train_step``'s computation:

    - ``sampling="shuffle"``: a fresh permutation per epoch, ``ceil(N / batch_size)`` steps, every
      example once; a short last batch is padded and masked (left out of the loss and of the
      batch-norm statistics), so every step has the same shape.
    - ``sampling="random"``: the textbooks' mode: ``max(N // batch_size, 1)`` steps, each on
      ``batch_size`` distinct rows drawn at random independently of the other steps (the
      textbooks' ``np.random.choice(N, batch_size)`` draws with replacement; we do not repeat a
      row inside a batch).

    After each epoch the net is evaluated (evaluation mode) on the whole training set and on the
    validation set; a checkpoint is written atomically to ``checkpoint_dir/checkpoint.npz``.

    Args:
      net: the network configuration.
      optimizer: an optax gradient transformation, e.g. ``optax.adam(1e-3)``.
      x_train: ``(N, D)`` or ``(N, ...)`` floating inputs (NumPy or JAX).
      y_train: ``(N,)`` integer labels in ``[0, net.num_classes)``.
      x_val, y_val: optional validation set (both or neither).
      epochs: total number of epochs (including those done before a resume), >= 0.
      batch_size: rows per step, >= 1 (<= N with ``sampling="random"``).
      seed: non-negative int < 2**32: initial parameters and dropout (``jax.random.key(seed)``,
        unless ``train_state`` is given) and the batch order.
      l2: L2 strength on the weights (``0.5 * l2 * sum W^2``), >= 0.
      sampling: ``"shuffle"`` or ``"random"`` (see above).
      target_loss: stop as soon as the monitored loss (validation data loss, or training data
        loss without validation data) is <= this; checked after every epoch and every
        ``eval_every`` steps.
      eval_every: also evaluate the monitored set every this many steps (``TrainState.step``
        multiples) and record it in ``history.checks``; None: only after each epoch.
      eval_batch_size: batch size of the evaluation passes.
      checkpoint_dir: where to write ``checkpoint.npz`` after each epoch; None: no checkpoints.
      resume: continue from ``checkpoint_dir/checkpoint.npz`` if it exists (else start fresh).
        The checkpoint must come from a run with the same net, data sizes and settings (only
        ``epochs`` may differ); the continued run equals the uninterrupted one bit for bit.
      train_state: optional initial ``TrainState`` (copied, never donated); default
        ``init_train_state(net, optimizer, jax.random.key(seed), D)``.
      progress: show a tqdm progress bar (if tqdm is installed).
      mesh: a 1-D device mesh (``jaxbn.parallel.data_mesh``) to train data-parallel on: each
        batch is split across the devices (padded with masked rows to fit), the training set and
        the train state are replicated, and batch-norm statistics are those of the whole batch,
        so the run matches the single-device one up to float round-off.
      renorm_schedule: None, or a function of ``TrainState.step`` returning ``(rmax, dmax)``
        for a renorm net (see ``jaxbn.train_step_fn``); not yet with ``mesh``.

    Returns:
      A ``FitResult(train_state, history, best_params, best_state)``.

    Raises:
      NonFiniteLossError: the training loss became NaN or Inf (names the first such step).
      ValueError, TypeError: invalid arguments (naming the argument and the value received), or a
        checkpoint that does not match this run.
    """
    net, optimizer, l2 = _check_net(net), _check_optimizer(optimizer), _check_l2(l2)
    renorm_schedule = _check_schedule(renorm_schedule)
    if renorm_schedule is not None and mesh is not None:
        raise ValueError("renorm_schedule is not supported with a mesh yet; pass one or other")
    epochs = _nonneg_int("epochs", epochs)
    batch_size = _check_batch_size("batch_size", batch_size)
    eval_batch_size = _check_batch_size("eval_batch_size", eval_batch_size)
    seed = _nonneg_int("seed", seed, upper=2**32)
    if sampling not in SAMPLINGS:
        raise ValueError(f"sampling must be one of {SAMPLINGS}, got {sampling!r}")
    if target_loss is not None and (
        isinstance(target_loss, bool) or not isinstance(target_loss, numbers.Real)
    ):
        raise TypeError(f"target_loss must be a float or None, got {target_loss!r}")
    if eval_every is not None:
        eval_every = _check_batch_size("eval_every", eval_every)
    if not isinstance(resume, bool):
        raise TypeError(f"resume must be a bool, got {resume!r}")
    if resume and checkpoint_dir is None:
        raise ValueError("resume=True needs a checkpoint_dir to resume from, got None")
    x_train, y_train = _check_xy(x_train, y_train, "x_train", "y_train")
    x_host, y_host = np.asarray(x_train), np.asarray(y_train)
    n = x_host.shape[0]
    if n == 0:
        raise ValueError("x_train must hold at least one example, got 0")
    _check_labels("y_train", y_host, net.num_classes)
    if (x_val is None) != (y_val is None):
        raise ValueError("x_val and y_val must be given together (or neither)")
    has_val = x_val is not None
    if has_val:
        x_val, y_val = _check_xy(x_val, y_val, "x_val", "y_val")
        x_val, y_val = np.asarray(x_val), np.asarray(y_val)
        if x_val.shape[1:] != x_host.shape[1:]:
            raise ValueError(
                f"x_val rows have shape {x_val.shape[1:]}, x_train rows {x_host.shape[1:]}"
            )
        _check_labels("y_val", y_val, net.num_classes)
    if sampling == "random" and batch_size > n:
        raise ValueError(
            f"batch_size must be <= the {n} training examples with sampling='random', got "
            f"{batch_size}"
        )
    input_dim = math.prod(x_host.shape[1:])
    steps_per_epoch = (
        math.ceil(n / batch_size) if sampling == "shuffle" else max(n // batch_size, 1)
    )

    config = json.loads(
        json.dumps(
            {
                "net": dataclasses.asdict(net),
                "x_train_shape": list(x_host.shape),
                "n_val": None if not has_val else int(x_val.shape[0]),
                "batch_size": batch_size,
                "sampling": sampling,
                "seed": seed,
                "l2": l2,
                "target_loss": None if target_loss is None else float(target_loss),
                "eval_every": eval_every,
                "eval_batch_size": eval_batch_size,
            }
        )
    )
    if train_state is None:
        ts = _init(net, optimizer, jax.random.key(seed), input_dim)
    else:
        if not isinstance(train_state, TrainState):
            raise TypeError(f"train_state must be a TrainState, got {type(train_state).__name__}")
        net._check_tree(train_state.params, train_state.state)
        ts = _copy(train_state)
    history = History()
    best_params, best_state = None, None
    ckpt_path = None if checkpoint_dir is None else os.path.join(checkpoint_dir, CHECKPOINT_NAME)
    if resume and os.path.exists(ckpt_path):
        ckpt = load_checkpoint(ckpt_path, ts)
        diff = sorted(
            k
            for k in set(config) | set(ckpt.meta["config"])
            if config.get(k) != ckpt.meta["config"].get(k)
        )
        if diff:
            detail = ", ".join(
                f"{k}: checkpoint {ckpt.meta['config'].get(k)!r}, now {config.get(k)!r}"
                for k in diff
            )
            raise ValueError(f"checkpoint {ckpt_path!r} was written by a different run ({detail})")
        ts, best_params, best_state = ckpt.train_state, ckpt.best_params, ckpt.best_state
        history = History.from_dict(ckpt.meta["history"])

    run_step = _step_runner(net, optimizer, l2, renorm_schedule)
    x_dev, y_dev = jnp.asarray(x_host), jnp.asarray(y_host.astype(np.int32))
    if mesh is not None:
        from jaxbn import parallel  # deferred: parallel builds on this module

        run_step = parallel.indexed_step_runner(net, optimizer, l2, mesh)
        ts, x_dev, y_dev = parallel.replicate(mesh, (ts, x_dev, y_dev))
    monitor = (x_val, y_val) if has_val else (x_host, y_host)

    def monitored_loss():
        return evaluate(net, ts.params, ts.state, *monitor, batch_size=eval_batch_size)

    start_epoch = history.epochs_done if history.stopped_at_step is None else epochs
    bar = _make_bar(progress, epochs * steps_per_epoch, min(start_epoch, epochs) * steps_per_epoch)
    try:
        for epoch in range(start_epoch, epochs):
            order, last_real = _epoch_order(seed, epoch, n, batch_size, sampling, steps_per_epoch)
            last_mask = None if last_real == batch_size else np.arange(batch_size) < last_real
            step0 = int(ts.step)
            pending: list = []
            t0 = time.perf_counter()
            for b in range(steps_per_epoch):
                mask = last_mask if b == steps_per_epoch - 1 else None
                ts, metrics = run_step(ts, x_dev, y_dev, order[b], mask)
                pending.append(metrics["loss"])
                done = step0 + b + 1
                check = eval_every is not None and done % eval_every == 0
                if len(pending) == _SYNC_EVERY or b == steps_per_epoch - 1 or check:
                    first = done - len(pending)
                    losses = [float(v) for v in jax.device_get(pending)]
                    pending = []
                    for j, v in enumerate(losses):
                        if not math.isfinite(v):
                            s = first + j
                            raise NonFiniteLossError(
                                s, epoch + 1, s - step0 + 1, steps_per_epoch, v
                            )
                    history.step_loss.extend(losses)
                    if bar is not None:
                        bar.update(len(losses))
                        bar.set_postfix(epoch=epoch + 1, loss=f"{losses[-1]:.4f}")
                if check and b < steps_per_epoch - 1:
                    m = monitored_loss()
                    history.checks.append({"step": done, **m})
                    if target_loss is not None and m["loss"] <= target_loss:
                        history.stopped_at_step = done
                        break
            jax.block_until_ready(ts)
            history.epoch_seconds.append(time.perf_counter() - t0)
            history.epoch_steps.append(int(ts.step))

            t0 = time.perf_counter()
            tr = evaluate(net, ts.params, ts.state, x_host, y_host, batch_size=eval_batch_size)
            history.train_loss.append(tr["loss"])
            history.train_accuracy.append(tr["accuracy"])
            monitored = tr
            if has_val:
                va = evaluate(net, ts.params, ts.state, x_val, y_val, batch_size=eval_batch_size)
                history.val_loss.append(va["loss"])
                history.val_accuracy.append(va["accuracy"])
                monitored = va
                if history.best_val_accuracy is None or va["accuracy"] > history.best_val_accuracy:
                    history.best_epoch, history.best_val_accuracy = epoch + 1, va["accuracy"]
                    best_params, best_state = _copy(ts.params), _copy(ts.state)
            else:
                best_params, best_state = _copy(ts.params), _copy(ts.state)
            done = int(ts.step)
            checked = bool(history.checks) and history.checks[-1]["step"] == done
            if eval_every is not None and done % eval_every == 0 and not checked:
                history.checks.append({"step": done, **monitored})
            if (
                history.stopped_at_step is None
                and target_loss is not None
                and monitored["loss"] <= target_loss
            ):
                history.stopped_at_step = int(ts.step)
            history.eval_seconds.append(time.perf_counter() - t0)
            if bar is not None:
                bar.set_postfix(
                    epoch=epoch + 1,
                    loss=f"{history.step_loss[-1]:.4f}",
                    **({"val_acc": f"{history.val_accuracy[-1]:.4f}"} if has_val else {}),
                )
            if ckpt_path is not None:
                meta = {"config": config, "history": history.to_dict()}
                save_checkpoint(ckpt_path, Checkpoint(ts, best_params, best_state, meta))
            if history.stopped_at_step is not None:
                break
    finally:
        if bar is not None:
            bar.close()
    if best_params is None:
        best_params, best_state = _copy(ts.params), _copy(ts.state)
    return FitResult(
        train_state=ts, history=history, best_params=best_params, best_state=best_state
    )
