"""Issue 5: jaxbn's batch norm against its peers, op by op and in a training step.

    pip install 'jaxbn[bench]' torch   # optional peers: flax, dm-haiku, equinox, PyTorch (CPU)
    python experiments/bench_peers.py --out-dir runs/bench_peers       # about 5 minutes, 2 cores
    python experiments/bench_peers.py --quick --out-dir /tmp/bench      # smoke test, seconds

Part 1 (the op): for each shape, the forward and backward of training-mode batch norm (y, the
running-statistics update, and dx, dgamma, dbeta for a fixed cotangent), float32, of jaxbn (each
``backward``), JAX autodiff of a plain five-line forward, flax.linen.BatchNorm, haiku.BatchNorm,
equinox.nn.BatchNorm, torch.nn.functional.batch_norm and a NumPy closed form, timed in one process,
interleaved round by round (``jaxbn.benchmark.time_interleaved``). Reported: median and quartiles,
the ratio to jaxbn's closed form, minor page faults per call, and for the JAX ones the compiled
program's temporary memory and the residuals kept between forward and backward. Each time is also
turned into an effective bandwidth, (read x + read the cotangent + write y + write dx) / time,
compared with a STREAM-style copy and triad measured in the same run.

Part 2 (a training step): steps/s of one SGD step of the 784-100x5-10 BN/ReLU net at batch 100,
jaxbn vs flax.linen + optax vs PyTorch eager vs a textbook NumPy implementation, and the wall time
of E1's whole sweep (``experiments/weight_init_sweep.py``) when that script exists.

Peers that are not installed are skipped with a note. Writes config.json, results.json and
results.md to --out-dir and prints the tables. The issue reports (2 cores, float32, medians):
PyTorch 130 us / 2.3 ms / 34 ms at (256, 1024) / (4096, 1024) / NHWC (64, 56, 56, 64); flax 227 us /
12.4 ms / 37 ms; a training step at ~1,950 steps/s in jitted JAX and flax, 680 in PyTorch eager.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import ctypes.util
import importlib
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from itertools import pairwise
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxbn
from jaxbn._io import atomic_write_text, write_json
from jaxbn.benchmark import (
    compiled_kernels,
    compiled_memory,
    markdown_table,
    residual_bytes,
    time_interleaved,
)

DEFAULT_SHAPES = ["100x100", "256x1024", "4096x1024", "nhwc:64x56x56x64"]
EPS = 1e-5
MOMENTUM = 0.9  # weight of the old running statistic (PyTorch's momentum=0.1)
REFERENCE = "jaxbn closed_form"
FLAX_MLP = "flax.linen + optax"


def _peer(name: str):
    """Import an optional peer; None (and the reason, via _MISSING) when it is not installed."""
    try:
        return importlib.import_module(name)
    except ImportError as e:
        _MISSING[name] = f"{name} not installed ({e.__class__.__name__}): skipped"
        return None


_MISSING: dict[str, str] = {}


def parse_shape(text: str) -> tuple[tuple[int, ...], str]:
    """'256x1024' -> ((256, 1024), '(256, 1024)'); 'nhwc:64x56x56x64' -> NHWC shape."""
    layout, _, dims = text.rpartition(":")
    shape = tuple(int(d) for d in dims.split("x"))
    label = f"{layout.upper()} {shape}" if layout else str(shape)
    return shape, label


def keep_freed_pages() -> str:
    """Make glibc's malloc keep freed memory (no mmap for big blocks, no trimming of the heap).

    Then a fresh output buffer reuses pages that earlier calls already touched, and no call pays
    first-touch page faults: what is left is arithmetic and memory traffic. Process-wide, for
    this benchmark only (``--keep-pages``); the library never does this.
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


def minor_faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


# --------------------------------------------------------------------------- memory bandwidth


def stream_bandwidth(nbytes: int, budget_s: float, min_runs: int = 10) -> dict[str, float]:
    """STREAM-style copy and triad in GB/s (bytes moved / median time).

    NumPy (one thread) writes into preallocated arrays; XLA (all cores) writes into a donated
    buffer, so neither pays for first-touch page faults of a fresh output.
    """
    n = nbytes // 4
    a, b, c = (np.full(n, v, np.float32) for v in (1.0, 2.0, 0.5))
    s = np.float32(3.0)

    def np_triad():
        np.multiply(c, s, out=a)
        np.add(a, b, out=a)

    # keep_unused: else jit prunes the unused dst, its donation is lost, and every call writes a
    # fresh buffer (whose page faults cost more than the copy itself).
    xla_copy = jax.jit(lambda dst, src: src * 1.5, donate_argnums=0, keep_unused=True)
    xla_triad = jax.jit(lambda dst, src, c: src + 3.0 * c, donate_argnums=0, keep_unused=True)
    bufs = {"copy": jnp.zeros(n, jnp.float32), "triad": jnp.zeros(n, jnp.float32)}
    jb, jc = jnp.asarray(b), jnp.asarray(c)

    def run_xla(kind):
        if kind == "copy":
            bufs[kind] = xla_copy(bufs[kind], jb)
        else:
            bufs[kind] = xla_triad(bufs[kind], jb, jc)
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
    )
    moved = {"numpy copy": 2, "numpy triad": 3, "xla copy": 2, "xla triad": 3}
    # np_triad makes two passes over a: 2 reads + 1 write, then 2 reads + 1 write.
    moved["numpy triad"] = 6
    return {k: moved[k] * nbytes / t[k].median / 1e9 for k in t}


