"""E4: closed-form vs staged vs autodiff backward of batch norm, side by side.

    python experiments/backward_speed.py --out-dir runs/backward_speed   # about 45 s on 2 cores
    python experiments/backward_speed.py --shapes 256x1024 --budget 1   # about 10 s

Source: the CS231n assignment 2 lab report (NumPy) gives relative differences dx 7.5e-13,
dgamma 0, dbeta 0 between the two backwards, and the closed form 2.00x faster than the staged one.
Measured here (jax 0.10.2, 2 shared CPU cores, float32): closed form 1.3x to 3.0x faster than
staged and 1.5x to 4.6x faster than autodiff; float64 dx differences at most 2.5e-16.

For each shape, times the jitted forward+backward (value_and_grad of sum(y * c)) of the three
``backward`` variants of ``jaxbn.batch_norm_train`` in one process (interleaved runs, median),
reports the relative differences max|a-b| / max(|a|+|b|) of dx, dgamma and dbeta between them in
float32 and float64, the bytes kept between forward and backward beyond the inputs (residuals) and
the compiled program's temporary memory. Writes config.json, results.json and results.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

DEFAULT_SHAPES = ["100x500", "256x1024", "4096x1024", "nhwc:64x32x32x64"]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--out-dir", type=Path, default=Path("runs/backward_speed"))
    p.add_argument("--shapes", nargs="+", default=DEFAULT_SHAPES, help="e.g. 256x1024 nhwc:8x4x4x3")
    p.add_argument("--budget", type=float, default=3.0, help="seconds of timing per shape")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


if __name__ == "__main__":
    parse_args()  # answer --help and reject bad flags before JAX loads
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a file: find `benchmarks`

import platform

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

import jaxbn
from benchmarks.report import closing_lines, markdown_table, parse_shape, write_outputs
from benchmarks.timing import compiled_memory, residual_bytes, time_interleaved

BACKWARDS = tuple(jaxbn.BACKWARDS)  # closed_form, staged, autodiff


def rel_error(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(a) + np.abs(b)), 1e-8))


def make_problem(shape, dtype, seed):
    kx, kg, kb, kc = jax.random.split(jax.random.key(seed), 4)
    gamma = 1 + 0.1 * jax.random.normal(kg, shape[-1:], dtype)
    beta = 0.1 * jax.random.normal(kb, shape[-1:], dtype)
    return jax.random.normal(kx, shape, dtype), gamma, beta, jax.random.normal(kc, shape, dtype)


def grad_fn(backward):
    def loss(x, gamma, beta, c):
        return jnp.sum(jaxbn.batch_norm_train(x, gamma, beta, backward=backward)[0] * c)

    return jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))


def differences(problem) -> dict:
    """Relative differences of (dx, dgamma, dbeta): closed form vs staged and vs autodiff."""
    grads = {bw: grad_fn(bw)(*problem)[1] for bw in BACKWARDS}
    out = {}
    for other in BACKWARDS[1:]:
        pairs = zip(("dx", "dgamma", "dbeta"), grads["closed_form"], grads[other], strict=True)
        out[other] = {name: rel_error(a, b) for name, a, b in pairs}
    return out


def measure(text: str, args) -> dict:
    shape, label = parse_shape(text)
    problem = make_problem(shape, jnp.float32, args.seed)
    fns = {bw: grad_fn(bw) for bw in BACKWARDS}
    t = time_interleaved(
        {bw: (lambda f=f: f(*problem)) for bw, f in fns.items()}, budget_s=args.budget
    )
    with jax.enable_x64(True):
        diff64 = differences(make_problem(shape, jnp.float64, args.seed))

    def forward(bw):
        return lambda x, gamma, beta: jaxbn.batch_norm_train(x, gamma, beta, backward=bw)[0]

    return {
        "shape": label,
        "input_bytes": int(problem[0].nbytes),
        "median_s": {bw: t[bw].median for bw in BACKWARDS},
        "iqr_s": {bw: [t[bw].q25, t[bw].q75] for bw in BACKWARDS},
        "runs": {bw: t[bw].runs for bw in BACKWARDS},
        "speedup_vs_staged": t["staged"].median / t["closed_form"].median,
        "speedup_vs_autodiff": t["autodiff"].median / t["closed_form"].median,
        "rel_diff_float32": differences(problem),
        "rel_diff_float64": diff64,
        "residuals": {bw: residual_bytes(forward(bw), *problem[:3]) for bw in BACKWARDS},
        "compiled": {bw: compiled_memory(fns[bw], *problem) for bw in BACKWARDS},
    }


def render(results, config) -> str:
    def per_bw(r, f):
        return " / ".join(f(r, bw) for bw in BACKWARDS)

    rows = [
        [r["shape"], per_bw(r, lambda r, bw: f"{r['median_s'][bw] * 1e6:,.0f}"),
         f"{r['speedup_vs_staged']:.2f}x", f"{r['speedup_vs_autodiff']:.2f}x",
         per_bw(r, lambda r, bw: f"{r['residuals'][bw]['new'] / 2**20:.2f}"),
         f"{r['input_bytes'] / 2**20:.2f}",
         per_bw(r, lambda r, bw: f"{r['compiled'][bw].get('temp', 0) / 2**20:.2f}")]
        for r in results
    ]  # fmt: skip
    header = ["shape", "closed / staged / autodiff (us)", "closed vs staged", "closed vs autodiff"]
    header += ["new residuals (MiB)", "input (MiB)", "compiled temp (MiB)"]
    keys = [(o, k) for o in BACKWARDS[1:] for k in ("dx", "dgamma", "dbeta")]
    diff_rows = [
        [r["shape"], dt, *(f"{r[f'rel_diff_{dt}'][o][k]:.1e}" for o, k in keys)]
        for r in results
        for dt in ("float32", "float64")
    ]
    return (
        f"# E4: batch-norm backward speed ({config['backend']}, jax {config['jax']})\n\n"
        "Jitted forward+backward, float32, median of interleaved runs. Speedup > 1: closed form "
        "faster. Residuals: bytes kept for the backward beyond the inputs themselves.\n\n"
        + markdown_table(header, rows)
        + "\nRelative differences (max |a-b| / max(|a|+|b|)) of the closed form against the "
        "others:\n\n"
        + markdown_table(["shape", "dtype", *(f"{k} vs {o}" for o, k in keys)], diff_rows)
    )


def main(argv=None):
    args = parse_args(argv)
    for text in args.shapes:
        parse_shape(text)  # a bad shape fails now
    config = {"shapes": args.shapes, "budget_s": args.budget, "seed": args.seed}
    config |= {"jax": jax.__version__, "backend": jax.default_backend()}
    config |= {"machine": platform.platform(), "python": sys.version.split()[0]}
    results = []
    for text in tqdm(
        args.shapes, desc="compiling and timing 3 backwards", unit="shape", disable=None
    ):
        results.append(r := measure(text, args))
        tqdm.write(
            f"{r['shape']:>24}  closed {r['median_s']['closed_form'] * 1e6:9.1f} us  "
            f"staged x{r['speedup_vs_staged']:.2f}  autodiff x{r['speedup_vs_autodiff']:.2f}  "
            f"f64 dx diff vs staged {r['rel_diff_float64']['staged']['dx']:.1e}"
        )
    files = {"config.json": config, "results.json": {"config": config, "results": results}}
    files["results.md"] = render(results, config)
    print(closing_lines(write_outputs(args.out_dir, files)))
    return results


if __name__ == "__main__":
    main()
