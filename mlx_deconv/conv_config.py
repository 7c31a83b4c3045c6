"""``ConvConfig``: everything about a convolution layer that is not a parameter, frozen and validated once.

The layers (:mod:`mlx_deconv.layers`), the Keras spelling (:mod:`mlx_deconv.keras`)
and the streaming wrappers (:mod:`mlx_deconv.streaming`) all read one of these;
it asks :mod:`mlx_deconv.validation` for every check the op itself makes.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Dict, Optional, Sequence, Tuple

from . import activations
from . import weight_norm as wn
from .geometry import Padding, as_int, dilated_kernel_size, resolve_padding
from .validation import conv1d_geometry, conv_geometry

_FORMAT_ALIASES = {"NLC": "NLC", "NCL": "NCL", "channels_last": "NLC", "channels_first": "NCL"}


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
        activation: None, a name or a callable (see :mod:`mlx_deconv.activations`).
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
        put("data_format", normalize_data_format(self.data_format))
        put("weight_norm_dim", wn.norm_dim(self.weight_norm_dim) if self.weight_norm else None)
        activations.resolve(self.activation, self.out_channels)  # names and types, at construction
        # The op's own checks (padding forms, output padding, groups against the channels) on a probe input.
        self.geometry(self._probe_shape())

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
    def time_axis(self) -> int:
        """The length axis of a batched input."""
        return 1 if self.data_format == "NLC" else 2

    def _probe_shape(self) -> Tuple[int, int, int]:
        if self.transposed:
            # The shortest input whose output is non-empty: padding may crop more than one row gives.
            left, right = resolve_padding(self.padding, self.kernel_size, self.stride, self.dilation, self.output_padding)
            length = 1 + max(0, -(-(left + right + 1 - self.span) // self.stride))
        else:
            length = self.span  # a direct convolution of span samples has an output for any padding
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
