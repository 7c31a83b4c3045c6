"""``mx.compile`` for functions called from any thread.

MLX keeps one compile cache per thread, and a compiled function remembers
only the cache of the thread that called it last: it erases its entries
from that one cache when it is freed. A compiled function shared between
threads therefore leaves entries in the other threads' caches, and those
entries hold Python objects. When such a thread ends while the interpreter
is shutting down, freeing them needs the GIL that the finalizing interpreter
no longer hands out: the thread is torn down inside a C++ destructor and the
process aborts ("terminate called without an active exception", status 134).
Sharing one compiled function is also a data race on that remembered cache.

Here every thread gets its own compiled function, held in a
``threading.local``: Python frees it while the thread ends, with the GIL,
which empties that thread's cache before MLX's thread-exit cleanup runs.
"""

from __future__ import annotations

import threading
from typing import Callable

import mlx.core as mx

#: Calls with at most this many output elements are compiled; larger ones are left to MLX's graph
#: as built, since tracing a long signal's many blocks costs more than the Python it saves.
COMPILE_MAX_OUTPUT = 1 << 24


class PerThreadCompiled:
    """``mx.compile(fun)``, compiled separately in each calling thread.

    Args:
        fun (Callable): the function to compile, as for ``mx.compile``.
    """

    __slots__ = ("fun", "_local", "__weakref__")

    def __init__(self, fun: Callable):
        self.fun = fun
        self._local = threading.local()

    def __call__(self, *args, **kwargs):
        try:
            compiled = self._local.compiled
        except AttributeError:
            compiled = self._local.compiled = mx.compile(self.fun)
        return compiled(*args, **kwargs)


def compile_per_thread(fun: Callable) -> PerThreadCompiled:
    """``mx.compile`` that is safe to share between threads (see the module docstring).

    Args:
        fun (Callable): the function to compile.

    Returns:
        PerThreadCompiled: callable like ``mx.compile(fun)``.
    """
    return PerThreadCompiled(fun)
