"""A decoder built on the main thread and served by a ThreadPoolExecutor: the process exits with status 0.

The abort it guards against (docs/threads-exit.md): ``mlx.nn.leaky_relu``, MLX's other activations and any
module-level ``@mx.compile`` function are compiled functions shared by every thread. Each pool thread that
called one keeps an entry holding Python objects in its own compile cache, which MLX frees in a C++
thread-exit destructor after the thread's Python state is gone and after ``join()`` has returned. When that
ran while the interpreter was shutting down, taking the GIL ended the thread inside the destructor:
"terminate called without an active exception", SIGABRT (status -6). It is a race that needs a loaded
machine, so the scenario runs in 24 processes, 4 at a time, in three variants.

``MLX_DECONV_THREAD_EXIT=0`` in the environment switches the package's remedy
(``mlx_deconv/runtime/thread_exit.py``) off in those processes too: this test then fails.
"""

import functools
import os
import subprocess
import sys
import textwrap
import threading
from concurrent.futures import ThreadPoolExecutor

import mlx.core as mx
import mlx.nn as nn
import pytest

import mlx_deconv
from mlx_deconv.runtime import thread_exit

REQUESTS = 200
#: How the script starts: mlx.core imported before mlx_deconv, after it, or a server of MLX's own layers
#: in a process that imports mlx_deconv and never calls it.
VARIANTS = ("mlx-first", "mlx-deconv-first", "mlx-layers")
RUNS_PER_VARIANT = 8
AT_A_TIME = 4  # more processes than the machine's 2 cores: the load the race needs

SCRIPT = textwrap.dedent(
    """
    import sys
    variant = sys.argv[1]
    if variant == "mlx-first":
        import mlx.core as mx
    import warnings
    warnings.simplefilter("ignore", RuntimeWarning)  # mlx-first: the BLAS note of runtime/blas.py
    from concurrent.futures import ThreadPoolExecutor
    from functools import partial

    import mlx.core as mx
    import mlx.nn as nn
    import numpy as np

    import mlx_deconv as md

    if variant == "mlx-layers":
        Conv1d, ConvTranspose1d = nn.Conv1d, nn.ConvTranspose1d
    else:
        Conv1d, ConvTranspose1d = md.Conv1d, md.ConvTranspose1d

    @partial(mx.compile, shapeless=True)  # the user's own module-level compiled function, shared by the threads
    def gate(x):
        return mx.tanh(x) * mx.sigmoid(x)

    class Decoder(nn.Module):
        # The user's model code: MLX's own compiled activations between the convolutions.
        def __init__(self):
            super().__init__()
            self.pre = Conv1d(8, 16, 7, padding=3)
            self.up1 = ConvTranspose1d(16, 8, 8, stride=4, padding=2)
            self.res = Conv1d(8, 8, 3, padding=1)
            self.up2 = ConvTranspose1d(8, 4, 4, stride=2, padding=1)
            self.post = Conv1d(4, 1, 7, padding=3)

        def __call__(self, mel):
            x = self.up1(nn.leaky_relu(self.pre(mel), 0.1))
            x = x + self.res(nn.leaky_relu(x, 0.1))
            x = self.up2(nn.gelu(x))
            return mx.tanh(self.post(gate(x)))

    mx.random.seed(0)
    decoder = Decoder()  # built on the main thread
    mx.eval(decoder.parameters())
    mel = mx.array(np.random.default_rng(0).standard_normal((1, 20, 8)), mx.float32)
    expected = np.array(decoder(mel))

    def serve(i):
        y = decoder(mel)
        mx.eval(y)
        return np.array_equal(np.array(y), expected)

    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(serve, range({requests})))
    print("answers", len(answers), "exact", sum(answers))
    """
)


def _run(script, variant, env):
    proc = subprocess.run([sys.executable, str(script), variant], capture_output=True, text=True, timeout=180,
                          env=env)
    return variant, proc


