"""Fused overlap-adds of interleaved slabs, with explicit VJPs (used by the ``gemm`` backend).

When the taps tile ``(shift, phase)`` slots (see :func:`.layout.slab_shifts`), the
contribution of input row ``r`` through all taps of shift ``q`` is one slab
of ``stride * C`` already-interleaved output values, landing on output row
``r + q``. The input is padded by ``P = max(shifts)`` rows on both sides first,
so every output row ``m`` in ``[0, L + P)`` is a plain sum of views
``slab_j[m - q_j + P]``: one compiled elementwise pass writes the output, with
no zero-filled planes and no interleaving copy.

MLX would differentiate the sum of views by scattering the cotangent into a
zero array per view (``S`` output-sized buffers); the VJPs here instead read
the cotangent back with ``S`` shifted views, once.
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

import mlx.core as mx

from ...runtime.compiling import per_thread_cache


#: Terms per fused kernel of a depthwise sum on a CPU stream (a term: a view of the signal times a per-channel
#: weight, two inputs of the kernel). Past about five terms MLX's CPU kernel ran 1.5-2x slower than the same sum
#: cut into kernels of fewer (docs/performance-history.md). A GPU kernel is not cut: measured on the CPU only.
MAX_FUSED_TERMS = 5


def term_chunks(count: int, most: int = MAX_FUSED_TERMS) -> Tuple[range, ...]:
    """``count`` terms cut into the fewest runs of at most ``most``, as even as can be, the longer runs first
    (7 -> 4 + 3): every later run also reads the sum so far."""
    pieces = -(-count // most)
    size, longer = divmod(count, pieces)  # the first ``longer`` runs get one term more
    bounds = [i * size + min(i, longer) for i in range(pieces + 1)]
    return tuple(range(lo, hi) for lo, hi in zip(bounds, bounds[1:]))


def fused_sum(terms: Sequence[mx.array]) -> mx.array:
    """``terms[0] + terms[1] + ...`` in that order, on a CPU stream a few terms per fused kernel (:func:`term_chunks`).

    The partial sum passes through ``mx.contiguous`` between runs (no copy: a sum of views is written row-major):
    ``mx.compile``, the caller's included, does not fuse across it, so the runs stay separate kernels.
    """
    most = MAX_FUSED_TERMS if mx.default_device().type == mx.cpu else len(terms)
    acc = None
    for i, run in enumerate(term_chunks(len(terms), most)):
        if i:
            acc = mx.contiguous(acc)
        for j in run:
            acc = terms[j] if acc is None else acc + terms[j]
    return acc


def zero_extended(a: mx.array, axis: int, before: int, after: int) -> mx.array:
    """``a`` with ``before`` and ``after`` zero rows added on ``axis``.

    A concatenation writes each element once; ``mx.pad`` fills the whole
    result, then copies ``a`` over it.
    """
    if not (before or after):
        return a
    axis = axis % a.ndim

    def zeros(rows):
        return mx.zeros((*a.shape[:axis], rows, *a.shape[axis + 1 :]), dtype=a.dtype)

    parts = ([zeros(before)] if before else []) + [a] + ([zeros(after)] if after else [])
    return mx.concatenate(parts, axis=axis)


def zero_ends(a: mx.array, axis: int, rows: int) -> mx.array:
    """``a`` with its first and last ``rows`` rows on ``axis`` set to zero, written in place.

    Args:
        a: any array; ``rows`` at most half its length on ``axis``.
        axis: the row axis.
        rows: rows to zero at each end.

    Returns:
        array: ``a`` with those rows zero (MLX writes into ``a``'s buffer when nothing else holds it).
    """
    index = [slice(None)] * a.ndim
    zeros = mx.zeros((), dtype=a.dtype)
    for part in (slice(0, rows), slice(a.shape[axis] - rows, a.shape[axis])):
        index[axis] = part
        a[tuple(index)] = zeros
    return a


def signal_rows(x: mx.array, start: int, count: int) -> mx.array:
    """Rows ``[start, start + count)`` of ``x (…, L, C)``, zero where they fall outside ``[0, L)``.

    A view of ``x`` where the rows exist, so only a block at the signal's
    ends is copied.
    """
    rows_in = x.shape[-2]
    lo, hi = min(max(start, 0), rows_in), max(min(start + count, rows_in), 0)
    lo = min(lo, hi)
    before = min(max(-start, 0), count)
    return zero_extended(x[..., lo:hi, :], -2, before, count - before - (hi - lo))


def _valid_rows(rows_padded: int, pad: int, first: int, last: int) -> Tuple[int, int]:
    """Output rows in ``[first, last)`` that every slab reaches: ``[0, rows_padded - pad)``."""
    lo = max(first, 0)
    hi = max(lo, min(last, rows_padded - pad))
    return lo, hi


def _frame(body: mx.array, lo: int, hi: int, first: int, last: int, axis: int) -> mx.array:
    """Zero rows around ``body`` (rows ``[lo, hi)``) to cover ``[first, last)``."""
    if lo == first and hi == last:
        return body
    return zero_extended(body, axis, lo - first, last - hi)


def _cotangent_views(ct: mx.array, shifts: Tuple[int, ...], rows_padded: int, lo: int, hi: int, first: int, axis: int):
    """For each slab ``j``, the cotangent rows that slab row ``r`` fed: ``ct[r + q_j - P]``, zero elsewhere."""
    pad = max(shifts)
    index = [slice(None)] * ct.ndim
    index[axis] = slice(lo - first, hi - first)
    valid = ct[tuple(index)]
    big = zero_extended(valid, axis, pad + lo, rows_padded - hi)  # row i of big is output row i - pad
    views = []
    for q in shifts:
        index[axis] = slice(q, q + rows_padded)
        views.append(big[tuple(index)])
    return views


@per_thread_cache(maxsize=512)  # compiled functions: made, kept and freed by each thread
def _summed(shifts: Tuple[int, ...], lo: int, count: int, axis: int):
    pad = max(shifts)

    def total(cols):
        acc = None
        for j, q in enumerate(shifts):
            view = cols[(slice(None),) * axis + (slice(lo - q + pad, lo - q + pad + count), j)]
            acc = view if acc is None else acc + view
        return acc

    return mx.compile(total)


def slab_sum(cols: mx.array, shifts: Tuple[int, ...], first: int, last: int, axis: int = -3) -> mx.array:
    """Output rows ``[first, last)`` of ``out[m] = sum_j cols[m - q_j + P, j]``.

    Args:
        cols: ``(…, R, S, …)``, rows on ``axis`` and slabs right after them:
            slab ``j`` of every row of an input padded by ``P = max(shifts)``
            rows on both sides. It may be a transposed view: the sum is
            written in the order of ``cols``'s axes, which is how a caller
            gets a transposed output without a separate copy.
        shifts: the row shift ``q_j`` of each slab (the first is 0).
        first, last: the output rows wanted; rows outside ``[0, R - P)`` are zero.

    Returns:
        ``cols``'s shape with ``R`` replaced by ``last - first`` and the slab axis dropped.
    """
    axis = axis % cols.ndim
    rows_padded = cols.shape[axis]
    lo, hi = _valid_rows(rows_padded, max(shifts), first, last)

    @mx.custom_function
    def forward(cols):
        if hi > lo:
            body = _summed(shifts, lo, hi - lo, axis)(cols)
        else:
            body = mx.zeros((*cols.shape[:axis], 0, *cols.shape[axis + 2 :]), dtype=cols.dtype)
        return _frame(body, lo, hi, first, last, axis)

    @forward.vjp
    def backward(primals, cotangent, output):
        return mx.stack(_cotangent_views(cotangent, shifts, rows_padded, lo, hi, first, axis), axis=axis + 1)

    return forward(cols)


@per_thread_cache(maxsize=512)
def _multiplied(shifts: Tuple[int, ...], lo: int, count: int, rows_padded: int, empty: Tuple[Tuple[bool, ...], ...]):
    """Compiled rows ``[lo, lo + count)`` of ``sum_j x[m - q_j + P] * w_j``, leaving out the products of
    padding rows and of empty slots: zero by definition, even for a NaN or Inf factor.

    A mask over every row would cost the fused pass three times its time, so only
    the few rows at each end that read padding are recomputed with one and written
    over the unmasked sum in place; empty slots are masked by phase.
    """
    pad = max(shifts)
    signal = rows_padded - 2 * pad
    # Rows [inner_lo, inner_hi) read no padding row through any slab.
    inner_lo = min(count, max(0, max(q - lo for q in shifts)))
    inner_hi = max(inner_lo, min(count, min(signal + q - lo for q in shifts)))

    def products(x, w, j, r0, r1):
        q = shifts[j]
        return x[:, lo + r0 - q + pad : lo + r1 - q + pad, None, :] * w[j : j + 1]  # a slice, not a gather

    def unmasked(x, w, r0, r1):
        views = []
        for j in range(len(shifts)):
            view = products(x, w, j, r0, r1)
            if any(empty[j]):  # a static mask over the phases: about as fast as adding the filled ones alone
                view = mx.where(mx.array([not e for e in empty[j]]).reshape(1, -1, 1), view, mx.zeros((), x.dtype))
            views.append(view)
        return fused_sum(views)

    def masked(x, w, r0, r1):
        acc = None
        row = mx.arange(r0, r1).reshape(-1, 1, 1)
        for j, q in enumerate(shifts):
            keep = mx.logical_and(row >= q - lo, row < signal + q - lo)
            keep = mx.logical_and(keep, mx.array([not e for e in empty[j]]).reshape(1, -1, 1))
            view = mx.where(keep, products(x, w, j, r0, r1), mx.zeros((), x.dtype))
            acc = view if acc is None else acc + view
        return acc

    def total(x, w):
        acc = unmasked(x, w, 0, count)
        if inner_lo > 0:
            acc[:, :inner_lo] = masked(x, w, 0, inner_lo)
        if inner_hi < count:
            acc[:, inner_hi:] = masked(x, w, inner_hi, count)
        return acc

    return mx.compile(total)


@per_thread_cache(maxsize=512)
def _depthwise_grads(shifts: Tuple[int, ...], rows_padded: int, lo: int, hi: int, first: int, broadcast_x: bool):
    """Compiled VJP of :func:`depthwise_slab_sum`: ``dx`` reads the cotangent through shifted views."""
    pad = max(shifts)

    def grads(cotangent, x, w):
        views = _cotangent_views(cotangent, shifts, rows_padded, lo, hi, first, 1)
        dx = mx.sum(fused_sum([view * w[j] for j, view in enumerate(views)]), axis=2)
        if broadcast_x:  # one input channel broadcast to every output channel
            dx = mx.sum(dx, axis=-1, keepdims=True)
        if hi == lo:
            return dx, mx.zeros_like(w)
        valid = cotangent[:, lo - first : hi - first]
        dw = mx.stack([mx.sum(valid * x[:, lo - q + pad : hi - q + pad, None, :], axis=(0, 1)) for q in shifts])
        return dx, dw

    return mx.compile(grads)


def depthwise_slab_sum(x: mx.array, w: mx.array, shifts: Tuple[int, ...], first: int, last: int,
                       empty: Optional[Tuple[Tuple[bool, ...], ...]] = None) -> mx.array:
    """:func:`slab_sum` of ``cols = x * w`` without ever building ``cols`` (depthwise layers).

    Args:
        x: ``(N, R, C)`` (or ``(N, R, 1)``, broadcast), the input padded by
            ``P = max(shifts)`` rows on both sides.
        w: ``(S, stride, C)``: slab ``j``'s weight for each phase and channel.
        shifts, first, last: as in :func:`slab_sum`.
        empty: ``empty[j][r]`` is True where slab ``j`` has no tap at phase
            ``r`` (its weight is zero there). Those products and those of the
            padding rows are left out, not multiplied by zero, so a NaN or Inf
            reaches only the outputs the definition says. Default: no empty slot.

    Returns:
        ``(N, last - first, stride, C)``.
    """
    rows_padded = x.shape[1]
    pad = max(shifts)
    lo, hi = _valid_rows(rows_padded, pad, first, last)

    @mx.custom_function
    def forward(x, w):
        if hi > lo:
            none = tuple((False,) * w.shape[1] for _ in shifts)
            body = _multiplied(shifts, lo, hi - lo, rows_padded, none if empty is None else empty)(x, w)
        else:
            body = mx.zeros((x.shape[0], 0, w.shape[1], x.shape[2]), dtype=x.dtype)
        return _frame(body, lo, hi, first, last, 1)

    @forward.vjp
    def backward(primals, cotangent, output):
        x, w = primals
        return _depthwise_grads(shifts, rows_padded, lo, hi, first, x.shape[-1] != w.shape[-1])(cotangent, x, w)

    return forward(x, w)
