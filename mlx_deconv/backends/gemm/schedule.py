"""Scheduling of the ``gemm`` paths: output blocks, worker streams, in-place writes, block VJPs.

Nothing here multiplies: a *path* (:mod:`.paths`) arranges the weight and
computes one output block; this module decides the blocks, the streams they
run on, how they are written into the output and how they are differentiated.
Signals are cut into output blocks, each computed from the input rows that
reach it (:meth:`Geometry.input_span`), so the intermediates are bounded by
:attr:`BlockPolicy.chunk_elements` whatever the length.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Iterator, List, Optional, Tuple

import mlx.core as mx

from ...runtime.worker_streams import worker_streams  # noqa: F401 (the paths ask schedule.worker_streams)
from ...geometry.records import Geometry


@dataclass(frozen=True)
class BlockPolicy:
    """How a call is cut into blocks and shared between CPU streams.

    The defaults suit any machine; tests pass tiny ones to exercise many
    blocks on tiny tensors. (Measurements behind them: ``docs/performance.md``.)

    Attributes:
        chunk_elements: upper bound on the elements of one block's
            intermediate. MLX keeps about ten blocks in flight, so this sets
            the memory above the output.
        parallel_min_flops: below this many FLOPs a call stays on one stream
            (splitting costs more than it saves).
        depthwise_parallel_min_output: a fused depthwise call of the transposed
            op is shared by the workers from this many output elements on (below,
            writing two blocks costs more than it saves).
        direct_depthwise_parallel_min_output: the same for ``conv1d``, whose
            fused taps cost more per output element.
        min_blocks: a call whose intermediates exceed one chunk is cut into at
            least this many blocks: MLX dispatches about a hundred ops ahead of
            those running and allocates their outputs then, so fewer, larger
            blocks raise the peak.
        min_block_rows: ... but no forward block gets fewer input rows than
            this for it (matmuls of a dozen rows are slow). Backward blocks keep
            their size: each builds every tap's product and recomputes its halo.
        max_workers: at most this many CPU streams share one call.
        unfold_max_rows: a dense ``conv1d`` of at most this many output rows
            (``batch * output_length``) copies its taps side by side for one
            deep matmul (``direct.DirectUnfolded``); above, it reads views.
        unfold_vjp_max_elements: a dense stride-1 ``conv1d`` whose column matrix
            (``batch * length * K * channels``) is at most this large takes its input
            gradient as a forward ``conv1d`` and its weight gradient as one matmul by
            those columns (``conv1d_paths.unfolded_vjp``); above, both from the
            transposed op's blocks, which copy no columns.
    """

    chunk_elements: int = 1 << 20
    parallel_min_flops: int = 20_000_000
    depthwise_parallel_min_output: int = 1 << 22
    direct_depthwise_parallel_min_output: int = 1 << 20
    min_blocks: int = 4
    min_block_rows: int = 96
    max_workers: int = 8
    unfold_max_rows: int = 512
    unfold_vjp_max_elements: int = 1 << 22


DEFAULT_POLICY = BlockPolicy()

_WRITER_STREAMS: List["mx.ThreadLocalStream"] = []
_STREAMS_LOCK = threading.Lock()


def writer_stream(workers: List[mx.Stream]) -> mx.Stream:
    """The stream that writes blocks into the output: its own when blocks are shared by
    several workers, so that no worker waits in line behind a write for another's block."""
    if len(workers) == 1:
        return workers[0]
    with _STREAMS_LOCK:
        if not _WRITER_STREAMS:
            _WRITER_STREAMS.append(mx.new_thread_local_stream(mx.cpu))
        return _WRITER_STREAMS[0]


