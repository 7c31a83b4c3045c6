"""The anti-aliased activation's Metal kernel (``metal/anti_aliased_activation.metal``): backend ``"metal"``'s run
of that op, one thread per output sample and channel; its VJP is the polyphase one. On Linux the kernel
is verified by :func:`emulate` (the source MLX generates, compiled with a C++ compiler, run on the CPU)."""

from __future__ import annotations

import threading
from functools import lru_cache
from typing import Callable, Dict, List, Optional

import mlx.core as mx

from ...geometry.activation import ActivationGeometry
from ..anti_aliased.gradient import differentiable
from ..anti_aliased.phases import snake_params
from . import kernel_source as _kernel_source


KERNEL_FILE = "anti_aliased_activation.metal"


def kernel_source() -> str:
    """The kernel body (``metal/anti_aliased_activation.metal``)."""
    return _kernel_source(KERNEL_FILE)


_KERNEL_LOCK = threading.Lock()


@lru_cache(maxsize=None)
def _build_kernel():
    return mx.fast.metal_kernel(
        name="mlx_deconv_anti_aliased_activation",
        input_names=["x", "a", "ib", "f", "g", "dims"],
        output_names=["y"],
        source=kernel_source(),
    )


def kernel():
    """The ``mx.fast.metal_kernel`` object (built once, under a lock)."""
    with _KERNEL_LOCK:
        return _build_kernel()


kernel.cache_clear = _build_kernel.cache_clear  # tests swap the kernel source


def kernel_arguments(x: mx.array, a: mx.array, ib: mx.array, up: mx.array, down: mx.array, geom: ActivationGeometry) -> Dict:
    """Everything the kernel call takes (NLC ``x``, float32 ``a``/``ib``/filters), so the emulator can
    launch exactly what the backend launches."""
    n, length, c = x.shape
    tx = min(c, 64)
    ty = max(1, min(length, 256 // tx))
    return dict(
        inputs=[x, a.astype(mx.float32), ib.astype(mx.float32), up.astype(mx.float32), down.astype(mx.float32),
                mx.array([length, c], dtype=mx.int32)],
        template=[
            ("T", x.dtype),
            ("RATIO", geom.ratio),
            ("UP_TAPS", geom.up_taps),
            ("DOWN_TAPS", geom.down_taps),
            ("UP_PAD", geom.up_pad),
            ("UP_CROP", geom.up_crop[0]),
            ("DOWN_LEFT", geom.down_pad[0]),
        ],
        grid=(c, length, n),
        threadgroup=(tx, ty, 1),
        output_shapes=[(n, length, c)],
        output_dtypes=[x.dtype],
    )


def run_kernel(x, alpha, beta, up, down, geom: ActivationGeometry, launch: Optional[Callable] = None) -> mx.array:
    """The kernel launch alone (``launch(**arguments)`` instead of the Metal kernel, for the emulator)."""
    a, ib = snake_params(alpha, beta, geom.logscale, mx.float32)
    call = kernel_arguments(x, a, ib, up, down, geom)
    return (launch or kernel())(**call)[0]


def run(x: mx.array, alpha: mx.array, beta: Optional[mx.array], up: mx.array, down: mx.array,
                 geom: ActivationGeometry, *, launch: Optional[Callable] = None) -> mx.array:
    """The map by the Metal kernel, on NLC ``x``; its VJP is the polyphase form's."""
    has_beta = beta is not None

    def forward(xv, al, be, up_, down_):
        return run_kernel(xv, al, be if has_beta else None, up_, down_, geom, launch)

    fn = differentiable(geom, has_beta, x.shape[0], True, forward, forward_builds=launch is None)
    return fn(x, alpha, beta if has_beta else alpha, up, down)


def emulate(x: mx.array, alpha: mx.array, beta: Optional[mx.array], up: mx.array, down: mx.array,
            geom: ActivationGeometry) -> mx.array:
    """The Metal kernel's output computed on the CPU: the exact source MLX generates for the launch,
    compiled with the system C++ compiler and run thread by thread (see :mod:`.emulator`)."""
    return run_kernel(x, alpha, beta, up, down, geom, launch=emulated_launch)


def emulated_launch(**call) -> List[mx.array]:
    """A stand-in for the kernel object: takes :func:`kernel_arguments`' dict, returns the outputs
    computed by the emulator (for :func:`metal_kernel`'s ``launch`` in tests)."""
    from . import emulator

    return [emulator.run_call(kernel(), call)]
