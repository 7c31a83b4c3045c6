"""``ConvConfig``: everything about a convolution layer that is not a parameter, frozen and validated once.

The layers (:mod:`mlx_deconv.nn.layers`), the Keras spelling (:mod:`mlx_deconv.keras`)
and the streaming wrappers (:mod:`mlx_deconv.nn.streaming`) all read one of these;
it asks :mod:`mlx_deconv.geometry.validation` for every check the op itself makes.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from . import activations
from . import weight_norm as wn
from ..backends import backend_names
from ..geometry.records import MAX_AXIS, Padding, as_int, conv1d_padding, dilated_kernel_size, resolve_padding
from ..geometry.validation import FLOAT32_BYTES, check_size, conv1d_geometry, conv_geometry

_FORMAT_ALIASES = {"NLC": "NLC", "NCL": "NCL", "channels_last": "NLC", "channels_first": "NCL"}


def _as_bool(name: str, value) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool, got {value!r}")
    return bool(value)


def normalize_data_format(data_format: str) -> str:
    if not isinstance(data_format, str) or data_format not in _FORMAT_ALIASES:
        raise ValueError(f"data_format must be one of {tuple(_FORMAT_ALIASES)}, got {data_format!r}")
    return _FORMAT_ALIASES[data_format]


@dataclass(frozen=True)
class ConvConfig:
    """Everything about a convolution layer that is not a parameter.

    Built (and validated) once; the layer, the Keras spelling and the streaming
    wrappers read it. ``in_channels`` may be ``None`` until the first input
    (Keras); then :meth:`with_in_channels` gives the full configuration.

    Args:
        transposed (bool): ``ConvTranspose1d`` (True) or ``Conv1d`` (False).
        in_channels, out_channels, kernel_size, stride, padding, output_padding,
        dilation, groups: as the ops take them (``output_padding`` only when transposed).
        bias (bool): the layer learns a bias.
        data_format (str): ``"NLC"`` or ``"NCL"`` (aliases accepted, stored normalised).
        activation: None, a name or a callable (see :mod:`mlx_deconv.nn.activations`).
        weight_norm (bool), weight_norm_dim: PyTorch's weight norm and its ``dim``.
        backend (str): passed to the op.
    """

    transposed: bool
    in_channels: Optional[int]
    out_channels: int
    kernel_size: int
    stride: int = 1
    padding: Padding = 0
    output_padding: Optional[int] = None
    dilation: int = 1
    groups: int = 1
    bias: bool = True
    data_format: str = "NLC"
    activation: activations.Activation = None
    weight_norm: bool = False
    weight_norm_dim: Optional[int] = 0
    backend: str = "auto"

    def __post_init__(self):
        put = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731 (frozen)
        if self.in_channels is not None:
            put("in_channels", as_int("in_channels", self.in_channels, 1))
        put("out_channels", as_int("out_channels", self.out_channels, 1))
        put("kernel_size", as_int("kernel_size", self.kernel_size, 1))
        for name in ("stride", "dilation", "groups"):
            put(name, as_int(name, getattr(self, name), 1))
        if isinstance(self.padding, list):
            put("padding", tuple(self.padding))
        if not self.transposed and self.output_padding is not None:
            raise ValueError(f"output_padding is for transposed convolutions, got output_padding={self.output_padding!r}")
        for name in ("bias", "weight_norm"):
            put(name, _as_bool(name, getattr(self, name)))
        put("data_format", normalize_data_format(self.data_format))
        names = backend_names("conv_transpose1d" if self.transposed else "conv1d")
        if not isinstance(self.backend, str) or (self.backend != "auto" and self.backend not in names):
            # a backend the layer's stream cannot run (metal on a CPU) is refused at the call, where the stream is known
            raise ValueError(f"backend must be 'auto' or one of {names} for this layer, got {self.backend!r}")
        put("weight_norm_dim", wn.norm_dim(self.weight_norm_dim) if self.weight_norm else None)
        activations.resolve(self.activation, self.out_channels)  # names and types, at construction
        if self.in_channels is not None:
            self._check_weight_size()
        # Sizes every input would pass, named by the arguments behind them (the probe's would name its length).
        length, arrays = self._shortest_input()
        for what, size, elements in arrays:
            check_size(what, size, elements, self._size_culprits())
        # The op's own checks (padding forms, output padding, groups against the channels) on a probe input.
        self.geometry(self._probe_shape(length))

    def _check_weight_size(self) -> None:
        """Refuses a weight MLX cannot hold (an element count past 32 bits) or this machine cannot, before
        the initializer tries to make it (which crashed the process)."""
        shape = self.weight_shape
        elements = int(np.prod(shape, dtype=object))
        culprits = f"in_channels={self.in_channels}, out_channels={self.out_channels}, kernel_size={self.kernel_size}"
        if self.groups != 1:
            culprits += f", groups={self.groups}"
        if elements > MAX_AXIS:
            raise ValueError(f"{culprits} make a weight of shape {shape} (C_out, K, C_in/groups): {elements} "
                             f"elements, past MLX's 32-bit limit of {MAX_AXIS} per array")
        check_size("the weight", max(shape), elements, culprits, FLOAT32_BYTES)  # the initializers' float32

    def _size_culprits(self) -> str:
        parts = [f"kernel_size={self.kernel_size}", f"stride={self.stride}", f"dilation={self.dilation}",
                 f"padding={self.padding!r}"]
        if self.output_padding is not None:
            parts.append(f"output_padding={self.output_padding!r}")
        return ", ".join(parts)

    def _shortest_input(self) -> Tuple[int, List[Tuple[str, int, int]]]:
        """The length of the shortest input with an output, and ``(what, length, elements)`` of each array
        a call on it makes (batch 1): if these are too large, so is every call's."""
        c_in, c_out, span = self.in_channels or self.groups, self.out_channels, self.span
        shortest = "the shortest input that has an output"
        if self.transposed:
            # Padding may crop more than one input row's output gives.
            left, right = resolve_padding(self.padding, self.kernel_size, self.stride, self.dilation, self.output_padding)
            length = 1 + max(0, -(-(left + right + 1 - span) // self.stride))
            full = (length - 1) * self.stride + span
            return length, [(shortest, length, length * c_in),
                            (f"the full (uncropped) output of {shortest}", full, full * c_out),
                            (f"the output of {shortest}", full - left - right, (full - left - right) * c_out)]
        if isinstance(self.padding, str) and self.padding.lower() == "same":
            length = 1  # "same" gives an output for every length
        else:  # every other form pads the same whatever the length
            left, right = conv1d_padding(self.padding, span, self.kernel_size, self.stride, self.dilation)
            length = max(1, span - left - right)
        left, right = conv1d_padding(self.padding, length, self.kernel_size, self.stride, self.dilation)
        padded = length + left + right
        out_len = max(0, padded - span) // self.stride + 1
        return length, [(shortest, length, length * c_in),
                        (f"the padded input of {shortest}", padded, padded * c_in),
                        (f"the output of {shortest}", out_len, out_len * c_out)]

    def with_in_channels(self, in_channels: int) -> "ConvConfig":
        """This configuration with ``in_channels`` set (validated anew)."""
        return dataclasses.replace(self, in_channels=in_channels)

    @property
    def weight_shape(self) -> Tuple[int, int, int]:
        """The MLX-layout weight shape ``(C_out, K, C_in/groups)`` (same for both ops)."""
        return (self.out_channels, self.kernel_size, (self.in_channels or self.groups) // self.groups)

    @property
    def torch_weight_shape(self) -> Tuple[int, int, int]:
        """PyTorch's weight shape: ``(C_in, C_out/groups, K)`` transposed, ``(C_out, C_in/groups, K)`` direct."""
        c_out, k, c_in_g = self.weight_shape
        return (c_in_g * self.groups, c_out // self.groups, k) if self.transposed else (c_out, c_in_g, k)

    @property
    def span(self) -> int:
        """The dilated kernel's span in samples."""
        return dilated_kernel_size(self.kernel_size, self.dilation)

    @property
    def multiply_adds(self) -> int:
        """The weight's multiply-adds for one output sample of ``conv1d`` (one input sample when transposed):
        ``K * C_in * C_out / groups``."""
        return self.kernel_size * self.in_channels * self.out_channels // self.groups

    def _probe_shape(self, length: int) -> Tuple[int, int, int]:
        channels = self.in_channels or self.groups
        return (1, length, channels) if self.data_format == "NLC" else (1, channels, length)

    def geometry(self, input_shape: Sequence[int]):
        """``(geometry, batched)`` of this layer's op on ``input_shape`` (validating it)."""
        common = dict(stride=self.stride, padding=self.padding, dilation=self.dilation, groups=self.groups,
                      data_format=self.data_format)
        if self.transposed:
            return conv_geometry(input_shape, self.weight_shape, output_padding=self.output_padding, **common)
        return conv1d_geometry(input_shape, self.weight_shape, **common)

    def op_kwargs(self) -> Dict[str, Any]:
        """The keyword arguments of the op call, but for the arrays."""
        kwargs = dict(stride=self.stride, padding=self.padding, dilation=self.dilation, groups=self.groups,
                      data_format=self.data_format, backend=self.backend)
        if self.transposed:
            kwargs["output_padding"] = self.output_padding
        return kwargs
