"""jaxbn nets to and from ``torch.nn.Sequential`` (needs PyTorch: ``pip install 'jaxbn[interop]'``).

``torch_module(net, input_shape)`` builds the PyTorch model that computes what ``net`` computes:
``Linear``/``Conv2d`` (padding "same"), ``BatchNorm1d``/``BatchNorm2d``, ``LayerNorm`` (dense
layers), ``ReLU``/``Sigmoid``/``Tanh``, ``MaxPool2d``, ``Dropout``, ``Flatten``. The torch model
takes images NCHW, as PyTorch does: feed it ``x.transpose(0, 3, 1, 2)`` for an NHWC ``ConvNet``;
the converters permute the first dense layer's weights so that PyTorch's ``(c, h, w)`` flatten
order matches jaxbn's ``(h, w, c)``.

Momentum and running variance: jaxbn ``momentum=0.9`` is PyTorch ``momentum=0.1`` (jaxbn weights
the old value, PyTorch the new batch value). PyTorch updates ``running_var`` with the UNBIASED
batch variance, jaxbn with the biased one; the stored values are copied unchanged, so evaluation
mode agrees, and ``num_batches_tracked`` is jaxbn's ``count``.
"""

from __future__ import annotations

import itertools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxbn.convnet import ConvNet
from jaxbn.nn import FullyConnectedNet
from jaxbn.norm import BatchNormState

try:
    import torch
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError(
        "jaxbn.interop.torch needs PyTorch; install the 'interop' extra: "
        "pip install 'jaxbn[interop]' (or pip install torch)"
    ) from e

__all__ = ["from_torch_state_dict", "to_torch_state_dict", "torch_module"]

_ACTIVATIONS = {"relu": torch.nn.ReLU, "sigmoid": torch.nn.Sigmoid, "tanh": torch.nn.Tanh}


def _plan(net, input_shape) -> list[tuple]:
    """The torch layers in order: (kind, jaxbn layer index, constructor arguments)."""
    if isinstance(net, FullyConnectedNet):
        if isinstance(input_shape, (tuple, list)):
            input_shape = int(np.prod(input_shape))
        dims = (int(input_shape), *net.hidden_dims, net.num_classes)
        convs = []
    elif isinstance(net, ConvNet):
        if net.normalization == "layernorm":
            raise ValueError(
                "a ConvNet with normalization='layernorm' (over the channels at each position) "
                "has no torch.nn equivalent on NCHW images; convert a batch-norm or plain net"
            )
        shape = tuple(input_shape)
        c_in = shape[-1] if net.data_format == "NHWC" else shape[0]
        h, w, c = net.feature_shape(shape)
        dims = (h * w * c, *net.hidden_dims, net.num_classes)
        convs = list(itertools.pairwise((c_in, *net.channels)))
    else:
        raise TypeError(
            f"net must be a jaxbn.FullyConnectedNet or jaxbn.ConvNet, got {type(net).__name__}"
        )
    plan, i = [], 0
    for c_in, c_out in convs:
        plan.append(("conv", i, (c_in, c_out, getattr(net, "kernel_size", 3))))
        if net.normalization == "batchnorm":
            plan.append(("bn2d", i, (c_out,)))
        plan.append(("act", i, ()))
        pool = getattr(net, "pool", 1)
        if pool > 1:
            plan.append(("pool", i, (pool,)))
        if net.dropout > 0:
            plan.append(("dropout", i, ()))
        i += 1
    plan.append(("flatten", i, ()))
    for d_in, d_out in itertools.pairwise(dims):
        plan.append(("linear", i, (d_in, d_out)))
        if i < net.num_layers - 1:
            if net.normalization == "batchnorm":
                plan.append(("bn1d", i, (d_out,)))
            elif net.normalization == "layernorm":
                plan.append(("ln", i, (d_out,)))
            plan.append(("act", i, ()))
            if net.dropout > 0:
                plan.append(("dropout", i, ()))
        i += 1
    return plan


def torch_module(
    net: FullyConnectedNet | ConvNet, input_shape: int | tuple[int, ...], *, dtype=None
) -> torch.nn.Sequential:
    """Build the ``torch.nn.Sequential`` equivalent to ``net`` (freshly initialized by PyTorch).

    Args:
      net: a ``FullyConnectedNet`` or a ``ConvNet`` (batch norm or none; a conv net with layer
        norm has no torch equivalent).
      input_shape: what ``net.init`` takes: ``D`` for a fully connected net, one example's
        ``(H, W, C)`` (NHWC) or ``(C, H, W)`` (NCHW) for a conv net; torch layers need sizes.
      dtype: the torch dtype of the parameters (default ``torch.float32``).

    Returns:
      The model; load ``to_torch_state_dict(...)`` into it with ``strict=True``.
    """
    dtype = torch.float32 if dtype is None else dtype
    layers = []
    for kind, _, args in _plan(net, input_shape):
        if kind == "conv":
            layers.append(torch.nn.Conv2d(args[0], args[1], args[2], padding="same"))
        elif kind in ("bn1d", "bn2d"):
            cls = torch.nn.BatchNorm1d if kind == "bn1d" else torch.nn.BatchNorm2d
            layers.append(cls(args[0], eps=net.eps, momentum=1.0 - net.momentum))
        elif kind == "ln":
            layers.append(torch.nn.LayerNorm(args[0], eps=net.eps))
        elif kind == "act":
            layers.append(_ACTIVATIONS[net.activation]())
        elif kind == "pool":
            layers.append(torch.nn.MaxPool2d(args[0]))
        elif kind == "dropout":
            layers.append(torch.nn.Dropout(net.dropout))
        elif kind == "flatten":
            layers.append(torch.nn.Flatten())
        else:
            layers.append(torch.nn.Linear(args[0], args[1]))
    return torch.nn.Sequential(*layers).to(dtype)


