"""``mx.compile`` from any thread: caches of compiled functions kept per thread.

MLX keeps one compile cache per thread, and a compiled function remembers
only the cache of the thread that called it last: it erases its entries
from that one cache when it is freed. A compiled function shared between
threads therefore leaves entries in the other threads' caches, and those
entries hold Python objects. When such a thread ends while the interpreter
is shutting down, freeing them needs the GIL that the finalizing interpreter
no longer hands out: the thread is torn down inside a C++ destructor and the
process aborts ("terminate called without an active exception", status 134).
Sharing one compiled function, or freeing it on another thread than the one
that called it, is also a data race on that remembered cache.

So a compiled function must be made, called and freed by one thread.
:func:`per_thread_cache` keeps a table of its own for each thread, in a
``threading.local``: an entry, and the compiled functions inside it, is
made by the thread that asks for it, dropped from that thread's table when
the table is full, and freed there; whatever remains is freed, with the GIL,
while the thread ends, which empties that thread's compile cache before
MLX's thread-exit cleanup runs. ``functional`` keeps its prepared calls per
thread for the same reason.
"""

from __future__ import annotations

import functools
import threading
from typing import Callable, Optional

#: Calls with at most this many output elements are compiled; larger ones are left to MLX's graph
#: as built, since tracing a long signal's many blocks costs more than the Python it saves.
COMPILE_MAX_OUTPUT = 1 << 24


def per_thread_cache(maxsize: Optional[int] = 128) -> Callable[[Callable], Callable]:
    """``functools.lru_cache(maxsize)`` with one table per thread.

    For functions that return compiled functions (``mx.compile``) or values
    holding them: each thread gets, keeps, evicts and frees its own (see the
    module docstring). A returned value must therefore not be handed to
    another thread. Arguments are hashed and compared as by ``lru_cache``.

    Args:
        maxsize (int, optional): entries kept per thread, the least recently
            used dropped first; ``None`` keeps every one. Default: ``128``.

    Returns:
        Callable: a decorator. The decorated function has ``cache_info()`` and
        ``cache_clear()`` for the calling thread's table, ``cache_parameters()``
        and ``__wrapped__`` as ``lru_cache``'s do.
    """
    if maxsize is not None and (not isinstance(maxsize, int) or isinstance(maxsize, bool) or maxsize < 0):
        raise TypeError(f"maxsize must be None or an int >= 0, got {maxsize!r}")

    def decorate(fun: Callable) -> Callable:
        local = threading.local()

        def table() -> Callable:
            try:
                return local.table
            except AttributeError:
                local.table = functools.lru_cache(maxsize)(fun)  # the C lookup: a hit costs one attribute read more
                return local.table

        @functools.wraps(fun)
        def cached(*args, **kwargs):
            try:
                lookup = local.table
            except AttributeError:
                lookup = table()
            return lookup(*args, **kwargs)

        cached.cache_info = lambda: table().cache_info()
        cached.cache_clear = lambda: table().cache_clear()
        cached.cache_parameters = lambda: {"maxsize": maxsize, "typed": False}
        return cached

    return decorate


def per_thread_compile(fun: Callable, *, shapeless: bool = False) -> Callable:
    """``fun`` compiled once per calling thread: each thread calls, keeps and frees its own ``mx.compile(fun)``.

    For compiled functions that MLX shares between threads, such as ``mlx.nn.leaky_relu`` and the
    other activations of ``mlx.nn`` (module-level ``mx.compile``): called from a pool's threads, each
    leaves an entry holding a Python object in that thread's compile cache, freed only after the
    thread's Python state is gone; a pool thread ending as the interpreter shuts down then aborts
    the process (docs/threads-exit.md). ``fun`` may itself be compiled: traced inside ours, it
    leaves no entry of its own, and the graph, so the result, is the one it computes.
    """
    import mlx.core as mx  # not at import time: runtime.blas loads its CBLAS before mlx.core

    local = threading.local()  # a thread's compiled copy is freed, with the GIL, as the thread ends

    @functools.wraps(fun)
    def call(*args, **kwargs):
        try:
            compiled = local.compiled
        except AttributeError:
            compiled = local.compiled = mx.compile(fun, shapeless=shapeless)
        return compiled(*args, **kwargs)

    return call
