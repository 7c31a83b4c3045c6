"""Backend ``"gemm"``: one matmul plus an overlap-add, no zero-stuffing.

Each input row times the weight gives the contribution of that row to
``K`` output samples at once (``cols``: ``(…, L, K, C)``); tap ``k`` of row
``l`` lands on full-output sample ``l*stride + k*dilation``. Taps are grouped
by output phase ``(k*dilation) % stride``: within a phase, tap ``k`` is the
same plane shifted by ``(k*dilation) // stride`` rows, so the scatter becomes
plain shifted adds on ``stride`` planes that are interleaved at the end.

Long signals are cut into output blocks, each computed from the input rows
that reach it (:meth:`Geometry.input_span`), so the ``cols`` intermediate is
bounded by :data:`CHUNK_ELEMENTS` whatever the length. Everything is ordinary
MLX ops, so gradients, ``mx.compile`` and every device come for free.
"""

from __future__ import annotations

from typing import Optional

import mlx.core as mx

from ..geometry import Geometry

#: Upper bound on the elements of one block's ``cols`` intermediate.
CHUNK_ELEMENTS = 1 << 22


def _overlap_add(cols: mx.array, stride: int, dilation: int, crop: int, length: int) -> mx.array:
    """Sums ``cols (…, L, K, C)`` into output samples ``[crop, crop + length)``.

    ``crop`` is negative for a block that starts before its first input row
    reaches (a gap when stride > dilation*(K-1) + 1): those samples are zero.
    """
    *lead, rows_in, taps, channels = cols.shape
    rows = -(-(crop + length) // stride)
    no_pad = [(0, 0)] * len(lead)
    planes = []
    for phase in range(stride):
        plane = None
        for k in range(taps):
            if (k * dilation) % stride != phase:
                continue
            shift = (k * dilation) // stride
            used = min(rows_in, rows - shift)
            if used <= 0:
                continue
            term = cols[..., :used, k, :]
            if shift or used < rows - shift:
                term = mx.pad(term, no_pad + [(shift, rows - shift - used), (0, 0)])
            plane = term if plane is None else plane + term
        if plane is None:
            plane = mx.zeros((*lead, rows, channels), dtype=cols.dtype)
        planes.append(plane)
    if stride == 1:
        y = planes[0]
    else:
        y = mx.stack(planes, axis=-2).reshape(*lead, rows * stride, channels)
    if crop < 0:
        return mx.pad(y[..., : crop + length, :], no_pad + [(-crop, 0), (0, 0)])
    return y[..., crop : crop + length, :]


def _block(x: mx.array, weight: mx.array, stride: int, dilation: int, crop: int, length: int) -> mx.array:
    """Output samples ``[crop, crop + length)`` of the full output of ``x``."""
    batch, rows_in, in_channels = x.shape
    out_channels, taps, in_per_group = weight.shape
    groups = in_channels // in_per_group
    out_per_group = out_channels // groups

    if in_per_group == 1:
        # Depthwise and C_in = 1: every output channel reads one input
        # channel, so a broadcast multiply replaces the matmul.
        if out_per_group > 1 and groups > 1:
            x = mx.repeat(x, out_per_group, axis=-1)
        cols = x[:, :, None, :] * weight[:, :, 0].T
        return _overlap_add(cols, stride, dilation, crop, length)

    if groups == 1:
        w = weight.transpose(2, 1, 0).reshape(in_channels, taps * out_channels)
        cols = (x.reshape(batch * rows_in, in_channels) @ w).reshape(batch, rows_in, taps, out_channels)
        return _overlap_add(cols, stride, dilation, crop, length)

    # Grouped: one batched matmul over groups; the overlap-add runs in the
    # group-major layout and only the (K/stride times smaller) output is
    # transposed back.
    xg = x.reshape(batch * rows_in, groups, in_per_group).transpose(1, 0, 2)
    w = weight.reshape(groups, out_per_group, taps, in_per_group).transpose(0, 3, 2, 1)
    w = w.reshape(groups, in_per_group, taps * out_per_group)
    cols = (xg @ w).reshape(groups, batch, rows_in, taps, out_per_group)
    y = _overlap_add(cols, stride, dilation, crop, length)
    return y.transpose(1, 2, 0, 3).reshape(batch, length, out_channels)


def block_length(geom: Geometry) -> int:
    """Output samples per block so that one block's ``cols`` fits :data:`CHUNK_ELEMENTS`."""
    halo = -(-(geom.kernel_size - 1) * geom.dilation // geom.stride) + 1
    rows = CHUNK_ELEMENTS // max(1, geom.batch * geom.kernel_size * geom.out_channels) - halo
    return max(geom.stride, rows * geom.stride)


def conv_transpose1d(x: mx.array, weight: mx.array, bias: Optional[mx.array], geom: Geometry) -> mx.array:
    """Transposed conv of NLC ``x`` with an MLX-layout ``weight``, as ``geom`` says."""
    step = block_length(geom)
    blocks = []
    for start in range(0, geom.output_length, step):
        stop = min(start + step, geom.output_length)
        lo, hi = geom.input_span(start, stop)
        if lo == hi:
            blocks.append(mx.zeros((geom.batch, stop - start, geom.out_channels), dtype=x.dtype))
            continue
        crop = start + geom.crop - lo * geom.stride
        blocks.append(_block(x[:, lo:hi], weight, geom.stride, geom.dilation, crop, stop - start))
    y = blocks[0] if len(blocks) == 1 else mx.concatenate(blocks, axis=1)
    if bias is not None:
        y = y + bias
    return y
