"""E4: closed-form vs staged vs autodiff backward of batch norm, side by side.

    python experiments/backward_speed.py --out-dir runs/backward_speed      # about 1-2 minutes

For each shape, times the jitted forward+backward (value_and_grad of sum(y * c)) of the three
`backward` variants of `jaxbn.batch_norm_train` in one process (warm-up, block_until_ready,
median of interleaved runs), reports the relative differences of dx, dgamma and dbeta between them
(float32 and float64), the speedups, the bytes kept between forward and backward (residuals) and
the compiled program's temporary memory. Writes config.json, results.json and results.md.

The course lab report (NumPy) gives: relative difference dx 7.5e-13, dgamma 0, dbeta 0; closed form
2.00x faster than the staged backward.
"""

from __future__ import annotations

import argparse
import platform
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import jaxbn
from jaxbn._io import atomic_write_text, write_json
from jaxbn.benchmark import compiled_memory, markdown_table, residual_bytes, time_interleaved

DEFAULT_SHAPES = ["100x500", "256x1024", "4096x1024", "nhwc:64x32x32x64"]


def parse_shape(text: str) -> tuple[tuple[int, ...], str]:
    """'256x1024' -> ((256, 1024), '(256, 1024)'); 'nhwc:64x32x32x64' -> NHWC shape."""
    layout, _, dims = text.rpartition(":")
    shape = tuple(int(d) for d in dims.split("x"))
    label = f"{layout.upper()} {shape}" if layout else str(shape)
    return shape, label


def rel_error(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(a) + np.abs(b)), 1e-8))


def make_problem(shape, dtype, seed):
    kx, kg, kb, kc = jax.random.split(jax.random.key(seed), 4)
    d = shape[-1]
    x = jax.random.normal(kx, shape, dtype)
    gamma = 1 + 0.1 * jax.random.normal(kg, (d,), dtype)
    beta = 0.1 * jax.random.normal(kb, (d,), dtype)
    c = jax.random.normal(kc, shape, dtype)
    return x, gamma, beta, c


def grad_fn(backward):
    def loss(x, gamma, beta, c):
        y, _, _ = jaxbn.batch_norm_train(x, gamma, beta, backward=backward)
        return jnp.sum(y * c)

    return jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))


def differences(shape, dtype, seed):
    """Relative differences of (dx, dgamma, dbeta): closed form vs staged and vs autodiff."""
    x, gamma, beta, c = make_problem(shape, dtype, seed)
    grads = {bw: grad_fn(bw)(x, gamma, beta, c)[1] for bw in jaxbn.BACKWARDS}
    out = {}
    for other in ("staged", "autodiff"):
        pairs = zip(("dx", "dgamma", "dbeta"), grads["closed_form"], grads[other], strict=True)
        out[other] = {name: rel_error(a, b) for name, a, b in pairs}
    return out


def measure(shape, seed, budget_s):
    x, gamma, beta, c = make_problem(shape, jnp.float32, seed)
    fns = {bw: grad_fn(bw) for bw in jaxbn.BACKWARDS}
    timings = time_interleaved(
        {bw: (lambda f=f: f(x, gamma, beta, c)) for bw, f in fns.items()}, budget_s=budget_s
    )
    memory = {}
    for bw in jaxbn.BACKWARDS:

        def fwd(x, gamma, beta, bw=bw):
            return jaxbn.batch_norm_train(x, gamma, beta, backward=bw)[0]

        memory[bw] = {
            "residuals": residual_bytes(fwd, x, gamma, beta),
            "compiled": compiled_memory(fns[bw], x, gamma, beta, c),
        }
    return timings, memory