# --------------------------------------------------------------------------- part 1: the op


class Problem(NamedTuple):
    x: jax.Array  # (..., C): features last
    gamma: jax.Array  # (C,)
    beta: jax.Array  # (C,)
    c: jax.Array  # cotangent of y, shaped like x


def make_problem(shape, seed) -> Problem:
    rng = np.random.default_rng(seed)  # NumPy draws: no compilation for the inputs
    d = shape[-1]
    return Problem(
        x=jnp.asarray(rng.standard_normal(shape, np.float32)),
        gamma=jnp.asarray(1 + 0.1 * rng.standard_normal(d, np.float32)),
        beta=jnp.asarray(0.1 * rng.standard_normal(d, np.float32)),
        c=jnp.asarray(rng.standard_normal(shape, np.float32)),
    )


class Competitor(NamedTuple):
    """One implementation of training-mode BN forward + backward, bound to its inputs."""

    call: Callable[[], object]  # one forward + backward
    jitted: Callable | None = None  # JAX only: the jitted function `call` calls ...
    jitted_args: tuple = ()  # ... and its arguments (for the compiled memory)
    forward: Callable | None = None  # JAX only: x, params -> y (for the residuals)
    forward_args: tuple = ()


def _vjp_step(forward):
    """forward(x, params, state) -> (y, new_state)  ==>  jitted (y, dx, dparams, new_state)."""

    def step(x, params, state, c):
        y, vjp, new_state = jax.vjp(lambda x, p: forward(x, p, state), x, params, has_aux=True)
        dx, dparams = vjp(c)
        return y, dx, dparams, new_state

    return step


def _jax_competitor(forward, params, state, p: Problem) -> Competitor:
    step = _vjp_step(forward)
    jitted = jax.jit(step)
    args = (p.x, params, state, p.c)
    return Competitor(
        call=lambda: jitted(*args),
        jitted=jitted,
        jitted_args=args,
        forward=lambda x, params: forward(x, params, state)[0],
        forward_args=(p.x, params),
    )


def jaxbn_competitor(p: Problem, backward: str) -> Competitor:
    def forward(x, params, state):
        return jaxbn.batch_norm(
            x, params[0], params[1], state, training=True, momentum=MOMENTUM, eps=EPS,
            backward=backward,
        )  # fmt: skip

    state = jaxbn.batch_norm_state(p.x.shape[-1])
    return _jax_competitor(forward, (p.gamma, p.beta), state, p)


def plain_jnp_competitor(p: Problem) -> Competitor:
    """The textbook forward in five lines of jnp, differentiated by JAX."""

    def forward(x, params, state):
        gamma, beta = params
        axes = tuple(range(x.ndim - 1))
        mean = jnp.mean(x, axes, keepdims=True)
        var = jnp.var(x, axes, keepdims=True)  # two-pass
        y = (x - mean) / jnp.sqrt(var + EPS) * gamma.reshape(mean.shape) + beta.reshape(mean.shape)
        mean, var = jax.lax.stop_gradient((mean.ravel(), var.ravel()))
        new_state = (
            MOMENTUM * state[0] + (1 - MOMENTUM) * mean,
            MOMENTUM * state[1] + (1 - MOMENTUM) * var,
        )
        return y, new_state

    d = p.x.shape[-1]
    return _jax_competitor(forward, (p.gamma, p.beta), (jnp.zeros(d), jnp.ones(d)), p)


def flax_competitor(p: Problem) -> Competitor | None:
    nn = _peer("flax.linen")
    if nn is None:
        return None
    # flax's default variance is E[x^2] - E[x]^2 (use_fast_variance=True): one pass, less exact.
    module = nn.BatchNorm(use_running_average=False, momentum=MOMENTUM, epsilon=EPS)
    variables = module.init(jax.random.key(0), p.x)
    params = {"scale": p.gamma, "bias": p.beta}

    def forward(x, params, batch_stats):
        y, updates = module.apply(
            {"params": params, "batch_stats": batch_stats}, x, mutable=["batch_stats"]
        )
        return y, updates["batch_stats"]

    return _jax_competitor(forward, params, variables["batch_stats"], p)


