"""The record of a training run: per-step losses, per-epoch metrics, the best epoch."""

from __future__ import annotations

import dataclasses

__all__ = ["History"]


@dataclasses.dataclass
class History:
    """What a ``fit`` run recorded; JSON-serializable with ``to_dict`` / ``from_dict``.

    Attributes:
      step_loss: training loss (data + L2, training mode) of every step, in order.
      train_loss, train_accuracy: per epoch, on the whole training set in evaluation mode.
      val_loss, val_accuracy: per epoch, on the validation set (empty without one).
      epoch_steps: ``TrainState.step`` at the end of each epoch.
      epoch_seconds: wall time of each epoch's training steps (the first includes compilation).
      eval_seconds: wall time of each epoch's evaluation. These two are the only fields that
        differ between two identical runs.
      checks: mid-epoch evaluations (``eval_every``): ``{"step", "loss", "accuracy"}`` dicts on
        the monitored set (validation if given, else training).
      best_epoch: the epoch (from 1) with the highest validation accuracy so far; None without
        validation data.
      best_val_accuracy: that accuracy.
      stopped_at_step: ``TrainState.step`` when ``target_loss`` was reached, else None.
    """

    step_loss: list[float] = dataclasses.field(default_factory=list)
    train_loss: list[float] = dataclasses.field(default_factory=list)
    train_accuracy: list[float] = dataclasses.field(default_factory=list)
    val_loss: list[float] = dataclasses.field(default_factory=list)
    val_accuracy: list[float] = dataclasses.field(default_factory=list)
    epoch_steps: list[int] = dataclasses.field(default_factory=list)
    epoch_seconds: list[float] = dataclasses.field(default_factory=list)
    eval_seconds: list[float] = dataclasses.field(default_factory=list)
    checks: list[dict] = dataclasses.field(default_factory=list)
    best_epoch: int | None = None
    best_val_accuracy: float | None = None
    stopped_at_step: int | None = None

    @property
    def epochs_done(self) -> int:
        """Number of epochs completed (or ended by ``target_loss``)."""
        return len(self.epoch_steps)

    def to_dict(self) -> dict:
        """Return a JSON-serializable dict of every field."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> History:
        """Rebuild a ``History`` from ``to_dict``'s output."""
        names = {f.name for f in dataclasses.fields(cls)}
        if set(d) != names:
            raise ValueError(f"history fields must be {sorted(names)}, got {sorted(d)}")
        return cls(**d)
