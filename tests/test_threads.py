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
import weakref
from concurrent.futures import ThreadPoolExecutor

import mlx.core as mx
import numpy as np
import pytest

import mlx_deconv as md
import reference as ref
from helpers import atol
from mlx_deconv.runtime import compiling
from mlx_deconv.ops import functional
from mlx_deconv.backends import gemm
from mlx_deconv.backends.gemm import conv1d_paths, transposed, transposed_paths, schedule, slabs, minimal_filtering
from mlx_deconv.geometry.validation import conv_geometry

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


def _check_grads(op, backend, case, seed):
    """``x`` and weight gradients of ``sum(op(x, w) * ct)`` against the reference's VJP."""
    x_shape, w_shape, kwargs, crops = case
    x, w, _ = _arrays(x_shape, w_shape, seed)
    f = md.conv_transpose1d if op == "transposed" else md.conv1d
    ct = mx.array(np.random.default_rng(seed + 1).standard_normal(
        f(mx.zeros(x_shape), mx.zeros(w_shape), **kwargs, backend="builtin").shape), mx.float32)
    loss = lambda xa, wa: mx.sum(f(xa, wa, **kwargs, backend=backend) * ct)  # noqa: E731
    dx, dw = mx.grad(loss, argnums=(0, 1))(mx.array(x, mx.float32), mx.array(w, mx.float32))
    vjp = ref.conv_transpose1d_vjp if op == "transposed" else ref.conv1d_vjp
    want_dx, want_dw, _ = vjp(x, w, np.array(ct, np.float64), kwargs.get("stride", 1), *crops,
                              kwargs.get("dilation", 1), kwargs.get("groups", 1))
    groups = kwargs.get("groups", 1)
    # dx sums taps * C_out/G products, dw one per input (transposed) or output (direct) row of the batch.
    np.testing.assert_allclose(np.array(dx, np.float64), want_dx, rtol=0, atol=atol(w_shape[1] * w_shape[0] // groups))
    rows = x_shape[1] if op == "transposed" else ct.shape[1]
    np.testing.assert_allclose(np.array(dw, np.float64), want_dw, rtol=1e-6, atol=atol(x_shape[0] * rows))


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
        for minimal in (False, True):
            path = transposed_paths.path_for(geom, minimal_filtering=minimal)
            assert schedule.block_count(geom, path.per_row, len(workers)) >= 2, (x_shape, type(path).__name__)


SCRIPT = textwrap.dedent(
    """
    import sys, threading
    import mlx_deconv as md  # first, as in the test suite's conftest (BLAS set-up)
    sys.path.insert(0, {tests!r})
    from mlx_deconv.ops import functional
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


# The caches of compiled helpers, and a signature of each that no call makes, by index: enough of them
# fill a cache with entries the thread never calls.
def _unused_geometry(i):
    return conv_geometry((1, 10_000 + i, 4), (4, 3, 4), stride=2, padding=1)[0]


HELPER_CACHES = {
    "transposed.prepared_run": (lambda: transposed.prepared_run,
                           lambda i: (_unused_geometry(i), False, False, schedule.DEFAULT_POLICY)),
    "slabs._summed": (lambda: slabs._summed, lambda i: ((0, 1), 0, 10**6 + i, 1)),
    "slabs._multiplied": (lambda: slabs._multiplied,
                          lambda i: ((0, 1), 0, 10**6 + i, 10**6 + i + 2, ((False,), (False,)))),
    "slabs._depthwise_grads": (lambda: slabs._depthwise_grads, lambda i: ((0, 1), 10**6 + i, 1, 2, 0, False)),
    "conv1d_paths._depthwise_taps": (lambda: conv1d_paths._depthwise_taps, lambda i: (3, 2, 1, 10**6 + i)),
    "minimal_filtering._fused_combination": (lambda: minimal_filtering._fused_combination, None),  # unbounded: never evicts
    "minimal_filtering._output_transform": (lambda: minimal_filtering._output_transform, None),
}


def _use_every_helper(seed):
    """Calls that make each cache of compiled helpers an entry, checked against the reference."""
    for backend in ("gemm", "winograd"):  # dense, grouped, depthwise and dilated paths; minimal filtering
        for case in transposed_cases()[:5]:
            _check("transposed", backend, case, seed)
    _check("conv1d", "gemm", ((1, 30, 5), (5, 3, 1), dict(stride=2, groups=5), (0, 0)), seed)  # direct depthwise
    for case in (transposed_cases()[1], transposed_cases()[3]):  # the wide and the depthwise VJPs
        _check_grads("transposed", "gemm", case, seed)


def test_compiled_helpers_are_made_evicted_and_freed_by_their_own_thread(monkeypatch):
    """A thread that fills the caches of compiled helpers evicts none of another thread's entries, and
    frees no compiled function another thread made (that would be a data race on the maker's compile
    cache, see compiling.py); the maker's results stay right. Every compiled function is tracked by a
    weak reference whose callback notes the thread that drops it."""
    real_compile = mx.compile
    freed = []  # (maker thread, freeing thread)
    made = []
    references = []

    class Tracked:
        __slots__ = ("compiled", "__weakref__")

        def __init__(self, compiled):
            self.compiled = compiled

        def __call__(self, *args, **kwargs):
            return self.compiled(*args, **kwargs)

    def tracking_compile(fun, *args, **kwargs):
        tracked = Tracked(real_compile(fun, *args, **kwargs))
        maker = threading.get_ident()
        made.append(maker)
        references.append(weakref.ref(tracked, lambda _, maker=maker: freed.append((maker, threading.get_ident()))))
        return tracked

    monkeypatch.setattr(mx, "compile", tracking_compile)
    filled, evicted, finish = threading.Event(), threading.Event(), threading.Event()
    owner = {}
    errors = []

    def maker():  # its own thread, so its tables start empty whatever earlier tests did on the main thread
        try:
            owner["maker"] = threading.get_ident()
            _use_every_helper(seed=1)
            owner["sizes"] = {name: get().cache_info().currsize for name, (get, _) in HELPER_CACHES.items()}
        except BaseException as err:
            errors.append(err)
        filled.set()
        evicted.wait(120)
        try:  # after the other thread's evictions: the same calls, still right
            owner["after"] = {name: get().cache_info().currsize for name, (get, _) in HELPER_CACHES.items()}
            _use_every_helper(seed=2)
        except BaseException as err:
            errors.append(err)
        finish.wait(120)

    def evictor():
        try:
            for get, signature in HELPER_CACHES.values():
                if signature is not None:
                    cached = get()
                    for i in range(cached.cache_parameters()["maxsize"] + 1):
                        cached(*signature(i))
        except BaseException as err:
            errors.append(err)

    a = threading.Thread(target=maker)
    a.start()
    filled.wait(120)
    b = threading.Thread(target=evictor)
    b.start()
    b.join()
    evicted.set()
    finish.set()
    a.join()
    assert not errors, errors
    assert owner["maker"] in made
    assert all(size > 0 for size in owner["sizes"].values()), owner["sizes"]  # every cache was used
    assert owner["after"] == owner["sizes"]  # nothing of the maker's was evicted by the other thread
    assert freed, "no compiled function was freed"  # the evictor's, at least
    wrong = [(m, f) for m, f in freed if m != f]
    assert not wrong, f"{len(wrong)} compiled functions freed by another thread than their maker"


def test_per_thread_cache_keeps_a_table_per_thread():
    calls = []

    @compiling.per_thread_cache(maxsize=2)
    def square(n):
        calls.append((threading.get_ident(), n))
        return [n * n]  # a new object per entry

    first = square(3)
    assert square(3) is first and square.cache_info().hits == 1
    with ThreadPoolExecutor(1) as pool:
        other, info = pool.submit(lambda: (square(3), square.cache_info())).result()
    assert other == first and other is not first  # made again in the other thread
    assert (info.hits, info.misses, info.currsize) == (0, 1, 1)
    square(4)
    square(3)  # 3 most recent: 5 evicts 4
    square(5)
    assert square(3) is first
    assert len([c for c in calls if c[1] == 4]) == 1
    square(4)
    assert len([c for c in calls if c[1] == 4]) == 2
    assert square.cache_info().currsize == 2 and square.cache_parameters() == {"maxsize": 2, "typed": False}
    square.cache_clear()
    assert square.cache_info().currsize == 0 and square.__wrapped__(2) == [4]
    for bad in (-1, 2.5, "8", True):
        with pytest.raises(TypeError, match="maxsize"):
            compiling.per_thread_cache(bad)


STRESS = textwrap.dedent(
    """
    import sys, threading
    import mlx_deconv as md  # first, as in the test suite's conftest (BLAS set-up)
    sys.path.insert(0, {tests!r})
    import numpy as np
    import test_threads as tt
    from mlx_deconv.runtime import compiling
    from mlx_deconv.ops import functional
    from mlx_deconv.backends.gemm import conv1d_paths, minimal_filtering, slabs, transposed
    # Caches of a few entries, so the random signatures below evict all the time in every thread.
    caches = [(transposed, "prepared_run"), (slabs, "_summed"), (slabs, "_multiplied"), (slabs, "_depthwise_grads"),
              (conv1d_paths, "_depthwise_taps"), (minimal_filtering, "_fused_combination"),
              (minimal_filtering, "_output_transform")]
    for module, name in caches:
        setattr(module, name, compiling.per_thread_cache(2)(getattr(module, name).__wrapped__))
    functional.PREPARED_CALLS = 2
    failures, evictions = [], []

    def random_case(rng):  # aimed at the cached helpers: slab and minimal-filtering paths, depthwise, any
        kind = int(rng.integers(3))
        if kind == 0:  # taps a multiple of the stride (vocoder-like)
            stride = int(rng.choice([1, 2, 3, 4, 8]))
            taps, dilation, groups = stride * int(rng.integers(1, 4)), 1, int(rng.choice([1, 2]))
            cin, cout = groups * int(rng.integers(1, 5)), groups * int(rng.integers(1, 5))
        elif kind == 1:  # depthwise, with a channel multiplier
            cin = groups = int(rng.integers(1, 6))
            cout = cin * int(rng.integers(1, 3))
            taps, stride, dilation = int(rng.integers(1, 9)), int(rng.integers(1, 5)), int(rng.integers(1, 3))
        else:
            groups = int(rng.choice([1, 2, 4]))
            cin, cout = groups * int(rng.integers(1, 3)), groups * int(rng.integers(1, 4))
            taps, stride, dilation = int(rng.integers(1, 9)), int(rng.integers(1, 5)), int(rng.integers(1, 3))
        reach = (taps - 1) * dilation
        crops = (int(rng.integers(0, reach // 2 + 1)), int(rng.integers(0, reach // 2 + 1)))
        return ((int(rng.integers(1, 3)), int(rng.integers(reach + 1, reach + 40)), cin), (cout, taps, cin // groups),
                dict(stride=stride, padding=crops, dilation=dilation, groups=groups), crops)

    def work(worker):
        rng = np.random.default_rng(worker)
        try:
            for i in range(int(sys.argv[1])):
                case = random_case(rng)
                op = "conv1d" if rng.random() < 0.25 else "transposed"
                backend = "gemm" if op == "conv1d" else str(rng.choice(["gemm", "winograd"]))
                if rng.random() < 0.3:
                    tt._check_grads(op, backend, case, seed=i)
                else:
                    tt._check(op, backend, case, seed=i)
        except BaseException as err:
            failures.append(repr(err))
        infos = [getattr(module, name).cache_info() for module, name in caches]
        evictions.append(sum(info.misses - info.currsize for info in infos))

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print("failures:", failures)
    print("evictions:", min(evictions))
    sys.stdout.flush()
    """
)


def test_process_exits_cleanly_after_threads_evict_compiled_helpers(tmp_path):
    """Four threads, random signatures, caches of two entries: results right, exit status 0."""
    script = tmp_path / "evicting_threads.py"
    script.write_text(STRESS.format(tests=os.path.dirname(os.path.abspath(__file__))))
    proc = subprocess.run([sys.executable, str(script), "12"], capture_output=True, text=True, timeout=300)
    assert "failures: []" in proc.stdout, (proc.stdout, proc.stderr[-2000:])
    assert int(proc.stdout.split("evictions:")[1]) >= 5, proc.stdout  # in every thread
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-2000:])
    assert "terminate called" not in proc.stderr
