"""Converters between jaxbn nets and PyTorch / flax.linen models (optional: ``jaxbn[interop]``).

``jaxbn.interop.torch_module``, ``to_torch_state_dict`` and ``from_torch_state_dict`` live in
``jaxbn.interop.torch`` (needs PyTorch); ``flax_module``, ``to_flax_variables`` and
``from_flax_variables`` in ``jaxbn.interop.flax`` (needs flax). Each submodule is imported on first
use, so ``import jaxbn.interop`` works without either library.

How the settings map (jaxbn = flax.linen; PyTorch differs):

- momentum: jaxbn's and flax's ``momentum`` weight the OLD running value; PyTorch's weights the
  NEW batch value. jaxbn ``momentum=0.9`` == flax ``momentum=0.9`` == torch ``momentum=0.1``.
- running variance: jaxbn and flax update it with the biased batch variance (divide by m); PyTorch
  with the unbiased one (divide by m - 1). The converters copy the stored values unchanged, so
  evaluation-mode outputs agree exactly; training continued in PyTorch then tracks a variance
  larger by ``m / (m - 1)`` per update (m values per feature in a batch).
- eps: the same meaning everywhere (added to the variance); it is copied.
- ``count`` is PyTorch's ``num_batches_tracked``; flax keeps no count (0 when read back).
"""

from __future__ import annotations

import importlib

__all__ = [
    "flax_module",
    "from_flax_variables",
    "from_torch_state_dict",
    "to_flax_variables",
    "to_torch_state_dict",
    "torch_module",
]

_HOME = {
    "torch_module": "torch",
    "to_torch_state_dict": "torch",
    "from_torch_state_dict": "torch",
    "flax_module": "flax",
    "to_flax_variables": "flax",
    "from_flax_variables": "flax",
}


def __getattr__(name: str):
    if name in _HOME:
        module = importlib.import_module(f"jaxbn.interop.{_HOME[name]}")
        return getattr(module, name)
    raise AttributeError(f"module 'jaxbn.interop' has no attribute {name!r}")
