"""Backend ``"metal"``: a gather kernel for Apple GPUs through ``mx.fast.metal_kernel``.

Its body is ``metal/conv_transpose1d.metal``. Stride, dilation, kernel size
and channels per group are template parameters, so each loop unrolls;
lengths and channel counts are a small runtime array, so a new signal
length does not compile a new kernel. The forward pass is the kernel; the
backward pass is the derivative of the ``gemm`` backend's function, which
computes the same map (``mx.custom_function``), so training works.

On this project's machines (Linux, no GPU) the kernel cannot run; it is
verified by running MLX's generated Metal source on the CPU
(``mlx_deconv/backends/metal/emulator.py``, tested by ``tests/test_metal_emulator.py``).
"""

from __future__ import annotations

import threading
from functools import lru_cache
from pathlib import Path
from typing import Dict, Optional, Tuple

import mlx.core as mx

from ...geometry.records import Geometry
from .. import gemm

KERNEL_FILE = "conv_transpose1d.metal"

def kernel_source(filename: str = KERNEL_FILE) -> str:
    """A kernel body of ``metal/``, from the installed package or from a source checkout."""
    here = Path(__file__).resolve().parents[2]  # the package root: backends/metal/ is two floors down
    for folder in (here / "metal", here.parent / "metal"):
        path = folder / filename
        if path.is_file():
            return path.read_text()
    raise FileNotFoundError(f"{filename} is neither in {here / 'metal'} nor in {here.parent / 'metal'}")


_KERNEL_LOCK = threading.Lock()


@lru_cache(maxsize=None)
def _build_kernel():
    return mx.fast.metal_kernel(
        name="mlx_deconv_conv_transpose1d",
        input_names=["x", "w", "bias", "dims"],
        output_names=["y"],
        source=kernel_source(),
    )


def kernel():
    """The ``mx.fast.metal_kernel`` object (built once; MLX compiles each instantiation on first launch).

    Built under a lock, so concurrent first calls from several threads share one object.
    """
    with _KERNEL_LOCK:
        return _build_kernel()


kernel.cache_clear = _build_kernel.cache_clear  # tests swap the kernel source


def launch(geom: Geometry) -> Tuple[Tuple[int, int, int], Tuple[int, int, int]]:
    """``(grid, threadgroup)``: one thread per output element, channels along x."""
    grid = (geom.out_channels, geom.output_length, geom.batch)
    tx = min(geom.out_channels, 64)
    ty = max(1, min(geom.output_length, 256 // tx))
    return grid, (tx, ty, 1)


def kernel_arguments(x: mx.array, weight: mx.array, bias: Optional[mx.array], geom: Geometry) -> Dict:
    """Everything the kernel call takes, so the emulator can launch exactly what the backend launches."""
    # (C_out, K, C_in/groups) -> (K, C_in/groups, C_out): consecutive threads read consecutive weights.
    w = weight.transpose(1, 2, 0)
    dims = mx.array([geom.length, geom.output_length, geom.crop, geom.in_channels, geom.out_channels], dtype=mx.int32)
    grid, threadgroup = launch(geom)
    return dict(
        inputs=[x, w, bias if bias is not None else mx.zeros((1,), dtype=x.dtype), dims],
        template=[
            ("T", x.dtype),
            ("STRIDE", geom.stride),
            ("DILATION", geom.dilation),
            ("TAPS", geom.kernel_size),
            ("CIG", geom.in_per_group),
            ("COG", geom.out_per_group),
            ("HAS_BIAS", bias is not None),
        ],
        grid=grid,
        threadgroup=threadgroup,
        output_shapes=[(geom.batch, geom.output_length, geom.out_channels)],
        output_dtypes=[x.dtype],
    )


def run_kernel(x: mx.array, weight: mx.array, bias: Optional[mx.array], geom: Geometry) -> mx.array:
    """The kernel launch alone, without the VJP wrapper."""
    return kernel()(**kernel_arguments(x, weight, bias, geom))[0]


def conv_transpose1d(x: mx.array, weight: mx.array, bias: Optional[mx.array], geom: Geometry) -> mx.array:
    """Transposed conv of NLC ``x`` with an MLX-layout ``weight``, as ``geom`` says."""

    has_bias = bias is not None

    @mx.custom_function
    def forward(x, weight, b):
        return run_kernel(x, weight, b if has_bias else None, geom)

    @forward.vjp
    def backward(primals, cotangent, output):
        def same_map(x, weight, b):
            return gemm.conv_transpose1d(x, weight, b if has_bias else None, geom)

        _, grads = mx.vjp(same_map, list(primals), [cotangent])
        return tuple(grads)

    return forward(x, weight, bias if has_bias else mx.zeros((1,), dtype=x.dtype))
