"""Each thread empties its own MLX compile cache and streams as it ends, while it can still hold the GIL.

Why: MLX keeps a compile cache per thread (a C++ ``thread_local``). A thread
that called a compiled function shared by every thread (``mlx.nn.leaky_relu``,
``mlx.nn.gelu``, any module-level ``@mx.compile``) keeps an entry in it that
holds Python objects. MLX frees that cache in the C++ thread-exit destructors,
which run after the thread's Python state is gone, and ``Thread.join()``
returns before them. If the main thread has begun to shut the interpreter
down by then, taking the GIL to free those objects ends the thread inside a
``noexcept`` destructor: ``std::terminate``, SIGABRT. MLX's own remedy is
that a worker thread calls ``mx.clear_streams()`` before it ends
(``docs/threads-exit.md``).

What: :func:`install` wraps ``threading.Thread._bootstrap_inner``, the method
that every thread started through :mod:`threading` (``ThreadPoolExecutor``'s
workers, ``Timer``, ``Thread`` subclasses) runs in its new thread around
``run()``. After ``run()`` returns, still in that thread, with its Python
state and the GIL, and before ``join()`` returns,
:func:`release_thread_caches` calls ``mx.clear_streams()``: MLX then drops
the thread's compile cache, random key and streams, and the destructors that
run later find nothing that needs the GIL. Nothing runs per MLX call: one
call per thread end. Installing also makes Python's main thread MLX's main
thread (:func:`_pin_mlx_main_thread`), so that no thread ending through the
hook is taken for it.

Importing this module installs it (``import mlx_deconv`` does), unless the
environment has ``MLX_DECONV_THREAD_EXIT=0``. :func:`uninstall` undoes it;
installing twice is one installation.

Not covered, so such a thread calls :func:`release_thread_caches` itself as
its last step with MLX: threads started before the hook was installed, threads
started without :mod:`threading` (``_thread.start_new_thread``, C code), and
daemon threads still running at exit (they are stopped, never ended). The main
thread is MLX's own business: it empties its cache at exit itself.
"""

from __future__ import annotations

import functools
import os
import sys
import threading
import warnings
from typing import Callable, Optional

#: Environment switch: ``0`` leaves ``threading`` alone at ``import mlx_deconv``.
ENV = "MLX_DECONV_THREAD_EXIT"
#: The method wrapped: run by every ``threading.Thread`` in its new thread, around ``run()``.
METHOD = "_bootstrap_inner"


class _State:
    lock = threading.Lock()
    wrapper: Optional[Callable] = None  # ours, once made; kept so that a reinstall finds it
    original: Optional[Callable] = None  # what ours wraps
    active = False  # False: ours (possibly still under someone else's wrapper) does nothing


def release_thread_caches() -> None:
    """Empty the calling thread's MLX compile cache, random key and streams (``mx.clear_streams()``).

    For a thread the hook does not cover (see the module docstring), as the
    last MLX step of its work; MLX arrays it computed stay valid. A thread
    that calls MLX again afterwards simply starts new caches.
    """
    modules = getattr(sys, "modules", None)  # None only in a daemon thread at interpreter teardown
    core = modules.get("mlx.core") if modules is not None else None
    if core is not None:  # no mlx.core loaded: this thread cannot have used MLX
        core.clear_streams()


def _chain_has(method: Callable, target: Callable) -> bool:
    """Whether ``target`` is ``method`` or anything it wraps (``__wrapped__``, as functools.wraps sets)."""
    seen = set()
    while method is not None and id(method) not in seen:
        if method is target:
            return True
        seen.add(id(method))
        method = getattr(method, "__wrapped__", None)
    return False


def _make_wrapper(original: Callable) -> Callable:
    @functools.wraps(original)
    def _bootstrap_inner(self):
        try:
            original(self)
        finally:
            if _State.active:  # read once per thread end, not per call
                release_thread_caches()

    return _bootstrap_inner


def installed() -> bool:
    """Whether threads started from now on empty their MLX caches as they end."""
    return _State.active and _chain_has(getattr(threading.Thread, METHOD, None), _State.wrapper)


def install() -> bool:
    """Make every thread started through :mod:`threading` from now on call :func:`release_thread_caches` as it ends.

    Idempotent; :func:`uninstall` undoes it. Called by ``import mlx_deconv``
    unless ``MLX_DECONV_THREAD_EXIT=0``.

    Returns:
        bool: ``True`` if this call installed it, ``False`` if it already was, or if this Python's
        ``threading`` has no ``Thread._bootstrap_inner`` (then a ``RuntimeWarning`` says so).
    """
    with _State.lock:
        current = threading.Thread.__dict__.get(METHOD)
        if not callable(current):
            warnings.warn(
                f"mlx_deconv: this Python's threading.Thread has no {METHOD} method, so threads are not made "
                "to empty their MLX compile caches as they end; a thread pool using MLX's compiled functions "
                "(mlx.nn activations) can abort at exit. Call "
                "mlx_deconv.runtime.thread_exit.release_thread_caches() at the end of each worker thread.",
                RuntimeWarning, stacklevel=2)
            return False
        if _State.wrapper is not None and _chain_has(current, _State.wrapper):
            was_active, _State.active = _State.active, True  # ours is there (maybe under another wrapper)
            return not was_active
        _pin_mlx_main_thread()
        _State.original, _State.wrapper = current, _make_wrapper(current)
        _State.active = True
        setattr(threading.Thread, METHOD, _State.wrapper)
        return True


def _pin_mlx_main_thread() -> None:
    """Let MLX take Python's main thread for its main thread before any thread ends through the hook.

    MLX takes for its main thread the first thread that reaches its streams, and treats that thread
    apart (its command encoders are kept to the end of the process). ``mx.clear_streams()`` reaches
    them, so without this a thread that never used MLX, ending before any MLX work (a download
    pool's worker), would become MLX's main thread. The main thread's default CPU stream is made
    here, as its first CPU operation would make it; nothing is computed.
    """
    if threading.current_thread() is not threading.main_thread():
        return  # MLX takes whichever thread comes first, as it would without the hook
    import mlx.core as mx  # at package import this comes after runtime.blas has loaded its CBLAS

    mx.default_stream(mx.cpu)


def uninstall() -> bool:
    """Undo :func:`install`: ``threading.Thread`` gets its own method back.

    If another library has since wrapped the method on top of ours, ours is
    left in place, inert, so that theirs keeps working.

    Returns:
        bool: ``True`` if it was installed.
    """
    with _State.lock:
        was_active, _State.active = _State.active, False
        if _State.wrapper is not None and threading.Thread.__dict__.get(METHOD) is _State.wrapper:
            setattr(threading.Thread, METHOD, _State.original)
            _State.wrapper = _State.original = None
        return was_active


def install_unless_disabled() -> bool:
    """:func:`install`, unless the environment has ``MLX_DECONV_THREAD_EXIT=0``.

    Returns:
        bool: whether the hook is installed after this call.
    """
    if os.environ.get(ENV, "").strip() == "0":
        return installed()
    install()
    return installed()


# ``import mlx_deconv`` imports this module: from then on, threads empty their MLX caches as they end.
install_unless_disabled()
