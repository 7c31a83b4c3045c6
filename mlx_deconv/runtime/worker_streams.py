"""The CPU streams that share work, one per core behind a serial BLAS, and how independent branches are placed on them.

Where each matmul runs on one thread (MLX's Linux wheel, or the optimized BLAS kept at one thread:
:func:`~mlx_deconv.runtime.devices.serial_blas`), ops on different CPU streams run on different threads,
so work spread over streams is what uses the other cores. Three kinds of work are spread so: one call's
output blocks (the ``gemm`` backend); a model's independent branches, such as the residual blocks
whose mean ends a HiFi-GAN or BigVGAN stage (:func:`branch_streams`, a streamed step's few samples); and,
offline, such a stage's whole mean over overlapping tiles of the signal that take the streams in turn
(:func:`mean_over_tiles`).
"""

from __future__ import annotations

import os
import threading
from contextlib import contextmanager
from typing import Callable, Iterator, List, Optional, Sequence, Tuple

import mlx.core as mx

from .devices import serial_blas

#: At most this many CPU streams share one call or one set of branches.
MAX_WORKERS = 8
#: Branches are spread over the streams only while the busiest carries at most this many times an even share.
MAX_IMBALANCE = 1.25
#: Branches are spread over the streams while their largest call has fewer FLOPs than this. Larger calls
#: share their own blocks over the streams, and that ran faster than spreading the branches (HiFi-GAN V1
#: streamed 8 mel frames a step, and offline: docs/performance-history.md, 2026-12-07).
BRANCH_MAX_FLOPS = 50_000_000
#: ... and while all of them together have at least this many: each stream's share must outweigh the
#: hand-offs between the streams (HiFi-GAN V2 and V3 streamed 2 frames a step ran 2-5% slower spread).
BRANCH_MIN_FLOPS = 100_000_000

#: A stage's signal is cut into tiles (:func:`mean_over_tiles`) only where each keeps at least this many reaches of
#: samples of its own: a tile recomputes one reach beyond each inner edge (at 4, HiFi-GAN V1's first stage at 86
#: frames, 688 samples, ran 0.87x).
TILE_MIN_REACHES = 8
#: ... into tiles of at most this many elements, taking the streams in turn: two tiles of a long signal's whole
#: stage ran 0.94x at 150 and 256 mel frames of HiFi-GAN V1; tiles of at most 400,000 elements 1.06x and 1.05x, of
#: 262,144 0.95-0.99x (docs/performance-history.md, 2026-12-08).
TILE_MAX_ELEMENTS = 400_000
#: ... and only where the stage does at least this many FLOPs per handoff (one per residual step): at 11-22 million a
#: step, HiFi-GAN V2's small stages at 24 frames ran 0.90-1.01x and the generator 0.91-0.93x; at 39-44 million,
#: 1.08-1.54x (docs/performance-history.md, 2026-12-08).
TILE_MIN_STEP_FLOPS = 32_000_000

# Thread-local streams: an MLX stream belongs to the thread that made it, and these are shared by
# calls from every thread (each thread gets its own streams behind them, resolved once per thread).
_EXTRA: List["mx.ThreadLocalStream"] = []
_LOCK = threading.Lock()
_LOCAL = threading.local()
#: Cores, read once: ``os.cpu_count()`` reads ``/sys`` on every call (10-30 µs here), and every uncompiled
#: ``gemm`` call asks.
_CORES = os.cpu_count() or 1


def _own_extra_streams(wanted: int) -> List[mx.Stream]:
    """This thread's own streams behind the first ``wanted`` shared thread-local ones."""
    own = getattr(_LOCAL, "streams", None)
    if own is not None and len(own) >= wanted:
        return own[:wanted]
    if len(_EXTRA) < wanted:  # the list only grows, under the lock: most calls need not take it
        with _LOCK:
            while len(_EXTRA) < wanted:
                _EXTRA.append(mx.new_thread_local_stream(mx.cpu))
    own = []
    for shared in _EXTRA[:wanted]:
        with mx.stream(shared):  # inside its context the device's default stream is this thread's own
            own.append(mx.default_stream(mx.cpu))
    _LOCAL.streams = own
    return own


