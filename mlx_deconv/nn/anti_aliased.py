"""BigVGAN's anti-aliased activation as a layer: :func:`kaiser_sinc_filter` and :class:`Activation1d`
(the op is :func:`mlx_deconv.ops.anti_aliased.anti_aliased_activation`).

The activation upsamples by ``ratio`` with a Kaiser-windowed sinc low-pass, applies Snake or
SnakeBeta, and low-passes and decimates back, so the nonlinearity's harmonics above the
original Nyquist frequency are filtered out instead of aliasing (the map is spelled out in
:mod:`mlx_deconv.backends.anti_aliased`). It follows NVIDIA's BigVGAN ``Activation1d`` (with
``UpSample1d``, ``DownSample1d``, ``Snake``/``SnakeBeta``): same pads, filters and epsilon.
"""

from __future__ import annotations

import math
from typing import Optional

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from ..geometry.activation import ACTIVATIONS, DATA_FORMATS, is_int
from ..ops.anti_aliased import anti_aliased_activation



def kaiser_sinc_filter(cutoff: float, half_width: float, kernel_size: int) -> mx.array:
    """A Kaiser-windowed sinc low-pass filter whose taps sum to 1 (NVIDIA's ``kaiser_sinc_filter1d``).

    The window's ``beta`` follows Kaiser's design formula for the attenuation
    ``A = 2.285 * (kernel_size//2 - 1) * pi * 4 * half_width + 7.95`` dB. An even ``kernel_size`` has
    its taps at half-integer times ``-K/2 + 0.5 ... K/2 - 0.5``, an odd one at ``-(K//2) ... K//2``.

    Args:
        cutoff (float): cutoff frequency as a fraction of the sampling rate, in ``[0, 0.5]``
            (``0.5 / ratio`` in BigVGAN). ``0`` gives all-zero taps.
        half_width (float): half the transition band's width, same unit (``0.6 / ratio`` in BigVGAN).
        kernel_size (int): number of taps, at least 1.

    Returns:
        mx.array: ``(kernel_size,)`` float32 (computed in float64).
    """
    if not is_int(kernel_size) or kernel_size < 1:
        raise ValueError(f"kernel_size must be an int >= 1, got {kernel_size!r}")
    for name, value in (("cutoff", cutoff), ("half_width", half_width)):
        if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)) or not math.isfinite(value):
            raise ValueError(f"{name} must be a finite number, got {value!r}")
    if not 0.0 <= cutoff <= 0.5:
        raise ValueError(f"cutoff must be in [0, 0.5] (a fraction of the sampling rate), got {cutoff!r}")
    half = kernel_size // 2
    attenuation = 2.285 * (half - 1) * math.pi * 4 * half_width + 7.95
    if attenuation > 50.0:
        beta = 0.1102 * (attenuation - 8.7)
    elif attenuation >= 21.0:
        beta = 0.5842 * (attenuation - 21.0) ** 0.4 + 0.07886 * (attenuation - 21.0)
    else:
        beta = 0.0
    window = np.kaiser(kernel_size, beta)
    if kernel_size % 2 == 0:
        time = np.arange(-half, half) + 0.5
    else:
        time = np.arange(kernel_size) - half
    if cutoff == 0:
        return mx.zeros((kernel_size,), dtype=mx.float32)
    taps = 2 * cutoff * window * np.sinc(2 * cutoff * time)
    return mx.array((taps / taps.sum()).astype(np.float32))


def default_kernel_size(ratio: int) -> int:
    """NVIDIA's default number of taps for a ratio: ``int(6 * ratio // 2) * 2`` (12 for 2)."""
    return int(6 * ratio // 2) * 2


class Activation1d(nn.Module):
    """NVIDIA BigVGAN's ``Activation1d`` around ``Snake``/``SnakeBeta``, in one fused op.

    Parameters (named as in NVIDIA's state dicts, so they load by name; the ``act.`` level of
    ``act.alpha``/``act.beta`` is dropped): ``alpha`` (and ``beta`` for SnakeBeta), shape ``(channels,)``,
    initialised as NVIDIA's: zeros when ``logscale``, else ones. The filters are arrays of shape
    ``(1, 1, K)``, ``upsample["filter"]`` and ``downsample["lowpass"]["filter"]`` (keys
    ``upsample.filter``, ``downsample.lowpass.filter``), frozen (not trainable), initialised with
    :func:`kaiser_sinc_filter` (``0.5/ratio``, ``0.6/ratio``) and used as loaded, so a checkpoint's
    filters replace them.

    Args:
        channels (int): number of channels.
        activation (str): ``"snakebeta"`` or ``"snake"``. Default: ``"snakebeta"``.
        logscale (bool): ``alpha``/``beta`` are logarithms (BigVGAN v2's ``snake_logscale``). Default: ``True``.
        ratio (int): up/down factor. Default: ``2``.
        kernel_size (int, optional): taps of both filters; ``None``: NVIDIA's ``int(6*ratio//2)*2`` (12 for 2).
        data_format (str): ``"NLC"`` or ``"NCL"``. Default: ``"NLC"``.

    Call:
        ``x`` ``(N, L, C)`` (or ``(N, C, L)``; or unbatched) -> the same shape.
    """

    def __init__(self, channels: int, activation: str = "snakebeta", logscale: bool = True, ratio: int = 2,
                 kernel_size: Optional[int] = None, data_format: str = "NLC"):
        super().__init__()
        if not is_int(channels) or channels < 1:
            raise ValueError(f"channels must be an int >= 1, got {channels!r}")
        if not isinstance(activation, str) or activation.lower() not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
        if not is_int(ratio) or ratio < 1:
            raise ValueError(f"ratio must be an int >= 1, got {ratio!r}")
        if kernel_size is None:
            kernel_size = default_kernel_size(ratio)
        if not is_int(kernel_size) or kernel_size < ratio:
            raise ValueError(f"kernel_size must be an int >= ratio={ratio}, got {kernel_size!r}")
        if data_format not in DATA_FORMATS:
            raise ValueError(f"data_format must be one of {DATA_FORMATS}, got {data_format!r}")
        self._activation = activation.lower()
        self._logscale = bool(logscale)
        self._ratio = int(ratio)
        self._data_format = data_format
        init = mx.zeros if logscale else mx.ones
        self.alpha = init((channels,))
        if self._activation == "snakebeta":
            self.beta = init((channels,))
        taps = kaiser_sinc_filter(0.5 / ratio, 0.6 / ratio, int(kernel_size)).reshape(1, 1, -1)
        self.upsample = {"filter": taps}
        self.downsample = {"lowpass": {"filter": taps}}
        self.freeze(keys=["upsample", "downsample"], strict=True)

    activation = property(lambda self: self._activation)
    logscale = property(lambda self: self._logscale)
    ratio = property(lambda self: self._ratio)
    data_format = property(lambda self: self._data_format)
    channels = property(lambda self: self.alpha.shape[0])

    def _extra_repr(self) -> str:
        k = self.upsample["filter"].size
        parts = [f"{self.channels}", f"activation={self._activation!r}", f"logscale={self._logscale}",
                 f"ratio={self._ratio}", f"kernel_size={k}"]
        if self._data_format != "NLC":
            parts.append(f"data_format={self._data_format!r}")
        return ", ".join(parts)

    def __call__(self, x: mx.array) -> mx.array:
        return anti_aliased_activation(
            x, self.alpha, self.beta if self._activation == "snakebeta" else None,
            up_filter=self.upsample["filter"], down_filter=self.downsample["lowpass"]["filter"],
            activation=self._activation, logscale=self._logscale, ratio=self._ratio, data_format=self._data_format)
