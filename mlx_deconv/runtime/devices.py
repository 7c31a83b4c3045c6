"""Which stream an op runs on, and what kind of device is behind it."""

from __future__ import annotations

import sys
from typing import Optional, Union

import mlx.core as mx

from . import blas

StreamLike = Union[None, str, mx.DeviceType, mx.Device, mx.Stream, mx.ThreadLocalStream]


def resolve_stream(stream: StreamLike = None) -> mx.Stream:
    """Turns ``None``, ``"cpu"``, ``"gpu"``, ``mx.cpu``/``mx.gpu``, an ``mx.Device``, an ``mx.Stream``
    or an ``mx.ThreadLocalStream`` (``mx.new_thread_local_stream``) into a stream.

    Raises:
        ValueError: for an unknown name or a device this machine lacks.
        TypeError: for anything else.
    """
    if stream is None:
        return mx.default_stream(mx.default_device())
    if isinstance(stream, mx.Stream):
        return stream
    if isinstance(stream, mx.ThreadLocalStream):
        # Inside its context the device's default stream is this thread's own stream of it.
        with mx.stream(stream):
            return mx.default_stream(stream.device)
    if isinstance(stream, str):
        kinds = {"cpu": mx.cpu, "gpu": mx.gpu}
        if stream.lower() not in kinds:
            raise ValueError(f"stream must be 'cpu', 'gpu', an mx.Device, an mx.Stream or an mx.ThreadLocalStream, got {stream!r}")
        stream = kinds[stream.lower()]
    if isinstance(stream, mx.DeviceType):
        stream = mx.Device(stream)
    if isinstance(stream, mx.Device):
        if not mx.is_available(stream):
            raise ValueError(f"stream={stream!r}: this device is not available on this machine")
        return mx.default_stream(stream)
    raise TypeError(f"stream must be None, 'cpu', 'gpu', an mx.Device, an mx.Stream or an mx.ThreadLocalStream, "
                    f"got {stream!r}")


def is_gpu(stream: mx.Stream) -> bool:
    return stream.device.type == mx.DeviceType.gpu


def cpu_blas(stream: mx.Stream) -> Optional[str]:
    """What multiplies matrices on a CPU stream: ``"reference"``, ``"optimized"`` or ``"platform"``.

    ``"reference"``: MLX's Linux wheel's bundled reference BLAS, one thread per
    matmul. ``"optimized"``: the CBLAS :mod:`mlx_deconv.runtime.blas` loaded under MLX.
    ``"platform"``: MLX's own platform BLAS elsewhere (Accelerate on macOS).

    Returns:
        str or None: None for a GPU stream.
    """
    if stream.device.type != mx.DeviceType.cpu:
        return None
    if not sys.platform.startswith("linux"):
        return "platform"
    return "optimized" if blas.optimized() else "reference"


def serial_blas(stream: mx.Stream) -> bool:
    """True for a CPU stream whose every matmul runs on one thread, so work spread over
    several streams is what uses the other cores (the reference BLAS, or the optimized
    one when it runs one thread, as :mod:`mlx_deconv.runtime.blas` sets it unless the user chose)."""
    kind = cpu_blas(stream)
    return kind == "reference" or (kind == "optimized" and blas.threads() == 1)


def is_metal(stream: mx.Stream) -> bool:
    """True for a GPU stream served by Metal (Apple silicon), not by CUDA."""
    return is_gpu(stream) and mx.metal.is_available()