def haiku_competitor(p: Problem) -> Competitor | None:
    hk = _peer("haiku")
    if hk is None:
        return None
    # haiku's variance is E[x^2] - E[x]^2 as well.
    model = hk.transform_with_state(
        lambda x: hk.BatchNorm(True, True, decay_rate=MOMENTUM, eps=EPS)(x, is_training=True)
    )
    params, state = model.init(jax.random.key(0), p.x)
    params = jax.tree.map(lambda v, g: jnp.reshape(g, v.shape), params, {
        "batch_norm": {"offset": p.beta, "scale": p.gamma}
    })  # fmt: skip

    def forward(x, params, state):
        return model.apply(params, state, None, x)

    return _jax_competitor(forward, params, state, p)


def equinox_competitor(p: Problem) -> Competitor | None:
    eqx = _peer("equinox")
    if eqx is None:
        return None
    # equinox's BatchNorm sees one example at a time, channels first, under a named vmap.
    bn = eqx.nn.BatchNorm(
        p.x.shape[-1], axis_name="batch", eps=EPS, momentum=MOMENTUM, mode="batch"
    )
    state = eqx.nn.State(bn)

    def forward(x, params, state):
        layer = eqx.tree_at(lambda m: (m.weight, m.bias), bn, params)

        def one(xi, state):
            yi, state = layer(jnp.moveaxis(xi, -1, 0), state)
            return jnp.moveaxis(yi, 0, -1), state

        return jax.vmap(one, in_axes=(0, None), out_axes=(0, None), axis_name="batch")(x, state)

    return _jax_competitor(forward, (p.gamma, p.beta), state, p)


def torch_competitor(p: Problem) -> Competitor | None:
    torch = _peer("torch")
    if torch is None:
        return None
    d = p.x.shape[-1]

    def channels_last(a):
        # NHWC data is a channels-last (N, C, H, W) tensor for torch: the same bytes, no copy.
        t = torch.from_numpy(np.array(a))
        return t.permute(0, t.ndim - 1, *range(1, t.ndim - 1)) if t.ndim > 2 else t

    x = channels_last(p.x).requires_grad_(True)
    c = channels_last(p.c)
    w = torch.from_numpy(np.array(p.gamma)).requires_grad_(True)
    b = torch.from_numpy(np.array(p.beta)).requires_grad_(True)
    running_mean, running_var = torch.zeros(d), torch.ones(d)
    bn = torch.nn.functional.batch_norm

    def call():
        y = bn(x, running_mean, running_var, w, b, training=True, momentum=1 - MOMENTUM, eps=EPS)
        return y, torch.autograd.grad(y, (x, w, b), c)

    return Competitor(call=call)


def np_bn_forward(x, gamma, beta, running, eps=EPS, momentum=MOMENTUM):
    """Textbook closed-form batch norm on (M, C) arrays: y, the cache and new running stats."""
    mean = x.mean(0)
    xc = x - mean
    var = (xc * xc).mean(0)
    std = np.sqrt(var + eps)
    x_hat = xc / std
    y = gamma * x_hat + beta
    new = (
        momentum * running[0] + (1 - momentum) * mean,
        momentum * running[1] + (1 - momentum) * var,
    )
    return y, (x_hat, gamma, std), new


def np_bn_backward(dy, cache):
    """The closed-form ("alt") backward: dx, dgamma, dbeta."""
    x_hat, gamma, std = cache
    m = dy.shape[0]
    dbeta = dy.sum(0)
    dgamma = (dy * x_hat).sum(0)
    dx_hat = dy * gamma
    dx = (m * dx_hat - dx_hat.sum(0) - x_hat * (dx_hat * x_hat).sum(0)) / (m * std)
    return dx, dgamma, dbeta


def numpy_competitor(p: Problem) -> Competitor:
    d = p.x.shape[-1]
    x, c = np.array(p.x).reshape(-1, d), np.array(p.c).reshape(-1, d)
    gamma, beta, running = np.array(p.gamma), np.array(p.beta), (np.zeros(d), np.ones(d))

    def call():
        y, cache, _ = np_bn_forward(x, gamma, beta, running)
        return y, np_bn_backward(c, cache)

    return Competitor(call=call)


