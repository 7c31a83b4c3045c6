"""The anti-aliased activation as an op, like the two convolutions: arrays checked, geometry, one choice, one backend.

BigVGAN's activation upsamples by ``ratio`` with a Kaiser-windowed sinc low-pass, applies Snake or
SnakeBeta, and low-passes and decimates back, so the nonlinearity's harmonics above the original
Nyquist frequency are filtered out instead of aliasing (the map: :mod:`mlx_deconv.backends.anti_aliased`).
Its layer is :class:`mlx_deconv.nn.anti_aliased.Activation1d`.
"""

from __future__ import annotations

from typing import Optional

import mlx.core as mx
import numpy as np

from ..choice import choose
from ..geometry.activation import activation_geometry
from ..runtime.devices import StreamLike, resolve_stream
from .functional import FLOAT_DTYPES


def _filter(name: str, value, keep_graph: bool) -> mx.array:
    if not isinstance(value, mx.array):
        try:
            value = mx.array(np.asarray(value, dtype=np.float32))
        except (TypeError, ValueError) as err:
            raise TypeError(f"{name} must be an mx.array of taps, got {type(value).__name__}") from err
    if value.ndim == 3 and value.shape[:2] == (1, 1):
        if keep_graph:  # the filter's gradient flows through the reshape
            value = value.reshape(-1)
        else:
            try:  # a new, evaluated (K,) array: a lazy reshape would make every call wait for its evaluation
                value = mx.array(value.tolist()[0][0], dtype=value.dtype)
            except (ValueError, RuntimeError):  # a tracer (inside mx.compile): no values to read
                value = value.reshape(-1)
    if value.ndim != 1 or value.size < 1:
        raise ValueError(f"{name} must have shape (K,) or (1, 1, K) with K >= 1, got {tuple(value.shape)}")
    if value.dtype == mx.float64:
        value = value.astype(mx.float32, stream=mx.cpu)
    if value.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be float32, float16 or bfloat16, got dtype {value.dtype}")
    return value


def _evaluate_together(*arrays: mx.array) -> None:
    """Evaluates ``arrays`` in one wait, unless they are tracers of ``mx.compile`` or ``mx.vmap``.

    The filters' taps are read next, each read a wait for an unevaluated array: under
    ``nn.value_and_grad(model, fn)(model, ...)`` MLX hands the model's every array to the call as a new,
    unevaluated copy (50-110 µs a wait here)."""
    try:
        mx.eval(*arrays)
    except ValueError as err:  # MLX refuses to evaluate inside those transformations; any other error is raised
        if "function transformations" not in str(err):
            raise


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
    if value.dtype not in FLOAT_DTYPES:
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
            on the ``gemm`` backend's depthwise paths, for comparisons); the names of
            ``available_backends(stream, op="anti_aliased_activation")``. Default: ``"auto"``.
        stream: ``None`` (default stream), ``"cpu"``, ``"gpu"``, an ``mx.Device``, an ``mx.Stream`` or an
            ``mx.ThreadLocalStream``.

    Returns:
        array: the same shape and dtype as ``x``.

    Differentiable with respect to ``x``, ``alpha`` and ``beta`` (first derivatives). The fused paths
    treat the filters as constants (a zero cotangent, like NVIDIA's buffers); ``backend="unfused"``
    differentiates them too. Inside ``mx.grad`` MLX compiles nothing given its tracers. So a traced
    ``"polyphase"`` call (inside ``mx.grad``, ``mx.vjp`` or ``mx.compile``) of at most
    65,536 elements is a few matmuls and elementwise ops, and MLX's VJP of them: both compiled, their
    graphs built by a worker thread that is not tracing, and evaluated with the caller's (no evaluation
    or copy when built). Under a caller's ``mx.compile`` whose inputs hold the filters, the ops join the
    caller's graph as they are. A non-finite ``x`` there reaches the outputs of up to
    about four blocks of 16 samples around it. A larger call runs its fused kernels and their polyphase
    VJP, their graphs built on that worker thread the same way (on a GPU stream, evaluated there and
    copied back). ``mx.vmap`` and ``mx.jvp`` work on ``backend="unfused"`` only: MLX can neither batch nor push
    forward the fused forms' compiled kernels (it raises "[Compiled] Cannot vmap primitive"); fold a mapped axis
    into the batch axis instead.

    NVIDIA's ``UpSample1d`` returns an empty signal for ``kernel_size == ratio`` (its crop slices
    ``[p:-0]``); here that filter length gives the definition's ``ratio * L`` samples.
    """
    if not isinstance(x, mx.array):
        raise TypeError(f"x must be an mx.array, got {type(x).__name__}")
    if x.dtype not in FLOAT_DTYPES:
        raise TypeError(f"x must be float32, float16 or bfloat16, got dtype {x.dtype}")
    keep_graph = backend == "unfused"  # the one form that differentiates the filters; the others read their taps
    if not keep_graph:
        _evaluate_together(*(f for f in (up_filter, down_filter) if isinstance(f, mx.array)))
    up = _filter("up_filter", up_filter, keep_graph)
    down = _filter("down_filter", down_filter, keep_graph)
    geom, batched = activation_geometry(x.shape, up_taps=int(up.size), down_taps=int(down.size), activation=activation,
                                        logscale=logscale, ratio=ratio, data_format=data_format)
    channels = geom.channels
    where = f" ({channels} channels: x has shape {tuple(x.shape)} and data_format={data_format!r})"
    alpha = _channel_param("alpha", alpha, channels, where)
    if geom.activation == "snakebeta":
        if beta is None:
            raise ValueError("beta is required for activation='snakebeta' (or pass activation='snake')")
        beta = _channel_param("beta", beta, channels, where)
    elif beta is not None:
        raise ValueError("beta must be None for activation='snake' (Snake's magnitude is alpha); "
                         "pass activation='snakebeta' to use it")
    s = resolve_stream(stream)
    chosen = choose(geom, s, backend, dtype=x.dtype)
    if backend == "auto" and chosen.name == "unfused":  # the filters stay constants under "auto", as in the fused forms
        up, down = mx.stop_gradient(up), mx.stop_gradient(down)
    with mx.stream(s):
        if not batched:
            x = x[None]
        if data_format == "NCL":
            x = x.transpose(0, 2, 1)
        y = chosen.anti_aliased_activation(x, alpha, beta, up, down, geom)
        if data_format == "NCL":
            y = y.transpose(0, 2, 1)
    return y if batched else y[0]
