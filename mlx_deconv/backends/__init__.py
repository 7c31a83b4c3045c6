"""The backends and the rule that picks one per stream.

A backend is a function ``(x, weight, bias, geometry) -> y`` on NLC input and
an MLX-layout weight; it trusts the geometry and validates nothing.

The ``"auto"`` rule:
    * CPU stream: ``"winograd"`` where it applies (dense or grouped layers
      whose taps land on 2 or 3 consecutive input rows, as ``K = 2*stride``
      in vocoders: a third fewer matmul FLOPs), else ``"gemm"`` (matmul +
      overlap-add; matmul-free when every output channel reads one input
      channel, as in depthwise). MLX's CPU op takes a naive loop for every
      stride or dilation > 1.
    * Metal GPU stream: ``"metal"`` when each output channel reads at most
      :data:`METAL_MAX_IN_PER_GROUP` input channels (depthwise, grouped,
      few-channel layers: there the matmul of ``gemm`` is too thin to keep the
      GPU busy, and MLX's own op multiplies its stuffed zeros); ``"gemm"``
      (or ``"winograd"`` where it applies) for wide dense layers, where
      MLX's GPU matmul is hard to beat with a gather kernel. Reasoned, not
      yet measured: ``bench`` on a Mac prints what ``auto`` chose next to
      every backend's time.
    * Any other GPU (MLX's CUDA backend): as on the CPU; never ``"metal"``.
"""

from __future__ import annotations

from functools import partial
from typing import Callable, Dict, List

import mlx.core as mx

from ..geometry import Geometry
from ..devices import is_metal
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


def available_backends(stream: mx.Stream) -> List[str]:
    """Names of the backends that can run on ``stream``."""
    names = ["builtin", "gemm", "winograd"]
    return names + ["metal"] if is_metal(stream) else names


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
            name = "gemm" if gemm.winograd_tile(geom) is None else "winograd"
    if name not in BACKENDS:
        raise ValueError(f"backend must be 'auto' or one of {sorted(BACKENDS)}, got {name!r}")
    usable = available_backends(stream)
    if name not in usable:
        raise ValueError(f"backend={name!r} is not available on {stream}; available: {usable}")
    return name
