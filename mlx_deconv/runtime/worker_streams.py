"""The CPU streams that share work, one per core behind a serial BLAS, and how independent branches are placed on them.

Where each matmul runs on one thread (MLX's Linux wheel, or the optimized BLAS kept at one thread:
:func:`~mlx_deconv.runtime.devices.serial_blas`), ops on different CPU streams run on different threads,
so work spread over streams is what uses the other cores. Two kinds of work are spread so: one call's
output blocks (the ``gemm`` backend) and a model's independent branches, such as the residual blocks
whose mean ends a HiFi-GAN or BigVGAN stage (:func:`branch_streams`).
"""

from __future__ import annotations

import os
import threading
from contextlib import contextmanager
from typing import Iterator, List, Optional, Sequence

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