def op_competitors(p: Problem, peers: set[str]) -> dict[str, Competitor]:
    out = {f"jaxbn {bw}": jaxbn_competitor(p, bw) for bw in jaxbn.BACKWARDS}
    out["jax autodiff (plain jnp)"] = plain_jnp_competitor(p)
    makers = {
        "flax": ("flax.linen.BatchNorm", flax_competitor),
        "haiku": ("haiku.BatchNorm", haiku_competitor),
        "equinox": ("equinox.nn.BatchNorm", equinox_competitor),
        "torch": ("PyTorch (CPU kernel)", torch_competitor),
    }
    for key, (name, make) in makers.items():
        if key in peers and (comp := make(p)) is not None:
            out[name] = comp
    out["NumPy closed form"] = numpy_competitor(p)
    return out


def faults_per_call(call, calls: int = 5) -> float:
    """Minor page faults per call, in MiB of 4 KiB pages."""
    jax.block_until_ready(call())
    before = minor_faults()
    for _ in range(calls):
        jax.block_until_ready(call())
    return (minor_faults() - before) / calls * 4096 / 2**20


def bench_op(text: str, args, bandwidth: float) -> dict:
    shape, label = parse_shape(text)
    p = make_problem(shape, args.seed)
    comps = op_competitors(p, set(args.peers))
    timings = time_interleaved(
        {k: c.call for k, c in comps.items()},
        budget_s=args.budget,
        min_runs=args.min_runs,
        settle_s=args.settle,
    )
    ref = timings[REFERENCE].median
    moved = 4 * p.x.nbytes  # read x and the cotangent, write y and dx
    rows = {}
    for name, comp in comps.items():
        t = timings[name]
        row = {
            "median_s": t.median,
            "q25_s": t.q25,
            "q75_s": t.q75,
            "runs": t.runs,
            "vs_jaxbn": t.median / ref,
            "effective_GBps": moved / t.median / 1e9,
            "fraction_of_stream": moved / t.median / 1e9 / bandwidth,
            "page_faults_MiB_per_call": faults_per_call(comp.call),
        }
        if comp.jitted is not None:
            row["compiled"] = compiled_memory(comp.jitted, *comp.jitted_args)
            row["kernels"] = compiled_kernels(comp.jitted, *comp.jitted_args)
            row["residuals"] = residual_bytes(comp.forward, *comp.forward_args)
        rows[name] = row
    return {
        "shape": label,
        "input_bytes": int(p.x.nbytes),
        "features": int(shape[-1]),
        "competitors": rows,
    }


# --------------------------------------------------------------------------- part 2: MLP step

HIDDEN = (100,) * 5
INPUT_DIM, NUM_CLASSES, BATCH, LR = 784, 10, 100, 0.01


def mlp_batches(seed: int, count: int):
    rng = np.random.default_rng(seed)
    xs = rng.standard_normal((count, BATCH, INPUT_DIM), dtype=np.float32)
    ys = rng.integers(0, NUM_CLASSES, (count, BATCH))
    return xs, ys


def _local_jaxbn_mlp(seed: int):
    """The 784-100x5-10 BN net built directly from jaxbn.batch_norm + optax (used until
    jaxbn.make_train_step exists): returns (train_state, un-jitted step)."""
    opt = optax.sgd(LR)
    rng = np.random.default_rng(seed)
    params, state = [], []
    for i, (d_in, d_out) in enumerate(pairwise((INPUT_DIM, *HIDDEN, NUM_CLASSES))):
        w = rng.standard_normal((d_in, d_out), np.float32) * np.float32(np.sqrt(2 / d_in))
        layer = {"W": jnp.asarray(w), "b": jnp.zeros(d_out)}
        if i < len(HIDDEN):
            layer |= {"gamma": jnp.ones(d_out), "beta": jnp.zeros(d_out)}
            state.append(jaxbn.batch_norm_state(d_out))
        params.append(layer)

    def loss_fn(params, state, x, y):
        new_state = []
        for layer, s in zip(params[:-1], state, strict=True):
            x = x @ layer["W"] + layer["b"][None]
            x, s = jaxbn.batch_norm(x, layer["gamma"], layer["beta"], s, training=True)
            new_state.append(s)
            x = jax.nn.relu(x)
        logits = x @ params[-1]["W"] + params[-1]["b"][None]
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
        return loss, new_state

    def step(ts, x, y):
        params, state, opt_state = ts
        (loss, state), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, state, x, y)
        updates, opt_state = opt.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), state, opt_state), {"loss": loss}

    return (params, state, opt.init(params)), step


