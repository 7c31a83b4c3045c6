"""Backend ``"gemm"``: matmuls and an overlap-add, no zero-stuffing.

Each input row times the weight gives the contribution of that row to
``K`` output samples; tap ``k`` of row ``l`` lands on full-output sample
``l*stride + k*dilation``. Taps are grouped by output phase
``(k*dilation) % stride``: within a phase, tap ``k`` is the same plane
shifted by ``(k*dilation) // stride`` rows, so the scatter becomes plain
shifted adds on ``stride`` planes that are interleaved at the end. When the
taps fill whole rows of phases (``K`` a multiple of ``stride``, the vocoder
case, or ``stride == 1``), the taps of one row shift form a slab weight
whose product is already interleaved output (:func:`slab_shifts`): going
forward, one matmul per slab summed in place (:func:`_accumulated_slabs`);
going backward, one wide matmul and the fused overlap-add of :mod:`.slabs`.

Signals are cut into output blocks, each computed from the input rows that
reach them (:meth:`Geometry.input_span`), so the intermediates are bounded
by :data:`CHUNK_ELEMENTS` whatever the length, and written one by one into
the output. Everything is ordinary MLX ops, so gradients, ``mx.compile``
and every device come for free.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, replace
from typing import List, Optional, Tuple, Union

import mlx.core as mx

from ..devices import has_reference_blas
from ..geometry import Geometry
from . import slabs, winograd

#: Upper bound on the elements of one block's intermediate. MLX keeps about ten
#: blocks in flight (see :data:`MIN_BLOCKS`), so this sets the memory above the
#: output: 41-65 MB on the layers of a 10-minute HiFi-GAN signal. (With the per-tap
#: products of old, 2**20 measured 3.3x the output on HiFi-GAN's third layer, and
#: 2**22 4.8x, for about 5% less time.)
CHUNK_ELEMENTS = 1 << 20
#: Below this many FLOPs a call stays on one stream (splitting costs more than it saves).
PARALLEL_MIN_FLOPS = 20_000_000
#: A fused depthwise call is shared by the workers from this many output elements on. BigVGAN's
#: layer (K=12, stride 2, 64 channels), one block against two: 10.0 vs 11.1 ms at 3.3 M output
#: elements, 39 vs 34 ms at 8.4 M, 141 vs 120 ms at 26 M.
DEPTHWISE_PARALLEL_MIN_OUTPUT = 1 << 22
#: A call whose intermediates exceed one chunk is cut into at least this many blocks. MLX
#: dispatches a hundred or so ops ahead of those running (10 tasks of 10 dispatches:
#: ``MAX_ACTIVE_TASKS`` in transforms.cpp, ``DISPATCHES_PER_TASK`` in cpu/encoder.h), and
#: allocates their outputs then: some ten blocks, all of a short signal's when it has fewer.
#: HiFi-GAN's layers, 5-7 blocks -> 16: peak 27 -> 15-17 MB, time unchanged within noise.
MIN_BLOCKS = 16
#: ... but no block gets fewer input rows than this for it: matmuls of a dozen rows ran
#: HiFi-GAN's first layer (200 rows, 16 blocks) 20% slower. Not for the backward pass,
#: whose blocks build every tap's product and recompute their halo: forward+backward with
#: the forward's blocks, dilated 977 -> 1169 ms and grouped 49 -> 65 ms (HiFi-GAN's third
#: and fourth layers 11% faster).
MIN_BLOCK_ROWS = 96
#: At most this many CPU streams share one call.
MAX_WORKERS = 8
# Thread-local streams: an MLX stream belongs to the thread that made it, and these
# are shared by calls from every thread (each thread gets its own streams behind them).
_EXTRA_CPU_STREAMS: List["mx.ThreadLocalStream"] = []
_WRITER_STREAMS: List["mx.ThreadLocalStream"] = []
_STREAMS_LOCK = threading.Lock()


def _shifted_sum(parts: List[Tuple[int, mx.array]], start: int, stop: int) -> mx.array:
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


def slab_shifts(taps: int, stride: int, dilation: int, empty_per_tap: float = 0.25) -> Optional[Tuple[int, ...]]:
    """Row shifts of the slabs when the taps tile ``(shift, phase)`` slots with few empty ones.

    Tap ``k`` lands ``k*dilation = shift*stride + phase`` samples after its
    input row. When the taps fill whole rows of ``stride`` phases (HiFi-GAN,
    BigVGAN, DAC: ``K = 2*stride``; every ``stride = 1`` conv), the matmul can
    emit each shift's phases side by side, a slab ``(L, stride*C)`` that is
    already interleaved (see :mod:`.slabs`). Returns None when more than
    ``empty_per_tap`` empty slots per tap would be multiplied by zero.
    """
    shifts = tuple(sorted({k * dilation // stride for k in range(taps)}))
    empty = len(shifts) * stride - taps
    return shifts if empty <= empty_per_tap * taps else None


def _slot_weight(w: mx.array, taps: int, stride: int, dilation: int, shifts) -> mx.array:
    """Reorders taps ``w (…, K, C)`` into slots ``(…, len(shifts)*stride, C)``, empty slots zero."""
    index = {k * dilation: k for k in range(taps)}
    slots = [index.get(q * stride + r, taps) for q in shifts for r in range(stride)]
    if slots[:taps] == list(range(taps)) and set(slots[taps:]) <= {taps}:  # in order, empty slots last
        # (dilation 1): one pad or nothing, where a gather would cost graph nodes on every call
        extra = len(slots) - taps
        return mx.pad(w, [(0, 0)] * (w.ndim - 2) + [(0, extra), (0, 0)]) if extra else w
    if taps in slots:  # an empty slot reads an appended zero tap
        w = mx.concatenate([w, mx.zeros_like(w[..., :1, :])], axis=-2)
    return mx.take(w, mx.array(slots), axis=-2)


def _phase_overlap_add(cols: mx.array, stride: int, dilation: int, crop: int, length: int) -> mx.array:
    """Output samples ``[crop, crop + length)`` from per-tap ``cols (…, L, K, C)``, one plane per phase.

    The general path, for tap layouts :func:`slab_shifts` declines. ``crop``
    is negative for a block that starts before its first input row reaches.
    """
    *lead, rows_in, taps, channels = cols.shape
    first = crop // stride
    last = -(-(crop + length) // stride)
    planes = []
    for phase in range(stride):
        parts = [((k * dilation) // stride, cols[..., k, :]) for k in range(taps) if (k * dilation) % stride == phase]
        if parts:
            planes.append(_shifted_sum(parts, first, last))
        else:
            planes.append(mx.zeros((*lead, last - first, channels), dtype=cols.dtype))
    y = planes[0] if stride == 1 else mx.stack(planes, axis=-2)
    y = y.reshape(*lead, (last - first) * stride, channels)
    offset = crop - first * stride
    return y[..., offset : offset + length, :]


def _slab_weights(weight: mx.array, stride: int, dilation: int, groups: int, shifts) -> List[mx.array]:
    """Each slab's weight ``(G, C_in/G, stride * C_out/G)``, contiguous, empty slots zero.

    Each is one copy out of a view of the MLX-layout weight, so the
    transform holds no other copy of the whole weight.
    """
    out_channels, taps, in_per_group = weight.shape
    out_per_group = out_channels // groups
    weight = _slot_weight(weight, taps, stride, dilation, shifts)  # the weight itself when already in order
    # Split the axes first, a view; slicing first would make reshape copy each slab once more.
    weight = weight.reshape(groups, out_per_group, len(shifts), stride, in_per_group)
    slabs = []
    for j in range(len(shifts)):
        w = mx.contiguous(weight[:, :, j].transpose(0, 3, 2, 1))
        slabs.append(w.reshape(groups, in_per_group, stride * out_per_group))
    return slabs


@dataclass(frozen=True)
class _Plan:
    """How one call computes its blocks; the weight is arranged once, not once per block."""

    stride: int
    dilation: int
    groups: int
    out_channels: int
    matmul_free: bool
    repeat: int  # output channels per input channel when matmul-free (depthwise multiplier)
    shifts: Optional[Tuple[int, ...]]  # slab shifts, or None for phase planes
    tile: Optional[int]  # output rows per minimal-filtering tile (winograd.py), or None
    accumulated: bool  # dense slabs summed by matmuls in place (_accumulated_slabs)
    w: Union[mx.array, List[mx.array]]  # the weight arranged for the path taken (see _make_plan)


def winograd_tile(geom: Geometry) -> Optional[int]:
    """Rows per tile of the minimal-filtering path for ``geom``, or None where it does not apply."""
    shifts = slab_shifts(geom.kernel_size, geom.stride, geom.dilation)
    return winograd.tile_rows(shifts, geom.in_per_group)


def _make_plan(weight: mx.array, geom: Geometry, minimal_filtering: bool, accumulate: bool = True) -> _Plan:
    """The weight arranged for the path ``geom`` takes.

    ``accumulate`` lets dense slabs be summed by matmuls in place
    (:func:`_accumulated_slabs`), the better forward. Differentiating that
    costs two matmuls and a scatter per slab; with it False, one wide matmul
    and the overlap-add of :mod:`.slabs` give two matmuls in all
    (HiFi-GAN's third layer, forward+backward: 10-25% faster).
    """
    out_channels, taps, in_per_group = weight.shape
    stride, dilation, groups = geom.stride, geom.dilation, geom.groups
    out_per_group = out_channels // groups
    matmul_free = in_per_group == 1
    # Depthwise is bandwidth-bound: multiplying a few empty slots by zero costs less than phase planes.
    shifts = slab_shifts(taps, stride, dilation, 1.0 if matmul_free else 0.25)
    tile = winograd.tile_rows(shifts, in_per_group) if minimal_filtering else None

    def arrange(w):  # (…, K, C) -> (…, slots, C)
        return w if shifts is None else _slot_weight(w, taps, stride, dilation, shifts)

    accumulated = accumulate and tile is None and not matmul_free and shifts is not None
    if tile is not None:
        w = winograd.transform_weight(_slab_weights(weight, stride, dilation, groups, shifts), tile)
        if groups == 1:  # 2-D weights: each block multiplies 3-D rows without reshaping them
            w = [u.reshape(u.shape[1:]) for u in w]
    elif matmul_free:
        w = arrange(weight.reshape(out_channels, taps).T)  # (slots, C_out)
        if shifts is not None:
            w = w.reshape(len(shifts), stride, out_channels)
    elif accumulated:  # one (G, C_in/G, stride * C_out/G) weight per slab, 2-D when dense
        w = _slab_weights(weight, stride, dilation, groups, shifts)
        if groups == 1:
            w = [u.reshape(u.shape[1:]) for u in w]
    elif groups == 1:
        w = arrange(weight.transpose(2, 1, 0)).reshape(in_per_group, -1)  # (C_in, slots * C_out)
    else:
        w = arrange(weight.reshape(groups, out_per_group, taps, in_per_group).transpose(0, 3, 2, 1))
        w = w.reshape(groups, in_per_group, -1)  # (G, C_in/G, slots * C_out/G)
    return _Plan(stride, dilation, groups, out_channels, matmul_free,
                 out_per_group if matmul_free and groups > 1 else 1, shifts, tile, accumulated, w)


def _accumulated_slabs(x: mx.array, ws: List[mx.array], shifts: Tuple[int, ...], stride: int, first: int,
                       count: int) -> mx.array:
    """Slab rows ``[first, first + count)`` of ``out[m] = sum_j x[m - q_j] @ W_j``, as samples ``(N, count*stride, G, D)``.

    Each slab is one matmul added onto the running sum in place (``mx.addmm``
    donates its buffer): no per-tap intermediate and no overlap-add pass.
    Against one wide matmul and a fused overlap-add: the same FLOPs, 3-10%
    faster forward, the block's memory the size of its output (HiFi-GAN's
    third layer: peak 33 -> 21 MB; the dilated shape, 7 slabs: 24 -> 9 MB).
    Rows are read from ``x`` itself, past the block's own input where the
    signal has them (zero outside it), so an inner block copies no input.
    Grouped layers multiply group-major rows (one copy of the block's input)
    and return a transposed view, which the write into the output reads
    in place: no pass of its own.

    Args:
        ws: each slab's weight, ``(C_in, stride*C_out)`` for a dense layer,
            else ``(G, C_in/G, stride*C_out/G)``.
    """
    batch, _, channels = x.shape
    dense = ws[0].ndim == 2
    groups = 1 if dense else ws[0].shape[0]
    pad = shifts[-1]
    inner = slabs.signal_rows(x, first - pad, count + pad)
    if dense and batch == 1:  # one signal: 2-D rows, no batch axis for the matmul to walk
        inner = mx.squeeze(inner, axis=0)  # a view; inner[0] would gather a copy
    elif not dense:  # (G, N, rows, C/G), so each slab's rows are a plain view
        inner = mx.contiguous(mx.moveaxis(inner.reshape(batch, -1, groups, channels // groups), 2, 0))
        ws = [w[:, None] for w in ws]  # broadcast over the batch
    total = None
    for q, w in zip(shifts, ws):
        rows = inner[..., pad - q : pad - q + count, :]
        total = rows @ w if total is None else mx.addmm(total, rows, w)
    if dense:
        return total.reshape(batch, count * stride, 1, -1)
    total = total.reshape(groups, batch, count, stride, -1).transpose(1, 2, 3, 0, 4)
    return total.reshape(batch, count * stride, groups, -1)


def _block(x: mx.array, lo: int, hi: int, plan: _Plan, crop: int, length: int) -> mx.array:
    """Output samples ``[crop, crop + length)`` of the full output of input rows ``x[:, lo:hi]``."""
    if plan.tile is not None:  # reads past [lo, hi) where x has rows: fewer graph nodes than padding
        first = crop // plan.stride
        return winograd.samples(x, plan.w, plan.tile, len(plan.shifts), plan.stride, lo + first,
                                crop - first * plan.stride, length)
    if plan.accumulated:  # (N, length, G, C_out/G)
        first = crop // plan.stride
        count = -(-(crop + length) // plan.stride) - first
        offset = crop - first * plan.stride
        return _accumulated_slabs(x, plan.w, plan.shifts, plan.stride, lo + first, count)[:, offset : offset + length]
    x = x[:, lo:hi]
    batch, rows_in, in_channels = x.shape
    stride, dilation, groups, out_channels = plan.stride, plan.dilation, plan.groups, plan.out_channels
    in_per_group, out_per_group = in_channels // groups, out_channels // groups
    if plan.repeat > 1:
        x = mx.repeat(x, plan.repeat, axis=-1)

    if plan.shifts is None:
        if plan.matmul_free:
            return _phase_overlap_add(x[:, :, None, :] * plan.w, stride, dilation, crop, length)
        if groups == 1:
            cols = (x.reshape(batch * rows_in, in_channels) @ plan.w).reshape(batch, rows_in, -1, out_channels)
            return _phase_overlap_add(cols, stride, dilation, crop, length)
        xg = x.reshape(batch * rows_in, groups, in_per_group).transpose(1, 0, 2)
        cols = (xg @ plan.w).reshape(groups, batch, rows_in, -1, out_per_group)
        y = _phase_overlap_add(cols, stride, dilation, crop, length)
        return y.transpose(1, 2, 0, 3).reshape(batch, length, out_channels)

    count = len(plan.shifts)
    first = crop // stride
    last = -(-(crop + length) // stride)
    offset = crop - first * stride
    # Slabs: pad the input by the largest shift on both sides, so each output
    # row is a sum of views (slabs.py); the padding costs a few matmul rows.
    pad = plan.shifts[-1]
    x = slabs.zero_extended(x, 1, pad, pad)
    rows = rows_in + 2 * pad
    if plan.matmul_free:
        y = slabs.depthwise_slab_sum(x, plan.w, plan.shifts, first, last)
        return y.reshape(batch, (last - first) * stride, out_channels)[:, offset : offset + length]
    if groups == 1:
        cols = (x.reshape(batch * rows, in_channels) @ plan.w).reshape(batch, rows, count, stride * out_channels)
        y = slabs.slab_sum(cols, plan.shifts, first, last)
        return y.reshape(batch, (last - first) * stride, out_channels)[:, offset : offset + length]
    # Grouped: one batched matmul over groups; the overlap-add reads it
    # group-major and writes channels-last, so the transpose costs no pass.
    xg = x.reshape(batch * rows, groups, in_per_group).transpose(1, 0, 2)
    cols = (xg @ plan.w).reshape(groups, batch, rows, count, stride, out_per_group)
    y = slabs.slab_sum(cols.transpose(1, 2, 3, 4, 0, 5), plan.shifts, first, last, axis=1)
    return y.reshape(batch, (last - first) * stride, out_channels)[:, offset : offset + length]


def worker_streams(stream: mx.Stream) -> List[mx.Stream]:
    """The streams that share one call's blocks: the caller's, plus one per extra core on a Linux CPU.

    MLX's Linux wheel multiplies with a single-threaded BLAS, and ops on
    different CPU streams run on different threads, so blocks spread over
    streams use every core. On macOS, Accelerate already threads each matmul,
    and a GPU stream is parallel by itself: one stream there.
    """
    if not has_reference_blas(stream):
        return [stream]
    wanted = min(os.cpu_count() or 1, MAX_WORKERS) - 1
    with _STREAMS_LOCK:
        while len(_EXTRA_CPU_STREAMS) < wanted:
            _EXTRA_CPU_STREAMS.append(mx.new_thread_local_stream(mx.cpu))
        return [stream] + _EXTRA_CPU_STREAMS[:wanted]


def writer_stream(workers: List[mx.Stream]) -> mx.Stream:
    """The stream that writes blocks into the output: its own when blocks are shared by
    several workers, so that no worker waits in line behind a write for another's block."""
    if len(workers) == 1:
        return workers[0]
    with _STREAMS_LOCK:
        if not _WRITER_STREAMS:
            _WRITER_STREAMS.append(mx.new_thread_local_stream(mx.cpu))
        return _WRITER_STREAMS[0]


def block_count(geom: Geometry, workers: int, fused_depthwise: bool = False, backward: bool = False,
                minimal_filtering: bool = False) -> int:
    """Blocks so that one block's intermediates fit :data:`CHUNK_ELEMENTS`, and every worker gets one.

    Once they need more than one block, at least :data:`MIN_BLOCKS` (of at
    least :data:`MIN_BLOCK_ROWS` input rows) going forward.
    A block's intermediate is its per-tap products (``K * C_out`` per input
    row). Minimal filtering (:mod:`.winograd`, where it applies) keeps instead
    ``(tile + S - 1) / tile`` transformed input rows and products per row,
    then the rows themselves: about twice as much on HiFi-GAN's layers, so
    its blocks are that much shorter (same time, peak 32 -> 22 MB on the
    third layer, whose four blocks MLX computes side by side).

    Depthwise slabs (``fused_depthwise``, as :func:`_make_plan` decided) are
    multiplied inside the pass that writes the output and have no
    intermediate to bound going forward: they are cut only to share the
    work, and only once the pass outweighs writing the blocks into the
    output. Their ``backward`` pass does build a product per tap, so it is
    cut like any other: BigVGAN's layer, forward+backward, 139 ms with the
    backward in one block, 78 ms in two, 63 ms in blocks of
    :data:`CHUNK_ELEMENTS`.
    """
    count = 1
    parallel = geom.flops >= PARALLEL_MIN_FLOPS
    if fused_depthwise and not backward:
        parallel = geom.batch * geom.output_length * geom.out_channels >= DEPTHWISE_PARALLEL_MIN_OUTPUT
    else:
        per_row = geom.kernel_size * geom.out_channels
        shifts = slab_shifts(geom.kernel_size, geom.stride, geom.dilation)
        # Backward blocks stay sized by the per-tap products (see MIN_BLOCK_ROWS).
        tile = winograd.tile_rows(shifts, geom.in_per_group) if minimal_filtering and not backward else None
        if tile is not None:
            size = tile + len(shifts) - 1
            per_row = -(-size * (geom.in_channels + geom.stride * geom.out_channels) // tile) + geom.stride * geom.out_channels
        halo = -(-(geom.kernel_size - 1) * geom.dilation // geom.stride) + 1
        rows = max(1, CHUNK_ELEMENTS // max(1, geom.batch * per_row) - halo)
        count = -(-geom.output_length // (rows * geom.stride))
        if count > 1 and not backward:
            count = max(count, min(MIN_BLOCKS, geom.length // MIN_BLOCK_ROWS))
    if workers > 1 and parallel:
        count = max(count, workers)
    return max(1, min(count, geom.output_length))


def _blocks(x: mx.array, plan: _Plan, geom: Geometry, bounds: List[int], workers: List[mx.Stream]):
    """``(start, stop, block)`` for each output block, computed from the input rows that reach it,
    on the workers in turn; ``block`` is None where no input row reaches."""
    for i, (start, stop) in enumerate(zip(bounds, bounds[1:])):
        lo, hi = geom.input_span(start, stop)
        if lo == hi:
            yield start, stop, None
            continue
        with mx.stream(workers[i % len(workers)]):
            yield start, stop, _block(x, lo, hi, plan, start + geom.crop - lo * geom.stride, stop - start)


def _channel_axes(plan: _Plan, geom: Geometry) -> Tuple[int, ...]:
    """The trailing axes of a block: accumulated blocks are ``(…, G, C_out/G)`` (grouped ones
    a transposed view, which a write through the same 4-D view reads in place), others ``(…, C_out)``."""
    return (geom.groups, geom.out_channels // geom.groups) if plan.accumulated else (geom.out_channels,)


def _concatenated(x: mx.array, plan: _Plan, geom: Geometry, bounds: List[int], workers: List[mx.Stream]) -> mx.array:
    blocks = [
        mx.zeros((geom.batch, stop - start, *_channel_axes(plan, geom)), dtype=x.dtype) if block is None else block
        for start, stop, block in _blocks(x, plan, geom, bounds, workers)
    ]
    return blocks[0] if len(blocks) == 1 else mx.concatenate(blocks, axis=1)


def _written_in_place(x, weight, plan, geom, bounds, vjp_bounds, workers, minimal_filtering) -> mx.array:
    """The blocks written one after another into the output buffer.

    A concatenation holds every block besides the output until it runs (2x
    the output on long signals); here MLX reuses the buffer from write to
    write and frees each block once written, so a long signal costs the
    output plus a few blocks in flight, whatever its length. Autodiff through the writes would zero
    each block's rows in a full-size cotangent, a copy per block; the VJP
    slices the cotangent instead (:func:`_block_vjps`), over ``vjp_bounds``
    (the backward pass may be cut differently).
    """

    writer = writer_stream(workers)

    @mx.custom_function
    def assemble(x, weight):
        if len(bounds) == 2:  # one block: it is the output
            return _concatenated(x, plan, geom, bounds, workers).reshape(geom.batch, geom.output_length, -1)
        with mx.stream(writer):
            y = mx.zeros((geom.batch, geom.output_length, *_channel_axes(plan, geom)), dtype=x.dtype)
        for start, stop, block in _blocks(x, plan, geom, bounds, workers):
            if block is None:
                continue
            with mx.stream(writer):
                # The output's next version also waits on the block: MLX then schedules each
                # block next to its write rather than ahead of it (measured: the peak above the
                # output stops growing with length), and still reuses the buffer.
                y = mx.depends(y, block)
                y[:, start:stop] = block
        return y.reshape(geom.batch, geom.output_length, -1)

    @assemble.vjp
    def assemble_vjp(primals, cotangent, output):
        return _block_vjps(*primals, cotangent, geom, vjp_bounds, workers, minimal_filtering)

    return assemble(x, weight)


def _block_vjps(x, weight, cotangent, geom, bounds, workers, minimal_filtering) -> Tuple[mx.array, mx.array]:
    """Gradients w.r.t. ``x`` and the weight, block by block, each against its own input rows.

    Differentiating the blocks as functions of the whole ``x`` scatters each
    block's input gradient into a zero array of the whole input (MLX's
    slice VJP): a pass over the input per block. Here each block sees only
    the rows that reach it (:meth:`Geometry.input_span`; rows outside it do
    not change the block's samples), and its gradient is added into those
    rows of ``dx`` in place. The weight is arranged once, and differentiated
    through that arrangement once, from the blocks' summed gradients.
    """
    plan = _make_plan(weight, geom, minimal_filtering, accumulate=False)
    listed = isinstance(plan.w, list)
    arranged = plan.w if listed else [plan.w]
    writer = writer_stream(workers)
    with mx.stream(writer):
        dx = mx.zeros_like(x)
    d_arranged = None
    for i, (start, stop) in enumerate(zip(bounds, bounds[1:])):
        lo, hi = geom.input_span(start, stop)
        if lo == hi:
            continue
        crop = start + geom.crop - lo * geom.stride

        def block(rows, *ws, lo=lo, hi=hi, crop=crop, length=stop - start):
            return _block(rows, 0, hi - lo, replace(plan, w=list(ws) if listed else ws[0]), crop, length)

        with mx.stream(workers[i % len(workers)]):
            _, (d_rows, *d_ws) = mx.vjp(block, [x[:, lo:hi], *arranged], [cotangent[:, start:stop]])
            d_arranged = d_ws if d_arranged is None else [a + b for a, b in zip(d_arranged, d_ws)]
        with mx.stream(writer):
            # Neighbours share their halo rows: added, not written. (Reading the rows back
            # and writing their sum took hifigan-3's forward+backward from 360 to 450 ms.)
            dx = mx.depends(dx, d_rows)
            dx = dx.at[:, lo:hi].add(d_rows)

    def arrange(weight):
        w = _make_plan(weight, geom, minimal_filtering, accumulate=False).w
        return w if listed else [w]

    if d_arranged is None:  # no input row reaches the output
        return dx, mx.zeros_like(weight)
    return dx, mx.vjp(arrange, [weight], d_arranged)[1][0]


def conv_transpose1d(
    x: mx.array, weight: mx.array, bias: Optional[mx.array], geom: Geometry, minimal_filtering: bool = False
) -> mx.array:
    """Transposed conv of NLC ``x`` with an MLX-layout ``weight``, as ``geom`` says.

    ``minimal_filtering`` computes the slabs with :mod:`.winograd` where
    :func:`winograd_tile` allows it, and is ignored elsewhere (backend ``"winograd"``).
    """
    stream = mx.default_stream(mx.default_device())
    dtype = x.dtype
    if stream.device.type == mx.DeviceType.cpu and dtype in (mx.float16, mx.bfloat16):
        # x86 and the Linux wheel have no fast half-precision arithmetic: float32 inside is
        # faster (measured 8x on depthwise float16) and rounds once, at the end.
        x, weight = x.astype(mx.float32), weight.astype(mx.float32)
        bias = None if bias is None else bias.astype(mx.float32)
    workers = worker_streams(stream)
    plan = _make_plan(weight, geom, minimal_filtering)
    fused = plan.matmul_free and plan.shifts is not None
    count, vjp_count = (block_count(geom, len(workers), fused, backward, minimal_filtering) for backward in (False, True))
    bounds, vjp_bounds = ([geom.output_length * i // n for i in range(n + 1)] for n in (count, vjp_count))
    if count == vjp_count == 1 and not plan.accumulated:
        y = _concatenated(x, plan, geom, bounds, workers)
    else:
        y = _written_in_place(x, weight, plan, geom, bounds, vjp_bounds, workers, minimal_filtering)
    if bias is not None:
        y = y + bias
    return y.astype(dtype)
