"""The machine a benchmark runs on: description, memory bandwidth, page faults.

    python -m benchmarks.machine --out-dir runs/machine      # about 10 s; --quick: 2 s

Measures STREAM-style copy and triad bandwidth twice: with NumPy on the host (one thread) and with
XLA on JAX's default device (all cores of a CPU, or a GPU's memory). The best of them is the bound
the peer benchmarks compare their effective bandwidth with: an op that must read x and dy and write
y and dx cannot beat (4 x its bytes) / bound seconds. Writes machine.json and machine.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.machine",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--out-dir", type=Path, default=Path("runs/machine"))
    p.add_argument("--bandwidth-mib", type=int, default=256, help="array size for STREAM")
    p.add_argument("--budget", type=float, default=5.0, help="seconds of timing")
    p.add_argument("--quick", action="store_true", help="smoke test: 4 MiB arrays, short budget")
    return p.parse_args(argv)


if __name__ == "__main__":
    parse_args()  # answer --help and reject bad flags before JAX loads

import contextlib
import ctypes
import ctypes.util
import importlib
import os
import platform
import resource

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.report import closing_lines, markdown_table, write_outputs
from benchmarks.timing import time_interleaved

HOST_KINDS = ("numpy copy", "numpy triad")
DEVICE_KINDS = ("xla copy", "xla triad")


def describe() -> dict:
    """CPU model, cores, platform, Python, and JAX's backend and device kind."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    device = jax.devices()[0]
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "backend": jax.default_backend(),
        "device": getattr(device, "device_kind", str(device)),
    }


def versions() -> dict[str, str]:
    """Versions of JAX, NumPy and of whichever peers are already imported."""
    out = {"jax": jax.__version__, "jaxlib": importlib.import_module("jaxlib").__version__}
    out["numpy"] = np.__version__
    for name in ("flax", "haiku", "equinox", "torch", "optax"):
        mod = sys.modules.get(name)
        if mod is not None:
            out[name] = getattr(mod, "__version__", "?")
    return out


def load_average() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def busy(factor: float = 1.5) -> str | None:
    """Why timings taken now cannot carry a verdict (other work holds the cores), or None.

    Busy means a 1-minute load average above ``factor`` x the number of cores, measured before
    the benchmark itself starts.
    """
    load, cores = os.getloadavg()[0], os.cpu_count() or 1
    return f"busy machine: load {load:.1f} on {cores} cores" if load > factor * cores else None


def busy_note(reason: str | None) -> list[str]:
    """The note a report carries when ``busy()`` gave a reason: [] otherwise."""
    return [f"{reason}: other work shared the cores, so timings get no verdict"] if reason else []


def keep_freed_pages() -> str:
    """Make glibc's malloc keep freed memory (no mmap for big blocks, no trimming of the heap).

    Then a fresh output buffer reuses pages that earlier calls already touched, and no call pays
    first-touch page faults: what is left is arithmetic and memory traffic. Process-wide, for a
    benchmark only (``--keep-pages``); the library never does this.

    Returns:
      A note saying what was done.
    """
    if not sys.platform.startswith("linux"):
        return "--keep-pages: only on Linux (glibc); ignored"
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    m_trim_threshold, m_mmap_max, m_arena_max = -1, -4, -8  # from <malloc.h>
    # One arena: XLA allocates from its worker threads, whose arenas shrink on their own.
    settings = ((m_mmap_max, 0), (m_trim_threshold, 2**30), (m_arena_max, 1))
    if any(libc.mallopt(option, value) != 1 for option, value in settings):
        return "--keep-pages: mallopt failed (not glibc?); ignored"
    return (
        "--keep-pages: glibc malloc keeps freed pages (like MALLOC_ARENA_MAX=1 MALLOC_MMAP_MAX_=0 "
        "MALLOC_TRIM_THRESHOLD_=1073741824), so no call pays first-touch page faults"
    )


