"""Converters against the installed PyTorch and flax: same logits both ways, same state updates."""

import importlib
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from helpers import rel_error

import jaxbn
from jaxbn import interop

CASES = {
    "fc": (jaxbn.FullyConnectedNet((7, 6), 4, normalization="batchnorm", dropout=0.2), 5),
    "fc_ln": (jaxbn.FullyConnectedNet((7,), 4, normalization="layernorm", activation="tanh"), 5),
    "conv": (jaxbn.ConvNet((3, 4), 4, hidden_dims=(6,), normalization="batchnorm"), (8, 8, 2)),
    "conv_nchw": (
        jaxbn.ConvNet((3,), 4, normalization="batchnorm", data_format="NCHW", momentum=0.8),
        (2, 6, 6),
    ),
}


def _x(shape, n=6, seed=1):
    shape = (shape,) if isinstance(shape, int) else shape
    return (np.random.default_rng(seed).normal(size=(n, *shape)) * 1.5 + 0.5).astype(np.float32)


def _trained(net, shape):
    """Params and state with non-trivial gamma, beta and running statistics."""

    @jax.jit  # one program, not one compilation per eager op
    def make(x):
        params, state = net.init(jax.random.key(0), shape)
        params = jax.tree.map(
            lambda p: p + 0.1 * jnp.cos(jnp.arange(p.size).reshape(p.shape)), params
        )
        _, state = net.apply(params, state, x, training=True, key=jax.random.key(3))
        return params, state

    return make(_x(shape, 8, seed=2))


def _logits(net, params, state, x):
    """Eval-mode logits, jitted."""
    return jax.jit(net.apply, static_argnames="training")(params, state, x, training=False)[0]


def _torch_input(net, x):
    if isinstance(net, jaxbn.ConvNet) and net.data_format == "NHWC":
        x = x.transpose(0, 3, 1, 2)
    return torch.from_numpy(np.array(x))


CONV_SLOW = "conv nets take seconds each to compile: full suite only"


@pytest.mark.parametrize(
    "case",
    ["fc", "fc_ln", *(pytest.param(c, marks=pytest.mark.slow) for c in ("conv", "conv_nchw"))],
)  # slow: CONV_SLOW
def test_torch_round_trip_same_logits(case):
    net, shape = CASES[case]
    params, state = _trained(net, shape)
    x = _x(shape)
    want = _logits(net, params, state, x)
    # jaxbn -> torch: loads with strict=True and computes the same logits in eval mode.
    model = interop.torch_module(net, shape)
    model.load_state_dict(interop.to_torch_state_dict(net, params, state, shape), strict=True)
    model.eval()
    with torch.no_grad():
        got = model(_torch_input(net, x)).numpy()
    assert rel_error(got, want) <= 1e-5
    # torch -> jaxbn: a model initialized by torch, its statistics moved by training steps.
    torch.manual_seed(0)
    model = interop.torch_module(net, shape)
    model.train()
    with torch.no_grad():
        for seed in (4, 5):
            model(_torch_input(net, _x(shape, 8, seed)))
    model.eval()
    with torch.no_grad():
        want = model(_torch_input(net, x)).numpy()
    params2, state2 = interop.from_torch_state_dict(net, model.state_dict(), shape)
    got = _logits(net, params2, state2, x)
    assert rel_error(got, want) <= 1e-5
    if net.normalization == "batchnorm":
        assert int(state2[0].count) == 2