def jaxbn_mlp(seed: int):
    """(train_state, un-jitted step, jitted step, name): jaxbn's own training stack if present."""
    if hasattr(jaxbn, "make_train_step"):
        net = jaxbn.FullyConnectedNet(HIDDEN, NUM_CLASSES, normalization="batchnorm")
        opt = optax.sgd(LR)
        ts = jaxbn.init_train_state(net, opt, jax.random.key(seed), INPUT_DIM)
        step = jaxbn.train_step_fn(net, opt)
        return ts, step, jaxbn.make_train_step(net, opt), "jaxbn.make_train_step"
    ts, step = _local_jaxbn_mlp(seed)
    jitted = jax.jit(step, donate_argnums=0)
    return ts, step, jitted, "jaxbn.batch_norm + optax, jitted with the state donated"


class Runner(NamedTuple):
    run: Callable[[int], object]  # run(k) takes k training steps
    kernels: int | None = None  # XLA kernels launched per step (JAX, one step per call only)


def jax_stepper(ts, step, xs, ys, *, donate: bool = True, scan: int = 0, jitted=None) -> Runner:
    """Runner of a JAX train step: `step` jitted here, or `jitted` as given (e.g. by jaxbn).

    scan > 0 runs `scan` steps per dispatch in a lax.scan.
    """
    box = {"ts": ts}
    xs, ys = jnp.asarray(xs), jnp.asarray(ys)
    if scan:

        def many(ts, xb, yb):
            return jax.lax.scan(lambda ts, b: (step(ts, *b)[0], None), ts, (xb, yb))[0]

        fn = jax.jit(many, donate_argnums=0 if donate else ())
        xs, ys = xs[:scan], ys[:scan]

        def run_scan(k):
            for _ in range(k // scan):
                box["ts"] = fn(box["ts"], xs, ys)
            return box["ts"]

        return Runner(run_scan)
    fn = jitted if jitted is not None else jax.jit(step, donate_argnums=0 if donate else ())

    def run(k):
        for i in range(k):
            box["ts"], _ = fn(box["ts"], xs[i % len(xs)], ys[i % len(ys)])
        return box["ts"]

    return Runner(run, compiled_kernels(fn, ts, xs[0], ys[0]))


def flax_mlp(xs, ys):
    nn = _peer("flax.linen")
    if nn is None:
        return None

    class MLP(nn.Module):
        @nn.compact
        def __call__(self, x, train: bool):
            for d in HIDDEN:
                x = nn.Dense(d)(x)
                x = nn.BatchNorm(use_running_average=not train, momentum=MOMENTUM, epsilon=EPS)(x)
                x = nn.relu(x)
            return nn.Dense(NUM_CLASSES)(x)

    model, opt = MLP(), optax.sgd(LR)
    variables = model.init(jax.random.key(0), xs[0], train=False)
    params, batch_stats = variables["params"], variables["batch_stats"]

    def step(ts, x, y):  # the train step of flax's BatchNorm guide, with optax
        params, batch_stats, opt_state = ts

        def loss_fn(params):
            logits, updates = model.apply(
                {"params": params, "batch_stats": batch_stats}, x, train=True,
                mutable=["batch_stats"],
            )  # fmt: skip
            loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
            return loss, updates["batch_stats"]

        (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = opt.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), batch_stats, opt_state), {"loss": loss}

    return (params, batch_stats, opt.init(params)), step


def torch_mlp(xs, ys):
    torch = _peer("torch")
    if torch is None:
        return None
    torch.manual_seed(0)
    layers = []
    d = INPUT_DIM
    for h in HIDDEN:
        layers += [torch.nn.Linear(d, h), torch.nn.BatchNorm1d(h, eps=EPS, momentum=1 - MOMENTUM)]
        layers.append(torch.nn.ReLU())
        d = h
    model = torch.nn.Sequential(*layers, torch.nn.Linear(d, NUM_CLASSES))
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    tx, ty = torch.from_numpy(xs), torch.from_numpy(ys)
    loss_fn = torch.nn.CrossEntropyLoss()

    def run(k):
        for i in range(k):
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(tx[i % len(tx)]), ty[i % len(ty)])
            loss.backward()
            opt.step()
        return loss

    return run


