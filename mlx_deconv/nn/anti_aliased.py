"""BigVGAN's anti-aliased activation: :func:`kaiser_sinc_filter`, :func:`anti_aliased_activation`, :class:`Activation1d`.

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

from ..backends import anti_aliased as _aa
from ..runtime.devices import StreamLike, is_metal, resolve_stream

ACTIVATIONS = _aa.ACTIVATIONS
DATA_FORMATS = ("NLC", "NCL")
BACKENDS = ("auto", "polyphase", "metal", "unfused")
_FLOATS = (mx.float32, mx.float16, mx.bfloat16)


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


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
    if not _is_int(kernel_size) or kernel_size < 1:
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


def _filter(name: str, value) -> mx.array:
    if not isinstance(value, mx.array):
        try:
            value = mx.array(np.asarray(value, dtype=np.float32))
        except (TypeError, ValueError) as err:
            raise TypeError(f"{name} must be an mx.array of taps, got {type(value).__name__}") from err
    if value.ndim == 3 and value.shape[:2] == (1, 1):
        try:  # a new, evaluated (K,) array: a lazy reshape would make every call wait for its evaluation
            value = mx.array(value.tolist()[0][0], dtype=value.dtype)
        except (ValueError, RuntimeError):  # a tracer (inside mx.compile): no values to read
            value = value.reshape(-1)
    if value.ndim != 1 or value.size < 1:
        raise ValueError(f"{name} must have shape (K,) or (1, 1, K) with K >= 1, got {tuple(value.shape)}")
    if value.dtype == mx.float64:
        value = value.astype(mx.float32, stream=mx.cpu)
    if value.dtype not in _FLOATS:
        raise TypeError(f"{name} must be float32, float16 or bfloat16, got dtype {value.dtype}")
    return value


def _channel_param(name: str, value, channels: int, where: str = "") -> mx.array:
    if not isinstance(value, mx.array):
        try:
            value = mx.array(np.asarray(value, dtype=np.float32))
        except (TypeError, ValueError) as err:
            raise TypeError(f"{name} must be an mx.array of shape ({channels},), got {type(value).__name__}") from err
    if value.shape != (channels,):
        raise ValueError(f"{name} must have shape ({channels},), one value per channel of x{where}; "
                         f"got {tuple(value.shape)}")
    if value.dtype == mx.float64:
        value = value.astype(mx.float32, stream=mx.cpu)
    if value.dtype not in _FLOATS:
        raise TypeError(f"{name} must be float32, float16 or bfloat16, got dtype {value.dtype}")
    return value


def anti_aliased_activation(
    x: mx.array,
    alpha: mx.array,
    beta: Optional[mx.array] = None,
    *,
    up_filter: mx.array,
    down_filter: mx.array,
    activation: str = "snakebeta",
    logscale: bool = True,
    ratio: int = 2,
    data_format: str = "NLC",
    backend: str = "auto",
    stream: StreamLike = None,
) -> mx.array:
    """BigVGAN's anti-aliased Snake/SnakeBeta, fused: edge pad, upsample, activation, edge pad, low-pass and decimate.

    Equals NVIDIA's ``Activation1d(SnakeBeta(C, alpha_logscale=logscale), up_ratio=ratio,
    down_ratio=ratio, up_kernel_size=Ku, down_kernel_size=Kd)`` with its buffers ``upsample.filter``
    and ``downsample.lowpass.filter`` as ``up_filter`` and ``down_filter``.

    Args:
        x (array): ``(N, L, C)`` for ``"NLC"``, ``(N, C, L)`` for ``"NCL"``; a 2-D input is one
            unbatched signal. float32, float16 or bfloat16 (half precision is accumulated in float32).
        alpha (array): ``(C,)``, Snake's frequency (``exp(alpha)`` when ``logscale``).
        beta (array, optional): ``(C,)``, SnakeBeta's magnitude (``exp(beta)`` when ``logscale``); required
            for ``"snakebeta"``, refused for ``"snake"`` (whose magnitude is ``alpha``).
        up_filter (array): the upsampling taps, ``(Ku,)`` or ``(1, 1, Ku)``, ``Ku >= ratio``
            (``kaiser_sinc_filter(0.5/ratio, 0.6/ratio, Ku)`` in BigVGAN); used as given, then scaled by ``ratio``.
        down_filter (array): the low-pass taps, ``(Kd,)`` or ``(1, 1, Kd)``.
        activation (str): ``"snakebeta"`` or ``"snake"``. Default: ``"snakebeta"``.
        logscale (bool): ``alpha`` and ``beta`` are logarithms. Default: ``True``.
        ratio (int): the up- and downsampling factor, >= 1. Default: ``2``.
        data_format (str): ``"NLC"`` or ``"NCL"``. Default: ``"NLC"``.
        backend (str): ``"auto"`` (the Metal kernel on a Metal GPU stream, else ``"polyphase"``, or
            ``"unfused"`` below ``N * L * C = 2048`` where its few ops cost less; filters stay constants),
            ``"polyphase"``, ``"metal"`` (Metal GPU streams only) or ``"unfused"`` (the steps one by one,
            with the package's depthwise convolutions, for comparisons). Default: ``"auto"``.
        stream: ``None`` (default stream), ``"cpu"``, ``"gpu"``, an ``mx.Device``, an ``mx.Stream`` or an
            ``mx.ThreadLocalStream``.

    Returns:
        array: the same shape and dtype as ``x``.

    Differentiable with respect to ``x``, ``alpha`` and ``beta`` (first derivatives). The fused paths
    treat the filters as constants (a zero cotangent, like NVIDIA's buffers); ``backend="unfused"``
    differentiates them too. Inside ``mx.grad`` the fused paths evaluate their inputs (they run on a
    worker thread where MLX compiles their kernels), so a gradient forces the evaluation of the graph up
    to each activation; inside a caller's ``mx.compile`` they are traced into its graph instead.

    NVIDIA's ``UpSample1d`` returns an empty signal for ``kernel_size == ratio`` (its crop slices
    ``[p:-0]``); here that filter length gives the definition's ``ratio * L`` samples.
    """
    if not isinstance(x, mx.array):
        raise TypeError(f"x must be an mx.array, got {type(x).__name__}")
    if x.dtype not in _FLOATS:
        raise TypeError(f"x must be float32, float16 or bfloat16, got dtype {x.dtype}")
    if data_format not in DATA_FORMATS:
        raise ValueError(f"data_format must be one of {DATA_FORMATS}, got {data_format!r}")
    if x.ndim not in (2, 3):
        raise ValueError(f"x must be 3-D (N, L, C) / (N, C, L) or 2-D unbatched, got shape {tuple(x.shape)}")
    if not isinstance(activation, str) or activation.lower() not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
    activation = activation.lower()
    if not isinstance(logscale, (bool, np.bool_)):
        raise TypeError(f"logscale must be a bool, got {logscale!r}")
    if not _is_int(ratio) or ratio < 1:
        raise ValueError(f"ratio must be an int >= 1, got {ratio!r}")
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    shape = x.shape
    batched = x.ndim == 3
    if not batched:
        x = x[None]
    if data_format == "NCL":
        x = x.transpose(0, 2, 1)
    n, length, channels = x.shape
    if length < 1:
        raise ValueError(f"x must have at least one sample, got length {length} (shape {tuple(x.shape)})")
    where = f" ({channels} channels: x has shape {tuple(shape)} and data_format={data_format!r})"
    alpha = _channel_param("alpha", alpha, channels, where)
    if activation == "snakebeta":
        if beta is None:
            raise ValueError("beta is required for activation='snakebeta' (or pass activation='snake')")
        beta = _channel_param("beta", beta, channels, where)
    elif beta is not None:
        raise ValueError("beta must be None for activation='snake' (Snake's magnitude is alpha); "
                         "pass activation='snakebeta' to use it")
    up = _filter("up_filter", up_filter)
    down = _filter("down_filter", down_filter)
    if up.size < ratio:
        raise ValueError(f"up_filter must have at least ratio={ratio} taps, got {up.size}")
    geom = _aa.AAGeometry(n, length, channels, int(ratio), int(up.size), int(down.size), activation, bool(logscale))
    s = resolve_stream(stream)
    if backend == "auto":
        backend = _aa.auto_backend(geom, is_metal(s))
        if backend == "unfused":  # the filters stay constants under "auto", as in the fused forms
            up, down = mx.stop_gradient(up), mx.stop_gradient(down)
    if backend == "metal" and not is_metal(s):
        raise ValueError(f"backend='metal' needs a Metal GPU stream, got stream {s}")
    with mx.stream(s):
        if backend == "unfused":
            y = _aa.unfused(x, alpha, beta, up, down, geom)
        elif backend == "metal":
            y = _aa.metal_kernel(x, alpha, beta, up, down, geom)
        else:
            y = _aa.polyphase(x, alpha, beta, up, down, geom)
    if data_format == "NCL":
        y = y.transpose(0, 2, 1)
    return y if batched else y[0]


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
        if not _is_int(channels) or channels < 1:
            raise ValueError(f"channels must be an int >= 1, got {channels!r}")
        if not isinstance(activation, str) or activation.lower() not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
        if not _is_int(ratio) or ratio < 1:
            raise ValueError(f"ratio must be an int >= 1, got {ratio!r}")
        if kernel_size is None:
            kernel_size = default_kernel_size(ratio)
        if not _is_int(kernel_size) or kernel_size < ratio:
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
