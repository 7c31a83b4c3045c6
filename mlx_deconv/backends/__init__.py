"""The backends and the rule that picks one per stream.

A backend is a function ``(x, weight, bias, geometry) -> y`` on NLC input and
an MLX-layout weight; it trusts the geometry and validates nothing.

The ``"auto"`` rule:
    * CPU stream: ``"gemm"`` (matmul + overlap-add; matmul-free when every
      output channel reads one input channel, as in depthwise). MLX's CPU op
      takes a naive loop for every stride or dilation > 1.
    * GPU stream (Metal or CUDA): ``"gemm"`` until the Metal kernel lands;
      MLX's GPU op multiplies the zeros it stuffs between input samples.
"""

from __future__ import annotations

from typing import Callable, Dict, List

import mlx.core as mx

from ..geometry import Geometry
from . import builtin, gemm

Backend = Callable[..., mx.array]

BACKENDS: Dict[str, Backend] = {
    "builtin": builtin.conv_transpose1d,
    "gemm": gemm.conv_transpose1d,
}


def available_backends(stream: mx.Stream) -> List[str]:
    """Names of the backends that can run on ``stream``."""
    return ["builtin", "gemm"]


def resolve_backend(name: str, geom: Geometry, stream: mx.Stream) -> str:
    """Resolves ``"auto"`` to a backend name, or checks a forced one.

    Raises:
        ValueError: for an unknown name, or one that cannot run on ``stream``.
    """
    if name == "auto":
        name = "gemm"
    if name not in BACKENDS:
        raise ValueError(f"backend must be 'auto' or one of {sorted(BACKENDS)}, got {name!r}")
    usable = available_backends(stream)
    if name not in usable:
        raise ValueError(f"backend={name!r} is not available on {stream}; available: {usable}")
    return name
