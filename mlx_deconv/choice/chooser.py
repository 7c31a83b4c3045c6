"""The one place a call's backend is chosen: :func:`choose`.

It takes the call's geometry, its stream, the backend the caller asked for, the input's dtype and the
autotuning state, and returns the :class:`~mlx_deconv.backends.record.Backend` to run. What it promises:

* a name asked for is returned as asked, or refused with a ``ValueError`` that names it, the op, the
  stream and the names available there; it is never swapped for another in silence (a forced
  ``"winograd"`` where minimal filtering does not apply runs its own ``"gemm"`` path, as MLX's fused
  ``mx.fast`` ops fall back to their unfused form);
* ``"auto"`` is the rule's pick (:mod:`.rule`), or with autotuning on the fastest backend the tuner
  measured among the candidates this function hands it (:func:`candidates`); the tuner only times;
* the result depends on nothing but the arguments and the tuner's remembered measurements, so the ops
  may keep it per call signature.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import List, Optional

import mlx.core as mx

from ..backends import BACKENDS, available_backends, op_of, usable_backends
from ..backends.record import Backend
from ..tuning import measure, tuner
from . import rule

#: The ops autotuning can measure (the activation has no tuned choice: its rule is measured).
TUNED_OPS = ("conv_transpose1d", "conv1d")


def candidates(geom, stream: mx.Stream) -> List[str]:
    """The backends ``"auto"`` chooses between for ``geom`` on ``stream``: those that run its op there and
    compute it their own way."""
    return usable_backends(geom, stream)


def choose(geom, stream: mx.Stream, asked: str = "auto", *, dtype=mx.float32,
           tuning: Optional[str] = None) -> Backend:
    """The backend that runs a call.

    Args:
        geom: the call's validated geometry (its type says the op).
        stream (mx.Stream): where it runs.
        asked (str): ``"auto"`` or a backend's name. Default: ``"auto"``.
        dtype: the input's dtype. Default: ``mx.float32``.
        tuning (str, optional): ``None`` (the rule), ``"forward"`` or ``"train"`` (autotuning on, timing the
            forward pass or forward plus backward). Default: ``None``.

    Returns:
        Backend: the record to run.

    Raises:
        ValueError: for an unknown name, or one that cannot run this op on ``stream``.
    """
    op = op_of(geom)
    if asked == "auto":
        name = rule.auto(geom, stream, dtype)
        if tuning is not None and op in TUNED_OPS:
            name = _tuned(geom, stream, dtype, tuning, name)["choice"]
    else:
        name = asked
    usable = available_backends(stream, op)
    if name not in usable:
        if not isinstance(name, str) or name not in BACKENDS:
            known = sorted(n for n in BACKENDS if BACKENDS[n].run(op) is not None)
            raise ValueError(f"backend must be 'auto' or one of {known}, got {name!r}")
        raise ValueError(f"backend={name!r} is not available for {op} on {stream}; available: {usable}")
    return BACKENDS[name]


def _tuned(geom, stream: mx.Stream, dtype, mode: str, rule_choice: str) -> dict:
    names = candidates(geom, stream)
    op = op_of(geom)
    if len(names) == 1:  # nothing to choose between: no timing, nothing to remember
        return dict(choice=names[0], rule=rule_choice, seconds={},
                    signature=asdict(tuner.signature(op, geom, stream, dtype, mode)))
    timed = tuner.timing_geometry(geom)
    return tuner.tune(op, geom, stream, dtype, names=names, rule=rule_choice,
                      runners=measure.runners(timed, stream, names), mode=mode)


def tuned_entry(geom, stream: mx.Stream, dtype=mx.float32, backward: bool = False) -> dict:
    """The tuned entry for one convolution call, timing it now unless it is remembered (``bench``'s "tuned"
    column, ``mlx-deconv tune``).

    Args:
        geom: a :class:`~mlx_deconv.geometry.records.Geometry` or
            :class:`~mlx_deconv.geometry.records.Conv1dGeometry`.
        stream (mx.Stream): where it runs.
        dtype: the input's dtype. Default: ``mx.float32``.
        backward (bool): time forward + backward. Default: ``False``.

    Returns:
        dict: ``choice`` (the tuned backend), ``rule`` (what the rule picks), ``seconds`` (median per
        timed backend), ``signature``.
    """
    return _tuned(geom, stream, dtype, "train" if backward else "forward", rule.auto(geom, stream, dtype))
