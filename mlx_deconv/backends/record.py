"""The :class:`Backend` record: what the package needs to know about one backend, and nothing else.

The contract every backend fills in. A run function computes one op on a validated geometry and
trusts it (it validates nothing):

* ``conv_transpose1d(x, weight, bias, geometry) -> y`` and ``conv1d(x, weight, bias, geometry) -> y``:
  NLC ``x`` ``(N, L, C_in)``, an MLX-layout weight ``(C_out, K, C_in/groups)``, ``bias`` ``(C_out,)`` or
  None; ``y`` is ``(N, L_out, C_out)`` in ``x``'s dtype. The geometry is a
  :class:`~mlx_deconv.geometry.records.Geometry` or a :class:`~mlx_deconv.geometry.records.Conv1dGeometry`.
* ``anti_aliased_activation(x, alpha, beta, up, down, geometry) -> y``: NLC ``x``, per-channel ``alpha``
  and ``beta`` (None for Snake), the filters ``(Ku,)`` and ``(Kd,)``; ``y`` has ``x``'s shape and dtype. The
  geometry is an :class:`~mlx_deconv.geometry.activation.ActivationGeometry`.

Every run function is differentiable with respect to its arrays (MLX ops, or a custom function with a VJP)
and equals the float64 definition to the dtype's rounding.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import mlx.core as mx

Run = Callable[..., mx.array]


def _anywhere(stream: mx.Stream) -> bool:
    return True


def _always(geom) -> bool:
    return True


@dataclass(frozen=True)
class Backend:
    """One backend: its name, a run function per op it computes, where it runs and what it computes its own way.

    Attributes:
        name: the name users pass as ``backend=``; one name means one implementation on every op.
        conv_transpose1d, conv1d, anti_aliased_activation: the run function of each op, or None where the
            backend has none.
        available: ``available(stream)``: whether it can run on that stream.
        applies: ``applies(geometry)``: whether it computes that call its own way (``"winograd"`` only
            where minimal filtering applies; elsewhere a forced ``"winograd"`` runs as ``"gemm"``).
        compilable: whether a call may be wrapped in ``mx.compile`` (not one that looks at values or
            launches its own kernel outside MLX's tracing).
        bind: ``bind(op, geometry, stream) -> run(x, weight, bias)``: the op bound to one call on one
            stream, for a backend whose call is a few MLX ops, where compiling or any Python line in
            front of them shows in a short call's time; None for the others.
    """

    name: str
    conv_transpose1d: Optional[Run] = None
    conv1d: Optional[Run] = None
    anti_aliased_activation: Optional[Run] = None
    available: Callable[[mx.Stream], bool] = _anywhere
    applies: Callable[[object], bool] = _always
    compilable: bool = True
    bind: Optional[Callable[[str, object, mx.Stream], Run]] = None

    def run(self, op: str) -> Optional[Run]:
        """The run function of ``op``, or None."""
        return getattr(self, op)
