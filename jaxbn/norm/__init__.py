"""Batch normalization and layer normalization (transitional face: the split follows)."""

from jaxbn.norm._formulas import *  # noqa: F403
from jaxbn.norm._formulas import __all__ as __all__