def test_torch_momentum_and_unbiased_running_variance():
    net = jaxbn.FullyConnectedNet((3,), 2, normalization="batchnorm", momentum=0.9)
    params, state = net.init(jax.random.key(0), 4)
    model = interop.torch_module(net, 4)
    model.load_state_dict(interop.to_torch_state_dict(net, params, state, 4), strict=True)
    assert model[2].momentum == pytest.approx(0.1)  # jaxbn 0.9 == torch 0.1
    x = _x(4, 10)
    _, new = net.apply(params, state, x, training=True)
    model.train()
    with torch.no_grad():
        model(torch.from_numpy(x))
    z = x @ np.asarray(params[0]["W"])
    assert rel_error(model[2].running_mean.numpy(), new[0].mean) <= 1e-6
    # torch's update uses the unbiased batch variance, jaxbn's the biased one.
    assert rel_error(model[2].running_var.numpy(), 0.9 + 0.1 * z.var(0, ddof=1)) <= 1e-6
    assert rel_error(new[0].var, 0.9 + 0.1 * z.var(0)) <= 1e-6


@pytest.mark.parametrize(
    "case", ["fc_ln", *(pytest.param(c, marks=pytest.mark.slow) for c in ("fc", "conv"))]
)  # slow: CONV_SLOW, and fc's dropout program
def test_flax_round_trip_same_logits_and_updates(case):
    net, shape = CASES[case]
    params, state = _trained(net, shape)
    x = _x(shape)
    module = interop.flax_module(net)
    variables = interop.to_flax_variables(net, params, state)
    want = _logits(net, params, state, x)
    got = module.apply(variables, x, train=False)
    assert rel_error(got, want) <= 1e-5
    # flax -> jaxbn, from flax's own initialization plus one training step of flax's.
    variables = module.init(jax.random.key(7), x, train=False)
    if net.normalization == "batchnorm":
        _, upd = module.apply(
            variables, x, train=True, mutable=["batch_stats"], rngs={"dropout": jax.random.key(0)}
        )
        variables = {**variables, **upd}
    params2, state2 = interop.from_flax_variables(net, variables)
    assert (
        rel_error(
            _logits(net, params2, state2, x),
            module.apply(variables, x, train=False),
        )
        <= 1e-5
    )
    if net.normalization == "batchnorm" and not net.dropout:
        # The same momentum and the biased variance: one jaxbn step from flax's initial state
        # stores what flax's step stored ("conv"; "fc" has dropout, whose masks differ).
        p0, s0 = interop.from_flax_variables(net, module.init(jax.random.key(7), x, train=False))
        _, s1 = jax.jit(net.apply, static_argnames="training")(p0, s0, x, training=True)
        for a, b in zip(s1, state2, strict=True):
            assert rel_error(a.mean, b.mean) <= 1e-5 and rel_error(a.var, b.var) <= 1e-5


def test_converters_reject_mismatches():
    net, shape = CASES["conv"]
    params, state = net.init(jax.random.key(0), shape)
    sd = interop.to_torch_state_dict(net, params, state, shape)
    del sd["1.running_var"]
    with pytest.raises(ValueError, match=r"missing \['1.running_var'\]"):
        interop.from_torch_state_dict(net, sd, shape)
    with pytest.raises(ValueError, match="layernorm"):
        interop.torch_module(jaxbn.ConvNet((2,), 3, normalization="layernorm"), (4, 4, 1))
    with pytest.raises(ValueError, match="NHWC"):
        interop.flax_module(CASES["conv_nchw"][0])
    variables = interop.to_flax_variables(net, params, state)
    del variables["batch_stats"]["BatchNorm_0"]
    with pytest.raises(ValueError, match="batch_stats"):
        interop.from_flax_variables(net, variables)
    with pytest.raises(AttributeError):
        _ = interop.no_such_converter


@pytest.mark.parametrize(("submodule", "library"), [("torch", "torch"), ("flax", "flax.linen")])
def test_missing_library_names_the_extra(monkeypatch, submodule, library):
    monkeypatch.setitem(sys.modules, library, None)  # `import library` now raises ImportError
    monkeypatch.delitem(sys.modules, f"jaxbn.interop.{submodule}", raising=False)
    with pytest.raises(ImportError, match=r"pip install 'jaxbn\[interop\]'"):
        importlib.import_module(f"jaxbn.interop.{submodule}")