def numpy_mlp(xs, ys):
    """The textbook NumPy net: affine - BN - ReLU x 5 - affine - softmax, closed-form backward."""
    rng = np.random.default_rng(0)
    dims = (INPUT_DIM, *HIDDEN, NUM_CLASSES)
    W = [rng.standard_normal(ab).astype(np.float32) * np.sqrt(2 / ab[0]) for ab in pairwise(dims)]
    b = [np.zeros(d, np.float32) for d in dims[1:]]
    gamma = [np.ones(d, np.float32) for d in HIDDEN]
    beta = [np.zeros(d, np.float32) for d in HIDDEN]
    running = [(np.zeros(d, np.float32), np.ones(d, np.float32)) for d in HIDDEN]

    def one_step(x, y):
        caches = []
        for i in range(len(HIDDEN)):
            a = x @ W[i] + b[i]
            h, bn_cache, running[i] = np_bn_forward(a, gamma[i], beta[i], running[i])
            caches.append((x, bn_cache, h > 0))
            x = np.maximum(h, 0)
        logits = x @ W[-1] + b[-1]
        p = np.exp(logits - logits.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        p[np.arange(len(y)), y] -= 1
        dout = p / len(y)
        dW, db = x.T @ dout, dout.sum(0)
        dx = dout @ W[-1].T
        W[-1] -= LR * dW
        b[-1] -= LR * db
        for i in reversed(range(len(HIDDEN))):
            x_in, bn_cache, relu_mask = caches[i]
            da, dgamma, dbeta = np_bn_backward(dx * relu_mask, bn_cache)
            dW, db = x_in.T @ da, da.sum(0)
            dx = da @ W[i].T
            W[i] -= LR * dW
            b[i] -= LR * db
            gamma[i] -= LR * dgamma
            beta[i] -= LR * dbeta

    def run(k):
        for i in range(k):
            one_step(xs[i % len(xs)], ys[i % len(ys)])

    return run


def bench_mlp(args) -> dict:
    steps = args.mlp_steps
    xs, ys = mlp_batches(args.seed, steps)
    ts, step, jitted, how = jaxbn_mlp(args.seed)
    runners = {f"jaxbn ({how})": jax_stepper(ts, step, xs, ys, jitted=jitted)}
    if not args.quick:
        runners["jaxbn, state not donated"] = jax_stepper(
            jaxbn_mlp(args.seed)[0], step, xs, ys, donate=False
        )
        runners[f"jaxbn, {steps} steps per call (lax.scan)"] = jax_stepper(
            jaxbn_mlp(args.seed)[0], step, xs, ys, scan=steps
        )
    if "flax" in args.peers and (flax := flax_mlp(xs, ys)) is not None:
        runners[FLAX_MLP] = jax_stepper(*flax, xs, ys, donate=False)
        if not args.quick:
            runners["flax.linen + optax, state donated"] = jax_stepper(*flax_mlp(xs, ys), xs, ys)
    if "torch" in args.peers and (run := torch_mlp(xs, ys)) is not None:
        runners["PyTorch eager"] = Runner(run)
    runners["NumPy (textbook)"] = Runner(numpy_mlp(xs, ys))
    timings = time_interleaved(
        {k: (lambda r=r: r.run(steps)) for k, r in runners.items()},
        warmup=2,
        budget_s=args.budget,
        min_runs=args.min_runs,
        settle_s=args.settle,
    )
    ref = timings[next(iter(runners))].median
    return {
        "steps_per_call": steps,
        "competitors": {
            k: {
                "steps_per_s": steps / t.median,
                "steps_per_s_q25_q75": [steps / t.q75, steps / t.q25],
                "runs": t.runs,
                "vs_jaxbn": ref / t.median,
                "kernels_per_step": runners[k].kernels,
            }
            for k, t in timings.items()
        },
    }


def bench_e1(args) -> dict:
    """Wall time of E1's whole sweep, compilation included, in a fresh process."""
    script = Path(__file__).with_name("weight_init_sweep.py")
    if not script.exists():
        return {"note": f"{script.name} does not exist yet: E1 sweep not timed"}
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, str(script), "--out-dir", tmp, *args.e1_args]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        wall = time.perf_counter() - t0
    if proc.returncode != 0:
        return {"note": f"E1 sweep failed (exit {proc.returncode}): {proc.stderr[-500:]}"}
    return {"wall_s": wall, "command": " ".join(cmd[1:])}


# --------------------------------------------------------------------------- report


def versions() -> dict[str, str]:
    out = {"jax": jax.__version__, "jaxlib": importlib.import_module("jaxlib").__version__}
    out["numpy"] = np.__version__
    for name in ("flax", "haiku", "equinox", "torch", "optax"):
        mod = sys.modules.get(name)
        if mod is not None:
            out[name] = getattr(mod, "__version__", "?")
    return out


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "backend": jax.default_backend(),
    }


JAX_PEERS = (
    "jax autodiff (plain jnp)",
    "flax.linen.BatchNorm",
    "haiku.BatchNorm",
    "equinox.nn.BatchNorm",
)
TORCH = "PyTorch (CPU kernel)"


