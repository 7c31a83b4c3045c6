"""How autotuning times the backends on one call's shape: random data, the call run as the real one, medians.

:mod:`mlx_deconv.autotune` decides when to time and keeps the choices; this
module only measures.
"""

from __future__ import annotations

import statistics
import time
from typing import Callable, Dict, List, Mapping

import mlx.core as mx

from .. import backends
from ..runtime.compiling import COMPILE_MAX_OUTPUT

#: After the first timed run, a backend this many times slower than the fastest is not timed again:
#: MLX's naive CPU loop can take seconds where the best takes milliseconds.
DROP_FACTOR = 4.0

#: ``{name: seconds}`` for ``{name: zero-argument function returning what to evaluate}``.
Timer = Callable[[Mapping[str, Callable[[], object]]], Dict[str, float]]


def time_primed(fn: Callable[[], object], clock: Callable[[], float], evaluate: Callable[[object], None]) -> float:
    """Seconds of one call of ``fn`` made right after an untimed call of its own, from MLX's buffer cache emptied first.

    Timed so, a call is in steady state (MLX's worker threads busy, its own
    buffers in MLX's cache), as a model calls its layers one after another;
    right after another function's call or a pause it can take longer, and
    the buffers another function left in the cache slowed it for good
    (docs/performance.md).

    Args:
        fn: the call; what it returns is passed to ``evaluate``.
        clock: seconds as a float.
        evaluate: waits for ``fn``'s result.

    Returns:
        float: seconds.
    """
    mx.clear_cache()
    evaluate(fn())
    start = clock()
    evaluate(fn())
    return clock() - start


def median_timer(fns: Mapping[str, Callable[[], object]], warmup: int = 1, repeat: int = 5,
                 clock: Callable[[], float] = time.perf_counter) -> Dict[str, float]:
    """Median seconds of each function after ``warmup`` untimed runs, timed round-robin,
    each call right after an untimed one (:func:`time_primed`).

    A function that raises is left out; one :data:`DROP_FACTOR` times slower
    than the fastest after the first timed round is not timed again.
    """
    live = []
    for name, fn in fns.items():
        try:
            for _ in range(warmup):
                mx.eval(fn())
            live.append(name)
        except Exception:  # a backend that cannot run this call is simply not a candidate
            continue
    times: Dict[str, List[float]] = {name: [] for name in live}
    for rnd in range(repeat):
        for name in live:
            times[name].append(time_primed(fns[name], clock, mx.eval))
        if rnd == 0 and live:
            best = min(times[n][0] for n in live)
            live = [n for n in live if times[n][0] <= DROP_FACTOR * best]
    return {name: statistics.median(t) for name, t in times.items() if t}


def timed_calls(op: str, geom, stream: mx.Stream, dtype, mode: str,
                runners: Mapping[str, Callable]) -> Dict[str, Callable[[], object]]:
    """Random data of the call's shape and, per backend, a function computing the op (or its gradients) on it."""
    kx, kw = mx.random.split(mx.random.key(0))
    with mx.stream(stream):
        x = mx.random.normal((geom.batch, geom.length, geom.in_channels), key=kx).astype(dtype)
        w = mx.random.normal((geom.out_channels, geom.kernel_size, geom.in_channels // geom.groups),
                             key=kw).astype(dtype)
        mx.eval(x, w)
    fns = {}
    for name, run in runners.items():
        def forward(x, w, run=run):
            with mx.stream(stream):
                return run(x, w)
        if mode == "train":
            grad = mx.grad(lambda x, w, f=forward: f(x, w).astype(mx.float32).sum(), argnums=(0, 1))
            fns[name] = lambda grad=grad: grad(x, w)
        else:
            fns[name] = lambda f=forward: f(x, w)
    return fns


def runners(geom, stream: mx.Stream, names: List[str]) -> Dict[str, Callable]:
    """``{name: fn(x, w) -> y}`` for the backends ``names``, each as ``functional`` runs a real call in MLX's
    layouts: bound where the record binds, else compiled when small."""
    op = backends.op_of(geom)
    small = geom.batch * geom.output_length * geom.out_channels <= COMPILE_MAX_OUTPUT
    found = {}
    for name in names:
        record = backends.BACKENDS[name]
        if record.bind is not None and geom.batch:
            found[name] = record.bind(op, geom, stream)
            continue

        def call(x, w, run=record.run(op)):
            with mx.stream(stream):
                return run(x, w, None, geom)
        found[name] = mx.compile(call) if small and record.compilable else call
    return found