def test_pool_served_decoder_exits_cleanly(tmp_path):
    """24 processes, 4 at a time: each serves 200 requests from 4 pool threads, gets every answer exact,
    and exits with status 0 (with MLX_DECONV_THREAD_EXIT=0, 12 of the 24 aborted on 2 loaded cores: the figures
    in docs/threads-exit.md)."""
    script = tmp_path / "pool_exit.py"
    script.write_text(SCRIPT.format(requests=REQUESTS))
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(os.path.abspath(mlx_deconv.__file__))))
    runs = [variant for _ in range(RUNS_PER_VARIANT) for variant in VARIANTS]
    with ThreadPoolExecutor(AT_A_TIME) as pool:
        results = list(pool.map(lambda variant: _run(script, variant, env), runs))
    statuses = [(variant, proc.returncode) for variant, proc in results]
    failed = [(variant, proc) for variant, proc in results if proc.returncode != 0]
    assert not failed, (f"{len(failed)} of {len(results)} runs failed: {statuses}", failed[0][1].stderr[-2000:])
    for variant, proc in results:
        assert f"answers {REQUESTS} exact {REQUESTS}" in proc.stdout, (variant, proc.stdout, proc.stderr[-2000:])
        assert "terminate called" not in proc.stderr, (variant, proc.stderr[-2000:])


TRAIN_SCRIPT = textwrap.dedent(
    """
    import sys
    from concurrent.futures import ThreadPoolExecutor

    import mlx.core as mx
    import mlx.nn as nn
    import numpy as np

    import mlx_deconv as md

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a1, self.c1, self.a2 = md.Activation1d(8), md.Conv1d(8, 8, 3, padding=1), md.Activation1d(8)

        def __call__(self, x):
            return self.a2(self.c1(self.a1(x)))

    # "big": past the banded bound, the fused kernels' graphs; "small": the banded form's
    x = mx.array(np.random.default_rng(0).standard_normal((2, 8192 if sys.argv[1] == "big" else 64, 8)), mx.float32)

    def train(i):
        mx.random.seed(0)
        net = Net()  # its own: nn.value_and_grad updates the model it trains
        mx.eval(net.parameters())
        step = nn.value_and_grad(net, lambda m, x: (m(x) ** 2).mean())
        losses = []
        for _ in range(3):
            loss, grads = step(net, x)
            mx.eval(loss, grads)
            losses.append(float(loss))
        return losses

    first = train(0)
    with ThreadPoolExecutor(3) as pool:
        more = list(pool.map(train, range(9)))
    print("trained", len(more), "same", sum(m == first for m in more))
    """
)


def test_pool_trainers_exit_cleanly(tmp_path):
    """Training steps from pool threads, whose activations' graphs the anti-aliased worker thread builds
    (compiled functions kept on that thread): 16 processes, 4 at a time, each exits with status 0 and every
    thread's losses equal the main thread's."""
    script = tmp_path / "train_exit.py"
    script.write_text(TRAIN_SCRIPT)
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(os.path.abspath(mlx_deconv.__file__))))
    with ThreadPoolExecutor(AT_A_TIME) as pool:
        results = list(pool.map(lambda size: _run(script, size, env), ["small", "big"] * 8))
    failed = [(size, proc) for size, proc in results if proc.returncode != 0]
    assert not failed, (f"{len(failed)} of {len(results)} runs failed", failed[0][1].stderr[-2000:])
    for size, proc in results:
        assert "trained 9 same 9" in proc.stdout, (size, proc.stdout, proc.stderr[-2000:])


@pytest.fixture
def clear_streams_calls(monkeypatch):
    """Records the thread of each ``mx.clear_streams()`` call; the hook is installed for the test and left
    as it was found."""
    calls = []
    real = mx.clear_streams

    def spy():
        calls.append(threading.get_ident())
        real()

    monkeypatch.setattr(mx, "clear_streams", spy)
    was_installed = thread_exit.installed()
    thread_exit.install()
    yield calls
    if not was_installed:
        thread_exit.uninstall()


