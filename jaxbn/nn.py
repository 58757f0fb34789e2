"""A fully connected classifier: ``{affine - [norm] - activation - [dropout]} x (L - 1) - affine``.

``FullyConnectedNet`` is an immutable, hashable configuration (usable as a static argument of
``jax.jit``) with two pure methods in the haiku ``transform_with_state`` shape::

    params, state = net.init(key, input_dim)
    logits, new_state = net.apply(params, state, x, training=True, key=dropout_key)

``params`` is a list with one dict per affine layer, ``{"W": (D_in, D_out), "b": (D_out,)}``, plus
``"gamma"`` and ``"beta"`` of shape ``(D_out,)`` for the hidden layers of a normalized net.
``state`` is a list with one entry per hidden layer: a ``BatchNormState`` for a batch-norm net,
``None`` otherwise. Both are plain pytrees: inspect them, save them, ``jax.tree.map`` over them,
stack them and ``jax.vmap`` over the stack.

Shapes: N batch, D features, C classes.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import numbers
from collections.abc import Hashable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike, DTypeLike

from jaxbn import _checks
from jaxbn.dropout import dropout as _dropout
from jaxbn.initializers import init_std
from jaxbn.norm import (
    BACKWARDS,
    RUNNING_VARS,
    BatchNormState,
    batch_norm,
    batch_norm_state,
    layer_norm,
)

__all__ = ["ACTIVATIONS", "NORMALIZATIONS", "FullyConnectedNet"]

NORMALIZATIONS = (None, "batchnorm", "layernorm")
ACTIVATIONS = ("relu", "sigmoid", "tanh")

ACTIVATION_FNS = {"relu": jax.nn.relu, "sigmoid": jax.nn.sigmoid, "tanh": jnp.tanh}

Params = list[dict[str, jax.Array]]
State = list[BatchNormState | None]


@dataclasses.dataclass(frozen=True)
class FullyConnectedNet:
    """Configuration of a fully connected classifier; ``init`` and ``apply`` are pure.

    Layout: ``{affine - [norm] - activation - [dropout]} x len(hidden_dims) - affine``. The last
    affine produces the logits: no normalization, activation or dropout after it.

    Attributes:
      hidden_dims: sizes of the hidden layers, a tuple of positive ints (a list is accepted and
        stored as a tuple); ``()`` gives a linear softmax classifier.
      num_classes: ``C``, the number of outputs, >= 2.
      normalization: ``None``, ``"batchnorm"`` (``jaxbn.batch_norm``: batch statistics in
        training, running statistics in evaluation) or ``"layernorm"`` (``jaxbn.layer_norm``).
      activation: ``"relu"``, ``"sigmoid"`` or ``"tanh"``.
      dropout: probability of DROPPING a hidden unit (inverted dropout), in [0, 1).
      weight_init: ``"he"`` (``N(0, 2 / fan_in)``), ``"he_fan_out"`` (``N(0, 2 / fan_out)``),
        ``"xavier"`` (``N(0, 1 / fan_in)``) or a positive float: the fixed standard deviation of
        every weight matrix. Biases start at 0.
      momentum: batch norm's weight of the OLD running statistic, in [0, 1] (0.9 is PyTorch's 0.1);
        None for the cumulative average (PyTorch's ``momentum=None``).
      eps: added to the variance in batch and layer norm, > 0.
      bn_backward: the normalization layers' backward: ``"closed_form"``, ``"staged"`` or
        ``"autodiff"`` (see ``jaxbn.batch_norm``).
      renorm, rmax, dmax: batch renormalization in every batch-norm layer and its clipping bounds
        (``rmax >= 1``, ``dmax >= 0``); ``apply`` can override the bounds per call.
      virtual_batch_size: None, or the ghost-batch size of every batch-norm layer in training.
      running_var: ``"biased"`` or ``"unbiased"`` (PyTorch's) running variance.

    Raises:
      ValueError: a bad size, an unknown option, or a hyperparameter out of range, naming the
        field and the value received.
      TypeError: a field of the wrong type (e.g. ``hidden_dims=100``).

    Examples:
      >>> import jax, jaxbn
      >>> net = jaxbn.FullyConnectedNet((100, 100), 10, normalization="batchnorm")
      >>> params, state = net.init(jax.random.key(0), 784)
      >>> [p["W"].shape for p in params]
      [(784, 100), (100, 100), (100, 10)]
    """

    hidden_dims: tuple[int, ...]
    num_classes: int
    _: dataclasses.KW_ONLY
    normalization: str | None = None
    activation: str = "relu"
    dropout: float = 0.0
    weight_init: str | float = "he"
    momentum: float = 0.9
    eps: float = 1e-5
    bn_backward: str = "closed_form"
    renorm: bool = False
    rmax: float = 3.0
    dmax: float = 5.0
    virtual_batch_size: int | None = None
    running_var: str = "biased"

    def __post_init__(self):
        dims = self.hidden_dims
        if isinstance(dims, (str, bytes)) or not isinstance(dims, Sequence):
            raise TypeError(
                f"hidden_dims must be a sequence of positive ints (e.g. (100, 100)), got {dims!r}"
            )
        if any(isinstance(d, bool) or not isinstance(d, numbers.Integral) or d < 1 for d in dims):
            raise ValueError(f"hidden_dims must contain positive ints only, got {dims!r}")
        object.__setattr__(self, "hidden_dims", tuple(int(d) for d in dims))
        n = self.num_classes
        if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 2:
            raise ValueError(f"num_classes must be an int >= 2, got {n!r}")
        object.__setattr__(self, "num_classes", int(n))
        if self.normalization not in NORMALIZATIONS:
            raise ValueError(
                f"normalization must be one of {NORMALIZATIONS}, got {self.normalization!r}"
            )
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {self.activation!r}")
        rate = _checks.real_number("dropout", self.dropout)
        if not 0.0 <= rate < 1.0:
            raise ValueError(
                f"dropout must be in [0, 1) (the probability of dropping a unit), got {rate!r}"
            )
        object.__setattr__(self, "dropout", rate)
        init_std(self.weight_init, 1, fan_out=1)  # validates the name or the fixed std
        if not isinstance(self.weight_init, str):
            object.__setattr__(self, "weight_init", float(self.weight_init))
        if self.momentum is not None:
            momentum = _checks.in_closed_range("momentum", self.momentum, 0.0, 1.0)
            object.__setattr__(self, "momentum", momentum)
        eps = _checks.positive("eps", self.eps)
        if not math.isfinite(eps):
            raise ValueError(f"eps must be finite, got {eps!r}")
        object.__setattr__(self, "eps", eps)
        if self.bn_backward not in BACKWARDS:
            raise ValueError(f"bn_backward must be one of {BACKWARDS}, got {self.bn_backward!r}")
        self._check_bn_options()

    def _check_bn_options(self) -> None:
        _checks.python_bool("renorm", self.renorm)
        for name, lo in (("rmax", 1.0), ("dmax", 0.0)):
            value = _checks.real_number(name, getattr(self, name))
            if not value >= lo:
                raise ValueError(f"{name} must be >= {lo:g}, got {value!r}")
            object.__setattr__(self, name, value)
        vbs = self.virtual_batch_size
        if vbs is not None:
            object.__setattr__(
                self, "virtual_batch_size", _checks.positive_int("virtual_batch_size", vbs)
            )
        _checks.one_of("running_var", self.running_var, RUNNING_VARS)
        bn_only = {
            "renorm": self.renorm,
            "virtual_batch_size": vbs is not None,
            "running_var": self.running_var != "biased",
            "momentum": self.momentum is None,
        }
        used = [k for k, v in bn_only.items() if v]
        if used and self.normalization != "batchnorm":
            raise ValueError(
                f"{', '.join(used)} apply to batch norm only; got normalization="
                f"{self.normalization!r}"
            )

    @property
    def num_layers(self) -> int:
        """Number of affine layers, ``len(hidden_dims) + 1``."""
        return len(self.hidden_dims) + 1

    def init(
        self, key: jax.Array, input_dim: int, *, dtype: DTypeLike = jnp.float32
    ) -> tuple[Params, State]:
        """Create the parameters and the initial state.

        Every weight is ``std * z`` with ``z ~ N(0, 1)`` and ``std = init_std(weight_init,
        d_in, fan_out=d_out)`` (the layer's sizes); the ``z`` of all layers come from one
        ``jax.random.normal(key, (total,))`` draw, in layer order. Biases and ``beta`` are 0,
        ``gamma`` is 1; batch-norm running statistics start at mean 0, var 1.

        Args:
          key: a ``jax.random`` key (may be batched under ``jax.vmap``).
          input_dim: ``D``, the number of input features (``prod(x.shape[1:])``).
          dtype: floating dtype of the parameters (float32 by default). Running statistics are
            float32 or wider.

        Returns:
          ``(params, state)``: ``params`` a list of ``num_layers`` dicts; ``state`` a list of
          ``len(hidden_dims)`` entries, ``BatchNormState`` for batch norm and ``None`` otherwise.
        """
        input_dim = _checks.positive_int("input_dim", input_dim)
        dtype = jnp.dtype(dtype)
        if not jnp.issubdtype(dtype, jnp.floating):
            raise TypeError(f"dtype must be a floating dtype, got {dtype}")
        # One compiled program per (net, input_dim, dtype), also when called outside jit, instead
        # of one per eager op; inside jit, vmap or grad it is traced inline as usual.
        return _init_fc(self, key, input_dim, dtype)

    def _init(self, key, input_dim, dtype):
        dims = (input_dim, *self.hidden_dims, self.num_classes)
        # One draw for every weight (one RNG program, not one per layer shape), then per-layer
        # slices scaled by that layer's standard deviation.
        sizes = [d_in * d_out for d_in, d_out in itertools.pairwise(dims)]
        z = jax.random.normal(key, (sum(sizes),), dtype)
        params: Params = []
        state: State = []
        offset = 0
        for i, (d_in, d_out) in enumerate(itertools.pairwise(dims)):
            std = init_std(self.weight_init, d_in, fan_out=d_out)
            w = z[offset : offset + sizes[i]].reshape(d_in, d_out)
            offset += sizes[i]
            layer = {"W": (std * w).astype(dtype), "b": jnp.zeros((d_out,), dtype)}
            hidden = i < self.num_layers - 1
            if hidden and self.normalization is not None:
                layer["gamma"] = jnp.ones((d_out,), dtype)
                layer["beta"] = jnp.zeros((d_out,), dtype)
            params.append(layer)
            if hidden:
                bn = self.normalization == "batchnorm"
                stats_dtype = jnp.promote_types(dtype, jnp.float32)
                state.append(batch_norm_state(d_out, stats_dtype) if bn else None)
        return params, state

    def apply(
        self,
        params: Params,
        state: State,
        x: ArrayLike,
        *,
        training: bool,
        key: jax.Array | None = None,
        mask: ArrayLike | None = None,
        axis_name: Hashable | None = None,
        rmax: float | ArrayLike | None = None,
        dmax: float | ArrayLike | None = None,
    ) -> tuple[jax.Array, State]:
        """Compute the logits; in training mode also the updated batch-norm statistics.

        Args:
          params: as returned by ``init``.
          state: as returned by ``init`` or a previous ``apply``.
          x: ``(N, D)`` inputs, or ``(N, ...)`` flattened to ``(N, D)``; floating dtype.
          training: Python bool. True: batch statistics, running-statistic updates and dropout;
            False: running statistics, no dropout, ``state`` returned unchanged.
          key: a ``jax.random`` key for dropout; required when ``training`` and ``dropout > 0``.
            Layer ``i`` uses ``jax.random.fold_in(key, i)``.
          mask: optional ``(N,)`` bool marking the real rows of a padded batch; batch norm leaves
            the False rows out of its statistics (see ``jaxbn.batch_norm``).
          axis_name: a mapped axis (``shard_map``, ``pmap``, ``vmap``) across which batch norm
            computes global batch statistics.
          rmax, dmax: override the net's renorm bounds for this call (floats or scalar arrays,
            traced values welcome, e.g. a schedule of the step); None keeps the net's.

        Returns:
          ``(logits, new_state)``: logits ``(N, C)`` in the dtype of ``x`` and ``params``.

        Raises:
          ValueError: params or state that do not match this net, an input of the wrong width,
            or no ``key`` when dropout needs one.
          TypeError: a non-bool ``training`` or a non-floating ``x``.
        """
        h, _, new_state = self._forward(
            params, state, x, training, key, mask, axis_name, rmax=rmax, dmax=dmax
        )
        last = params[-1]
        logits = h @ last["W"] + last["b"][None, :]
        return logits, new_state

    def hidden(
        self,
        params: Params,
        state: State,
        x: ArrayLike,
        *,
        training: bool,
        key: jax.Array | None = None,
        mask: ArrayLike | None = None,
        axis_name: Hashable | None = None,
    ) -> tuple[list[jax.Array], State]:
        """Compute every hidden layer's output (after its activation and dropout).

        Same arguments, checks and state update as ``apply``, which is this plus the last
        affine: ``logits = hidden(...)[0][-1] @ params[-1]["W"] + params[-1]["b"]`` (``x``
        flattened when there is no hidden layer).

        Returns:
          ``(activations, new_state)``: a list of ``len(hidden_dims)`` arrays ``(N, H_i)``.
        """
        _, hs, new_state = self._forward(params, state, x, training, key, mask, axis_name)
        return hs, new_state

    def _forward(self, params, state, x, training, key, mask, axis_name, rmax=None, dmax=None):
        """The hidden layers: (last hidden output or flattened x, every hidden output, state)."""
        training = _checks.python_bool("training", training)
        x = _checks.floating_array("x", x)
        self._check_tree(params, state)
        if x.ndim < 2:
            raise ValueError(f"x must have shape (N, D) or (N, ...), got shape {tuple(x.shape)}")
        h = jnp.reshape(x, (x.shape[0], -1))
        d_in = params[0]["W"].shape[0]
        if h.shape[1] != d_in:
            raise ValueError(
                f"x has {h.shape[1]} features per example (shape {tuple(x.shape)}) but the first "
                f"layer expects {d_in}"
            )
        use_dropout = training and self.dropout > 0.0
        if use_dropout and key is None:
            raise ValueError(
                f"key must be a jax.random key when training with dropout={self.dropout}, got None"
            )
        act = ACTIVATION_FNS[self.activation]
        new_state: State = []
        hs: list[jax.Array] = []
        for i, layer in enumerate(params[:-1]):
            h = h @ layer["W"] + layer["b"][None, :]
            if self.normalization == "batchnorm":
                h, s = batch_norm(
                    h,
                    layer["gamma"],
                    layer["beta"],
                    state[i],
                    training=training,
                    momentum=self.momentum,
                    eps=self.eps,
                    axis_name=axis_name,
                    backward=self.bn_backward,
                    mask=mask,
                    renorm=self.renorm,
                    rmax=self.rmax if rmax is None else rmax,
                    dmax=self.dmax if dmax is None else dmax,
                    virtual_batch_size=self.virtual_batch_size,
                    running_var=self.running_var,
                )
                new_state.append(s)
            else:
                if self.normalization == "layernorm":
                    h = layer_norm(
                        h, layer["gamma"], layer["beta"], eps=self.eps, backward=self.bn_backward
                    )
                new_state.append(state[i])
            h = act(h)
            if use_dropout:
                h = _dropout(h, key=jax.random.fold_in(key, i), rate=self.dropout, training=True)
            hs.append(h)
        return h, hs, new_state

    def _check_tree(self, params: Any, state: Any) -> None:
        check_tree(
            params,
            state,
            self.num_layers,
            self.normalization,
            f" for hidden_dims={self.hidden_dims}",
        )


def check_tree(params: Any, state: Any, num_layers: int, normalization, context="") -> None:
    """Check the static structure of a net's params and state (``FullyConnectedNet``, ``ConvNet``).

    ``params``: ``num_layers`` dicts with ``W`` and ``b`` (and ``gamma``, ``beta`` in the hidden
    layers when the net normalizes); ``state``: one entry per hidden layer, a ``BatchNormState``
    for batch norm and None otherwise. ``context`` ends the params message.
    """
    if not isinstance(params, (list, tuple)) or len(params) != num_layers:
        got = len(params) if isinstance(params, (list, tuple)) else type(params).__name__
        raise ValueError(f"params must be a list of {num_layers} layer dicts{context}, got {got}")
    norm = normalization is not None
    for i, layer in enumerate(params):
        want = {"W", "b"} | ({"gamma", "beta"} if norm and i < num_layers - 1 else set())
        if not isinstance(layer, dict) or set(layer) != want:
            keys = sorted(layer) if isinstance(layer, dict) else type(layer).__name__
            raise ValueError(f"params[{i}] must be a dict with keys {sorted(want)}, got {keys}")
    hidden = num_layers - 1
    if not isinstance(state, (list, tuple)) or len(state) != hidden:
        got = len(state) if isinstance(state, (list, tuple)) else type(state).__name__
        raise ValueError(
            f"state must be a list of {hidden} entries (one per hidden layer), got {got}"
        )
    bn = normalization == "batchnorm"
    for i, s in enumerate(state):
        if bn and not isinstance(s, BatchNormState):
            raise ValueError(f"state[{i}] must be a BatchNormState, got {type(s).__name__}")
        if not bn and s is not None:
            raise ValueError(f"state[{i}] must be None for normalization={normalization!r}")


_init_fc = jax.jit(FullyConnectedNet._init, static_argnums=(0, 2, 3))
