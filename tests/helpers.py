"""Numerical helpers shared by the tests: the course's relative error and central differences."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np


def rel_error(a, b) -> float:
    """max |a - b| / max(|a| + |b|, 1e-8), as the course material reports gradient checks."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(a) + np.abs(b)), 1e-8))


def jgrad(f, argnums=0, **kwargs):
    """jax.jit(jax.grad(...)): one compilation instead of one per eager op."""
    return jax.jit(jax.grad(f, argnums=argnums, **kwargs))


def run_worker(script, n_devices: int, timeout: int = 600) -> dict:
    """Run a test worker script with ``n_devices`` forced CPU devices; return its JSON report.

    The device count must be fixed before JAX starts, hence a subprocess. The worker prints one
    JSON object on its last line of output.
    """
    script = Path(script)
    env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={n_devices}"}
    env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(script.parents[1]), env.get("PYTHONPATH")])
    )
    proc = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=timeout
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def load_experiment(script):
    """Import an experiment script (experiments/*.py) by its path, as a module."""
    script = Path(script)
    spec = importlib.util.spec_from_file_location(script.stem, script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def central_differences(f, args, h=1e-6):
    """Gradients of the scalar ``f(*args)`` with respect to each of ``args`` by central differences.

    One entry at a time (all of an argument's entries batched by vmap). Traceable, for use inside
    a jitted function: every argument's differences then compile into one program, which calls
    with the same shapes reuse.
    """

    def one(i):
        x = args[i]
        eye = jnp.eye(x.size, dtype=x.dtype).reshape((x.size, *x.shape))
        f_batched = jax.vmap(lambda v: f(*args[:i], v, *args[i + 1 :]))
        plus = f_batched(x[None] + h * eye)
        minus = f_batched(x[None] - h * eye)
        return ((plus - minus) / (2 * h)).reshape(x.shape)

    return tuple(one(i) for i in range(len(args)))
