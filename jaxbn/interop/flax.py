"""jaxbn nets to and from flax.linen modules (needs flax: ``pip install 'jaxbn[interop]'``).

``flax_module(net)`` is a ``flax.linen`` module computing what ``net`` computes, built in
``nn.compact`` style so that flax names its layers automatically in call order: ``Conv_i``,
``Dense_i``, ``BatchNorm_i``, ``LayerNorm_i``. Its variables are
``{"params": {"Dense_0": {"kernel", "bias"}, "BatchNorm_0": {"scale", "bias"}, ...},
"batch_stats": {"BatchNorm_0": {"mean", "var"}, ...}}``; dense kernels ``(D_in, D)`` and conv
kernels HWIO are laid out as in jaxbn, so the converters only rename.

Call it as ``module.apply(variables, x, train=False)`` (evaluation) or
``module.apply(variables, x, train=True, mutable=["batch_stats"], rngs={"dropout": key})``.

Momentum and running variance: flax's ``BatchNorm(momentum=0.9)`` is jaxbn's ``momentum=0.9``
(both weight the old value; PyTorch's equivalent is 0.1), and both store the biased batch
variance, so a training step updates the statistics identically. flax keeps no update count:
``from_flax_variables`` sets ``count`` to 0.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from jaxbn.convnet import ConvNet
from jaxbn.nn import FullyConnectedNet
from jaxbn.norm import BatchNormState

try:
    import flax.linen as nn
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError(
        "jaxbn.interop.flax needs flax; install the 'interop' extra: "
        "pip install 'jaxbn[interop]' (or pip install flax)"
    ) from e

__all__ = ["flax_module", "from_flax_variables", "to_flax_variables"]

_ACTIVATIONS = {"relu": jax.nn.relu, "sigmoid": jax.nn.sigmoid, "tanh": jnp.tanh}


def _check(net) -> FullyConnectedNet | ConvNet:
    if not isinstance(net, (FullyConnectedNet, ConvNet)):
        raise TypeError(
            f"net must be a jaxbn.FullyConnectedNet or jaxbn.ConvNet, got {type(net).__name__}"
        )
    if isinstance(net, ConvNet) and net.data_format != "NHWC":
        raise ValueError(
            f"flax convolutions take NHWC images; got a ConvNet with data_format="
            f"{net.data_format!r}"
        )
    return net


class _FlaxNet(nn.Module):
    """The flax.linen twin of a jaxbn net (see ``flax_module``)."""

    net: Any

    @nn.compact
    def __call__(self, x, *, train: bool = False):
        net = self.net
        act = _ACTIVATIONS[net.activation]
        n_conv = len(net.channels) if isinstance(net, ConvNet) else 0
        for i in range(net.num_layers - 1):
            if i < n_conv:
                k = net.kernel_size
                x = nn.Conv(net.channels[i], (k, k), padding="SAME")(x)
            else:
                if i == n_conv:
                    x = jnp.reshape(x, (x.shape[0], -1))
                x = nn.Dense(net.hidden_dims[i - n_conv])(x)
            if net.normalization == "batchnorm":
                x = nn.BatchNorm(
                    use_running_average=not train,
                    momentum=net.momentum,
                    epsilon=net.eps,
                    use_fast_variance=False,
                )(x)
            elif net.normalization == "layernorm":
                x = nn.LayerNorm(epsilon=net.eps, use_fast_variance=False)(x)
            x = act(x)
            if i < n_conv and net.pool > 1:
                x = nn.max_pool(x, (net.pool, net.pool), strides=(net.pool, net.pool))
            if net.dropout > 0:
                x = nn.Dropout(net.dropout, deterministic=not train)(x)
        if n_conv == net.num_layers - 1:
            x = jnp.reshape(x, (x.shape[0], -1))
        return nn.Dense(net.num_classes)(x)


def flax_module(net: FullyConnectedNet | ConvNet) -> nn.Module:
    """The ``flax.linen`` module equivalent to ``net`` (NHWC for a ``ConvNet``).

    Raises:
      TypeError: an unsupported net; ValueError: an NCHW ``ConvNet``.
    """
    return _FlaxNet(_check(net))


def _names(net) -> list[tuple[str, str | None]]:
    """Per jaxbn layer: (flax name of its affine module, flax name of its norm module or None)."""
    n_conv = len(net.channels) if isinstance(net, ConvNet) else 0
    norm = {"batchnorm": "BatchNorm", "layernorm": "LayerNorm"}.get(str(net.normalization))
    out = []
    for i in range(net.num_layers):
        affine = f"Conv_{i}" if i < n_conv else f"Dense_{i - n_conv}"
        out.append((affine, f"{norm}_{i}" if norm and i < net.num_layers - 1 else None))
    return out


def to_flax_variables(
    net: FullyConnectedNet | ConvNet, params: Any, state: Any
) -> dict[str, dict[str, Any]]:
    """``{"params": ..., "batch_stats": ...}`` for ``flax_module(net)`` from jaxbn's params/state.

    ``"batch_stats"`` is present only for a batch-norm net.
    """
    _check(net)._check_tree(params, state)
    p_out, s_out = {}, {}
    for (affine, norm), layer, st in zip(_names(net), params, [*state, None], strict=True):
        p_out[affine] = {"kernel": layer["W"], "bias": layer["b"]}
        if norm is not None:
            p_out[norm] = {"scale": layer["gamma"], "bias": layer["beta"]}
        if isinstance(st, BatchNormState):
            s_out[norm] = {"mean": st.mean, "var": st.var}
    return {"params": p_out, "batch_stats": s_out} if s_out else {"params": p_out}


def from_flax_variables(
    net: FullyConnectedNet | ConvNet, variables: Any
) -> tuple[list[dict[str, Any]], list[BatchNormState | None]]:
    """``(params, state)`` for ``net`` from the variables of ``flax_module(net)``.

    Raises:
      ValueError: variables without a layer ``net`` needs, or with layers it does not have.
    """
    net = _check(net)
    names = _names(net)
    p_in = dict(variables.get("params", {}))
    s_in = dict(variables.get("batch_stats", {}))
    want = {a for a, _ in names} | {n for _, n in names if n is not None}
    want_stats = {n for _, n in names if n is not None and net.normalization == "batchnorm"}
    if set(p_in) != want or set(s_in) != want_stats:
        raise ValueError(
            f"variables do not match flax_module(net): params {sorted(p_in)} (want "
            f"{sorted(want)}), batch_stats {sorted(s_in)} (want {sorted(want_stats)})"
        )
    params, state = [], []
    for i, (affine, norm) in enumerate(names):
        layer = {"W": jnp.asarray(p_in[affine]["kernel"]), "b": jnp.asarray(p_in[affine]["bias"])}
        if norm is not None:
            layer["gamma"] = jnp.asarray(p_in[norm]["scale"])
            layer["beta"] = jnp.asarray(p_in[norm]["bias"])
        params.append(layer)
        if i < net.num_layers - 1:
            if norm in s_in:
                stats = s_in[norm]
                state.append(
                    BatchNormState(
                        mean=jnp.asarray(stats["mean"]),
                        var=jnp.asarray(stats["var"]),
                        count=jnp.zeros((), jnp.int32),
                    )
                )
            else:
                state.append(None)
    net._check_tree(params, state)
    return params, state
