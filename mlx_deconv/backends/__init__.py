"""The backends: one :class:`~.record.Backend` record each, in one registry, :data:`BACKENDS`.

The fourth step of a call's way (call -> geometry -> choice -> backend -> array). Nothing here chooses:
:mod:`mlx_deconv.choice` does, and the ops run the record it returns. The rest of the package asks a
record (its run function per op, where it is available, what it applies to) and never tests a name.

=============  =====================================================  ================================
backend        what it is                                             ops
=============  =====================================================  ================================
``builtin``    MLX's own ops, with the padding forms MLX lacks         both convolutions
``gemm``       matmuls plus an overlap-add, no zero-stuffing           both convolutions
               (:mod:`.gemm`)
``winograd``   ``gemm`` with minimal filtering on 2-3 row shifts       ``conv_transpose1d``
``metal``      the package's Metal kernels (:mod:`.metal`)             ``conv_transpose1d``, the
                                                                       anti-aliased activation
``polyphase``  the activation's fused CPU form (:mod:`.anti_aliased`)  the anti-aliased activation
``unfused``    the activation's steps one by one on ``gemm``           the anti-aliased activation
=============  =====================================================  ================================
"""

from __future__ import annotations

from typing import Dict, List

import mlx.core as mx

from ..geometry.activation import ActivationGeometry
from ..geometry.records import Conv1dGeometry, Geometry
from ..runtime.devices import is_metal
from . import builtin, gemm, metal, winograd
from .anti_aliased import polyphase, unfused
from .metal import anti_aliased as metal_anti_aliased
from .record import Backend

#: The ops a backend can compute.
OPS = ("conv_transpose1d", "conv1d", "anti_aliased_activation")


def op_of(geom) -> str:
    """The op a geometry describes: ``"conv_transpose1d"``, ``"conv1d"`` or ``"anti_aliased_activation"``."""
    if isinstance(geom, Geometry):
        return "conv_transpose1d"
    if isinstance(geom, Conv1dGeometry):
        return "conv1d"
    if isinstance(geom, ActivationGeometry):
        return "anti_aliased_activation"
    raise TypeError(f"not a geometry of any op: {type(geom).__name__}")


def _on_metal(stream: mx.Stream) -> bool:
    return is_metal(stream)  # looked up per call, so tests can stand in for a Mac's GPU stream


def _winograd_applies(geom) -> bool:
    return isinstance(geom, Geometry) and winograd.applies(geom)


BACKENDS: Dict[str, Backend] = {
    "builtin": Backend("builtin", conv_transpose1d=builtin.conv_transpose1d, conv1d=builtin.conv1d,
                       bind=builtin.bind),
    "gemm": Backend("gemm", conv_transpose1d=gemm.conv_transpose1d, conv1d=gemm.conv1d),
    # winograd looks at its input's values (non-finite ones take the gemm path): no compiling.
    "winograd": Backend("winograd", conv_transpose1d=winograd.conv_transpose1d, applies=_winograd_applies,
                        compilable=False),
    "metal": Backend("metal", conv_transpose1d=metal.conv_transpose1d,
                     anti_aliased_activation=metal_anti_aliased.run, available=_on_metal, compilable=False),
    "polyphase": Backend("polyphase", anti_aliased_activation=polyphase.run, compilable=False),
    "unfused": Backend("unfused", anti_aliased_activation=unfused.run, compilable=False),
}


def check_op(op: str) -> str:
    """``op``, or a ValueError naming the ops."""
    if op not in OPS:
        raise ValueError(f"op must be one of {OPS}, got {op!r}")
    return op


def backend_names(*ops: str) -> List[str]:
    """Names of the backends that implement every op of ``ops``, whatever the stream, sorted."""
    return sorted(b.name for b in BACKENDS.values() if all(b.run(check_op(op)) is not None for op in ops))


def available_backends(stream: mx.Stream, op: str = "conv_transpose1d") -> List[str]:
    """Names of the backends that can run ``op`` on ``stream``."""
    return [b.name for b in BACKENDS.values() if b.run(check_op(op)) is not None and b.available(stream)]


def usable_backends(geom, stream: mx.Stream) -> List[str]:
    """The backends of :func:`available_backends` that compute this geometry their own way
    (``"winograd"`` only where it is not ``"gemm"``)."""
    return [n for n in available_backends(stream, op_of(geom)) if BACKENDS[n].applies(geom)]
