"""``ConvTranspose1d`` and ``Conv1d``: the ops as ``mlx.nn`` Modules, sharing one frozen configuration.

Both layers in one module (about 420 lines), as ``mlx.nn``'s convolution layers are: they share
their base class, weight norm, activation and PyTorch import, and differ only in the op they call.

:class:`~mlx_deconv.nn.config.ConvConfig` holds everything that is not a
parameter; the layers, the Keras spelling (:mod:`mlx_deconv.keras`) and the
streaming wrappers (:mod:`mlx_deconv.nn.streaming`) all read it. What happens
after the convolution (bias, layout, activation) is :meth:`ConvLayer.finish`,
which the streaming wrappers reuse. PyTorch import/export is in
:mod:`mlx_deconv.interop`.
"""

from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from . import activations, initializers, interop
from . import weight_norm as wn
from .config import ConvConfig
from ..ops.functional import conv1d, conv_transpose1d
from ..geometry.records import Padding, as_int
from .interop import read_torch_state_dict
from .streaming import StreamingConv1d, StreamingConvTranspose1d


class ConvLayer(nn.Module):
    """What both convolution layers share; build one with :class:`ConvTranspose1d` or :class:`Conv1d`.

    Parameters: ``weight`` in MLX layout ``(C_out, K, C_in/groups)`` (or
    ``weight_g``/``weight_v`` with weight norm), ``bias``, and an activation's own
    (``"snake"``'s ``alpha``).
    """

    def __init__(self, config: ConvConfig, *, kernel_init: initializers.Initializer, bias_init: initializers.Initializer,
                 w_mask=None, in_size: Optional[Sequence[int]] = None):
        super().__init__()
        self.config = config
        self._kernel_init, self._bias_init = kernel_init, bias_init
        self._w_mask_value = w_mask
        self._w_mask = None
        self._activation_fn = None
        self._in_size = None
        if config.in_channels is not None:
            self._create_parameters()
            if in_size is not None:
                self._in_size = self._check_in_size(in_size)

    def _create_parameters(self) -> None:
        """Draws the parameters from the initialisers, now that ``in_channels`` is known."""
        config = self.config
        shape = config.weight_shape
        kernel_init, bias_init = self._kernel_init, self._bias_init
        # PyTorch's default bound reads fan_in off its own layout; for a direct conv that is (C_in/groups)*K,
        # which initializers' "torch" rule (written for the transposed layout) finds in this swapped shape.
        fan_shape = shape if config.transposed else (config.in_channels, config.kernel_size, config.out_channels // config.groups)
        weight = initializers.initialize(
            kernel_init, shape, groups=config.groups, stride=config.stride, dilation=config.dilation, name="kernel_init",
            bias_of=fan_shape if kernel_init == "torch" and not config.transposed else None,
        )
        if config.weight_norm:
            self.weight_g, self.weight_v = wn.split(weight, config.groups, config.weight_norm_dim, config.transposed)
        else:
            self.weight = weight
        if config.bias:
            self.bias = initializers.initialize(bias_init, (config.out_channels,), bias_of=fan_shape, groups=config.groups,
                                                name="bias_init")
        if self._w_mask_value is not None:
            w_mask = mx.array(self._w_mask_value)
            try:
                mx.broadcast_shapes(w_mask.shape, shape)
            except ValueError as err:
                raise ValueError(f"w_mask of shape {w_mask.shape} does not broadcast to the weight {shape}") from err
            self._w_mask = w_mask  # leading underscore: not a parameter, never trained
        channel_axis = -1 if config.data_format == "NLC" else -2
        act = activations.resolve(config.activation, config.out_channels, channel_axis)
        if isinstance(act, nn.Module):
            self.activation = act  # a child module: its parameters train with the layer
        else:
            self._activation_fn = act

    # -- configuration (read from the config) --------------------------
    in_channels = property(lambda self: self.config.in_channels)
    out_channels = property(lambda self: self.config.out_channels)
    kernel_size = property(lambda self: self.config.kernel_size)
    stride = property(lambda self: self.config.stride)
    padding = property(lambda self: self.config.padding)
    output_padding = property(lambda self: self.config.output_padding)
    dilation = property(lambda self: self.config.dilation)
    groups = property(lambda self: self.config.groups)
    data_format = property(lambda self: self.config.data_format)
    backend = property(lambda self: self.config.backend)

    @property
    def uses_weight_norm(self) -> bool:
        return "weight_v" in self

    def _check_in_size(self, in_size) -> Tuple[int, int]:
        try:
            size = tuple(as_int("in_size", n, 1) for n in in_size)
        except TypeError:
            raise TypeError(f"in_size must be (L, C_in={self.in_channels}), got {in_size!r}") from None
        if len(size) != 2 or size[1] != self.in_channels:
            raise ValueError(f"in_size must be (L, C_in={self.in_channels}), got {in_size!r}")
        self._sizes_through(size)  # validates the length
        return size

    def _sizes_through(self, size: Tuple[int, int]) -> Tuple[int, int]:
        """brainstate's ``(L_out, C_out)`` of its ``(L, C_in)``: channels last, whatever the layer's data format."""
        length, channels = size
        shape = self.output_shape((1, length, channels) if self.data_format == "NLC" else (1, channels, length))
        return (shape[1], shape[2]) if self.data_format == "NLC" else (shape[2], shape[1])

    @property
    def in_size(self) -> Optional[Tuple[int, int]]:
        """brainstate's ``(L, C_in)`` given at construction, or None."""
        return self._in_size

    @property
    def out_size(self) -> Optional[Tuple[int, int]]:
        """brainstate's ``(L_out, C_out)`` for the ``in_size`` given at construction (channels last, whatever
        ``data_format``)."""
        if self.in_size is None:
            return None
        return self._sizes_through(self.in_size)

    def output_shape(self, input_shape: Sequence[int]) -> Tuple[int, ...]:
        """The output shape for an input shape (batched or not, in the layer's data format)."""
        geom, batched = self.config.geometry(input_shape)
        spatial = (geom.output_length, geom.out_channels) if self.data_format == "NLC" else (geom.out_channels, geom.output_length)
        return ((geom.batch,) if batched else ()) + spatial

    def _extra_repr(self) -> str:
        c = self.config
        parts = [f"{c.in_channels}, {c.out_channels}, kernel_size={c.kernel_size}, stride={c.stride}", f"padding={c.padding!r}"]
        if c.output_padding is not None:
            parts.append(f"output_padding={c.output_padding}")
        for name, default in (("dilation", 1), ("groups", 1)):
            if getattr(c, name) != default:
                parts.append(f"{name}={getattr(c, name)}")
        parts.append(f"bias={c.bias}")
        if c.data_format != "NLC":
            parts.append(f"data_format={c.data_format!r}")
        if c.activation is not None:
            name = c.activation if isinstance(c.activation, str) else getattr(c.activation, "__name__", "callable")
            parts.append(f"activation={name!r}")
        if c.weight_norm:
            parts.append(f"weight_norm=True, weight_norm_dim={c.weight_norm_dim}")
        if self._w_mask is not None:
            parts.append("w_mask=...")
        if c.backend != "auto":
            parts.append(f"backend={c.backend!r}")
        return ", ".join(parts)

    # -- computation ----------------------------------------------------
    def effective_weight(self) -> mx.array:
        """The MLX-layout weight the convolution uses (weight norm and mask applied)."""
        c = self.config
        w = wn.combine(self.weight_g, self.weight_v, c.groups, c.weight_norm_dim, c.transposed) if self.uses_weight_norm else self.weight
        if self._w_mask is not None:
            w = w * self._w_mask
        return w

    def apply_activation(self, y: mx.array) -> mx.array:
        """The layer's activation (identity when it has none)."""
        if "activation" in self:
            return self.activation(y)
        return y if self._activation_fn is None else self._activation_fn(y)

    def finish(self, y: mx.array, batched: bool = True) -> mx.array:
        """What the layer does after a bare convolution: bias, its layout, activation.

        Args:
            y: the convolution's output without bias, batched ``(N, L, C_out)``.
            batched (bool): return ``(N, ...)`` (True) or drop the batch axis of one.
        """
        if "bias" in self:
            y = y + self.bias.astype(y.dtype)
        if self.data_format == "NCL":
            y = y.transpose(0, 2, 1)
        y = self.apply_activation(y)
        return y if batched else mx.squeeze(y, axis=0)  # y[0] would gather a copy

    def _op(self, x, weight, bias=None, **kwargs):
        """The bare op of this kind of layer (the streams call it with their own padding)."""
        op = conv_transpose1d if self.config.transposed else conv1d
        return op(x, weight, bias, **kwargs)

    def _check_channels(self, x) -> None:
        """Names ``x`` and ``in_channels`` when x's channels are not the layer's (the op would blame groups
        or the weight, which the caller did not give), and the data_format that would fit."""
        shape = tuple(getattr(x, "shape", ()))
        if len(shape) not in (2, 3):
            return  # the op names x's rank
        c = self.config
        axis, other_axis = (-1, -2) if c.data_format == "NLC" else (-2, -1)  # batched or not
        if shape[axis] == c.in_channels:
            return
        message = (f"x of shape {shape} has {shape[axis]} channels (data_format={c.data_format!r}), "
                   f"but the layer was built for in_channels={c.in_channels}")
        if shape[other_axis] == c.in_channels:
            other = "NCL" if c.data_format == "NLC" else "NLC"
            looks = "channels-first" if other == "NCL" else "channels-last"
            message += f'; x looks {looks}: build the layer with data_format="{other}"'
        raise ValueError(message)

    def __call__(self, x: mx.array) -> mx.array:
        self._check_channels(x)
        y = self._op(x, self.effective_weight(), self.get("bias"), **self.config.op_kwargs())
        return self.apply_activation(y)

    def streaming(self):
        """This layer run chunk by chunk: a :class:`~mlx_deconv.StreamingConvTranspose1d` or :class:`~mlx_deconv.StreamingConv1d`."""
        return (StreamingConvTranspose1d if self.config.transposed else StreamingConv1d)(self)

    # -- PyTorch interop (the work is in mlx_deconv.interop) -----------
    def load_torch_state_dict(self, state_dict: Dict[str, object], prefix: str = "") -> "ConvLayer":
        """Loads a PyTorch state dict of this kind of layer, converting weight norm either way.

        On any error the layer is left as it was.

        Args:
            state_dict: tensors (numpy arrays, torch tensors or array-likes) under ``prefix``.
            prefix (str): e.g. ``"ups.0."``. Default: ``""``.

        Returns:
            The layer itself.
        """
        interop.load_torch_weights(self, read_torch_state_dict(state_dict, prefix, self.config.transposed))
        return self

    def torch_state_dict(self, style: str = "parametrizations") -> Dict[str, np.ndarray]:
        """This layer's tensors as a PyTorch state dict of numpy arrays (PyTorch's layout and names).

        Args:
            style (str): for a weight-normed layer, ``"parametrizations"``
                (``torch.nn.utils.parametrizations.weight_norm``) or ``"legacy"``
                (``weight_g``/``weight_v``). Default: ``"parametrizations"``.
        """
        return interop.torch_state_dict(self, style)


_LAYER_ARGS_DOC = """
    Args:
        in_channels (int): ``C_in``.
        out_channels (int): ``C_out``.
        kernel_size (int): ``K``.
        stride (int): {stride}. Default: ``1``.
        padding: int, ``(left, right)``, ``"valid"``, ``"same"`` or ``"causal"`` (see the op). Default: ``0``.{op}
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
            {torch_layout}; ``0`` gives one norm per {per} channel, ``None`` or ``-1`` one norm over
            the whole weight (as in PyTorch). Default: ``0``.
        backend (str): ``"auto"``, {backends}. Default: ``"auto"``.
        in_size (tuple, optional): brainstate's ``(L, C_in)``; sets :attr:`out_size`.
"""


def _given_in_channels(cls_name: str, in_channels):
    """``in_channels``, refusing None: these layers make their weight at construction."""
    if in_channels is None:
        hint = " (md.Conv1DTranspose takes C_in from its first input)" if cls_name == "ConvTranspose1d" else ""
        raise TypeError(f"in_channels must be an integer (C_in), got None: {cls_name} makes its weight "
                        f"at construction{hint}")
    return in_channels


class ConvTranspose1d(ConvLayer):
    _transposed = True

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
        in_channels = _given_in_channels("ConvTranspose1d", in_channels)
        config = ConvConfig(True, in_channels, out_channels, kernel_size, stride, padding, output_padding, dilation, groups,
                            bias, data_format, activation, weight_norm, weight_norm_dim, backend)
        super().__init__(config, kernel_init=kernel_init, bias_init=bias_init, w_mask=w_mask, in_size=in_size)

    @classmethod
    def from_torch(
        cls,
        module_or_state_dict,
        *,
        stride: Optional[int] = None,
        padding: Optional[Padding] = None,
        output_padding: Optional[int] = None,
        dilation: Optional[int] = None,
        groups: Optional[int] = None,
        data_format: str = "NLC",
        prefix: str = "",
        **layer_kwargs,
    ) -> "ConvTranspose1d":
        """A layer built from a ``torch.nn.ConvTranspose1d`` module or its state dict.

        A module gives everything: stride, padding, output padding, dilation,
        groups, bias and weight norm (``torch.nn.utils.parametrizations.weight_norm``
        or the legacy ``weight_g``/``weight_v``). A state dict carries no geometry:
        pass ``stride``, ``padding``, ``output_padding``, ``dilation`` and ``groups``
        as the PyTorch layer had them (they default to PyTorch's defaults, which
        give a different output length if the layer had others). Channels, kernel
        size, bias and weight norm come from the tensors. Values may be numpy
        arrays, torch tensors or anything with ``__array__``.

        Args:
            module_or_state_dict: a ``torch.nn.ConvTranspose1d`` or a state dict.
            stride, padding, output_padding, dilation, groups: with a state dict only.
            data_format (str): the layout the new layer takes; PyTorch's is ``"NCL"``. Default: ``"NLC"``.
            prefix (str): with a state dict, e.g. ``"ups.0."`` to pick one layer out of a model's.
            **layer_kwargs: anything else :class:`ConvTranspose1d` takes (``activation``, ``backend``...).

        Returns:
            ConvTranspose1d: with the module's weights.

        Raises:
            TypeError: for a module that is not a ``ConvTranspose1d``.
            ValueError: for a ``padding_mode`` other than ``"zeros"``, or geometry
                passed alongside a module.
        """
        geometry = dict(stride=stride, padding=padding, output_padding=output_padding, dilation=dilation, groups=groups)
        return interop.layer_from_torch(cls, module_or_state_dict, prefix, geometry, data_format, layer_kwargs)


class Conv1d(ConvLayer):
    _transposed = False

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: Padding = 0,
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
        in_channels = _given_in_channels("Conv1d", in_channels)
        config = ConvConfig(False, in_channels, out_channels, kernel_size, stride, padding, None, dilation, groups,
                            bias, data_format, activation, weight_norm, weight_norm_dim, backend)
        super().__init__(config, kernel_init=kernel_init, bias_init=bias_init, w_mask=w_mask, in_size=in_size)

    @classmethod
    def from_torch(
        cls,
        module_or_state_dict,
        *,
        stride: Optional[int] = None,
        padding: Optional[Padding] = None,
        dilation: Optional[int] = None,
        groups: Optional[int] = None,
        data_format: str = "NLC",
        prefix: str = "",
        **layer_kwargs,
    ) -> "Conv1d":
        """A layer built from a ``torch.nn.Conv1d`` module or its state dict.

        As :meth:`ConvTranspose1d.from_torch`: a module gives stride, padding
        (ints, ``"same"``, ``"valid"``), dilation, groups, bias and weight norm
        (both styles); a state dict carries no geometry, so pass it.

        Args:
            module_or_state_dict: a ``torch.nn.Conv1d`` or a state dict.
            stride, padding, dilation, groups: with a state dict only.
            data_format (str): the layout the new layer takes. Default: ``"NLC"``.
            prefix (str): with a state dict, e.g. ``"resblocks.0.convs1.1."``.
            **layer_kwargs: anything else :class:`Conv1d` takes.

        Returns:
            Conv1d: with the module's weights.
        """
        geometry = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
        return interop.layer_from_torch(cls, module_or_state_dict, prefix, geometry, data_format, layer_kwargs)


ConvTranspose1d.__doc__ = """A 1-D transposed convolution layer over ``(N, L, C_in)`` (or ``(N, C_in, L)``) signals.

    Every argument form of :func:`mlx_deconv.conv_transpose1d` is accepted.
    The parameters are ``weight`` in MLX layout ``(C_out, K, C_in/groups)``
    (or ``weight_g``/``weight_v`` with ``weight_norm``) and ``bias``, so
    ``mlx.nn`` tools (optimizers, ``save_weights``, ``nn.value_and_grad``,
    ``mx.compile``) work unchanged; :attr:`config` holds the rest.
""" + _LAYER_ARGS_DOC.format(stride="upsampling factor", op="""
        output_padding (int, optional): see the op. Default: ``None``.""",
                             torch_layout="``(C_in, C_out/groups, K)``", per="input",
                             backends='``"builtin"``, ``"gemm"``, ``"winograd"`` or ``"metal"`` (Metal GPU streams only)')

Conv1d.__doc__ = """A 1-D convolution layer over ``(N, L, C_in)`` (or ``(N, C_in, L)``) signals, on :func:`mlx_deconv.conv1d`.

    The same options as :class:`ConvTranspose1d`. Weight norm has PyTorch's
    ``Conv1d`` semantics: ``dim=0`` is one norm per *output* channel, ``weight_g``
    of shape ``(C_out, 1, 1)``.
""" + _LAYER_ARGS_DOC.format(stride="step between outputs", op="",
                             torch_layout="``(C_out, C_in/groups, K)``", per="output",
                             backends='``"builtin"`` or ``"gemm"``')
