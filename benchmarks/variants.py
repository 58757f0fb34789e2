"""Cost of batch renormalization and ghost batches against plain batch norm, forward + backward.

    python benchmarks/variants.py                      # (256, 1024), about a minute on 2 cores
    python benchmarks/variants.py --shape 4096 1024 --ghost 128

Each variant is one jitted function: ``batch_norm`` in training mode (closed-form backward, the
running statistics updated) and ``jax.grad`` of ``sum(y * c)`` with respect to x, gamma and
beta. All variants run in one process, warmed up, interleaved round by round (so a busy machine
slows them alike), each call ended by ``block_until_ready``; the table gives the median per
variant and its ratio to plain batch norm. Target: at most 1.10x.
"""

from __future__ import annotations

import argparse
import statistics
import time


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shape", type=int, nargs=2, default=[256, 1024], metavar=("N", "D"))
    p.add_argument("--ghost", type=int, default=32, help="virtual batch size")
    p.add_argument("--rounds", type=int, default=200, help="timed calls per variant")
    p.add_argument("--warmup", type=int, default=20)
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    import jax
    import jax.numpy as jnp
    import numpy as np

    import jaxbn

    n, d = args.shape
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(1.0, 2.0, (n, d)), jnp.float32)
    c = jnp.asarray(rng.normal(size=(n, d)), jnp.float32)
    gamma, beta = jnp.ones(d), jnp.zeros(d)
    state = jaxbn.batch_norm_state(d)
    variants = {
        "plain BN": {},
        "renorm": {"renorm": True},
        f"ghost {args.ghost}": {"virtual_batch_size": args.ghost},
        f"renorm + ghost {args.ghost}": {"renorm": True, "virtual_batch_size": args.ghost},
    }

    def make(kw):
        def loss(x, gamma, beta, state, c):
            y, new = jaxbn.batch_norm(x, gamma, beta, state, training=True, **kw)
            return jnp.sum(y * c), new

        return jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True))

    fns = {name: make(kw) for name, kw in variants.items()}
    for fn in fns.values():
        for _ in range(args.warmup):
            jax.block_until_ready(fn(x, gamma, beta, state, c))
    times = {name: [] for name in fns}
    for _ in range(args.rounds):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            jax.block_until_ready(fn(x, gamma, beta, state, c))
            times[name].append(time.perf_counter() - t0)
    base = statistics.median(times["plain BN"])
    print(
        f"batch_norm forward + backward at ({n}, {d}), float32, {jax.default_backend()}, "
        f"median of {args.rounds} interleaved calls\n"
    )
    print("| variant | median (us) | ratio to plain BN |")
    print("| --- | ---: | ---: |")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"| {name} | {med * 1e6:.0f} | {med / base:.2f}x |")


if __name__ == "__main__":
    main()
