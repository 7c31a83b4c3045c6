"""The transposed op on the ``"gemm"`` machinery (also ``"winograd"``'s): matmuls and an overlap-add, no zero-stuffing.

Each input row times the weight gives the contribution of that row to ``K``
output samples; tap ``k`` of row ``l`` lands on full-output sample
``l*stride + k*dilation``, i.e. slab row ``l + shift``, phase ``phase`` with
``k*dilation = shift*stride + phase`` (:mod:`.tap_layout`). When the taps fill
whole rows of phases with few empty slots (:func:`~.tap_layout.slab_shifts`: ``K``
a multiple of ``stride``, the vocoder case, or ``stride == 1``), the taps of one
shift form a *slab* weight whose product is already interleaved output;
otherwise taps are summed on one *phase plane* per phase (:mod:`.planes`).

Which path a layer takes (:func:`.transposed_paths.path_for`; ``C_in/G`` = input channels
per group; "taps in slabs" = :func:`~.tap_layout.slab_shifts` accepts them: at most
a quarter of an empty slot per tap, one per tap when ``C_in/G == 1``):

===============================================  ==========================================  ==============================
Kind of layer                                    Path (forward)                              Backward (VJP) blocks
===============================================  ==========================================  ==============================
``C_in/G == 1`` (depthwise, channel multiplier,  ``DepthwiseSlabs``: ``x*w`` fused into the  the same, differentiated
``C_in == 1``), taps in slabs with at most one   slab sum: no matmul, no intermediate
empty slot per tap (``K = 2*stride``: BigVGAN)
``C_in/G == 1``, other taps                      ``ChannelPlanes``: per-tap products by      the same
                                                 broadcasting, summed on phase planes
dense (``G == 1``), taps in slabs (vocoder       ``DenseSlabs``: one matmul per slab,        ``WideSlabs``: one wide matmul
upsampling ``K = 2*stride``; every               summed in place (``mx.addmm``)              and the fused overlap-add
``stride == 1``, dilated or not)
dense, dilation 1, ``K`` a multiple of stride,   ``WeightOrderSlabs``: one wide matmul       the same, differentiated
short signal (``N*L <= 4*C_in``: the weight      against the weight as stored, the
outweighs the signal, a decoder's first layer)   overlap-add reads it transposed
grouped (``G > 1``, ``C_in/G > 1``), taps in     ``GroupedSlabs``: one batched matmul        ``WideSlabs`` (grouped)
slabs                                            per slab over the groups, in place
dense or grouped, slabs on row shifts ``0, 1``   ``WinogradSlabs``: minimal filtering        the same, differentiated
or ``0, 1, 2``, backend ``"winograd"``           (:mod:`.minimal_filtering`)
dense or grouped, other taps (more empty        ``PhasePlanes``: one matmul for all         the same
slots, e.g. ``K < stride``, sparse dilations)    taps, summed on phase planes
===============================================  ==========================================  ==============================

``conv1d``, the adjoint, runs on the same layout and scheduling with the
adjoint paths of :mod:`.conv1d_paths` (its own table: depthwise, slabs, planes).

Blocks, worker streams, in-place writes and the block VJPs are in
:mod:`.schedule`; everything is ordinary MLX ops, so gradients, ``mx.compile``
and every device come for free.
"""

from __future__ import annotations

from typing import Optional

import mlx.core as mx

from ...geometry.records import Geometry
from ...runtime.compiling import COMPILE_MAX_OUTPUT, per_thread_cache
from . import schedule, transposed_paths

from .schedule import DEFAULT_POLICY, BlockPolicy, worker_streams


def in_compute_dtype(run, x: mx.array, weight: mx.array, bias: Optional[mx.array]) -> mx.array:
    """``run(x, weight) + bias``, computed in float32 for half precision on a CPU stream and
    returned in ``x``'s dtype: x86 and the Linux wheel have no fast half-precision arithmetic,
    and float32 inside rounds once, at the end."""
    dtype = x.dtype
    stream = mx.default_stream(mx.default_device())
    if stream.device.type == mx.DeviceType.cpu and dtype in (mx.float16, mx.bfloat16):
        x, weight = x.astype(mx.float32), weight.astype(mx.float32)
        bias = None if bias is None else bias.astype(mx.float32)
    y = run(x, weight)
    if bias is not None:
        y = y + bias
    return y.astype(dtype)


def run_path(x: mx.array, weight: mx.array, bias: Optional[mx.array], geom: Geometry, path,
             policy: BlockPolicy = DEFAULT_POLICY) -> mx.array:
    """Transposed conv of NLC ``x`` by ``path`` (from :func:`.transposed_paths.path_for`), in blocks as ``policy`` says."""

    def run(x, weight):
        workers = worker_streams(mx.default_stream(mx.default_device()), policy.max_workers)
        count = schedule.block_count(geom, path.per_row, len(workers), False, policy)
        vjp_count = schedule.block_count(geom, path.per_row, len(workers), True, policy)
        plan = schedule.Schedule(schedule.bounds(geom.output_length, count),
                                 schedule.bounds(geom.output_length, vjp_count), workers)
        if count == vjp_count == 1 and not path.own_vjp:
            return schedule.concatenated(x, path, path.arrange(weight), geom, plan.cuts, workers)
        return schedule.written_in_place(x, weight, path, geom, plan)

    return in_compute_dtype(run, x, weight, bias)


def conv_transpose1d(x: mx.array, weight: mx.array, bias: Optional[mx.array], geom: Geometry,
                     policy: BlockPolicy = DEFAULT_POLICY) -> mx.array:
    """Backend ``"gemm"``: transposed conv of NLC ``x`` with an MLX-layout ``weight``, as ``geom`` says.

    Args:
        x: ``(N, L, C_in)``.
        weight: ``(C_out, K, C_in/groups)``.
        bias: ``(C_out,)`` or None.
        geom: the validated call.
        policy: how to cut the call into blocks (tests pass tiny ones).

    Returns:
        array: ``(N, L_out, C_out)`` in the dtype of ``x``.
    """
    return run_path(x, weight, bias, geom, transposed_paths.path_for(geom), policy)


@per_thread_cache(maxsize=256)  # compiled functions: made, kept and freed by each thread
def prepared_run(geom: Geometry, minimal_filtering: bool, with_bias: bool, policy: BlockPolicy):
    """The path's run for ``geom``, compiled when small: the winograd backend looks at its values
    first, so it cannot be compiled whole by ``functional``; what follows the look can."""
    path = transposed_paths.path_for(geom, minimal_filtering=minimal_filtering)

    def run(x, weight, bias):
        return run_path(x, weight, bias, geom, path, policy)

    if geom.batch * geom.output_length * geom.out_channels > COMPILE_MAX_OUTPUT:
        return run
    compiled = mx.compile(run if with_bias else (lambda x, weight: run(x, weight, None)))
    return compiled if with_bias else (lambda x, weight, bias: compiled(x, weight))
