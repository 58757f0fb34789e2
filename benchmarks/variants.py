"""Cost of batch renormalization and ghost batches against plain batch norm, forward + backward.

    python -m benchmarks.variants --rounds 300           # (256, 1024), about a minute on 2 cores
    python -m benchmarks.variants --shape 4096 1024 --ghost 128

Each variant is ``batch_norm`` in training mode (closed-form backward, the running statistics
updated), jitted two ways:

- layer: ``jax.vjp`` of ``batch_norm`` with an upstream cotangent ``c``: ``y`` is written out and
  the backward starts from a given ``dy``, as for a layer inside a network.
- fused loss: ``jax.value_and_grad`` of ``sum(y * c)``: XLA may fuse the loss into the forward,
  so ``y`` is never written.

All variants run in one process, warmed up, interleaved round by round (so a busy machine slows
them alike), each call ended by ``block_until_ready``; the tables give the median per variant,
its quartiles, and its ratio to plain batch norm in the same form. Target: at most 1.10x.
"""

from __future__ import annotations

import argparse


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shape", type=int, nargs=2, default=[256, 1024], metavar=("N", "D"))
    p.add_argument(
        "--ghost", type=int, nargs="+", default=[32], help="virtual batch sizes (default: 32)"
    )
    p.add_argument("--rounds", type=int, default=200, help="timed calls per variant and form")
    p.add_argument("--warmup", type=int, default=20)
    return p.parse_args(argv)


def variants(ghost_sizes):
    out = {"plain BN": {}, "renorm": {"renorm": True}}
    for v in ghost_sizes:
        out[f"ghost {v}"] = {"virtual_batch_size": v}
    for v in ghost_sizes:
        out[f"renorm + ghost {v}"] = {"renorm": True, "virtual_batch_size": v}
    return out


def make_layer(kw, state):
    import jax
    import jax.numpy as jnp

    import jaxbn

    def step(x, gamma, beta, c):
        def f(x, gamma, beta):
            return jaxbn.batch_norm(x, gamma, beta, state, training=True, **kw)

        (y, new), vjp = jax.vjp(f, x, gamma, beta)
        return y, new, vjp((c, jax.tree.map(jnp.zeros_like, new)))

    return jax.jit(step)


def make_loss(kw, state):
    import jax
    import jax.numpy as jnp

    import jaxbn

    def loss(x, gamma, beta, c):
        y, new = jaxbn.batch_norm(x, gamma, beta, state, training=True, **kw)
        return jnp.sum(y * c), new

    return jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True))


def main(argv=None):
    args = parse_args(argv)
    import jax
    import jax.numpy as jnp
    import numpy as np

    import jaxbn
    from benchmarks.machine import busy, busy_note
    from benchmarks.timing import time_interleaved

    n, d = args.shape
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(1.0, 2.0, (n, d)), jnp.float32)
    c = jnp.asarray(rng.normal(size=(n, d)), jnp.float32)
    gamma, beta = jnp.ones(d), jnp.zeros(d)
    state = jaxbn.batch_norm_state(d)
    forms = {"layer": make_layer, "fused loss": make_loss}
    names = list(variants(args.ghost))
    fns = {}
    for form, make in forms.items():
        for name, kw in variants(args.ghost).items():
            fn = make(kw, state)
            fns[f"{form}: {name}"] = lambda fn=fn: fn(x, gamma, beta, c)
    reason = busy()
    times = time_interleaved(
        fns,
        warmup=args.warmup,
        min_runs=args.rounds,
        max_runs=args.rounds,
        progress="variants",
    )
    print(
        f"batch_norm forward + backward at ({n}, {d}), float32, {jax.default_backend()}, "
        f"median of {args.rounds} interleaved calls each"
    )
    for line in busy_note(reason):
        print(line)
    for form in forms:
        base = times[f"{form}: plain BN"].median
        print(f"\n{form}\n")
        print("| variant | median (us) | quartiles (us) | ratio to plain BN |")
        print("| --- | ---: | ---: | ---: |")
        for name in names:
            t = times[f"{form}: {name}"]
            print(
                f"| {name} | {t.median * 1e6:.0f} | {t.q25 * 1e6:.0f}-{t.q75 * 1e6:.0f} | "
                f"{t.median / base:.2f}x |"
            )


if __name__ == "__main__":
    main()