def main(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--out-dir", type=Path, default=Path("runs/backward_speed"))
    p.add_argument(
        "--shapes", nargs="+", default=DEFAULT_SHAPES, help="e.g. 256x1024 nhwc:64x32x32x64"
    )
    p.add_argument("--budget", type=float, default=3.0, help="seconds of timing per shape")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    config = {
        "shapes": args.shapes,
        "budget_s": args.budget,
        "seed": args.seed,
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
        "machine": platform.platform(),
        "python": sys.version.split()[0],
    }
    write_json(args.out_dir / "config.json", config)

    results = []
    for text in args.shapes:
        shape, label = parse_shape(text)
        diff32 = differences(shape, jnp.float32, args.seed)
        with jax.enable_x64(True):
            diff64 = differences(shape, jnp.float64, args.seed)
        timings, memory = measure(shape, args.seed, args.budget)
        row = {
            "shape": label,
            "median_s": {bw: t.median for bw, t in timings.items()},
            "iqr_s": {bw: [t.q25, t.q75] for bw, t in timings.items()},
            "runs": {bw: t.runs for bw, t in timings.items()},
            "speedup_vs_staged": timings["staged"].median / timings["closed_form"].median,
            "speedup_vs_autodiff": timings["autodiff"].median / timings["closed_form"].median,
            "rel_diff_float32": diff32,
            "rel_diff_float64": diff64,
            "memory": memory,
            "input_bytes": int(jnp.zeros(shape, jnp.float32).nbytes),
        }
        results.append(row)
        print(
            f"{label:>24}  closed {row['median_s']['closed_form'] * 1e6:9.1f} us  "
            f"staged x{row['speedup_vs_staged']:.2f}  autodiff x{row['speedup_vs_autodiff']:.2f}  "
            f"f64 dx diff vs staged {diff64['staged']['dx']:.1e}",
            flush=True,
        )
    write_json(args.out_dir / "results.json", {"config": config, "results": results})
    atomic_write_text(args.out_dir / "results.md", render(results, config))
    print(f"wrote {args.out_dir / 'results.md'}")
    return results


def render(results, config) -> str:
    def us(s):
        return f"{s * 1e6:,.0f}"

    def mib(b):
        return f"{b / 2**20:.2f}"

    header = [
        "shape",
        "closed_form (us)",
        "staged (us)",
        "autodiff (us)",
        "closed vs staged",
        "closed vs autodiff",
        "new residuals closed / staged / autodiff (MiB)",
        "input (MiB)",
        "compiled temp closed / staged / autodiff (MiB)",
    ]
    rows = []
    for r in results:
        m = r["memory"]
        rows.append(
            [
                r["shape"],
                us(r["median_s"]["closed_form"]),
                us(r["median_s"]["staged"]),
                us(r["median_s"]["autodiff"]),
                f"{r['speedup_vs_staged']:.2f}x",
                f"{r['speedup_vs_autodiff']:.2f}x",
                " / ".join(mib(m[b]["residuals"]["new"]) for b in jaxbn.BACKWARDS),
                mib(r["input_bytes"]),
                " / ".join(mib(m[b]["compiled"].get("temp", 0)) for b in jaxbn.BACKWARDS),
            ]
        )
    diff_header = [
        "shape",
        "dtype",
        "dx vs staged",
        "dgamma vs staged",
        "dbeta vs staged",
        "dx vs autodiff",
        "dgamma vs autodiff",
        "dbeta vs autodiff",
    ]
    diff_rows = []
    for r in results:
        for dt in ("float32", "float64"):
            d = r[f"rel_diff_{dt}"]
            diff_rows.append(
                [r["shape"], dt]
                + [
                    f"{d[o][k]:.1e}"
                    for o in ("staged", "autodiff")
                    for k in ("dx", "dgamma", "dbeta")
                ]
            )
    return (
        f"# E4: batch-norm backward speed ({config['backend']}, jax {config['jax']})\n\n"
        "Jitted forward+backward, float32, median of interleaved runs. "
        "Speedup > 1: closed form faster.\n"
        "Residuals: bytes kept for the backward beyond the inputs themselves.\n\n"
        + markdown_table(header, rows)
        + "\nRelative differences (max |a-b| / max(|a|+|b|)) of the closed form "
        "against the others:\n\n" + markdown_table(diff_header, diff_rows)
    )


if __name__ == "__main__":
    main()
