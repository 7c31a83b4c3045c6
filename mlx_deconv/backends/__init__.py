"""The backends and the rule that picks one per stream.

A backend is a function ``(x, weight, bias, geometry) -> y`` on NLC input and
an MLX-layout weight; it trusts the geometry and validates nothing.

The ``"auto"`` rule:
    * CPU stream: ``"gemm"`` (matmul + overlap-add; matmul-free when every
      output channel reads one input channel, as in depthwise). MLX's CPU op
      takes a naive loop for every stride or dilation > 1.
    * Metal GPU stream: ``"metal"`` when each output channel reads at most
      :data:`METAL_MAX_IN_PER_GROUP` input channels (depthwise, grouped,
      few-channel layers: there the matmul of ``gemm`` is too thin to keep the
      GPU busy, and MLX's own op multiplies its stuffed zeros); ``"gemm"``
      for wide dense layers, where MLX's GPU matmul is hard to beat with a
      gather kernel. Reasoned, not yet measured: ``bench`` on a Mac prints
      what ``auto`` chose next to every backend's time.
    * Any other GPU (MLX's CUDA backend): ``"gemm"``; never ``"metal"``.
"""

from __future__ import annotations

from typing import Callable, Dict, List

import mlx.core as mx

from ..geometry import Geometry
from ..devices import is_metal
from . import builtin, gemm, metal

Backend = Callable[..., mx.array]

BACKENDS: Dict[str, Backend] = {
    "builtin": builtin.conv_transpose1d,
    "gemm": gemm.conv_transpose1d,
    "metal": metal.conv_transpose1d,
}

#: On Metal, layers with at most this many input channels per group go to the kernel.
METAL_MAX_IN_PER_GROUP = 32


def available_backends(stream: mx.Stream) -> List[str]:
    """Names of the backends that can run on ``stream``."""
    return ["builtin", "gemm", "metal"] if is_metal(stream) else ["builtin", "gemm"]


def resolve_backend(name: str, geom: Geometry, stream: mx.Stream) -> str:
    """Resolves ``"auto"`` to a backend name, or checks a forced one.

    Raises:
        ValueError: for an unknown name, or one that cannot run on ``stream``.
    """
    if name == "auto":
        use_kernel = is_metal(stream) and geom.in_per_group <= METAL_MAX_IN_PER_GROUP
        name = "metal" if use_kernel else "gemm"
    if name not in BACKENDS:
        raise ValueError(f"backend must be 'auto' or one of {sorted(BACKENDS)}, got {name!r}")
    usable = available_backends(stream)
    if name not in usable:
        raise ValueError(f"backend={name!r} is not available on {stream}; available: {usable}")
    return name