def _flatten_perm(net, input_shape):
    """``(h, w, c)`` of the conv output when jaxbn's flatten order differs from torch's."""
    if isinstance(net, ConvNet) and net.data_format == "NHWC":
        return net.feature_shape(input_shape)
    return None


def _t(a) -> torch.Tensor:
    return torch.from_numpy(np.array(a))


def to_torch_state_dict(
    net: FullyConnectedNet | ConvNet, params: Any, state: Any, input_shape
) -> dict[str, torch.Tensor]:
    """The state dict of ``torch_module(net, input_shape)`` holding ``params`` and ``state``.

    Keys are the Sequential's (``"0.weight"``, ``"1.running_var"``, ...); dense weights are
    transposed to ``(out, in)``, conv kernels HWIO to OIHW; tensors keep the arrays' dtypes.
    """
    net._check_tree(params, state)
    perm = _flatten_perm(net, input_shape)
    out = {}
    for pos, (kind, i, _) in enumerate(_plan(net, input_shape)):
        p = params[i]
        if kind == "conv":
            out[f"{pos}.weight"] = _t(np.transpose(np.asarray(p["W"]), (3, 2, 0, 1)))
            out[f"{pos}.bias"] = _t(p["b"])
        elif kind == "linear":
            W = np.asarray(p["W"])
            if perm is not None and i == len(getattr(net, "channels", ())):
                h, w, c = perm
                W = W.reshape(h, w, c, -1).transpose(2, 0, 1, 3).reshape(h * w * c, -1)
            out[f"{pos}.weight"] = _t(W.T)
            out[f"{pos}.bias"] = _t(p["b"])
        elif kind in ("bn1d", "bn2d", "ln"):
            out[f"{pos}.weight"] = _t(p["gamma"])
            out[f"{pos}.bias"] = _t(p["beta"])
            if kind != "ln":
                out[f"{pos}.running_mean"] = _t(state[i].mean)
                out[f"{pos}.running_var"] = _t(state[i].var)
                out[f"{pos}.num_batches_tracked"] = torch.tensor(int(state[i].count))
    return out


def from_torch_state_dict(
    net: FullyConnectedNet | ConvNet, state_dict: dict[str, Any], input_shape
) -> tuple[list[dict[str, Any]], list[BatchNormState | None]]:
    """``(params, state)`` for ``net`` from a state dict of ``torch_module(net, input_shape)``.

    Raises:
      ValueError: keys missing from or unexpected in ``state_dict`` (it must match exactly, as
        ``load_state_dict(strict=True)`` requires), or tensors of the wrong shape.
    """
    plan = _plan(net, input_shape)
    perm = _flatten_perm(net, input_shape)
    want = set()
    for pos, (kind, _, _) in enumerate(plan):
        if kind in ("conv", "linear", "bn1d", "bn2d", "ln"):
            want |= {f"{pos}.weight", f"{pos}.bias"}
        if kind in ("bn1d", "bn2d"):
            want |= {f"{pos}.{k}" for k in ("running_mean", "running_var", "num_batches_tracked")}
    got = set(state_dict)
    if got != want:
        raise ValueError(
            f"state_dict does not match torch_module(net): missing {sorted(want - got)}, "
            f"unexpected {sorted(got - want)}"
        )

    def arr(key):
        return jnp.asarray(state_dict[key].detach().cpu().numpy())

    params: list[dict[str, Any]] = [{} for _ in range(net.num_layers)]
    state: list[BatchNormState | None] = [None] * (net.num_layers - 1)
    for pos, (kind, i, _) in enumerate(plan):
        if kind == "conv":
            params[i]["W"] = jnp.transpose(arr(f"{pos}.weight"), (2, 3, 1, 0))
            params[i]["b"] = arr(f"{pos}.bias")
        elif kind == "linear":
            W = arr(f"{pos}.weight").T
            if perm is not None and i == len(getattr(net, "channels", ())):
                h, w, c = perm
                W = W.reshape(c, h, w, -1).transpose(1, 2, 0, 3).reshape(h * w * c, -1)
            params[i]["W"], params[i]["b"] = W, arr(f"{pos}.bias")
        elif kind in ("bn1d", "bn2d", "ln"):
            params[i]["gamma"], params[i]["beta"] = arr(f"{pos}.weight"), arr(f"{pos}.bias")
            if kind != "ln":
                state[i] = BatchNormState(
                    mean=arr(f"{pos}.running_mean"),
                    var=arr(f"{pos}.running_var"),
                    count=jnp.asarray(int(state_dict[f"{pos}.num_batches_tracked"]), jnp.int32),
                )
    net._check_tree(params, state)
    expected = jax.eval_shape(lambda: net.init(jax.random.key(0), input_shape))
    for i, (layer, ref) in enumerate(zip(params, expected[0], strict=True)):
        for name, v in layer.items():
            if v.shape != ref[name].shape:
                raise ValueError(
                    f"state_dict gives params[{i}][{name!r}] shape {v.shape}, net expects "
                    f"{ref[name].shape}"
                )
    return params, state
