"""The anti-aliased activation's geometry: its record, and its arguments checked against the input's shape.

The map it describes (NVIDIA's ``Activation1d``) is spelled out in :mod:`mlx_deconv.backends.anti_aliased`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence, Tuple

import numpy as np

#: BigVGAN's guard against dividing by a (trained) zero alpha or beta.
SNAKE_EPS = 1e-9
ACTIVATIONS = ("snake", "snakebeta")
DATA_FORMATS = ("NLC", "NCL")


@dataclass(frozen=True)
class ActivationGeometry:
    """The anti-aliased activation's call, everything but the arrays: lengths, ratio, taps and the pads they imply."""

    batch: int
    length: int
    channels: int
    ratio: int
    up_taps: int
    down_taps: int
    activation: str
    logscale: bool

    @property
    def up_pad(self) -> int:
        """Edge samples added to each side of ``x`` before the upsampling."""
        return self.up_taps // self.ratio - 1

    @property
    def up_crop(self) -> Tuple[int, int]:
        """Samples cropped off the transposed convolution's full output (left, right)."""
        r, k, p = self.ratio, self.up_taps, self.up_pad
        return p * r + (k - r) // 2, p * r + (k - r + 1) // 2

    @property
    def down_pad(self) -> Tuple[int, int]:
        """Edge samples added to the upsampled signal before the low-pass (left, right)."""
        k = self.down_taps
        return k // 2 - (1 if k % 2 == 0 else 0), k // 2

    @property
    def up_length(self) -> int:
        return self.ratio * self.length

    @property
    def output_length(self) -> int:
        r = self.ratio
        left, right = self.down_pad
        return (self.up_length + left + right - self.down_taps) // r + 1


def is_int(value) -> bool:
    """A Python or NumPy integer, not a bool: what the activation's integer arguments take."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def activation_geometry(x_shape: Sequence[int], *, up_taps: int, down_taps: int, activation: str, logscale,
                        ratio, data_format: str) -> Tuple[ActivationGeometry, bool]:
    """Validates the anti-aliased activation's arguments against ``x``'s shape.

    Args:
        x_shape: ``(N, L, C)`` (``"NLC"``), ``(N, C, L)`` (``"NCL"``), or 2-D unbatched.
        up_taps, down_taps: the filters' lengths.
        activation, logscale, ratio, data_format: as :func:`mlx_deconv.anti_aliased_activation` takes them.

    Returns:
        ``(geometry, batched)``; ``batched`` is False for a 2-D input.

    Raises:
        ValueError, TypeError: naming the argument and its value.
    """
    if data_format not in DATA_FORMATS:
        raise ValueError(f"data_format must be one of {DATA_FORMATS}, got {data_format!r}")
    if len(x_shape) not in (2, 3):
        raise ValueError(f"x must be 3-D (N, L, C) / (N, C, L) or 2-D unbatched, got shape {tuple(x_shape)}")
    if not isinstance(activation, str) or activation.lower() not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
    if not isinstance(logscale, (bool, np.bool_)):
        raise TypeError(f"logscale must be a bool, got {logscale!r}")
    if not is_int(ratio) or ratio < 1:
        raise ValueError(f"ratio must be an int >= 1, got {ratio!r}")
    batched = len(x_shape) == 3
    shape = tuple(x_shape) if batched else (1, *x_shape)
    n, length, channels = shape if data_format == "NLC" else (shape[0], shape[2], shape[1])
    if length < 1:
        raise ValueError(f"x must have at least one sample, got length {length} (shape {tuple(x_shape)})")
    if up_taps < ratio:
        raise ValueError(f"up_filter must have at least ratio={ratio} taps, got {up_taps}")
    geom = ActivationGeometry(n, length, channels, int(ratio), int(up_taps), int(down_taps), activation.lower(),
                              bool(logscale))
    return geom, batched
