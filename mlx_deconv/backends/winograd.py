"""Backend ``"winograd"``: the ``"gemm"`` machinery with minimal filtering on slabs of 2 or 3 row shifts.

Where minimal filtering applies (:func:`applies`: taps on 2 or 3 consecutive input rows, as
``K = 2*stride`` in vocoders) it saves a third of the matmul FLOPs for a few passes over the
output (:mod:`.gemm.minimal_filtering`); elsewhere it runs exactly as ``"gemm"``.
"""

from __future__ import annotations

import math
from typing import Optional

import mlx.core as mx

from ..geometry.records import Geometry
from .gemm import transposed, transposed_paths
from .gemm.schedule import DEFAULT_POLICY, BlockPolicy


def conv_transpose1d(x: mx.array, weight: mx.array, bias: Optional[mx.array], geom: Geometry,
                     policy: BlockPolicy = DEFAULT_POLICY) -> mx.array:
    """Backend ``"winograd"``: as ``"gemm"``'s, with :class:`~.gemm.transposed_paths.WinogradSlabs`
    where minimal filtering applies (:func:`applies`), else the same path as ``"gemm"``.

    Minimal filtering adds and subtracts neighbouring rows and taps before it
    multiplies, so one NaN or Inf would reach its whole tile: a call whose
    ``x`` or ``weight`` holds one takes the ``"gemm"`` path instead, which puts
    them where the definition does. That look at the values evaluates them
    (so this backend is not compiled); inside ``mx.compile`` or ``mx.vmap``,
    where values cannot be looked at, minimal filtering runs regardless.
    """
    minimal = applies(geom) and values_finite(x, weight) is not False
    return transposed.prepared_run(geom, minimal, bias is not None, policy)(x, weight, bias)


def values_finite(*arrays: mx.array) -> Optional[bool]:
    """Whether every value of ``arrays`` is finite; None inside a transformation
    (``mx.compile``, ``mx.vmap``) that forbids evaluating them.

    A sum is NaN or Inf when a term is, and is a third the cost of ``isfinite``
    and ``all``; a finite sum that overflows only says "not finite" wrongly,
    which costs speed (the gemm path), never exactness.
    """
    total = sum(mx.sum(a if a.dtype == mx.float32 else a.astype(mx.float32)) for a in arrays)  # half sums overflow
    try:
        return math.isfinite(total.item())
    except ValueError:
        return None


def applies(geom: Geometry) -> bool:
    """True where ``"winograd"`` computes differently from ``"gemm"``."""
    return transposed_paths.winograd_tile(geom) is not None
