"""Side-by-side timing and memory measurement of jitted JAX functions.

Absolute times on shared machines are noisy, so competitors are timed in one process, interleaved
round by round (each round runs every competitor once, in a rotating order), after warm-up, with
``block_until_ready``; the report is the median and the quartiles of each, and ratios between them.
Memory is read from XLA itself: the compiled program's scratch size (``memory_analysis``) and the
residuals a reverse-mode pass keeps (traced, not run).
"""

from __future__ import annotations

import re
import statistics
import time
from collections.abc import Callable, Mapping
from typing import NamedTuple

import jax
import numpy as np
from tqdm import tqdm

__all__ = [
    "Timing",
    "compiled_kernels",
    "compiled_memory",
    "count_kernels",
    "residual_bytes",
    "time_interleaved",
]


class Timing(NamedTuple):
    """Seconds per call of one competitor.

    Attributes:
      median: median over the timed rounds.
      q25, q75: quartiles (the spread).
      runs: number of timed calls.
    """

    median: float
    q25: float
    q75: float
    runs: int


def time_interleaved(
    fns: Mapping[str, Callable[[], object]],
    *,
    warmup: int = 3,
    min_runs: int = 10,
    max_runs: int = 1000,
    budget_s: float = 2.0,
    settle_s: float = 0.0,
    progress: str | None = None,
) -> dict[str, Timing]:
    """Time zero-argument callables side by side; each result is waited for with block_until_ready.

    Args:
      fns: name -> callable (already bound to its inputs, typically a jitted function). A callable
        whose work is not a JAX array (PyTorch on a GPU) must wait for that work itself.
      warmup: untimed calls of each before timing (compilation happens here).
      min_runs, max_runs: bounds on the number of timed rounds.
      budget_s: stop adding rounds once this much wall time has been spent timing (after min_runs).
      settle_s: if > 0, before each timed call sleep this long and then make one untimed call of
        the same callable. Use it when the competitors run on different thread pools (XLA,
        PyTorch's OpenMP, BLAS): a pool's workers spin for a while after their work ends, and
        without the pause they steal the cores from whoever runs next.
      progress: if given, a tqdm bar with this description counts the rounds (no total: the
        number of rounds depends on the budget).

    Returns:
      name -> Timing.
    """
    if not fns:
        raise ValueError("fns must name at least one callable, got an empty mapping")
    if min_runs < 1 or max_runs < min_runs:
        raise ValueError(f"need 1 <= min_runs <= max_runs, got {min_runs} and {max_runs}")
    names = list(fns)
    bar = tqdm(desc=progress, unit="round", leave=False, disable=None) if progress else None
    if bar is not None:
        bar.set_postfix_str("warm-up and compilation")
    for name in names:
        for _ in range(warmup):
            jax.block_until_ready(fns[name]())
    if bar is not None:
        bar.set_postfix_str(f"timing, budget {budget_s:g} s")
    samples: dict[str, list[float]] = {name: [] for name in names}
    start = time.perf_counter()
    rounds = 0
    while rounds < max_runs and (rounds < min_runs or time.perf_counter() - start < budget_s):
        order = names[rounds % len(names) :] + names[: rounds % len(names)]
        for name in order:
            if settle_s > 0:
                time.sleep(settle_s)
                jax.block_until_ready(fns[name]())
            t0 = time.perf_counter()
            jax.block_until_ready(fns[name]())
            samples[name].append(time.perf_counter() - t0)
        rounds += 1
        if bar is not None:
            bar.update()
    if bar is not None:
        bar.close()
    out = {}
    for name, s in samples.items():
        q25, q75 = np.percentile(s, [25, 75])
        out[name] = Timing(statistics.median(s), float(q25), float(q75), len(s))
    return out


def _compiled(fn: Callable, *args, **kwargs):
    jitted = fn if hasattr(fn, "lower") else jax.jit(fn)
    return jitted.lower(*args, **kwargs).compile()


def compiled_memory(fn: Callable, *args, **kwargs) -> dict[str, int]:
    """Byte sizes XLA reports for ``jax.jit(fn)`` compiled on these arguments.

    ``fn`` may already be jitted: its cached compilation is then reused.

    Returns:
      ``{"temp": ..., "output": ..., "argument": ...}`` (temp is the scratch memory the compiled
      program allocates beyond its arguments and outputs); empty if the backend does not say.
    """
    analysis = _compiled(fn, *args, **kwargs).memory_analysis()
    if analysis is None:
        return {}
    return {
        "temp": int(analysis.temp_size_in_bytes),
        "output": int(analysis.output_size_in_bytes),
        "argument": int(analysis.argument_size_in_bytes),
    }


_NOT_KERNELS = frozenset({"parameter", "constant", "tuple", "get-tuple-element", "bitcast"})


def count_kernels(hlo_text: str) -> int:
    """Kernels (fusions, library calls, copies...) in the entry computation of optimized HLO text.

    Parameters, constants, tuples and bitcasts launch nothing and are not counted. An op whose
    result is a tuple (a multi-output fusion) counts once.
    """
    entry = hlo_text[hlo_text.index("\nENTRY") :].split("\n}", 1)[0]
    pattern = r"^\s+(?:ROOT )?%\S+ = (?:\(.*?\)|\S+) ([\w-]+)\("
    ops = re.findall(pattern, entry, flags=re.MULTILINE)
    return sum(op not in _NOT_KERNELS for op in ops)


def compiled_kernels(fn: Callable, *args, **kwargs) -> int:
    """Number of kernels one call of ``jax.jit(fn)`` launches (see ``count_kernels``).

    Each launch costs a roughly fixed overhead, which dominates the run time of small shapes.
    ``fn`` may already be jitted.
    """
    return count_kernels(_compiled(fn, *args, **kwargs).as_text())


def residual_bytes(fn: Callable, *args: jax.Array) -> dict[str, int]:
    """Bytes a reverse-mode pass keeps between the forward and the backward of ``fn(*args)``.

    Residuals that are the inputs themselves cost no new memory and are counted apart. The count
    comes from tracing ``jax.vjp`` (nothing is computed or compiled): the residuals are the
    outputs of the traced forward that the backward closes over.

    Returns:
      ``{"new": bytes of residuals that are not inputs, "aliased_inputs": bytes of residuals that
      are the inputs, "largest_new": bytes of the largest new residual}``.
    """
    closed = jax.make_jaxpr(lambda *a: jax.vjp(fn, *a)[1])(*args)
    inputs = {id(v) for v in closed.jaxpr.invars}
    new, aliased, largest = 0, 0, 0
    for var in closed.jaxpr.outvars:
        aval = var.aval
        nbytes = int(np.prod(aval.shape)) * aval.dtype.itemsize if hasattr(aval, "shape") else 0
        if id(var) in inputs:
            aliased += nbytes
        else:
            new += nbytes
            largest = max(largest, nbytes)
    return {"new": new, "aliased_inputs": aliased, "largest_new": largest}
