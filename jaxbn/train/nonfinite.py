"""The error ``fit`` raises when training diverges."""

from __future__ import annotations

__all__ = ["NonFiniteLossError"]


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or Inf.

    Raised either by a step's loss or, when the last update of an epoch diverged, by the
    end-of-epoch evaluation (``evaluated`` names the set: "training" or "validation"); in both
    cases before that epoch's checkpoint is written, so the last good checkpoint stays.

    Attributes:
      step: the ``TrainState.step`` value of the first step whose loss was not finite (0-based);
        for an end-of-epoch evaluation, the number of steps taken (the state evaluated).
      epoch: its epoch, counting from 1.
      batch: its batch within the epoch, counting from 1.
      loss: the offending value.
      evaluated: None for a step's loss, else the evaluated set.
    """

    def __init__(
        self,
        step: int,
        epoch: int,
        batch: int,
        steps_per_epoch: int,
        loss: float,
        evaluated: str | None = None,
    ):
        self.step, self.epoch, self.batch, self.loss = step, epoch, batch, loss
        self.evaluated = evaluated
        self._args = (step, epoch, batch, steps_per_epoch, loss, evaluated)
        if evaluated is None:
            where = (
                f"the training loss became {loss} at step {step} (epoch {epoch}, batch {batch} "
                f"of {steps_per_epoch}; steps count from 0 like TrainState.step)"
            )
        else:
            where = (
                f"the {evaluated} loss at the end of epoch {epoch} (after {step} steps) is "
                f"{loss}: the epoch's last update diverged; no checkpoint was written for it"
            )
        super().__init__(
            f"{where}. Check the inputs for NaN/Inf or lower the learning rate or the weight scale."
        )

    def __reduce__(self):
        return type(self), self._args