def worker_streams(stream: mx.Stream, max_workers: int = MAX_WORKERS) -> List[mx.Stream]:
    """The streams that share work started on ``stream``: it first, plus one per extra core behind a serial BLAS.

    On macOS, Accelerate already threads each matmul, and a GPU stream is parallel by itself: one
    stream there. Inside :func:`one_stream_each` (branches already spread over the streams) only
    ``stream`` is offered.

    Args:
        stream (mx.Stream): the caller's stream.
        max_workers (int): at most this many streams.

    Returns:
        list[mx.Stream]: ``stream`` first.
    """
    if getattr(_LOCAL, "placed", False) or not serial_blas(stream):
        return [stream]
    wanted = min(_CORES, max_workers) - 1
    if wanted < 1:
        return [stream]
    return [stream] + [s for s in _own_extra_streams(wanted) if s != stream]


def branch_streams(costs: Sequence[float], stream: Optional[mx.Stream] = None) -> List[Optional[mx.Stream]]:
    """Where each of several independent branches runs: the caller's stream (None) or an extra one.

    The costliest branch goes first to the least loaded stream (longest-processing-time order), the
    caller's stream winning ties, over the most streams whose busiest carries at most
    :data:`MAX_IMBALANCE` times an even share of the work (HiFi-GAN's blocks of kernels 3, 7 and 11
    take two streams, 11 against 3 + 7, however many there are). Every branch stays on the caller's
    stream (whose calls may then share their blocks over the streams) where there is one worker
    stream, one branch, or no such placement. Build the branches inside :func:`one_stream_each`.

    Args:
        costs: a number per branch, in proportion to its work.
        stream (mx.Stream, optional): the caller's stream. Default: the default device's default stream.

    Returns:
        list: per branch, None (the caller's stream) or the ``mx.Stream`` to run it on.
    """
    stream = mx.default_stream(mx.default_device()) if stream is None else stream
    workers = worker_streams(stream)
    if len(workers) == 1 or len(costs) < 2:
        return [None] * len(costs)
    order = sorted(range(len(costs)), key=lambda i: -costs[i])
    for count in range(min(len(workers), len(costs)), 1, -1):
        load = [0.0] * count
        places: List[Optional[mx.Stream]] = [None] * len(costs)
        for i in order:
            j = min(range(count), key=lambda j: load[j])
            load[j] += costs[i]
            places[i] = None if j == 0 else workers[j]
        if max(load) <= MAX_IMBALANCE * sum(load) / count:
            return places
    return [None] * len(costs)


@contextmanager
def one_stream_each() -> Iterator[None]:
    """While branches placed by :func:`branch_streams` are built: each call stays on its branch's stream.

    Blocks of one call shared with a stream that another branch keeps busy would wait for it.
    """
    before = getattr(_LOCAL, "placed", False)
    _LOCAL.placed = True
    try:
        yield
    finally:
        _LOCAL.placed = before


