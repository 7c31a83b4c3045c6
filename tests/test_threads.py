"""Calls from any thread: concurrent, on default or own streams, compiled or not, and a clean exit.

MLX keeps a compile cache and a default stream per thread, and a stream
belongs to the thread that made it. A compiled function shared between
threads left entries in a worker thread's cache that were freed only as the
thread's C++ state was torn down, needing the GIL during the interpreter's
shutdown: the process aborted ("terminate called without an active
exception", status 134) after a call from a thread. The exit is checked in
subprocesses; results against the float64 reference of tests/reference.py.
"""

import os
import subprocess
import sys
import textwrap
import threading
from concurrent.futures import ThreadPoolExecutor

import mlx.core as mx
import numpy as np
import pytest

import mlx_deconv as md
import reference as ref
from helpers import atol
from mlx_deconv import functional
from mlx_deconv.backends import paths, schedule
from mlx_deconv.validation import conv_geometry

CPU_BACKENDS = ["builtin", "gemm", "winograd"]
THREADS = 4


def transposed_cases():
    """``(x_shape, w_shape, kwargs, (left, right))``: dense, vocoder-like (winograd's domain), grouped,
    depthwise and dilated layers, and signals long enough for several gemm blocks."""
    return [
        ((1, 9, 4), (6, 3, 4), dict(stride=2, padding=1), (1, 1)),
        ((2, 13, 8), (8, 16, 8), dict(stride=8, padding=4), (4, 4)),
        ((1, 20, 6), (6, 4, 2), dict(stride=2, padding=(3, 0), groups=3), (3, 0)),
        ((2, 17, 5), (5, 7, 1), dict(stride=1, padding=3, groups=5), (3, 3)),
        ((1, 11, 3), (4, 3, 3), dict(stride=3, padding=2, dilation=2), (2, 2)),
        ((1, 3000, 32), (32, 4, 32), dict(stride=2, padding=1), (1, 1)),
        ((2, 1600, 16), (16, 16, 16), dict(stride=8, padding=4), (4, 4)),
        ((1, 3000, 8), (8, 12, 1), dict(stride=2, padding=5, groups=8), (5, 5)),
    ]


def conv1d_cases():
    return [
        ((1, 19, 4), (6, 3, 4), dict(stride=2, padding=1), (1, 1)),
        ((2, 40, 6), (6, 5, 2), dict(stride=1, padding=(4, 0), groups=3, dilation=2), (4, 0)),
        ((1, 900, 8), (8, 7, 8), dict(stride=3, padding=3), (3, 3)),
    ]


def _arrays(x_shape, w_shape, seed):
    rng = np.random.default_rng(seed)
    return rng.standard_normal(x_shape), rng.standard_normal(w_shape), rng.standard_normal(w_shape[0])


def _expected(op, x, w, b, kwargs, crops):
    reference = ref.conv_transpose1d if op == "transposed" else ref.conv1d
    return reference(x, w, b, kwargs.get("stride", 1), crops[0], crops[1], kwargs.get("dilation", 1),
                     kwargs.get("groups", 1))


def _check(op, backend, case, seed, stream=None):
    x_shape, w_shape, kwargs, crops = case
    x, w, b = _arrays(x_shape, w_shape, seed)
    xa, wa, ba = (mx.array(a, mx.float32) for a in (x, w, b))
    if op == "transposed":
        y = md.conv_transpose1d(xa, wa, ba, **kwargs, backend=backend, stream=stream)
    else:
        y = md.conv1d(xa, wa, ba, **kwargs, backend=backend, stream=stream)
    got = np.array(y, np.float64)
    np.testing.assert_allclose(got, _expected(op, x, w, b, kwargs, crops), rtol=0,
                               atol=atol(w_shape[1] * w_shape[2]))


def _work(op, backend, cases, worker, barrier, rounds=2):
    """One thread's share: every case, in an order of its own, on the default stream, on ``"cpu"``
    and on a stream the thread makes itself."""
    own = mx.new_stream(mx.cpu)
    barrier.wait()  # all threads start together
    order = np.random.default_rng(worker).permutation(len(cases) * rounds)
    for i, j in enumerate(order):
        stream = (None, "cpu", own)[(i + worker) % 3]
        _check(op, backend, cases[j % len(cases)], seed=int(j), stream=stream)
    return worker


@pytest.fixture(params=["compiled", "uncompiled"])
def compile_mode(request, monkeypatch):
    """Small calls are compiled; long ones are not (COMPILE_MAX_OUTPUT), so both paths run from threads."""
    if request.param == "uncompiled":
        monkeypatch.setattr(functional, "COMPILE_MAX_OUTPUT", 0)
    return request.param


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_concurrent_threads_match_the_reference(backend, compile_mode):
    cases = transposed_cases()
    barrier = threading.Barrier(THREADS)
    with ThreadPoolExecutor(THREADS) as pool:
        done = list(pool.map(lambda k: _work("transposed", backend, cases, k, barrier), range(THREADS)))
    assert done == list(range(THREADS))


def test_concurrent_conv1d_matches_the_reference(compile_mode):
    cases = conv1d_cases()
    barrier = threading.Barrier(THREADS)
    with ThreadPoolExecutor(THREADS) as pool:
        done = list(pool.map(lambda k: _work("conv1d", "builtin", cases, k, barrier), range(THREADS)))
    assert done == list(range(THREADS))