def block_count(geom: Geometry, per_row: Optional[int], workers: int, backward: bool = False,
                policy: BlockPolicy = DEFAULT_POLICY) -> int:
    """Blocks so that one block's intermediates fit the chunk, and every worker gets one.

    Args:
        geom: the call.
        per_row: the path's intermediate elements per input row (per
            signal), or None for a path with no intermediate (fused
            depthwise), cut only to share the work once it outweighs
            writing the blocks. Ignored ``backward``: backward blocks hold
            every tap's product, ``K * C_out`` per row, on every path.
        workers: streams available.
        backward: count the blocks of the VJP.
        policy: the bounds.

    Returns:
        int: the number of output blocks, at least 1.
    """
    count = 1
    parallel = geom.flops >= policy.parallel_min_flops
    if per_row is None and not backward:
        parallel = geom.batch * geom.output_length * geom.out_channels >= policy.depthwise_parallel_min_output
    else:
        if backward or per_row is None:
            per_row = geom.kernel_size * geom.out_channels
        halo = -(-(geom.kernel_size - 1) * geom.dilation // geom.stride) + 1
        rows = max(1, policy.chunk_elements // max(1, geom.batch * per_row) - halo)
        count = -(-geom.output_length // (rows * geom.stride))
        if count > 1 and not backward:
            count = max(count, min(policy.min_blocks, geom.length // policy.min_block_rows))
    if workers > 1 and parallel:
        count = max(count, workers)
    return max(1, min(count, geom.output_length))


def bounds(length: int, count: int) -> List[int]:
    """``count + 1`` block boundaries splitting ``[0, length)`` evenly."""
    return [length * i // count for i in range(count + 1)]


def block_spans(geom: Geometry, cuts: List[int]) -> Iterator[Tuple[int, int, int, int, int]]:
    """``(i, start, stop, lo, hi)``: output block ``[start, stop)`` and the input rows ``[lo, hi)`` that reach it."""
    for i, (start, stop) in enumerate(zip(cuts, cuts[1:])):
        lo, hi = geom.input_span(start, stop)
        yield i, start, stop, lo, hi


def blocks(x: mx.array, path, ws: List[mx.array], geom: Geometry, cuts: List[int], workers: List[mx.Stream]):
    """``(start, stop, block)`` for each output block, on the workers in turn; ``block`` is None
    where no input row reaches."""
    for i, start, stop, lo, hi in block_spans(geom, cuts):
        if lo == hi:
            yield start, stop, None
            continue
        with mx.stream(workers[i % len(workers)]):
            yield start, stop, path.block(x, lo, hi, ws, start + geom.crop - lo * geom.stride, stop - start)


def concatenated(x: mx.array, path, ws: List[mx.array], geom: Geometry, cuts: List[int],
                 workers: List[mx.Stream]) -> mx.array:
    """The blocks side by side (one block: the block itself), differentiated by MLX."""
    parts = [
        mx.zeros((geom.batch, stop - start, *path.channel_axes), dtype=x.dtype) if block is None else block
        for start, stop, block in blocks(x, path, ws, geom, cuts, workers)
    ]
    return parts[0] if len(parts) == 1 else mx.concatenate(parts, axis=1)


@dataclass(frozen=True)
class Schedule:
    """One call's blocks: the forward's and the VJP's cuts and the streams they run on."""

    cuts: List[int]
    vjp_cuts: List[int]
    workers: List[mx.Stream]


def written_in_place(x: mx.array, weight: mx.array, path, geom: Geometry, schedule: Schedule) -> mx.array:
    """The blocks written one after another into the output buffer, with :func:`block_vjps` as VJP.

    A concatenation holds every block besides the output until it runs (2x
    the output on long signals); here MLX reuses the buffer from write to
    write and frees each block once written, so a long signal costs the
    output plus a few blocks in flight, whatever its length. Autodiff through
    the writes would zero each block's rows in a full-size cotangent, a copy
    per block; the VJP slices the cotangent instead.
    """
    workers = schedule.workers
    writer = writer_stream(workers)

    @mx.custom_function
    def assemble(x, weight):
        ws = path.arrange(weight)
        if len(schedule.cuts) == 2:  # one block: it is the output
            y = concatenated(x, path, ws, geom, schedule.cuts, workers)
            return y.reshape(geom.batch, geom.output_length, -1)
        parts = blocks(x, path, ws, geom, schedule.cuts, workers)
        y = write_in_place(parts, (geom.batch, geom.output_length, *path.channel_axes), x.dtype, writer)
        return y.reshape(geom.batch, geom.output_length, -1)

    @assemble.vjp
    def assemble_vjp(primals, cotangent, output):
        return block_vjps(*primals, cotangent, path.backward, geom, schedule.vjp_cuts, workers)

    return assemble(x, weight)


def write_in_place(parts, shape: Tuple[int, ...], dtype: mx.Dtype, writer: mx.Stream) -> mx.array:
    """``(start, stop, block)`` parts written one after another into a zero output of ``shape``
    on the ``writer`` stream (rows ``[start, stop)`` of axis 1; a None block leaves them zero)."""
    with mx.stream(writer):
        y = mx.zeros(shape, dtype=dtype)
    for start, stop, block in parts:
        if block is None:
            continue
        with mx.stream(writer):
            # The output's next version also waits on the block: MLX then schedules each
            # block next to its write rather than ahead of it (the peak above the output
            # stops growing with length), and still reuses the buffer.
            y = mx.depends(y, block)
            y[:, start:stop] = block
    return y


def direct_block_count(geom, per_row: Optional[int], workers: int, policy: BlockPolicy = DEFAULT_POLICY) -> int:
    """:func:`block_count` for ``conv1d`` (a :class:`~mlx_deconv.geometry.records.Conv1dGeometry`), whose
    blocks are cut in output rows; ``per_row`` is per output row (None: fused, no intermediate)."""
    rows_out = geom.output_length
    count = 1
    parallel = geom.flops >= policy.parallel_min_flops
    if per_row is None:
        parallel = geom.batch * rows_out * geom.out_channels >= policy.direct_depthwise_parallel_min_output
    else:
        rows = max(1, policy.chunk_elements // max(1, geom.batch * per_row))
        count = -(-rows_out // rows)
        if count > 1:
            count = max(count, min(policy.min_blocks, rows_out // policy.min_block_rows))
    if workers > 1 and parallel:
        count = max(count, workers)
    return max(1, min(count, rows_out))


def block_vjps(x, weight, cotangent, path, geom: Geometry, cuts: List[int], workers: List[mx.Stream]):
    """Gradients w.r.t. ``x`` and the weight, block by block, each against its own input rows.

    Differentiating the blocks as functions of the whole ``x`` scatters each
    block's input gradient into a zero array of the whole input (MLX's
    slice VJP): a pass over the input per block. Here each block sees only
    the rows that reach it (:meth:`Geometry.input_span`; rows outside it do
    not change the block's samples), and its gradient is added into those
    rows of ``dx`` in place. The weight is arranged once, and differentiated
    through that arrangement once, from the blocks' summed gradients.

    Returns:
        ``(dx, dweight)``.
    """
    arranged = path.arrange(weight)
    writer = writer_stream(workers)
    with mx.stream(writer):
        dx = mx.zeros_like(x)
    d_arranged = None
    for i, start, stop, lo, hi in block_spans(geom, cuts):
        if lo == hi:
            continue
        crop = start + geom.crop - lo * geom.stride

        def block(rows, *ws, hi=hi - lo, crop=crop, length=stop - start):
            return path.block(rows, 0, hi, list(ws), crop, length)

        with mx.stream(workers[i % len(workers)]):
            _, (d_rows, *d_ws) = mx.vjp(block, [x[:, lo:hi], *arranged], [cotangent[:, start:stop]])
            d_arranged = d_ws if d_arranged is None else [a + b for a, b in zip(d_arranged, d_ws)]
        with mx.stream(writer):
            # Neighbours share their halo rows: added, not written (reading them back and
            # writing their sum is slower).
            dx = mx.depends(dx, d_rows)
            dx = dx.at[:, lo:hi].add(d_rows)

    if d_arranged is None:  # no input row reaches the output
        return dx, mx.zeros_like(weight)
    return dx, mx.vjp(path.arrange, [weight], d_arranged)[1][0]
