"""The backends and the rule that picks one per stream.

A backend is a function ``(x, weight, bias, geometry) -> y`` on NLC input and
an MLX-layout weight; it trusts the geometry and validates nothing.

The ``"auto"`` rule:
    * Metal GPU stream, layers where each output channel reads at most
      :data:`METAL_MAX_IN_PER_GROUP` input channels (depthwise, grouped,
      few-channel): ``"metal"``. There the matmul of ``gemm`` is too thin to
      keep the GPU busy, and MLX's own op multiplies its stuffed zeros.
    * Otherwise, on any stream: ``"winograd"`` where minimal filtering applies
      (taps on 2 or 3 consecutive input rows, as ``K = 2*stride`` in vocoders)
      and each output sums enough products to pay for its extra passes
      (:data:`WINOGRAD_MIN_DEPTH_REFERENCE_BLAS` on a Linux CPU,
      :data:`WINOGRAD_MIN_DEPTH` elsewhere); else ``"gemm"`` (matmul +
      overlap-add; matmul-free when every output channel reads one input
      channel, as in depthwise). MLX's CPU op takes a naive loop for every
      stride or dilation > 1; on GPUs a matmul is hard to beat with a gather
      kernel for wide layers.
    * Never ``"metal"`` on MLX's CUDA backend.

Measured on a Linux CPU only; the GPU and macOS thresholds are reasoned:
``bench`` on a Mac prints what ``auto`` chose next to every backend's time.
"""

from __future__ import annotations

from functools import partial
from typing import Callable, Dict, List

import mlx.core as mx

from ..geometry import Geometry
from ..devices import has_reference_blas, is_metal
from . import builtin, gemm, metal

Backend = Callable[..., mx.array]

BACKENDS: Dict[str, Backend] = {
    "builtin": builtin.conv_transpose1d,
    "gemm": gemm.conv_transpose1d,
    "winograd": partial(gemm.conv_transpose1d, minimal_filtering=True),
    "metal": metal.conv_transpose1d,
}

#: On Metal, layers with at most this many input channels per group go to the kernel.
METAL_MAX_IN_PER_GROUP = 32
#: ``"winograd"`` saves a third of the matmul FLOPs and adds a few passes over
#: the output, so it pays once each output sums enough products
#: (``C_in/groups * K``). Behind the reference BLAS (about 6 GFLOP/s per core),
#: forward over gemm: 0.8x at 32 (dense, 8 channels), 1.0-1.1x at 64 (dense and
#: grouped, since gemm sums its slabs in place), 1.1-1.3x at 128, 1.25-1.5x
#: from 256 up; forward+backward 1.1-1.4x from 32 up.
WINOGRAD_MIN_DEPTH_REFERENCE_BLAS = 64
#: Behind Accelerate or a GPU (15-40 FLOP per byte of bandwidth) reasoned, not
#: measured: the same balance is reached about 8x deeper.
WINOGRAD_MIN_DEPTH = 512


def available_backends(stream: mx.Stream) -> List[str]:
    """Names of the backends that can run on ``stream``."""
    names = ["builtin", "gemm", "winograd"]
    return names + ["metal"] if is_metal(stream) else names


def _winograd_pays(geom: Geometry, stream: mx.Stream) -> bool:
    least = WINOGRAD_MIN_DEPTH_REFERENCE_BLAS if has_reference_blas(stream) else WINOGRAD_MIN_DEPTH
    return gemm.winograd_tile(geom) is not None and geom.in_per_group * geom.kernel_size >= least


def usable_backends(geom: Geometry, stream: mx.Stream) -> List[str]:
    """The backends of :func:`available_backends` that compute this geometry their own way
    (``"winograd"`` only where it is not ``"gemm"``)."""
    return [n for n in available_backends(stream) if n != "winograd" or gemm.winograd_tile(geom) is not None]


def resolve_backend(name: str, geom: Geometry, stream: mx.Stream) -> str:
    """Resolves ``"auto"`` to a backend name, or checks a forced one.

    A forced ``"winograd"`` stays ``"winograd"`` on any geometry: where
    minimal filtering does not apply it runs as ``"gemm"``, as MLX's fused
    ``mx.fast`` ops fall back to their unfused form.

    Raises:
        ValueError: for an unknown name, or one that cannot run on ``stream``.
    """
    if name == "auto":
        if is_metal(stream) and geom.in_per_group <= METAL_MAX_IN_PER_GROUP:
            name = "metal"
        else:
            name = "winograd" if _winograd_pays(geom, stream) else "gemm"
    if name not in BACKENDS:
        raise ValueError(f"backend must be 'auto' or one of {sorted(BACKENDS)}, got {name!r}")
    usable = available_backends(stream)
    if name not in usable:
        raise ValueError(f"backend={name!r} is not available on {stream}; available: {usable}")
    return name