def tile_spans(length: int, count: int, reach: int) -> List[Tuple[int, int, int, int]]:
    """``count`` tiles of a signal of ``length`` samples, for a computation whose every output sample reads the
    input samples at most ``reach`` away.

    Returns:
        list: per tile ``(lo, hi, start, stop)``: it reads samples ``[lo, hi)`` and keeps outputs ``[start, stop)``,
        its share of ``[0, length)``, each at least ``reach`` samples from an edge of ``[lo, hi)`` that is not the
        signal's own.
    """
    cuts = [length * j // count for j in range(count + 1)]
    return [(max(0, a - reach), min(length, b + reach), a, b) for a, b in zip(cuts, cuts[1:])]


def tile_count(length: int, row_elements: int, reach: int, streams: int) -> int:
    """How many tiles :func:`mean_over_tiles` cuts a signal of ``length`` rows of ``row_elements`` into for ``streams``
    streams, or 0 where it cuts none (fewer than two streams, or tiles of fewer than :data:`TILE_MIN_REACHES` reaches).

    A multiple of ``streams`` holding at most :data:`TILE_MAX_ELEMENTS` each, as long as each keeps
    :data:`TILE_MIN_REACHES` reaches; at least ``streams``.
    """
    most = length // (TILE_MIN_REACHES * max(1, reach))
    if streams < 2 or most < streams:
        return 0
    rounds = -(-length * row_elements // (streams * TILE_MAX_ELEMENTS))
    return max(streams, min(streams * rounds, most))


def mean_over_tiles(branches: Sequence[Sequence[Callable[[mx.array], mx.array]]], x: mx.array, reach: int,
                    flops: float) -> Optional[mx.array]:
    """The mean over ``branches`` of each branch's steps applied in turn to ``x``, computed on overlapping tiles of
    ``x``'s length axis (-2) that take the CPU's worker streams in turn; None where that does not pay, and the caller
    computes the mean itself.

    Each tile reads ``reach`` samples beyond its share on each inner side, so its share is exact wherever no output
    sample reads the input more than ``reach`` away (convolutions with "same" padding, pointwise functions and
    residual sums; ``reach`` is the sum of their reaches). Every call and pointwise function of the stage then runs
    on every core, where splitting each call alone left the pointwise work on one stream and joined the streams
    after every call.

    After each step, the tiles' outputs are handed to MLX together (``mx.async_eval``), in turn by stream. MLX
    dispatches about a hundred ops ahead of those running (ten tasks of ten ops), in the order it walks the graph:
    built whole and evaluated once, one tile's ops came first and the other stream waited for them
    (docs/performance-history.md, 2026-12-08).

    Tiles are made only where the work outweighs the hand-offs (``flops`` at least :data:`BRANCH_MIN_FLOPS`, and
    :data:`TILE_MIN_STEP_FLOPS` per step) and :func:`tile_count` gives some: more than one worker stream (:func:`worker_streams`), tiles of at least
    :data:`TILE_MIN_REACHES` reaches. The caller keeps traced calls (inside ``mx.compile``, ``mx.grad``) away:
    ``mx.async_eval`` refuses tracers.

    Args:
        branches: per branch, functions of an array ``(..., L, C)`` to one of the same shape, applied in turn.
        x (array): ``(N, L, C)`` or ``(L, C)``.
        reach (int): the farthest any output sample reads, in samples, on either side.
        flops (float): the branches' work on all of ``x``.

    Returns:
        array or None: the mean, as ``sum(branch(x)) / len(branches)`` gives it, to float32 rounding.
    """
    if not branches or flops < max(BRANCH_MIN_FLOPS, TILE_MIN_STEP_FLOPS * sum(len(steps) for steps in branches)):
        return None
    workers = worker_streams(mx.default_stream(mx.default_device()))
    length = x.shape[-2]
    count = tile_count(length, x.size // max(1, length), reach, len(workers))
    if not count:
        return None
    spans = tile_spans(length, count, reach)
    streams = [workers[j % len(workers)] for j in range(count)]
    with one_stream_each():
        tiles, totals = [], []
        for stream, (lo, hi, _, _) in zip(streams, spans):
            with mx.stream(stream):
                tiles.append(x[..., lo:hi, :])
        for b, steps in enumerate(branches):
            ys = list(tiles)
            for step in steps:
                for j, stream in enumerate(streams):
                    with mx.stream(stream):
                        ys[j] = step(ys[j])
                mx.async_eval(ys)
            for j, stream in enumerate(streams):
                with mx.stream(stream):
                    if b == 0:
                        totals.append(ys[j])
                    else:
                        totals[j] = totals[j] + ys[j]
        shares = []
        for j, (stream, (lo, _, start, stop)) in enumerate(zip(streams, spans)):
            with mx.stream(stream):
                shares.append((totals[j] / len(branches))[..., start - lo:stop - lo, :])
    return mx.concatenate(shares, axis=-2)
