"""The static plan of a ``fit`` run: its checked arguments, configuration and batch order."""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
import os
from typing import NamedTuple

import numpy as np

from jaxbn import _checks

__all__ = ["CHECKPOINT_NAME", "SAMPLINGS", "Plan", "epoch_order", "make_plan"]

SAMPLINGS = ("shuffle", "random")
CHECKPOINT_NAME = "checkpoint.npz"


class Plan(NamedTuple):
    """The checked arguments and static facts of one ``fit`` run."""

    x_host: np.ndarray
    y_host: np.ndarray
    val: tuple[np.ndarray, np.ndarray] | None
    epochs: int
    batch_size: int
    eval_batch_size: int
    seed: int
    sampling: str
    target_loss: float | None
    eval_every: int | None
    steps_per_epoch: int
    config: dict
    ckpt_path: str | None


def make_plan(net, x_train, y_train, x_val, y_val, **a) -> Plan:
    """Check ``fit``'s arguments (raising the errors it documents) and fix the run's facts."""
    epochs = _checks.nonneg_int("epochs", a["epochs"])
    batch_size = _checks.positive_int("batch_size", a["batch_size"])
    eval_batch_size = _checks.positive_int("eval_batch_size", a["eval_batch_size"])
    seed = _checks.nonneg_int("seed", a["seed"], upper=2**32)
    sampling = _checks.one_of("sampling", a["sampling"], SAMPLINGS)
    target_loss = a["target_loss"]
    if target_loss is not None and (
        isinstance(target_loss, bool) or not isinstance(target_loss, numbers.Real)
    ):
        raise TypeError(f"target_loss must be a float or None, got {target_loss!r}")
    if target_loss is not None and math.isnan(target_loss):
        raise ValueError("target_loss must be a number or None, got nan (it would never stop)")
    eval_every = a["eval_every"]
    if eval_every is not None:
        eval_every = _checks.positive_int("eval_every", eval_every)
    resume, checkpoint_dir = a["resume"], a["checkpoint_dir"]
    if not isinstance(resume, bool):
        raise TypeError(f"resume must be a bool, got {resume!r}")
    if resume and checkpoint_dir is None:
        raise ValueError("resume=True needs a checkpoint_dir to resume from, got None")
    x_train, y_train = _checks.xy(x_train, y_train, "x_train", "y_train")
    x_host, y_host = np.asarray(x_train), np.asarray(y_train)
    n = x_host.shape[0]
    if n == 0:
        raise ValueError("x_train must hold at least one example, got 0")
    _checks.class_labels("y_train", y_host, net.num_classes)
    _checks.all_finite("x_train", x_host)
    if (x_val is None) != (y_val is None):
        raise ValueError("x_val and y_val must be given together (or neither)")
    val = None
    if x_val is not None:
        x_val, y_val = _checks.xy(x_val, y_val, "x_val", "y_val")
        val = (np.asarray(x_val), np.asarray(y_val))
        if val[0].shape[1:] != x_host.shape[1:]:
            raise ValueError(
                f"x_val rows have shape {val[0].shape[1:]}, x_train rows {x_host.shape[1:]}"
            )
        _checks.class_labels("y_val", val[1], net.num_classes)
        _checks.all_finite("x_val", val[0])
    if sampling == "random" and batch_size > n:
        raise ValueError(
            f"batch_size must be <= the {n} training examples with sampling='random', got "
            f"{batch_size}"
        )
    if batch_size == 1 and getattr(net, "normalization", None) == "batchnorm":
        raise ValueError(
            "batch_size must be >= 2 for a net with batch normalization (training-mode batch "
            "statistics need more than one example per batch), got 1"
        )
    steps_per_epoch = (
        math.ceil(n / batch_size) if sampling == "shuffle" else max(n // batch_size, 1)
    )
    config = {
        "net": dataclasses.asdict(net),
        "x_train_shape": list(x_host.shape),
        "n_val": None if val is None else int(val[0].shape[0]),
        "batch_size": batch_size,
        "sampling": sampling,
        "seed": seed,
        "l2": a["l2"],
        "target_loss": None if target_loss is None else float(target_loss),
        "eval_every": eval_every,
        "eval_batch_size": eval_batch_size,
    }
    return Plan(
        x_host=x_host,
        y_host=y_host,
        val=val,
        epochs=epochs,
        batch_size=batch_size,
        eval_batch_size=eval_batch_size,
        seed=seed,
        sampling=sampling,
        target_loss=None if target_loss is None else float(target_loss),
        eval_every=eval_every,
        steps_per_epoch=steps_per_epoch,
        config=json.loads(json.dumps(config)),  # as it reads back from a checkpoint
        ckpt_path=None if checkpoint_dir is None else os.path.join(checkpoint_dir, CHECKPOINT_NAME),
    )


def epoch_order(seed, epoch, n, batch_size, sampling, steps):
    """Row indices of each step of an epoch, ``(steps, batch_size)``, and the last batch's size."""
    rng = np.random.default_rng([seed, epoch])
    if sampling == "random":
        order = np.stack([rng.choice(n, batch_size, replace=False) for _ in range(steps)])
        return order.astype(np.int32), batch_size
    perm = rng.permutation(n)
    order = np.zeros(steps * batch_size, np.int64)
    order[:n] = perm
    return order.reshape(steps, batch_size).astype(np.int32), n - (steps - 1) * batch_size
