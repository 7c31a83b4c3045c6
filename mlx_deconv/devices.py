"""Which stream an op runs on, and what kind of device is behind it."""

from __future__ import annotations

import sys
from typing import Union

import mlx.core as mx

StreamLike = Union[None, str, mx.DeviceType, mx.Device, mx.Stream]


def resolve_stream(stream: StreamLike = None) -> mx.Stream:
    """Turns ``None``, ``"cpu"``, ``"gpu"``, ``mx.cpu``/``mx.gpu``, an ``mx.Device`` or an ``mx.Stream`` into a stream.

    Raises:
        ValueError: for an unknown name or a device this machine lacks.
        TypeError: for anything else.
    """
    if stream is None:
        return mx.default_stream(mx.default_device())
    if isinstance(stream, mx.Stream):
        return stream
    if isinstance(stream, str):
        kinds = {"cpu": mx.cpu, "gpu": mx.gpu}
        if stream.lower() not in kinds:
            raise ValueError(f"stream must be 'cpu', 'gpu', an mx.Device or an mx.Stream, got {stream!r}")
        stream = kinds[stream.lower()]
    if isinstance(stream, mx.DeviceType):
        stream = mx.Device(stream)
    if isinstance(stream, mx.Device):
        if not mx.is_available(stream):
            raise ValueError(f"stream={stream!r}: this device is not available on this machine")
        return mx.default_stream(stream)
    raise TypeError(f"stream must be None, 'cpu', 'gpu', an mx.Device or an mx.Stream, got {stream!r}")


def is_gpu(stream: mx.Stream) -> bool:
    return stream.device.type == mx.DeviceType.gpu


def has_reference_blas(stream: mx.Stream) -> bool:
    """True for a CPU stream off macOS.

    MLX's Linux wheel links netlib's reference BLAS: one thread per matmul,
    about 6 GFLOP/s per core on the development machine whatever the shape.
    On macOS the CPU stream multiplies with Accelerate, threaded and far faster.
    """
    return stream.device.type == mx.DeviceType.cpu and sys.platform != "darwin"


def is_metal(stream: mx.Stream) -> bool:
    """True for a GPU stream served by Metal (Apple silicon), not by CUDA."""
    return is_gpu(stream) and mx.metal.is_available()
