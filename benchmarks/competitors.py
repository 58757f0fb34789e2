"""The batch-norm implementations the op benchmark compares, each bound to one problem.

Each maker returns a ``Competitor``: a zero-argument call that runs one training-mode forward
(y and the running-statistics update) and backward (dx, dgamma, dbeta for a fixed cotangent), in
float32, and for the JAX ones the jitted function and forward behind it, for XLA's memory and
kernel counts. Optional peers (flax, haiku, equinox, torch) that are not installed give None and
a note in ``missing``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

import jaxbn
from benchmarks.numpy_ref import EPS, MOMENTUM, np_bn_backward, np_bn_forward
from benchmarks.report import optional_import

REFERENCE = "jaxbn closed_form"
AUTODIFF = "jax autodiff (plain jnp)"
# The JAX peers: the package --peers names -> the name shown in the tables.
JAX_PEER_NAMES = {
    "flax": "flax.linen.BatchNorm",
    "haiku": "haiku.BatchNorm",
    "equinox": "equinox.nn.BatchNorm",
}
JAX_PEERS = (AUTODIFF, *JAX_PEER_NAMES.values())


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

    call: Callable[[], object]  # one forward + backward, finished when it returns a result
    memory: str = "device"  # which bandwidth bound applies: "device" or "host"
    jitted: Callable | None = None  # JAX only: the jitted function `call` calls ...
    jitted_args: tuple = ()  # ... and its arguments (for kernels and compiled memory)
    forward: Callable | None = None  # JAX only: x, params -> y (for the residuals)
    forward_args: tuple = ()


def jax_competitor(forward, params, state, p: Problem) -> Competitor:
    """forward(x, params, state) -> (y, new_state), jitted with its VJP at the cotangent c."""

    def step(x, params, state, c):
        y, vjp, new_state = jax.vjp(lambda x, p: forward(x, p, state), x, params, has_aux=True)
        return y, *vjp(c), new_state

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
    return jax_competitor(forward, (p.gamma, p.beta), state, p)


def plain_jnp_competitor(p: Problem) -> Competitor:
    """The textbook forward in five lines of jnp, differentiated by JAX."""

    def forward(x, params, state):
        gamma, beta = params
        axes = tuple(range(x.ndim - 1))
        mean = jnp.mean(x, axes, keepdims=True)
        var = jnp.var(x, axes, keepdims=True)  # two-pass
        y = (x - mean) / jnp.sqrt(var + EPS) * gamma.reshape(mean.shape) + beta.reshape(mean.shape)
        mean, var = jax.lax.stop_gradient((mean.ravel(), var.ravel()))
        new_state = tuple(
            MOMENTUM * s + (1 - MOMENTUM) * v for s, v in zip(state, (mean, var), strict=True)
        )
        return y, new_state

    d = p.x.shape[-1]
    return jax_competitor(forward, (p.gamma, p.beta), (jnp.zeros(d), jnp.ones(d)), p)


def flax_competitor(p: Problem, missing) -> Competitor | None:
    if (nn := optional_import("flax.linen", missing)) is None:
        return None
    # flax's default variance is E[x^2] - E[x]^2 (use_fast_variance=True): one pass, less exact.
    module = nn.BatchNorm(use_running_average=False, momentum=MOMENTUM, epsilon=EPS)
    variables = module.init(jax.random.key(0), p.x)

    def forward(x, params, batch_stats):
        variables = {"params": params, "batch_stats": batch_stats}
        y, updates = module.apply(variables, x, mutable=["batch_stats"])
        return y, updates["batch_stats"]

    params = {"scale": p.gamma, "bias": p.beta}
    return jax_competitor(forward, params, variables["batch_stats"], p)


def haiku_competitor(p: Problem, missing) -> Competitor | None:
    if (hk := optional_import("haiku", missing)) is None:
        return None
    # haiku's variance is E[x^2] - E[x]^2 as well.
    model = hk.transform_with_state(
        lambda x: hk.BatchNorm(True, True, decay_rate=MOMENTUM, eps=EPS)(x, is_training=True)
    )
    params, state = model.init(jax.random.key(0), p.x)
    ours = {"batch_norm": {"offset": p.beta, "scale": p.gamma}}
    params = jax.tree.map(lambda v, g: jnp.reshape(g, v.shape), params, ours)
    return jax_competitor(lambda x, params, s: model.apply(params, s, None, x), params, state, p)


def equinox_competitor(p: Problem, missing) -> Competitor | None:
    if (eqx := optional_import("equinox", missing)) is None:
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

    return jax_competitor(forward, (p.gamma, p.beta), state, p)


def torch_device(torch) -> str:
    """'cuda' when JAX runs on a GPU and torch sees one too, else 'cpu'."""
    return "cuda" if jax.default_backend() == "gpu" and torch.cuda.is_available() else "cpu"


def torch_competitor(p: Problem, missing) -> tuple[str, Competitor] | None:
    if (torch := optional_import("torch", missing)) is None:
        return None
    device = torch_device(torch)

    def tensor(a):
        # NHWC data is a channels-last (N, C, H, W) tensor for torch: the same bytes, no copy.
        t = torch.from_numpy(np.array(a)).to(device)
        return t.permute(0, t.ndim - 1, *range(1, t.ndim - 1)) if t.ndim > 2 else t

    x, c = tensor(p.x).requires_grad_(True), tensor(p.c)
    w, b = tensor(p.gamma).requires_grad_(True), tensor(p.beta).requires_grad_(True)
    d = p.x.shape[-1]
    running_mean = torch.zeros(d, device=device)
    running_var = torch.ones(d, device=device)
    bn = torch.nn.functional.batch_norm

    def call():
        y = bn(x, running_mean, running_var, w, b, training=True, momentum=1 - MOMENTUM, eps=EPS)
        grads = torch.autograd.grad(y, (x, w, b), c)
        if device == "cuda":
            torch.cuda.synchronize()  # block_until_ready does not wait for torch
        return y, grads

    name = f"PyTorch ({device.upper()} kernel)"
    return name, Competitor(call=call, memory="device" if device == "cuda" else "host")


def numpy_competitor(p: Problem) -> Competitor:
    d = p.x.shape[-1]
    x, c = np.array(p.x).reshape(-1, d), np.array(p.c).reshape(-1, d)
    gamma, beta, running = np.array(p.gamma), np.array(p.beta), (np.zeros(d), np.ones(d))

    def call():
        y, cache, _ = np_bn_forward(x, gamma, beta, running)
        return y, np_bn_backward(c, cache)

    return Competitor(call=call, memory="host")


def op_competitors(p: Problem, peers, missing) -> dict[str, Competitor]:
    out = {f"jaxbn {bw}": jaxbn_competitor(p, bw) for bw in jaxbn.BACKWARDS}
    out[AUTODIFF] = plain_jnp_competitor(p)
    makers = {"flax": flax_competitor, "haiku": haiku_competitor, "equinox": equinox_competitor}
    for key, make in makers.items():
        if key in peers and (comp := make(p, missing)) is not None:
            out[JAX_PEER_NAMES[key]] = comp
    if "torch" in peers and (named := torch_competitor(p, missing)) is not None:
        out[named[0]] = named[1]
    out["NumPy closed form"] = numpy_competitor(p)
    return out
