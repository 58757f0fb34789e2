"""Batch normalization and layer normalization as pure functions with closed-form gradients.

``batch_norm`` (with explicit running statistics) and ``batch_norm_train`` (the stateless core
that also returns the batch statistics) live in ``batch_norm.py``, ``layer_norm`` in
``layer_norm.py``; every formula and both custom backwards are in ``_formulas.py`` (plain batch
norm, layer norm) and ``_variants.py`` (batch renormalization, ghost batches, the running
updates).
"""

from jaxbn.norm._formulas import BACKWARDS as BACKWARDS
from jaxbn.norm.batch_norm import RUNNING_VARS as RUNNING_VARS
from jaxbn.norm.batch_norm import BatchNormState as BatchNormState
from jaxbn.norm.batch_norm import batch_norm as batch_norm
from jaxbn.norm.batch_norm import batch_norm_state as batch_norm_state
from jaxbn.norm.batch_norm import batch_norm_train as batch_norm_train
from jaxbn.norm.layer_norm import layer_norm as layer_norm

__all__ = [
    "BACKWARDS",
    "RUNNING_VARS",
    "BatchNormState",
    "batch_norm",
    "batch_norm_state",
    "batch_norm_train",
    "layer_norm",
]
