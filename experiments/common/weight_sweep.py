"""E1's pieces: its data, stacked initial parameters, and the two training protocols' draws and
programs (jaxbn's: shared weights and batches; the textbook code's: its own weights per net and
panel, its own batches per panel, 191 steps recorded after steps 1, 11, ..., 191)."""

from __future__ import annotations

import contextlib
import itertools

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental.compilation_cache import compilation_cache

import jaxbn
from jaxbn.data import load_dataset
from jaxbn.train import sweep


@contextlib.contextmanager
def compile_cache(path):
    """JAX's persistent compilation cache in ``path`` (None: off) inside the block, then as it was.

    Every program is cached, however quick to compile (the default skips those under 1 s)."""
    names = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs")
    before = [getattr(jax.config, n) for n in names]
    for name, value in zip(names, (None if path is None else str(path), 0.0), strict=True):
        jax.config.update(name, value)
    compilation_cache.reset_cache()  # the cache reads its directory once: start it afresh
    try:
        yield
    finally:
        for name, value in zip(names, before, strict=True):
            jax.config.update(name, value)
        compilation_cache.reset_cache()


def load_data(args):
    """Training images (N, D) float32 in [0, 1], int32 labels, and a sentence saying which."""
    name = args.dataset
    if name == "auto":
        name = "mnist" if args.data_dir is not None else "mnist_embedded"
    embedded = name in ("mnist_embedded", "digits")  # sorted by class: a seeded random subset
    ds = load_dataset(name, args.data_dir, val_size=0, test_size=0 if embedded else None,
                      seed=args.seed, n_train=args.n_train)  # fmt: skip
    if embedded:
        what = f"{args.n_train:,} images drawn at random (seed {args.seed}) from the {ds.source}"
        if args.dataset == "auto":
            what += ", the offline default; --data-dir DIR uses the first 1,000 of full MNIST"
    else:
        what = f"the first {args.n_train:,} training images of {name} ({ds.source})"
    return ds.x_train, ds.y_train, what


def init_params(net, stds, weights, input_dim: int, *, running_var: float = 1.0, dtype=None):
    """Stacked (params, state) of ``len(stds)`` nets: ``W = std * z`` with the host normals
    ``weights`` (per layer one (D_in, D_out) shared by every net, or (K, D_in, D_out), one per
    net), zero biases and beta, unit gamma, running mean 0 and var ``running_var``: ``net.init``
    with ``weight_init=std``, for every std at once."""
    dtype = np.float32 if dtype is None else dtype
    shapes = jax.eval_shape(lambda k: net.init(k, input_dim, dtype=dtype), jax.random.key(0))
    params_t, state_t = shapes
    n, s = len(stds), np.asarray(stds, dtype)[:, None, None]

    def fill(name, leaf):
        return (np.ones if name == "gamma" else np.zeros)((n, *leaf.shape), leaf.dtype)

    params = [{k: (s * (z if z.ndim == 3 else z[None])).astype(dtype) if k == "W"
               else fill(k, leaf) for k, leaf in layer.items()}
              for layer, z in zip(params_t, weights, strict=True)]  # fmt: skip
    state = [None if st is None else jaxbn.BatchNormState(
                 mean=fill("mean", st.mean), var=np.full((n, *st.var.shape), running_var,
                 st.var.dtype), count=fill("count", st.count)) for st in state_t]  # fmt: skip
    return params, state


def draws(rng, args, dims, nets, n_data):
    """Host draws of one seed: {net: per-layer normals} and the batch rows.

    jaxbn: one (D_in, D_out) normal per layer shared by both nets and all panels, and one batch
    sequence (E, T, B) shared by all. Textbook: each net and panel its own (K, D_in, D_out)
    normals and each panel its own (K, 191, B) sequence (both nets of a panel share it).
    """
    k, pairs = args.num_stds, list(itertools.pairwise(dims))
    if args.protocol == "textbook":
        weights = {n: [rng.standard_normal((k, *d)) for d in pairs] for n in nets}
        steps = 1 + args.epochs * args.steps_per_epoch
        return weights, rng.integers(0, n_data, (k, steps, args.batch_size), dtype=np.int32)
    shared = [rng.standard_normal(d, dtype=np.float32) for d in pairs]
    shape = (args.epochs, args.steps_per_epoch, args.batch_size)
    return dict.fromkeys(nets, shared), rng.integers(0, n_data, shape, dtype=np.int32)


def program(nets, opt, measure_fn, args):
    """The jitted ``(states, x, y, idx) -> {net: (states, out)}`` of both nets.

    jaxbn: ``sweep.make_sweep`` over ``idx`` (E, T, B). Textbook: step 1 on ``idx[:, 0]``, then
    ``make_sweep`` over the other 190 steps as (K, 19, 10, B): its measure before the first epoch
    is the textbook's point after step 1; ``out["loss"]`` holds steps 2..191.
    """
    runs = {n: sweep.make_sweep(net, opt, measure=measure_fn(net)) for n, net in nets.items()}
    steps = {n: jax.vmap(jaxbn.train_step_fn(net, opt)) for n, net in nets.items()}

    def textbook(name, states, x, y, idx):
        first, _ = steps[name](states, x[idx[:, 0]], y[idx[:, 0]])
        rest = jnp.reshape(idx[:, 1:], (idx.shape[0], args.epochs, args.steps_per_epoch, -1))
        return runs[name](first, x, y, rest)

    if args.protocol == "textbook":
        return jax.jit(lambda st, x, y, idx: {n: textbook(n, st[n], x, y, idx) for n in nets})
    return jax.jit(lambda st, x, y, idx: {n: runs[n](st[n], x, y, idx) for n in nets})
