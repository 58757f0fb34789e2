"""A convolutional classifier: ``{conv - [norm] - activation - [pool] - [dropout]} x L - dense``.

``ConvNet`` follows ``FullyConnectedNet``'s contract (an immutable, hashable configuration with
pure ``init`` and ``apply``), so ``make_train_step``, ``fit``, ``evaluate``, ``jaxbn.recalibrate``
and ``jaxbn.fold_net`` take either::

    params, state = net.init(key, (28, 28, 1))          # one example's (H, W, C)
    logits, new_state = net.apply(params, state, x, training=True)   # x: (N, H, W, C)

``params`` is a list with one dict per layer, conv layers first: ``{"W": (kh, kw, C_in, C_out)``
(HWIO, as ``lax.conv_general_dilated`` takes it), ``"b": (C_out,)}``, then the dense layers
``{"W": (D_in, D_out), "b": (D_out,)}``; normalized layers (every conv layer and every hidden
dense layer) also hold ``"gamma"`` and ``"beta"`` of shape ``(C_out,)`` or ``(D_out,)``. ``state``
has one entry per normalized position: a ``BatchNormState`` for batch norm, ``None`` otherwise.

Shapes: N batch, H, W spatial, C channels, D features, K classes.
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
from jax import lax
from jax.typing import ArrayLike, DTypeLike

from jaxbn import _checks
from jaxbn.dropout import dropout as _dropout
from jaxbn.initializers import init_std
from jaxbn.nn import ACTIVATION_FNS, check_tree
from jaxbn.norm import BACKWARDS, BatchNormState, batch_norm, batch_norm_state, layer_norm

__all__ = ["DATA_FORMATS", "ConvNet"]

DATA_FORMATS = ("NHWC", "NCHW")
_NORMALIZATIONS = (None, "batchnorm", "layernorm")


def _int_tuple(name: str, value) -> tuple[int, ...]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise TypeError(f"{name} must be a sequence of positive ints, got {value!r}")
    if any(isinstance(d, bool) or not isinstance(d, numbers.Integral) or d < 1 for d in value):
        raise ValueError(f"{name} must contain positive ints only, got {value!r}")
    return tuple(int(d) for d in value)


@dataclasses.dataclass(frozen=True)
class ConvNet:
    """Configuration of a convolutional classifier; ``init`` and ``apply`` are pure.

    Layout: ``{conv (stride 1, SAME padding) - [norm] - activation - [max pool] - [dropout]}`` per
    entry of ``channels``, then a flatten and ``{dense - [norm] - activation - [dropout]}`` per
    entry of ``hidden_dims``, then the dense layer that gives the logits.

    Attributes:
      channels: output channels of the conv layers, a tuple of positive ints (at least one).
      num_classes: ``K``, >= 2.
      kernel_size: side of the square conv kernels (odd or even; SAME padding either way).
      pool: side and stride of the max pooling after each conv block (VALID: the spatial size is
        floored, ``H // pool``); 1 turns pooling off.
      hidden_dims: sizes of the dense hidden layers after the flatten.
      normalization: ``None``, ``"batchnorm"`` (conv layers: ``jaxbn.batch_norm`` over N, H, W per
        channel, "spatial" batch norm) or ``"layernorm"`` (conv layers: ``jaxbn.layer_norm`` over
        the channels at each position, ConvNeXt style; dense layers: over the features).
      activation: ``"relu"``, ``"sigmoid"`` or ``"tanh"``.
      dropout: probability of dropping a unit after each block, in [0, 1).
      weight_init: ``"he"``, ``"xavier"`` or a fixed positive std; ``fan_in`` of a conv layer is
        ``kh * kw * C_in``. Biases start at 0.
      momentum: batch norm's weight of the OLD running statistic (0.9 is PyTorch's 0.1).
      eps: added to the variance in batch and layer norm, > 0.
      bn_backward: ``"closed_form"``, ``"staged"`` or ``"autodiff"`` (see ``jaxbn.batch_norm``).
      data_format: ``"NHWC"`` (default) or ``"NCHW"``: the layout of ``x`` and of every conv
        activation. The flatten follows it: ``(h, w, c)`` order for NHWC, ``(c, h, w)`` for NCHW.

    Raises:
      ValueError, TypeError: a bad field, naming it and the value received.

    Example:
      >>> import jax, jaxbn
      >>> net = jaxbn.ConvNet((8, 16), 10, normalization="batchnorm")
      >>> params, state = net.init(jax.random.key(0), (28, 28, 1))
      >>> [p["W"].shape for p in params]
      [(3, 3, 1, 8), (3, 3, 8, 16), (784, 10)]
    """

    channels: tuple[int, ...]
    num_classes: int
    _: dataclasses.KW_ONLY
    kernel_size: int = 3
    pool: int = 2
    hidden_dims: tuple[int, ...] = ()
    normalization: str | None = None
    activation: str = "relu"
    dropout: float = 0.0
    weight_init: str | float = "he"
    momentum: float = 0.9
    eps: float = 1e-5
    bn_backward: str = "closed_form"
    data_format: str = "NHWC"

    def __post_init__(self):
        channels = _int_tuple("channels", self.channels)
        if not channels:
            raise ValueError("channels must name at least one conv layer, got ()")
        object.__setattr__(self, "channels", channels)
        object.__setattr__(self, "hidden_dims", _int_tuple("hidden_dims", self.hidden_dims))
        n = self.num_classes
        if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 2:
            raise ValueError(f"num_classes must be an int >= 2, got {n!r}")
        object.__setattr__(self, "num_classes", int(n))
        object.__setattr__(
            self, "kernel_size", _checks.positive_int("kernel_size", self.kernel_size)
        )
        object.__setattr__(self, "pool", _checks.positive_int("pool", self.pool))
        if self.normalization not in _NORMALIZATIONS:
            raise ValueError(
                f"normalization must be one of {_NORMALIZATIONS}, got {self.normalization!r}"
            )
        if self.activation not in ACTIVATION_FNS:
            raise ValueError(
                f"activation must be one of {tuple(ACTIVATION_FNS)}, got {self.activation!r}"
            )
        rate = _checks.real_number("dropout", self.dropout)
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {rate!r}")
        object.__setattr__(self, "dropout", rate)
        init_std(self.weight_init, 1)  # validates the name or the fixed std
        if not isinstance(self.weight_init, str):
            object.__setattr__(self, "weight_init", float(self.weight_init))
        momentum = _checks.in_closed_range("momentum", self.momentum, 0.0, 1.0)
        object.__setattr__(self, "momentum", momentum)
        eps = _checks.positive("eps", self.eps)
        if not math.isfinite(eps):
            raise ValueError(f"eps must be finite, got {eps!r}")
        object.__setattr__(self, "eps", eps)
        if self.bn_backward not in BACKWARDS:
            raise ValueError(f"bn_backward must be one of {BACKWARDS}, got {self.bn_backward!r}")
        if self.data_format not in DATA_FORMATS:
            raise ValueError(f"data_format must be one of {DATA_FORMATS}, got {self.data_format!r}")

    @property
    def num_layers(self) -> int:
        """Number of weight layers: conv layers + hidden dense layers + the output layer."""
        return len(self.channels) + len(self.hidden_dims) + 1

    @property
    def channel_axis(self) -> int:
        """The channel axis of ``x`` and of the conv activations: -1 (NHWC) or 1 (NCHW)."""
        return -1 if self.data_format == "NHWC" else 1

    def feature_shape(self, input_shape: Sequence[int]) -> tuple[int, int, int]:
        """``(H', W', C')`` of the last conv block's output for one example of ``input_shape``.

        Args:
          input_shape: one example's shape in ``data_format``: ``(H, W, C)`` or ``(C, H, W)``.
        """
        shape = _int_tuple("input_shape", input_shape)
        if len(shape) != 3:
            raise ValueError(
                f"input_shape must be one example's ({', '.join(self.data_format[1:])}) shape, "
                f"got {input_shape!r}"
            )
        h, w = (shape[0], shape[1]) if self.data_format == "NHWC" else (shape[1], shape[2])
        for _ in self.channels:
            h, w = h // self.pool, w // self.pool
        if h < 1 or w < 1:
            raise ValueError(
                f"input_shape {shape} is too small for {len(self.channels)} poolings by {self.pool}"
            )
        return h, w, self.channels[-1]

    def init(
        self, key: jax.Array, input_shape: Sequence[int], *, dtype: DTypeLike = jnp.float32
    ) -> tuple[list[dict[str, jax.Array]], list[BatchNormState | None]]:
        """Create the parameters and the initial state.

        Weights are ``init_std(weight_init, fan_in) * z``, the ``z ~ N(0, 1)`` of all layers
        taken in layer order from one ``jax.random.normal(key, (total,))`` draw. Biases and
        ``beta`` start at 0, ``gamma`` at 1, running statistics at mean 0 and var 1.

        Args:
          key: a ``jax.random`` key.
          input_shape: one example's shape in ``data_format``, e.g. ``(28, 28, 1)`` for NHWC.
          dtype: floating dtype of the parameters; running statistics are float32 or wider.

        Returns:
          ``(params, state)`` as described in the module docstring.
        """
        dtype = jnp.dtype(dtype)
        if not jnp.issubdtype(dtype, jnp.floating):
            raise TypeError(f"dtype must be a floating dtype, got {dtype}")
        self.feature_shape(input_shape)  # checks input_shape
        # One compiled program per (net, input shape, dtype), also outside jit (see nn.py).
        return _init_conv(self, key, tuple(int(n) for n in input_shape), dtype)

    def _init(self, key, input_shape, dtype):
        h, w, c_last = self.feature_shape(input_shape)
        c_in = input_shape[-1] if self.data_format == "NHWC" else input_shape[0]
        k = self.kernel_size
        shapes = [(k, k, ci, co) for ci, co in itertools.pairwise((c_in, *self.channels))]
        dims = (h * w * c_last, *self.hidden_dims, self.num_classes)
        shapes += list(itertools.pairwise(dims))
        stats_dtype = jnp.promote_types(dtype, jnp.float32)
        # One draw for every weight (one RNG program, not one per layer shape), sliced per layer.
        sizes = [math.prod(shape) for shape in shapes]
        z_all = jax.random.normal(key, (sum(sizes),), dtype)
        offsets = [0, *itertools.accumulate(sizes)]
        params, state = [], []
        for i, shape in enumerate(shapes):
            std = init_std(self.weight_init, math.prod(shape[:-1]))
            z = z_all[offsets[i] : offsets[i + 1]].reshape(shape)
            layer = {"W": (std * z).astype(dtype), "b": jnp.zeros(shape[-1:], dtype)}
            if i < len(shapes) - 1:
                if self.normalization is not None:
                    layer["gamma"] = jnp.ones(shape[-1:], dtype)
                    layer["beta"] = jnp.zeros(shape[-1:], dtype)
                bn = self.normalization == "batchnorm"
                state.append(batch_norm_state(shape[-1], stats_dtype) if bn else None)
            params.append(layer)
        return params, state

    def _affine(self, i: int, layer: dict[str, jax.Array], h: jax.Array) -> jax.Array:
        """Layer ``i``'s conv or dense map (before normalization)."""
        if i < len(self.channels):
            fmt = self.data_format
            h = lax.conv_general_dilated(
                h, layer["W"], (1, 1), "SAME", dimension_numbers=(fmt, "HWIO", fmt)
            )
            shape = (1, 1, 1, -1) if fmt == "NHWC" else (1, -1, 1, 1)
            return h + jnp.reshape(layer["b"], shape)
        if i == len(self.channels):
            h = jnp.reshape(h, (h.shape[0], -1))
        return h @ layer["W"] + layer["b"][None, :]

    def _pool(self, h: jax.Array) -> jax.Array:
        if self.pool == 1:
            return h
        p = self.pool
        window = (1, p, p, 1) if self.data_format == "NHWC" else (1, 1, p, p)
        return lax.reduce_window(h, -jnp.inf, lax.max, window, window, "VALID")

    def apply(
        self,
        params: list[dict[str, jax.Array]],
        state: list[BatchNormState | None],
        x: ArrayLike,
        *,
        training: bool,
        key: jax.Array | None = None,
        mask: ArrayLike | None = None,
        axis_name: Hashable | None = None,
        stop_before_norm: int | None = None,
    ) -> tuple[jax.Array, list[BatchNormState | None]]:
        """Compute the logits; in training mode also the updated batch-norm statistics.

        Args:
          params, state: as returned by ``init`` (or a previous ``apply`` for ``state``).
          x: ``(N, H, W, C)`` (NHWC) or ``(N, C, H, W)`` (NCHW) floating inputs.
          training: Python bool: batch statistics, state updates and dropout (True) or running
            statistics and no dropout (False).
          key: dropout key, required when training with ``dropout > 0``; block ``i`` uses
            ``jax.random.fold_in(key, i)``.
          mask: optional ``(N,)`` bool of real examples; batch norm leaves the others (all their
            positions) out of its statistics.
          axis_name: a mapped axis across which batch norm computes global statistics.
          stop_before_norm: internal hook for ``jaxbn.recalibrate``: return the input of the
            normalization of layer ``stop_before_norm`` (and ``state``) instead of the logits.

        Returns:
          ``(logits, new_state)``: logits ``(N, K)``.
        """
        training = _checks.python_bool("training", training)
        x = _checks.floating_array("x", x)
        self._check_tree(params, state)
        if x.ndim != 4:
            raise ValueError(
                f"x must have shape (N, {', '.join(self.data_format[1:])}), got "
                f"shape {tuple(x.shape)}"
            )
        c_in = x.shape[self.channel_axis]
        if c_in != params[0]["W"].shape[2]:
            raise ValueError(
                f"x has {c_in} channels (shape {tuple(x.shape)}) but the first conv "
                f"layer expects {params[0]['W'].shape[2]}"
            )
        use_dropout = training and self.dropout > 0.0
        if use_dropout and key is None:
            raise ValueError(
                f"key must be a jax.random key when training with dropout={self.dropout}, got None"
            )
        act = ACTIVATION_FNS[self.activation]
        n_conv = len(self.channels)
        h, new_state = x, []
        for i, layer in enumerate(params[:-1]):
            h = self._affine(i, layer, h)
            if stop_before_norm == i:
                return h, state
            axis = self.channel_axis if i < n_conv else -1
            if self.normalization == "batchnorm":
                m = None
                if mask is not None:
                    m = jnp.asarray(mask)
                    if i < n_conv:
                        spatial = [h.shape[a] for a in range(1, 4) if a != axis % 4]
                        m = jnp.broadcast_to(m[:, None, None], (h.shape[0], *spatial))
                h, s = batch_norm(
                    h,
                    layer["gamma"],
                    layer["beta"],
                    state[i],  # type: ignore[arg-type]  # a BatchNormState in a batch-norm net
                    training=training,
                    momentum=self.momentum,
                    eps=self.eps,
                    axis=axis,
                    axis_name=axis_name,
                    backward=self.bn_backward,
                    mask=m,
                )
                new_state.append(s)
            else:
                if self.normalization == "layernorm":
                    h = layer_norm(
                        h,
                        layer["gamma"],
                        layer["beta"],
                        eps=self.eps,
                        axis=axis,
                        backward=self.bn_backward,
                    )
                new_state.append(state[i])
            h = act(h)
            if i < n_conv:
                h = self._pool(h)
            if use_dropout and key is not None:
                h = _dropout(h, key=jax.random.fold_in(key, i), rate=self.dropout, training=True)
        return self._affine(len(params) - 1, params[-1], h), new_state

    def _check_tree(self, params: Any, state: Any) -> None:
        """``nn.check_tree``, and conv weights with 4 axes, dense ones with 2."""
        check_tree(params, state, self.num_layers, self.normalization)
        for i, layer in enumerate(params):
            ndim = 4 if i < len(self.channels) else 2
            if jnp.ndim(layer["W"]) != ndim:
                raise ValueError(
                    f"params[{i}]['W'] must have {ndim} axes, got shape {jnp.shape(layer['W'])}"
                )


_init_conv = jax.jit(ConvNet._init, static_argnums=(0, 2, 3))