@functools.partial(mx.compile, shapeless=True)
def _shared_compiled(x):
    return 2 * x + 1


def _use_mlx():
    mx.eval(_shared_compiled(mx.ones((4,))), nn.leaky_relu(mx.ones((4,)), 0.1))
    return threading.get_ident()


def test_a_thread_and_pool_workers_empty_their_caches_before_join_returns(clear_streams_calls):
    thread = threading.Thread(target=_use_mlx)
    thread.start()
    thread.join()
    assert clear_streams_calls == [thread.ident]  # in that thread, once, and done by the time join() returned
    clear_streams_calls.clear()
    with ThreadPoolExecutor(3) as pool:
        workers = set(pool.map(lambda i: _use_mlx(), range(30)))
    assert workers <= set(clear_streams_calls)  # every worker that served, once each
    assert len(clear_streams_calls) == len(set(clear_streams_calls)) <= 3
    assert threading.get_ident() not in clear_streams_calls  # the main thread is left to MLX


def test_install_is_idempotent_and_uninstall_restores_threading(clear_streams_calls):
    wrapper = threading.Thread._bootstrap_inner
    assert thread_exit.install() is False  # already installed: nothing changes
    assert threading.Thread._bootstrap_inner is wrapper
    thread = threading.Thread(target=_use_mlx)
    thread.start()
    thread.join()
    assert clear_streams_calls == [thread.ident]  # one installation: one call

    assert thread_exit.uninstall() is True
    assert not thread_exit.installed()
    assert threading.Thread._bootstrap_inner is wrapper.__wrapped__  # threading's own method, back
    assert "_bootstrap_inner" in threading.Thread.__dict__
    clear_streams_calls.clear()
    thread = threading.Thread(target=_use_mlx)
    thread.start()
    thread.join()
    assert clear_streams_calls == []
    assert thread_exit.uninstall() is False
    assert thread_exit.install() is True


def test_uninstall_under_another_wrapper_keeps_that_wrapper_working(clear_streams_calls):
    ours = threading.Thread.__dict__["_bootstrap_inner"]
    theirs_ran = []

    @functools.wraps(ours)
    def theirs(self):
        theirs_ran.append(threading.get_ident())
        ours(self)

    threading.Thread._bootstrap_inner = theirs
    try:
        assert thread_exit.uninstall() is True
        assert threading.Thread._bootstrap_inner is theirs  # left in place, ours inert beneath it
        thread = threading.Thread(target=_use_mlx)
        thread.start()
        thread.join()
        assert theirs_ran == [thread.ident] and clear_streams_calls == []
        assert thread_exit.install() is True  # ours found under theirs, made active again: not wrapped twice
        assert threading.Thread._bootstrap_inner is theirs
        thread = threading.Thread(target=_use_mlx)
        thread.start()
        thread.join()
        assert clear_streams_calls == [thread.ident]
    finally:
        threading.Thread._bootstrap_inner = ours


@pytest.mark.parametrize("switch, expected", [("", "True"), ("0", "False")])
def test_environment_switch(switch, expected):
    env = dict(os.environ, MLX_DECONV_THREAD_EXIT=switch,
               PYTHONPATH=os.path.dirname(os.path.dirname(os.path.abspath(mlx_deconv.__file__))))
    code = "import mlx_deconv; from mlx_deconv.runtime import thread_exit; print(thread_exit.installed())"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split()[-1] == expected


def test_a_python_without_the_method_gets_a_warning_not_silence(monkeypatch):
    was_installed = thread_exit.installed()
    thread_exit.uninstall()
    try:
        monkeypatch.delattr(threading.Thread, "_bootstrap_inner")
        with pytest.warns(RuntimeWarning, match="release_thread_caches"):
            assert thread_exit.install() is False
        assert not thread_exit.installed()
    finally:
        monkeypatch.undo()  # threading's own method back before any thread starts
        if was_installed:
            thread_exit.install()
