"""Training: the pure train step, evaluation, checkpoints, the run history and the fit loop.

Imports run one way: ``step`` <- ``evaluation`` <- ``checkpoint``/``history``/``plan`` <- ``fit``.
"""

from jaxbn.train.checkpoint import Checkpoint as Checkpoint
from jaxbn.train.checkpoint import CheckpointError as CheckpointError
from jaxbn.train.checkpoint import load_checkpoint as load_checkpoint
from jaxbn.train.checkpoint import save_checkpoint as save_checkpoint
from jaxbn.train.evaluation import evaluate as evaluate
from jaxbn.train.fit import FitResult as FitResult
from jaxbn.train.fit import fit as fit
from jaxbn.train.history import History as History
from jaxbn.train.nonfinite import NonFiniteLossError as NonFiniteLossError
from jaxbn.train.step import TrainState as TrainState
from jaxbn.train.step import compute_loss as compute_loss
from jaxbn.train.step import init_train_state as init_train_state
from jaxbn.train.step import make_train_step as make_train_step
from jaxbn.train.step import train_step_fn as train_step_fn
from jaxbn.train.transforms import batch_sum_norm_grads as batch_sum_norm_grads

__all__ = [
    "Checkpoint",
    "CheckpointError",
    "FitResult",
    "History",
    "NonFiniteLossError",
    "TrainState",
    "batch_sum_norm_grads",
    "compute_loss",
    "evaluate",
    "fit",
    "init_train_state",
    "load_checkpoint",
    "make_train_step",
    "save_checkpoint",
    "train_step_fn",
]