def faults_per_call(call, calls: int = 5) -> float:
    """Host minor page faults per call of ``call``, in MiB of 4 KiB pages."""
    jax.block_until_ready(call())
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(calls):
        jax.block_until_ready(call())
    after = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    return (after - before) / calls * 4096 / 2**20


def stream_bandwidth(nbytes: int, budget_s: float, min_runs: int = 10) -> dict[str, float]:
    """STREAM-style copy and triad in GB/s (bytes moved / median time), host and device.

    NumPy (one host thread) writes into preallocated arrays; XLA (on JAX's default device) writes
    into a donated buffer, so neither pays for first-touch page faults of a fresh output.
    """
    n = nbytes // 4
    a, b, c = (np.full(n, v, np.float32) for v in (1.0, 2.0, 0.5))
    s = np.float32(3.0)

    def np_triad():  # two passes over a: 2 reads + 1 write, then 2 reads + 1 write
        np.multiply(c, s, out=a)
        np.add(a, b, out=a)

    # keep_unused: else jit prunes the unused dst, its donation is lost, and every call writes a
    # fresh buffer (whose page faults cost more than the copy itself).
    xla_copy = jax.jit(lambda dst, src: src * 1.5, donate_argnums=0, keep_unused=True)
    xla_triad = jax.jit(lambda dst, src, c: src + 3.0 * c, donate_argnums=0, keep_unused=True)
    bufs = {"copy": jnp.zeros(n, jnp.float32), "triad": jnp.zeros(n, jnp.float32)}
    jb, jc = jnp.asarray(b), jnp.asarray(c)

    def run_xla(kind):
        args = (jb,) if kind == "copy" else (jb, jc)
        bufs[kind] = (xla_copy if kind == "copy" else xla_triad)(bufs[kind], *args)
        return bufs[kind]

    t = time_interleaved(
        {
            "numpy copy": lambda: np.copyto(a, b),
            "numpy triad": np_triad,
            "xla copy": lambda: run_xla("copy"),
            "xla triad": lambda: run_xla("triad"),
        },
        budget_s=budget_s,
        min_runs=min_runs,
        progress="STREAM bandwidth",
    )
    moved = {"numpy copy": 2, "numpy triad": 6, "xla copy": 2, "xla triad": 3}
    return {k: moved[k] * nbytes / t[k].median / 1e9 for k in t}


def bandwidth_bounds(bandwidth: dict[str, float], *, peak_gbps: float | None = None) -> dict:
    """The bound each competitor is held to, in GB/s: ``{"host": ..., "device": ...}``.

    On a CPU backend host and device are the same memory: both are the best measurement. On an
    accelerator the device bound is the best XLA measurement, or ``peak_gbps`` (a vendor figure)
    when given; the host bound is NumPy's.
    """
    if jax.default_backend() == "cpu":
        best = max(bandwidth.values())
        device = host = best
    else:
        host = max(bandwidth[k] for k in HOST_KINDS)
        device = max(bandwidth[k] for k in DEVICE_KINDS)
    if peak_gbps is not None:
        device = peak_gbps
    return {"host": host, "device": device}


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.quick:
        args.bandwidth_mib, args.budget = 4, 0.2
    info = {"machine": describe(), "versions": versions(), "load_before": load_average()}
    bandwidth = stream_bandwidth(args.bandwidth_mib * 2**20, args.budget, 3 if args.quick else 10)
    info |= {"bandwidth_GBps": bandwidth, "bounds_GBps": bandwidth_bounds(bandwidth)}
    m = info["machine"]
    text = (
        f"# Machine\n\n{m['cpu']}, {m['cores']} cores, {m['platform']}; JAX backend "
        f"{m['backend']} ({m['device']}); load average {info['load_before']}.\n\n"
        f"STREAM-style bandwidth ({args.bandwidth_mib} MiB arrays):\n\n"
        + markdown_table(["", "GB/s"], [[k, f"{v:.1f}"] for k, v in bandwidth.items()])
    )
    print(text, flush=True)
    print(closing_lines(write_outputs(args.out_dir, {"machine.json": info, "machine.md": text})))
    return info


if __name__ == "__main__":
    main()