def targets(results: dict) -> list[list[str]]:
    """Issue 5's targets, each with the measured value and whether it is met."""
    rows = []

    def add(target, value, met):
        rows.append([target, value, "n/a" if met is None else ("met" if met else "NOT met")])

    for shape in results["op"]:
        comp, label = shape["competitors"], shape["shape"]
        ratio = {k: r["vs_jaxbn"] for k, r in comp.items()}
        if label in ("(256, 1024)", "(4096, 1024)"):
            for peer, need in (("jax autodiff (plain jnp)", 2.0), ("flax.linen.BatchNorm", 1.3)):
                if peer in ratio:
                    add(f"{label}: >= {need}x faster than {peer}", f"{ratio[peer]:.2f}x",
                        ratio[peer] >= need)  # fmt: skip
        peers = {k: v for k, v in ratio.items() if k in JAX_PEERS}
        if peers:
            worst = min(peers, key=peers.get)
            add(f"{label}: no slower than any JAX peer", f"{peers[worst]:.2f}x vs {worst}",
                peers[worst] >= 1.0)  # fmt: skip
        if TORCH in ratio:
            add(f"{label}: within 1.2x of PyTorch", f"jaxbn / torch = {1 / ratio[TORCH]:.2f}",
                1 / ratio[TORCH] <= 1.2)  # fmt: skip
        res = comp[REFERENCE]["residuals"]
        allowed = shape["input_bytes"] + 64 * shape["features"]
        kept = res["new"] + res["aliased_inputs"]
        measured = f"{kept / shape['input_bytes']:.3f} x input ({res['new']} new bytes)"
        add(f"{label}: residuals <= one input + O(features)", measured, kept <= allowed)
    mlp = results["mlp"]["competitors"]
    if FLAX_MLP in mlp:
        ratio = next(iter(mlp.values()))["steps_per_s"] / mlp[FLAX_MLP]["steps_per_s"]
        add("training step: >= 1.2x flax + optax steps/s", f"{ratio:.2f}x", ratio >= 1.2)
    e1 = results["e1"]
    add("E1 whole sweep < 15 s", f"{e1['wall_s']:.1f} s" if "wall_s" in e1 else e1["note"],
        e1["wall_s"] < 15 if "wall_s" in e1 else None)  # fmt: skip
    return rows


