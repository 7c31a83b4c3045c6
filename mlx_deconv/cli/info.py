"""``mlx-deconv info``: version, devices, the backends of each stream, autotuning, the patch and the BLAS."""

from __future__ import annotations

from typing import List

import mlx.core as mx

from .. import backends
from ..bench.timing import machine
from ..ops import patch
from ..runtime.devices import is_metal
from ..tuning import tuner as autotune
from ..version import __version__


def streams() -> List[mx.Stream]:
    """The default stream of every device this machine has."""
    found = [mx.default_stream(mx.cpu)]
    if mx.is_available(mx.gpu):
        found.append(mx.default_stream(mx.gpu))
    return found


def run(_args=None) -> int:
    """Prints the version, the devices with their backends and tuning state, the patch and the BLAS."""
    print(f"mlx_deconv {__version__} on {machine()}")
    print(f"default device: {mx.default_device()}")
    for stream in streams():
        kind = "Metal GPU" if is_metal(stream) else ("GPU" if stream.device.type == mx.DeviceType.gpu else "CPU")
        print(f"  {stream} ({kind}): backends {backends.available_backends(stream)}")
        for line in autotune.describe(stream):
            print(f"    {line}")
    if not mx.is_available(mx.gpu):
        print("  no GPU on this machine: Metal kernels cannot run here")
    print(f"mx.conv1d / mx.conv_transpose1d patched: {patch.status()}")
    _print_blas()
    return 0


def _print_blas() -> None:
    """Which library serves MLX's CPU matmul, whether it is the optimized one, and its measured rate."""
    from ..runtime.blas import blas_info

    found = blas_info()
    state = "optimized (loaded by mlx_deconv)" if found["optimized"] else "MLX's own"
    print(f"CPU matmul BLAS: {state}: {found['provider'] or 'cannot be told on this platform'}")
    if found["library"]:
        print(f"  library: {found['library']}")
    threads = found["threads"] if found["threads"] is not None else "left to the library / environment"
    print(f"  threads: {threads}; MLX matmul (2048x512 @ 512x2048, float32): {found['matmul_gflops']} GFLOP/s")
    for note in found["notes"]:
        print(f"  note: {note}")
