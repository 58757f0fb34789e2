"""The training loop: epochs of minibatch steps, validation, history, checkpoints and resume.

Determinism: the batches of epoch ``e`` come from ``numpy.random.default_rng([seed, e])``, the
initial parameters and dropout keys from ``jax.random.key(seed)``; the same call with the same
seed gives the same history and parameters bit for bit, and a run resumed from the checkpoint of
epoch ``k`` reproduces the uninterrupted run exactly (on the same machine and software).

``fit`` runs four stages: ``make_plan`` (``plan.py``) checks the arguments and fixes the run's
static facts, ``_start`` builds or resumes the train state, then per epoch ``_train_epoch`` takes
the steps and ``_close_epoch`` evaluates, keeps the best parameters and writes the checkpoint.
"""

from __future__ import annotations

import math
import os
import time
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh

from jaxbn import _checks, parallel
from jaxbn.nn import FullyConnectedNet
from jaxbn.train.checkpoint import (
    Checkpoint,
    CheckpointError,
    check_checkpoint_path,
    load_checkpoint,
    save_checkpoint,
)
from jaxbn.train.evaluation import evaluate
from jaxbn.train.history import History
from jaxbn.train.nonfinite import NonFiniteLossError
from jaxbn.train.plan import CHECKPOINT_NAME, SAMPLINGS, Plan, epoch_order, make_plan
from jaxbn.train.step import (
    TrainState,
    check_params_shapes,
    check_schedule,
    compiled_init,
    indexed_step,
    indexed_step_runner,
    net_input,
)

__all__ = ["CHECKPOINT_NAME", "SAMPLINGS", "FitResult", "NonFiniteLossError", "fit"]

_SYNC_EVERY = 100  # steps between host syncs (progress bar, NaN check)


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


