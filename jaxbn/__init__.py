"""jaxbn: exact, fast, functional batch normalization for JAX."""

from jaxbn import data as data
from jaxbn import parallel as parallel
from jaxbn.convnet import ConvNet as ConvNet
from jaxbn.dropout import dropout as dropout
from jaxbn.fold import fold_batch_norm as fold_batch_norm
from jaxbn.fold import fold_net as fold_net
from jaxbn.initializers import fixed_std_normal as fixed_std_normal
from jaxbn.initializers import he_normal as he_normal
from jaxbn.initializers import init_std as init_std
from jaxbn.initializers import xavier_normal as xavier_normal
from jaxbn.losses import accuracy as accuracy
from jaxbn.losses import l2_penalty as l2_penalty
from jaxbn.losses import softmax_cross_entropy as softmax_cross_entropy
from jaxbn.nn import FullyConnectedNet as FullyConnectedNet
from jaxbn.norm import BACKWARDS as BACKWARDS
from jaxbn.norm import BatchNormState as BatchNormState
from jaxbn.norm import batch_norm as batch_norm
from jaxbn.norm import batch_norm_state as batch_norm_state
from jaxbn.norm import batch_norm_train as batch_norm_train
from jaxbn.norm import layer_norm as layer_norm
from jaxbn.recalibrate import population_statistics as population_statistics
from jaxbn.recalibrate import recalibrate as recalibrate
from jaxbn.train import Checkpoint as Checkpoint
from jaxbn.train import CheckpointError as CheckpointError
from jaxbn.train import FitResult as FitResult
from jaxbn.train import History as History
from jaxbn.train import NonFiniteLossError as NonFiniteLossError
from jaxbn.train import TrainState as TrainState
from jaxbn.train import compute_loss as compute_loss
from jaxbn.train import evaluate as evaluate
from jaxbn.train import fit as fit
from jaxbn.train import init_train_state as init_train_state
from jaxbn.train import load_checkpoint as load_checkpoint
from jaxbn.train import make_train_step as make_train_step
from jaxbn.train import save_checkpoint as save_checkpoint
from jaxbn.train import train_step_fn as train_step_fn

__version__ = "0.1.0"

__all__ = [
    "BACKWARDS",
    "BatchNormState",
    "Checkpoint",
    "CheckpointError",
    "ConvNet",
    "FitResult",
    "FullyConnectedNet",
    "History",
    "NonFiniteLossError",
    "TrainState",
    "accuracy",
    "batch_norm",
    "batch_norm_state",
    "batch_norm_train",
    "compute_loss",
    "data",
    "dropout",
    "evaluate",
    "fit",
    "fixed_std_normal",
    "fold_batch_norm",
    "fold_net",
    "he_normal",
    "init_std",
    "init_train_state",
    "l2_penalty",
    "layer_norm",
    "load_checkpoint",
    "make_train_step",
    "parallel",
    "population_statistics",
    "recalibrate",
    "save_checkpoint",
    "softmax_cross_entropy",
    "train_step_fn",
    "xavier_normal",
]
