"""Overlap-add by phase planes: the general layout, for taps that do not tile slabs.

Taps are grouped by output phase ``(k*dilation) % stride``: within a phase,
tap ``k`` is the same plane shifted by ``(k*dilation) // stride`` rows, so the
scatter becomes shifted adds on ``stride`` planes, interleaved at the end.
"""

from __future__ import annotations

from typing import List, Tuple

import mlx.core as mx


def shifted_sum(parts: List[Tuple[int, mx.array]], start: int, stop: int) -> mx.array:
    """Rows ``[start, stop)`` of ``out[m] = sum_j part_j[m - shift_j]`` (zero outside each part).

    ``parts`` are ``(shift, array (…, L, W))`` with a common ``L``. The row
    range is cut where the set of overlapping parts changes; each piece is a
    sum of views, so nothing is padded and only the final concatenation copies.
    """
    rows = parts[0][1].shape[-2]
    lead = parts[0][1].shape[:-2]
    width = parts[0][1].shape[-1]
    cuts = {start, stop}
    for shift, _ in parts:
        cuts.update(c for c in (shift, shift + rows) if start < c < stop)
    cuts = sorted(cuts)
    pieces = []
    for lo, hi in zip(cuts, cuts[1:]):
        piece = None
        for shift, part in parts:
            if shift <= lo and hi <= shift + rows:
                view = part[..., lo - shift : hi - shift, :]
                piece = view if piece is None else piece + view
        if piece is None:
            piece = mx.zeros((*lead, hi - lo, width), dtype=parts[0][1].dtype)
        pieces.append(piece)
    return pieces[0] if len(pieces) == 1 else mx.concatenate(pieces, axis=-2)


def phase_overlap_add(cols: mx.array, stride: int, dilation: int, crop: int, length: int) -> mx.array:
    """Output samples ``[crop, crop + length)`` from per-tap ``cols (…, L, K, C)``, one plane per phase.

    ``crop`` is negative for a block that starts before its first input row reaches.
    """
    *lead, rows_in, taps, channels = cols.shape
    first = crop // stride
    last = -(-(crop + length) // stride)
    planes = []
    for phase in range(stride):
        parts = [((k * dilation) // stride, cols[..., k, :]) for k in range(taps) if (k * dilation) % stride == phase]
        if parts:
            planes.append(shifted_sum(parts, first, last))
        else:
            planes.append(mx.zeros((*lead, last - first, channels), dtype=cols.dtype))
    y = planes[0] if stride == 1 else mx.stack(planes, axis=-2)
    y = y.reshape(*lead, (last - first) * stride, channels)
    offset = crop - first * stride
    return y[..., offset : offset + length, :]
