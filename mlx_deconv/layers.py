"""``ConvTranspose1d``: the op as an ``mlx.nn.Module``, with weight norm, masks and PyTorch import."""

from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from . import activations, initializers
from . import weight_norm as wn
from .functional import conv_transpose1d
from .geometry import Padding, as_int, conv_geometry, resolve_padding
from .interop import TorchWeights, mlx_to_torch_weight, read_torch_state_dict, torch_to_mlx_weight

_FORMAT_ALIASES = {"NLC": "NLC", "NCL": "NCL", "channels_last": "NLC", "channels_first": "NCL"}


def normalize_data_format(data_format: str) -> str:
    if data_format not in _FORMAT_ALIASES:
        raise ValueError(f"data_format must be one of {tuple(_FORMAT_ALIASES)}, got {data_format!r}")
    return _FORMAT_ALIASES[data_format]


class ConvTranspose1d(nn.Module):
    """A 1-D transposed convolution layer over ``(N, L, C_in)`` (or ``(N, C_in, L)``) signals.

    Every argument form of :func:`mlx_deconv.conv_transpose1d` is accepted.
    The parameters are ``weight`` in MLX layout ``(C_out, K, C_in/groups)``
    (or ``weight_g``/``weight_v`` with ``weight_norm``) and ``bias``, so
    ``mlx.nn`` tools (optimizers, ``save_weights``, ``nn.value_and_grad``,
    ``mx.compile``) work unchanged.

    Args:
        in_channels (int): ``C_in``.
        out_channels (int): ``C_out``.
        kernel_size (int): ``K``.
        stride (int): upsampling factor. Default: ``1``.
        padding: int, ``(left, right)``, ``"valid"``, ``"same"`` or ``"causal"``. Default: ``0``.
        output_padding (int, optional): see the op. Default: ``None``.
        dilation (int): spacing between taps. Default: ``1``.
        groups (int): blocked channel groups. Default: ``1``.
        bias (bool): learn a bias. Default: ``True``.
        data_format (str): ``"NLC"`` or ``"NCL"`` (also ``"channels_last"``/``"channels_first"``).
        activation: None, a name (``"relu"``, ``"gelu"``, ``"silu"``, ``"tanh"``,
            ``"leaky_relu"``, ``"snake"``, ...) or a callable. ``"snake"`` learns
            one ``alpha`` per output channel.
        kernel_init: a name of :data:`mlx_deconv.initializers.NAMES` or a callable
            ``f(shape, dtype)``. Default: ``"torch"`` (PyTorch's default).
        bias_init: likewise; ``"torch"`` gives PyTorch's bias. Default: ``"zeros"``.
        w_mask (array, optional): broadcastable to the weight, multiplied in on every call.
        weight_norm (bool): parametrise the weight as ``g * v / ||v||`` (PyTorch's
            ``weight_norm``). Default: ``False``.
        weight_norm_dim (int, optional): PyTorch's ``dim``, an axis of the PyTorch layout
            ``(C_in, C_out/groups, K)``; ``0`` gives one norm per input channel. Default: ``0``.
        backend (str): ``"auto"``, ``"builtin"``, ``"gemm"`` or ``"metal"`` (Metal GPU
            streams only). Default: ``"auto"``.
        in_size (tuple, optional): brainstate's ``(L, C_in)``; sets :attr:`out_size`.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: Padding = 0,
        output_padding: Optional[int] = None,
        dilation: int = 1,
        groups: int = 1,
        bias: bool = True,
        *,
        data_format: str = "NLC",
        activation: activations.Activation = None,
        kernel_init: initializers.Initializer = "torch",
        bias_init: initializers.Initializer = "zeros",
        w_mask=None,
        weight_norm: bool = False,
        weight_norm_dim: Optional[int] = 0,
        backend: str = "auto",
        in_size: Optional[Sequence[int]] = None,
    ):
        super().__init__()
        in_channels = as_int("in_channels", in_channels, 1)
        out_channels = as_int("out_channels", out_channels, 1)
        kernel_size = as_int("kernel_size", kernel_size, 1)
        stride = as_int("stride", stride, 1)
        dilation = as_int("dilation", dilation, 1)
        groups = as_int("groups", groups, 1)
        if in_channels % groups or out_channels % groups:
            raise ValueError(
                f"groups={groups} must divide in_channels={in_channels} and out_channels={out_channels}"
            )
        resolve_padding(padding, kernel_size, stride, dilation, output_padding)  # validates early
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, kernel_size
        self.stride, self.dilation, self.groups = stride, dilation, groups
        self.padding = tuple(padding) if isinstance(padding, list) else padding
        self.output_padding = output_padding
        self.data_format = normalize_data_format(data_format)
        self.backend = backend
        shape = (out_channels, kernel_size, in_channels // groups)
        weight = initializers.initialize(
            kernel_init, shape, groups=groups, stride=stride, dilation=dilation, name="kernel_init"
        )
        self._weight_norm_dim = wn.norm_dim(weight_norm_dim) if weight_norm else None
        if weight_norm:
            self.weight_g, self.weight_v = wn.split(weight, groups, self._weight_norm_dim)
        else:
            self.weight = weight
        if bias:
            self.bias = initializers.initialize(bias_init, (out_channels,), bias_of=shape, groups=groups, name="bias_init")
        if w_mask is not None:
            w_mask = mx.array(w_mask)
            try:
                mx.broadcast_shapes(w_mask.shape, shape)
            except ValueError as err:
                raise ValueError(f"w_mask of shape {w_mask.shape} does not broadcast to the weight {shape}") from err
            self._w_mask = w_mask  # leading underscore: not a parameter, never trained
        else:
            self._w_mask = None
        channel_axis = -1 if self.data_format == "NLC" else -2
        act = activations.resolve(activation, out_channels, channel_axis)
        if isinstance(act, nn.Module):
            self.activation = act
        else:
            self._activation_fn = act
        self._activation_name = activation if isinstance(activation, str) or activation is None else getattr(activation, "__name__", "callable")
        self.in_size = None if in_size is None else self._check_in_size(in_size)

    # -- configuration -------------------------------------------------
    @property
    def uses_weight_norm(self) -> bool:
        return "weight_v" in self

    def _check_in_size(self, in_size) -> Tuple[int, int]:
        in_size = tuple(int(n) for n in in_size)
        if len(in_size) != 2 or in_size[1] != self.in_channels:
            raise ValueError(f"in_size must be (L, C_in={self.in_channels}), got {in_size}")
        self.output_shape((1,) + in_size)  # validates the length
        return in_size

    @property
    def out_size(self) -> Optional[Tuple[int, int]]:
        """brainstate's ``(L_out, C_out)`` for the ``in_size`` given at construction."""
        if self.in_size is None:
            return None
        return tuple(self.output_shape(self.in_size))

    def output_shape(self, input_shape: Sequence[int]) -> Tuple[int, ...]:
        """The output shape for an input shape (batched or not, in the layer's data format)."""
        geom, batched = conv_geometry(
            input_shape, (self.out_channels, self.kernel_size, self.in_channels // self.groups),
            stride=self.stride, padding=self.padding, output_padding=self.output_padding,
            dilation=self.dilation, groups=self.groups, data_format=self.data_format,
        )
        spatial = (geom.output_length, geom.out_channels) if self.data_format == "NLC" else (geom.out_channels, geom.output_length)
        return ((geom.batch,) if batched else ()) + spatial

    def _extra_repr(self) -> str:
        parts = [f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}",
                 f"padding={self.padding!r}"]
        if self.output_padding is not None:
            parts.append(f"output_padding={self.output_padding}")
        for name, default in (("dilation", 1), ("groups", 1)):
            if getattr(self, name) != default:
                parts.append(f"{name}={getattr(self, name)}")
        parts.append(f"bias={'bias' in self}")
        if self.data_format != "NLC":
            parts.append(f"data_format={self.data_format!r}")
        if self._activation_name is not None:
            parts.append(f"activation={self._activation_name!r}")
        if self.uses_weight_norm:
            parts.append(f"weight_norm=True, weight_norm_dim={self._weight_norm_dim}")
        if self._w_mask is not None:
            parts.append("w_mask=...")
        if self.backend != "auto":
            parts.append(f"backend={self.backend!r}")
        return ", ".join(parts)

    # -- computation ----------------------------------------------------
    def effective_weight(self) -> mx.array:
        """The MLX-layout weight the convolution uses (weight norm and mask applied)."""
        if self.uses_weight_norm:
            w = wn.combine(self.weight_g, self.weight_v, self.groups, self._weight_norm_dim)
        else:
            w = self.weight
        if self._w_mask is not None:
            w = w * self._w_mask
        return w

    def apply_activation(self, y: mx.array) -> mx.array:
        if "activation" in self:
            return self.activation(y)
        fn = self.__dict__.get("_activation_fn")
        return y if fn is None else fn(y)

    def __call__(self, x: mx.array) -> mx.array:
        y = conv_transpose1d(
            x, self.effective_weight(), self.get("bias"), stride=self.stride, padding=self.padding,
            output_padding=self.output_padding, dilation=self.dilation, groups=self.groups,
            data_format=self.data_format, backend=self.backend,
        )
        return self.apply_activation(y)

    def streaming(self):
        """A :class:`mlx_deconv.StreamingConvTranspose1d` that runs this layer chunk by chunk."""
        from .streaming import StreamingConvTranspose1d

        return StreamingConvTranspose1d(self)

    # -- PyTorch interop ------------------------------------------------
    @classmethod
    def from_torch(
        cls,
        state_dict: Dict[str, object],
        *,
        stride: int = 1,
        padding: Padding = 0,
        output_padding: Optional[int] = 0,
        dilation: int = 1,
        groups: int = 1,
        data_format: str = "NLC",
        prefix: str = "",
        **layer_kwargs,
    ) -> "ConvTranspose1d":
        """A layer built from a PyTorch ``ConvTranspose1d`` state dict.

        Channels and kernel size come from the tensors' shapes; weight norm is
        switched on when the keys say so (``weight_g``/``weight_v``, or
        ``parametrizations.weight.original0/1``). Values may be numpy arrays,
        torch tensors or anything with ``__array__``; torch is not needed.

        Args:
            state_dict: the layer's tensors (keys under ``prefix``).
            stride, padding, output_padding, dilation, groups: the PyTorch layer's.
            data_format (str): the layout the new layer takes. Default: ``"NLC"``.
            prefix (str): e.g. ``"ups.0."`` to pick one layer out of a model's state dict.
            **layer_kwargs: anything else :class:`ConvTranspose1d` takes (``activation``, ``backend``...).
        """
        tensors = read_torch_state_dict(state_dict, prefix)
        in_channels, out_per_group, kernel_size = tensors.weight_shape
        layer = cls(
            in_channels, out_per_group * groups, kernel_size, stride=stride, padding=padding,
            output_padding=output_padding, dilation=dilation, groups=groups,
            bias=tensors.bias is not None, data_format=data_format,
            weight_norm=tensors.g is not None, weight_norm_dim=tensors.dim, **layer_kwargs,
        )
        layer._load(tensors)
        return layer

    def load_torch_state_dict(self, state_dict: Dict[str, object], prefix: str = "") -> "ConvTranspose1d":
        """Loads a PyTorch ``ConvTranspose1d`` state dict into this layer (converting weight norm either way)."""
        self._load(read_torch_state_dict(state_dict, prefix))
        return self

    def _load(self, tensors: TorchWeights) -> None:
        expected = (self.in_channels, self.out_channels // self.groups, self.kernel_size)
        if tensors.weight_shape != expected:
            raise ValueError(f"state dict weight has PyTorch shape {tensors.weight_shape}, this layer needs {expected}")
        if (tensors.bias is not None) != ("bias" in self):
            raise ValueError(f"state dict {'has' if tensors.bias is not None else 'lacks'} a bias, this layer "
                             f"{'has' if 'bias' in self else 'has none'}")
        v = torch_to_mlx_weight(mx.array(tensors.v if tensors.g is not None else tensors.weight), self.groups)
        if tensors.g is not None:
            g = mx.array(tensors.g)
            if self.uses_weight_norm and tensors.dim == self._weight_norm_dim:
                self.weight_g, self.weight_v = g.reshape(self.weight_g.shape), v
            elif self.uses_weight_norm:
                self.weight_g, self.weight_v = wn.split(wn.combine(g, v, self.groups, tensors.dim), self.groups, self._weight_norm_dim)
            else:
                self.weight = wn.combine(g, v, self.groups, tensors.dim)
        elif self.uses_weight_norm:
            self.weight_g, self.weight_v = wn.split(v, self.groups, self._weight_norm_dim)
        else:
            self.weight = v
        if tensors.bias is not None:
            self.bias = mx.array(tensors.bias).reshape(self.out_channels)

    def torch_state_dict(self, style: str = "parametrizations") -> Dict[str, np.ndarray]:
        """This layer's tensors as a PyTorch ``ConvTranspose1d`` state dict of numpy arrays.

        Args:
            style (str): for a weight-normed layer, ``"parametrizations"``
                (``torch.nn.utils.parametrizations.weight_norm``) or ``"legacy"``
                (``weight_g``/``weight_v``). Default: ``"parametrizations"``.
        """
        out: Dict[str, np.ndarray] = {}
        if self.uses_weight_norm:
            g = np.array(self.weight_g)
            v = np.array(mlx_to_torch_weight(self.weight_v, self.groups))
            if style == "parametrizations":
                out["parametrizations.weight.original0"], out["parametrizations.weight.original1"] = g, v
            elif style == "legacy":
                out["weight_g"], out["weight_v"] = g, v
            else:
                raise ValueError(f"style must be 'parametrizations' or 'legacy', got {style!r}")
        else:
            out["weight"] = np.array(mlx_to_torch_weight(self.weight, self.groups))
        if "bias" in self:
            out["bias"] = np.array(self.bias)
        return out