@pytest.mark.parametrize("op, backend", [("transposed", b) for b in CPU_BACKENDS] + [("conv1d", "builtin")])
def test_results_are_bitwise_identical_in_every_thread(op, backend):
    """Determinism: a call gives the same bits on the main thread and in threads running at once."""
    cases = transposed_cases() if op == "transposed" else conv1d_cases()

    def results():
        out = []
        for seed, (x_shape, w_shape, kwargs, _) in enumerate(cases):
            x, w, b = (mx.array(a, mx.float32) for a in _arrays(x_shape, w_shape, seed))
            f = md.conv_transpose1d if op == "transposed" else md.conv1d
            out.append(np.array(f(x, w, b, **kwargs, backend=backend)))
        return out

    first = results()
    with ThreadPoolExecutor(THREADS) as pool:
        for other in pool.map(lambda _: results(), range(THREADS)):
            assert all(np.array_equal(a, b) for a, b in zip(first, other))


def test_autotuned_calls_from_threads(monkeypatch):
    """With autotuning on, threads calling at once time each signature once (the tuner's lock) and
    every call takes the tuned backend's correct result. The timer is injected: nothing is timed."""
    from mlx_deconv import autotune

    timed = []

    def timer(fns):
        timed.append(sorted(fns))
        for fn in fns.values():  # each candidate runs once, in the tuning thread
            mx.eval(fn())
        return {name: (0.0 if name == "gemm" else 1.0) for name in fns}

    old = autotune.use_tuner(autotune.Tuner(directory=False, timer=timer))
    monkeypatch.setattr(autotune, "_override", "forward")
    try:
        cases = transposed_cases()[:5]
        barrier = threading.Barrier(THREADS)
        with ThreadPoolExecutor(THREADS) as pool:
            done = list(pool.map(lambda k: _work("transposed", "auto", cases, k, barrier, rounds=1), range(THREADS)))
        assert done == list(range(THREADS))
        assert autotune.tuner().stats["timed"] == len(timed) <= len(cases)
        assert timed and all("gemm" in names for names in timed)
    finally:
        autotune.use_tuner(old)


def test_layer_shared_between_threads():
    """One layer object called from several threads at once (a server's model)."""
    layer = md.ConvTranspose1d(8, 6, 16, stride=8, padding=4)
    layer.bias = mx.random.normal((6,))
    mx.eval(layer.parameters())
    w = np.array(layer.weight, np.float64)
    b = np.array(layer.bias, np.float64)
    barrier = threading.Barrier(THREADS)

    def work(k):
        x = np.random.default_rng(k).standard_normal((1, 30 + k, 8))
        barrier.wait()
        for _ in range(3):
            got = np.array(layer(mx.array(x, mx.float32)), np.float64)
            np.testing.assert_allclose(got, ref.conv_transpose1d(x, w, b, 8, 4, 4), rtol=0, atol=atol(16 * 8))
        return k

    with ThreadPoolExecutor(THREADS) as pool:
        assert list(pool.map(work, range(THREADS))) == list(range(THREADS))


def test_long_cases_use_several_blocks_and_worker_streams():
    """The two long dense cases are long enough for gemm to cut them into blocks shared by the worker streams."""
    workers = schedule.worker_streams(mx.default_stream(mx.cpu))
    if len(workers) < 2:
        pytest.skip("one worker stream here (one CPU core, or a BLAS that threads itself)")
    for x_shape, w_shape, kwargs, _ in transposed_cases()[-3:-1]:
        geom, _ = conv_geometry(x_shape, w_shape, **kwargs)
        for minimal_filtering in (False, True):
            path = paths.choose(geom, minimal_filtering=minimal_filtering)
            assert schedule.block_count(geom, path.per_row, len(workers)) >= 2, (x_shape, type(path).__name__)


SCRIPT = textwrap.dedent(
    """
    import sys, threading
    import mlx_deconv as md  # first, as in the test suite's conftest (BLAS set-up)
    sys.path.insert(0, {tests!r})
    from mlx_deconv import functional
    import test_threads as tt

    order, mode = sys.argv[1], sys.argv[2]
    if mode == "uncompiled":
        functional.COMPILE_MAX_OUTPUT = 0
    failures = []

    def run_all():
        try:
            for backend in tt.CPU_BACKENDS:
                for seed, case in enumerate(tt.transposed_cases()[:6]):  # the small ones and one long
                    tt._check("transposed", backend, case, seed)
            for seed, case in enumerate(tt.conv1d_cases()):
                tt._check("conv1d", "builtin", case, seed)
        except BaseException as err:
            failures.append(repr(err))

    def in_threads(count):
        threads = [threading.Thread(target=run_all) for _ in range(count)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    if order == "main-then-worker":
        run_all()
        in_threads(1)
    else:
        in_threads(1)
        run_all()
    # Last, threads that end just before the interpreter shuts down: each one's exit races the shutdown.
    in_threads(3)
    print("failures:", failures)
    sys.stdout.flush()
    """
)


def test_process_exits_cleanly_after_calls_from_threads(tmp_path):
    """Main thread then a worker, and the reverse, compiled and not: exit status 0 every time.

    The abort was a race (most runs, not all): each process ends with three threads at once.
    """
    script = tmp_path / "threads_exit.py"
    script.write_text(SCRIPT.format(tests=os.path.dirname(os.path.abspath(__file__))))
    variants = [(order, mode) for order in ("main-then-worker", "worker-then-main")
                for mode in ("compiled", "uncompiled")]
    procs = [subprocess.Popen([sys.executable, str(script), order, mode], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for order, mode in variants]
    for (order, mode), proc in zip(variants, procs):
        out, err = proc.communicate(timeout=300)
        assert "failures: []" in out, (order, mode, out, err[-2000:])
        assert proc.returncode == 0, (order, mode, proc.returncode, err[-2000:])
        assert "terminate called" not in err