def render(results: dict) -> str:
    cfg = results["config"]
    m = cfg["machine"]
    bw = results["bandwidth_GBps"]
    lines = [
        "# jaxbn vs its peers: training-mode batch norm, forward + backward (float32)\n",
        f"Command: `{cfg['command']}`\n",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['platform']}; load average "
        f"{cfg['load_before']} before, {results['load_after']} after. Versions: "
        + ", ".join(f"{k} {v}" for k, v in cfg["versions"].items())
        + ".\n",
        "Memory bandwidth (STREAM-style, GB/s): "
        + ", ".join(f"{k} {v:.1f}" for k, v in bw.items())
        + f"; the reference below is the best of these, {max(bw.values()):.1f} GB/s.\n",
    ]
    lines += [f"- {note}" for note in results["notes"]]
    lines.append("\n## Targets (issue 5)\n")
    lines.append(markdown_table(["target", "measured", ""], targets(results)))
    lines.append(
        "\nTimes are medians of interleaved runs [quartiles]; `x jaxbn` is time / jaxbn closed_form"
        " (> 1: slower than jaxbn). Effective bandwidth = (read x + read dy + write y + write dx) /"
        " time. Faults: minor page faults per call. Kernels: XLA kernels launched per call. Temp:"
        " XLA's compiled scratch memory. Residuals: bytes kept between forward and backward beyond"
        " the inputs themselves.\n"
    )
    for shape in results["op"]:
        header = ["", "median (us)", "[q25, q75]", "x jaxbn", "GB/s (% STREAM)", "faults (MiB)"]
        header += ["kernels", "temp (MiB)", "residuals (MiB)"]
        rows = []
        mib = shape["input_bytes"] / 2**20
        for name, r in shape["competitors"].items():
            row = [
                name,
                f"{r['median_s'] * 1e6:,.0f}",
                f"[{r['q25_s'] * 1e6:,.0f}, {r['q75_s'] * 1e6:,.0f}]",
                f"{r['vs_jaxbn']:.2f}",
                f"{r['effective_GBps']:.1f} ({100 * r['fraction_of_stream']:.0f}%)",
                f"{r['page_faults_MiB_per_call']:.1f}",
            ]
            if "compiled" in r:
                row += [
                    str(r["kernels"]),
                    f"{r['compiled'].get('temp', 0) / 2**20:.2f}",
                    f"{r['residuals']['new'] / 2**20:.2f}",
                ]
            else:
                row += ["-", "-", "-"]
            rows.append(row)
        lines.append(f"\n## {shape['shape']} (x is {mib:.2f} MiB)\n")
        lines.append(markdown_table(header, rows))
    mlp = results["mlp"]
    lines.append(
        f"\n## Training step: 784-100x5-10, BN + ReLU, batch 100, SGD ({mlp['steps_per_call']}"
        " steps per timed call)\n"
    )
    rows = [
        [k, f"{r['steps_per_s']:,.0f}", f"[{r['steps_per_s_q25_q75'][0]:,.0f}, "
         f"{r['steps_per_s_q25_q75'][1]:,.0f}]", f"{r['vs_jaxbn']:.2f}",
         "-" if r["kernels_per_step"] is None else str(r["kernels_per_step"])]
        for k, r in mlp["competitors"].items()
    ]  # fmt: skip
    header = ["", "steps/s", "[q25, q75]", "/ jaxbn steps/s", "kernels per step"]
    lines.append(markdown_table(header, rows))
    e1 = results["e1"]
    lines.append(
        "\nE1 whole sweep: "
        + (f"{e1['wall_s']:.1f} s wall (`{e1['command']}`)" if "wall_s" in e1 else e1["note"])
        + "\n"
    )
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--out-dir", type=Path, default=Path("runs/bench_peers"))
    p.add_argument("--shapes", nargs="+", default=DEFAULT_SHAPES, help="e.g. 256x1024 nhwc:8x4x4x3")
    p.add_argument(
        "--peers",
        nargs="*",
        default=["flax", "haiku", "equinox", "torch"],
        help="peers to include when installed (give none for jax and NumPy only)",
    )
    p.add_argument("--budget", type=float, default=15.0, help="seconds of timing per table")
    p.add_argument("--mlp-steps", type=int, default=50, help="training steps per timed call")
    p.add_argument("--bandwidth-mib", type=int, default=256, help="array size for STREAM")
    p.add_argument("--e1", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--e1-args", nargs="*", default=[], help="extra flags for the E1 script")
    p.add_argument("--quick", action="store_true", help="smoke test: (100, 100), short budgets")
    p.add_argument(
        "--keep-pages",
        action="store_true",
        help="tell glibc malloc to keep freed memory, taking first-touch page faults out",
    )
    p.add_argument("--min-runs", type=int, default=10, help="timed rounds at least")
    p.add_argument(
        "--settle",
        type=float,
        default=0.02,
        help="seconds of pause (then one untimed call) before each timed call, so that the thread "
        "pool of the previous competitor (XLA, OpenMP, BLAS) stops spinning first",
    )
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.quick:
        args.shapes, args.budget, args.mlp_steps, args.min_runs = ["100x100"], 0.2, 2, 3
        args.settle = min(args.settle, 0.005)
        args.bandwidth_mib, args.e1 = 4, False
    args.out_dir.mkdir(parents=True, exist_ok=True)
    _MISSING.clear()
    notes = [keep_freed_pages()] if args.keep_pages else []
    for name in ("flax", "haiku", "equinox", "torch"):
        if name in args.peers:
            _peer(name)
    config = {
        "shapes": args.shapes,
        "peers": args.peers,
        "budget_s": args.budget,
        "mlp_steps": args.mlp_steps,
        "seed": args.seed,
        "quick": args.quick,
        "keep_pages": args.keep_pages,
        "settle_s": args.settle,
        "machine": machine(),
        "versions": versions(),
        "load_before": " ".join(f"{v:.2f}" for v in os.getloadavg()),
        "command": " ".join(["python", "experiments/bench_peers.py", *(argv or sys.argv[1:])]),
    }
    write_json(args.out_dir / "config.json", config)
    print(f"load average {config['load_before']}; versions {config['versions']}", flush=True)

    bandwidth = stream_bandwidth(args.bandwidth_mib * 2**20, args.budget / 3, args.min_runs)
    print("bandwidth GB/s:", {k: round(v, 1) for k, v in bandwidth.items()}, flush=True)
    op = []
    for text in args.shapes:
        op.append(bench_op(text, args, max(bandwidth.values())))
        times = {k: f"{r['median_s'] * 1e6:,.0f}" for k, r in op[-1]["competitors"].items()}
        print(op[-1]["shape"], "us:", times, flush=True)
    mlp = bench_mlp(args)
    print("steps/s:", {k: round(r["steps_per_s"]) for k, r in mlp["competitors"].items()})
    e1 = bench_e1(args) if args.e1 else {"note": "E1 sweep not timed (--no-e1 or --quick)"}
    results = {
        "config": config,
        "bandwidth_GBps": bandwidth,
        "op": op,
        "mlp": mlp,
        "e1": e1,
        "notes": notes + sorted(_MISSING.values()),
        "load_after": " ".join(f"{v:.2f}" for v in os.getloadavg()),
    }
    write_json(args.out_dir / "results.json", results)
    text = render(results)
    atomic_write_text(args.out_dir / "results.md", text)
    print(text)
    return results


if __name__ == "__main__":
    main()