class _Best(NamedTuple):
    params: Any
    state: Any


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
        so the run matches the single-device one up to float round-off. The mesh may span
        several processes (``jax.distributed.initialize``): every process then calls ``fit``
        with the same arguments and holds the whole training set (each fills its own devices,
        nothing is gathered); process 0 alone shows progress and writes the checkpoint (the
        processes must share ``checkpoint_dir``'s filesystem), and the others wait for it. When
        each process holds only its part of the data, loop over ``parallel.process_batch`` and
        ``make_train_step(net, optimizer, mesh=mesh)`` yourself.
      renorm_schedule: None, or a function of ``TrainState.step`` returning ``(rmax, dmax)``
        for a renorm net (see ``jaxbn.train_step_fn``).

    Returns:
      A ``FitResult(train_state, history, best_params, best_state)``.

    Raises:
      NonFiniteLossError: the training loss became NaN or Inf (names the first such step), or the
        end-of-epoch evaluation did (the epoch's last update diverged); raised before that
        epoch's checkpoint is written.
      ValueError, TypeError: invalid arguments (naming the argument and the value received):
        NaN/Inf in ``x_train``/``x_val`` (with the first bad index), labels out of range,
        ``target_loss=nan``, ``batch_size=1`` with batch norm, a ``train_state`` of another net.
      CheckpointError: (a ``ValueError``) an unreadable or corrupt checkpoint, or one written by
        a different run.
      OSError: ``checkpoint_dir`` cannot be created or written to (checked before training).
    """
    net, optimizer = _checks.net(net), _checks.optimizer(optimizer)
    l2 = _checks.nonneg_finite("l2", l2)
    renorm_schedule = check_schedule(renorm_schedule)
    plan = make_plan(
        net,
        x_train,
        y_train,
        x_val,
        y_val,
        epochs=epochs,
        batch_size=batch_size,
        seed=seed,
        l2=l2,
        sampling=sampling,
        target_loss=target_loss,
        eval_every=eval_every,
        eval_batch_size=eval_batch_size,
        checkpoint_dir=checkpoint_dir,
        resume=resume,
    )
    ts, history, best = _start(plan, net, optimizer, train_state, resume)

    run_step = indexed_step_runner(net, optimizer, l2, renorm_schedule)
    x_dev, y_dev = jnp.asarray(plan.x_host), jnp.asarray(plan.y_host.astype(np.int32))
    if mesh is not None:
        step = partial(indexed_step, net, optimizer, l2, schedule=renorm_schedule)
        run_step = parallel.indexed_step_runner(step, mesh)
        ts, x_dev, y_dev = parallel.replicate(mesh, (ts, plan.x_host, plan.y_host.astype(np.int32)))

    start_epoch = history.epochs_done if history.stopped_at_step is None else plan.epochs
    # A target loss may stop the run at any check: then no total (a step count), not the maximum.
    total = None if plan.target_loss is not None else plan.epochs * plan.steps_per_epoch
    bar = _make_bar(
        progress and parallel.is_main_process(),
        total,
        min(start_epoch, plan.epochs) * plan.steps_per_epoch,
    )
    try:
        for epoch in range(start_epoch, plan.epochs):
            ts = _train_epoch(plan, net, ts, run_step, x_dev, y_dev, epoch, history, bar)
            best = _close_epoch(plan, net, ts, epoch, history, best, bar)
            if history.stopped_at_step is not None:
                break
    finally:
        if bar is not None:
            bar.close()
    if best.params is None:
        best = _Best(_copy(ts.params), _copy(ts.state))
    return FitResult(
        train_state=ts, history=history, best_params=best.params, best_state=best.state
    )


def _start(plan: Plan, net, optimizer, train_state, resume: bool):
    """The initial (or given, or resumed) train state, history and best parameters."""
    if train_state is None:
        input_dim = net_input(net, plan.x_host.shape[1:])
        ts = compiled_init(net, optimizer, jax.random.key(plan.seed), input_dim)
    else:
        if not isinstance(train_state, TrainState):
            raise TypeError(f"train_state must be a TrainState, got {type(train_state).__name__}")
        input_dim = net_input(net, plan.x_host.shape[1:])
        check_params_shapes(net, train_state.params, train_state.state, input_dim, "train_state.")
        ts = _copy(train_state)
    history, best = History(), _Best(None, None)
    if plan.ckpt_path is not None:
        check_checkpoint_path(plan.ckpt_path)  # before any training: writable, no stale temps
    if resume and plan.ckpt_path is not None and os.path.exists(plan.ckpt_path):
        ckpt = load_checkpoint(plan.ckpt_path, ts)
        saved = ckpt.meta["config"]
        diff = sorted(
            k for k in set(plan.config) | set(saved) if plan.config.get(k) != saved.get(k)
        )
        if diff:
            detail = ", ".join(
                f"{k}: checkpoint {saved.get(k)!r}, now {plan.config.get(k)!r}" for k in diff
            )
            raise CheckpointError(
                f"checkpoint {plan.ckpt_path!r} was written by a different run ({detail})"
            )
        ts, best = ckpt.train_state, _Best(ckpt.best_params, ckpt.best_state)
        history = History.from_dict(ckpt.meta["history"])
    return ts, history, best


def _monitored(plan: Plan, net, ts) -> dict[str, float]:
    """Evaluate the monitored set: the validation set, or the training set without one."""
    x, y = plan.val if plan.val is not None else (plan.x_host, plan.y_host)
    params, state = parallel.first_replica((ts.params, ts.state))
    return evaluate(net, params, state, x, y, batch_size=plan.eval_batch_size)


def _train_epoch(plan: Plan, net, ts, run_step, x_dev, y_dev, epoch, history, bar):
    """Take one epoch's steps (stopping early at ``target_loss``); return the new train state."""
    steps = plan.steps_per_epoch
    order, last_real = epoch_order(
        plan.seed, epoch, plan.x_host.shape[0], plan.batch_size, plan.sampling, steps
    )
    last_mask = None if last_real == plan.batch_size else np.arange(plan.batch_size) < last_real
    step0 = int(ts.step)
    pending: list = []
    t0 = time.perf_counter()
    for b in range(steps):
        mask = last_mask if b == steps - 1 else None
        ts, metrics = run_step(ts, x_dev, y_dev, order[b], mask)
        pending.append(metrics["loss"])
        done = step0 + b + 1
        check = plan.eval_every is not None and done % plan.eval_every == 0
        if len(pending) == _SYNC_EVERY or b == steps - 1 or check:
            first = done - len(pending)
            losses = [float(v) for v in jax.device_get(pending)]
            pending = []
            for j, v in enumerate(losses):
                if not math.isfinite(v):
                    s = first + j
                    raise NonFiniteLossError(s, epoch + 1, s - step0 + 1, steps, v)
            history.step_loss.extend(losses)
            if bar is not None:
                bar.update(len(losses))
                bar.set_postfix(epoch=epoch + 1, loss=f"{losses[-1]:.4f}")
        if check and b < steps - 1:
            m = _monitored(plan, net, ts)
            history.checks.append({"step": done, **m})
            if plan.target_loss is not None and m["loss"] <= plan.target_loss:
                history.stopped_at_step = done
                break
    jax.block_until_ready(ts)
    history.epoch_seconds.append(time.perf_counter() - t0)
    history.epoch_steps.append(int(ts.step))
    return ts


def _close_epoch(plan: Plan, net, ts, epoch, history, best: _Best, bar) -> _Best:
    """Evaluate after an epoch, keep the best parameters, check the target, save a checkpoint."""
    t0 = time.perf_counter()
    params, state = parallel.first_replica((ts.params, ts.state))
    tr = evaluate(net, params, state, plan.x_host, plan.y_host, batch_size=plan.eval_batch_size)
    _check_evaluated(tr, "training", epoch, ts, plan.steps_per_epoch)
    history.train_loss.append(tr["loss"])
    history.train_accuracy.append(tr["accuracy"])
    monitored = tr
    if plan.val is not None:
        va = _monitored(plan, net, ts)
        _check_evaluated(va, "validation", epoch, ts, plan.steps_per_epoch)
        history.val_loss.append(va["loss"])
        history.val_accuracy.append(va["accuracy"])
        monitored = va
        if history.best_val_accuracy is None or va["accuracy"] > history.best_val_accuracy:
            history.best_epoch, history.best_val_accuracy = epoch + 1, va["accuracy"]
            best = _Best(_copy(ts.params), _copy(ts.state))
    else:
        best = _Best(_copy(ts.params), _copy(ts.state))
    done = int(ts.step)
    checked = bool(history.checks) and history.checks[-1]["step"] == done
    if plan.eval_every is not None and done % plan.eval_every == 0 and not checked:
        history.checks.append({"step": done, **monitored})
    if (
        history.stopped_at_step is None
        and plan.target_loss is not None
        and monitored["loss"] <= plan.target_loss
    ):
        history.stopped_at_step = done
    history.eval_seconds.append(time.perf_counter() - t0)
    if bar is not None:
        val_acc = {} if plan.val is None else {"val_acc": f"{history.val_accuracy[-1]:.4f}"}
        bar.set_postfix(epoch=epoch + 1, loss=f"{history.step_loss[-1]:.4f}", **val_acc)
    if plan.ckpt_path is not None:
        meta = {"config": plan.config, "history": history.to_dict()}
        ts_1, params_1, state_1 = parallel.first_replica((ts, best.params, best.state))
        ckpt = Checkpoint(ts_1, params_1, state_1, meta)
        parallel.run_on_main_process(
            partial(save_checkpoint, plan.ckpt_path, ckpt), name=f"checkpoint {int(ts.step)}"
        )
    return best


_copy = parallel.copy_tree  # new buffers (also for global arrays of a multi-process mesh)


def _check_evaluated(metrics, evaluated, epoch, ts, steps_per_epoch) -> None:
    """Raise if an end-of-epoch loss is not finite (the inputs were checked finite up front)."""
    if not math.isfinite(metrics["loss"]):
        step = int(ts.step)
        raise NonFiniteLossError(
            step, epoch + 1, steps_per_epoch, steps_per_epoch, metrics["loss"], evaluated
        )


def _make_bar(progress: bool, total: int | None, initial: int):
    if not progress:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:  # tqdm is optional: no bar without it
        return None
    return tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True)
