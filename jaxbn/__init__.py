"""jaxbn: exact, fast, functional batch normalization for JAX."""

from jaxbn.dropout import dropout as dropout
from jaxbn.norm import BACKWARDS as BACKWARDS
from jaxbn.norm import BatchNormState as BatchNormState
from jaxbn.norm import batch_norm as batch_norm
from jaxbn.norm import batch_norm_state as batch_norm_state
from jaxbn.norm import batch_norm_train as batch_norm_train
from jaxbn.norm import layer_norm as layer_norm

__version__ = "0.1.0"

__all__ = [
    "BACKWARDS",
    "BatchNormState",
    "batch_norm",
    "batch_norm_state",
    "batch_norm_train",
    "dropout",
    "layer_norm",
]
