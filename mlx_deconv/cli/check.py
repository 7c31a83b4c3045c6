"""``mlx-deconv check``: every backend on every stream, and the Metal kernels in the emulator, against the
float64 reference."""

from __future__ import annotations

import mlx.core as mx
import numpy as np

from .. import backends
from ..backends.metal import anti_aliased as metal_activation, emulator
from ..geometry.activation import ActivationGeometry
from ..geometry.validation import conv_geometry
from ..nn.anti_aliased import kaiser_sinc_filter
from ..ops import reference
from ..ops.anti_aliased import anti_aliased_activation
from ..ops.functional import conv_transpose1d
from .info import streams


CHECKS = [
    # (name, N, L, C_in, C_out, K, conv kwargs)
    ("dense stride 4", 2, 9, 6, 4, 8, dict(stride=4, padding=2)),
    ("dense 3 row shifts", 2, 10, 6, 4, 5, dict(stride=2, padding=1)),
    ("grouped dilated", 2, 7, 8, 6, 3, dict(stride=2, dilation=3, groups=2, padding="same")),
    ("depthwise", 1, 11, 5, 5, 12, dict(stride=2, groups=5, padding="causal")),
    ("L=1 K=1", 3, 1, 3, 2, 1, dict(stride=3, output_padding=2)),
    ("stride > K asym", 1, 6, 2, 3, 2, dict(stride=5, padding=(1, 3))),
]


#: The anti-aliased activation's cases: (name, N, L, C, ratio, taps, activation).
ACTIVATION_CHECKS = [
    ("activation snakebeta", 2, 9, 5, 2, 12, "snakebeta"),
    ("activation snake r=3", 1, 7, 3, 3, 18, "snake"),
    ("activation L=1", 1, 1, 4, 2, 12, "snakebeta"),
]


# Column widths of check's table: the longest entry plus two spaces, so columns never touch.
_STREAM_WIDTH = max(len("emulated Metal (CPU)"), len(str(mx.default_stream(mx.cpu))) + 1) + 2
_BACKEND_WIDTH = max(len(name) for name in (*backends.BACKENDS, "backend")) + 2
_CASE_WIDTH = max(len(case[0]) for case in CHECKS + ACTIVATION_CHECKS) + 2
_DTYPE_WIDTH = len("bfloat16") + 2


def _check_line(label: str, backend: str, case: str, dtype: str, err: str, ok: str) -> str:
    return f"{label:<{_STREAM_WIDTH}}{backend:<{_BACKEND_WIDTH}}{case:<{_CASE_WIDTH}}{dtype:<{_DTYPE_WIDTH}}{err:>11}  {ok}"


def _check_row(label: str, backend: str, case: str, dtype, y: mx.array, expected: np.ndarray, tol: float) -> bool:
    err = float(np.abs(np.array(y.astype(mx.float32)) - expected).max())
    ok = err <= tol * (1 + np.abs(expected).max())
    dt = str(dtype).split(".")[-1]
    print(_check_line(label, backend, case, dt, f"{err:.2e}", "yes" if ok else "NO"))
    return ok


def run(_args=None) -> int:
    """Every backend on every stream against the float64 oracle, for the transposed convolution and the
    anti-aliased activation; returns 1 if any disagreed, else 0.

    Without Metal (Linux), both Metal kernels run in the CPU emulator instead, from the exact source MLX
    generates, when a C++ compiler is present.
    """
    emulate = not mx.metal.is_available() and emulator.compiler() is not None
    rng = np.random.default_rng(0)
    failures = 0
    print(_check_line("stream", "backend", "case", "dtype", "max |err|", "ok"))
    for name, n, length, c_in, c_out, k, kwargs in CHECKS:
        groups = kwargs.get("groups", 1)
        x = rng.standard_normal((n, length, c_in))
        w = rng.standard_normal((c_out, k, c_in // groups))
        b = rng.standard_normal(c_out)
        geom, _ = conv_geometry(x.shape, w.shape, **kwargs)
        expected = reference.conv_transpose1d(x, w, b, geom)
        for dtype, tol in ((mx.float32, 1e-4), (mx.float16, 5e-2)):
            xa, wa, ba = mx.array(x, dtype), mx.array(w, dtype), mx.array(b, dtype)
            for stream in streams():
                for backend in backends.usable_backends(geom, stream):
                    y = conv_transpose1d(xa, wa, ba, **kwargs, backend=backend, stream=stream)
                    failures += not _check_row(str(stream), backend, name, dtype, y, expected, tol)
            if emulate:
                y = emulator.run(xa, wa, ba, geom)
                failures += not _check_row("emulated Metal (CPU)", "metal", name, dtype, y, expected, tol)
    failures += _check_activation(emulate)
    if not mx.metal.is_available():
        if emulate:
            print("Metal is not available here: the metal rows ran MLX's generated Metal source of both kernels, "
                  "compiled with a C++ compiler, on the CPU.")
        else:
            print("Metal is not available here, and no C++ compiler was found to emulate it: the metal backend was not checked.")
    print("all backends agree with the float64 reference" if not failures else f"{failures} FAILED")
    return 1 if failures else 0





def _check_activation(emulate: bool) -> int:
    """The anti-aliased activation on every backend of every stream (and its Metal kernel in the emulator)."""
    rng = np.random.default_rng(1)
    failures = 0
    for name, n, length, c, ratio, taps, activation in ACTIVATION_CHECKS:
        x = rng.standard_normal((n, length, c))
        alpha = rng.standard_normal(c) * 0.3
        beta = rng.standard_normal(c) * 0.3 if activation == "snakebeta" else None
        up = kaiser_sinc_filter(0.5 / ratio, 0.6 / ratio, taps)
        down = kaiser_sinc_filter(0.5 / ratio, 0.6 / ratio, taps)
        geom = ActivationGeometry(n, length, c, ratio, taps, taps, activation, True)
        expected = reference.anti_aliased_activation(x, alpha, beta, np.array(up), np.array(down), geom)
        for dtype, tol in ((mx.float32, 1e-4), (mx.float16, 5e-2)):
            xa, aa = mx.array(x, dtype), mx.array(alpha, mx.float32)
            ba = None if beta is None else mx.array(beta, mx.float32)
            for stream in streams():
                for backend in backends.usable_backends(geom, stream):
                    y = anti_aliased_activation(xa, aa, ba, up_filter=up, down_filter=down, activation=activation,
                                                ratio=ratio, backend=backend, stream=stream)
                    failures += not _check_row(str(stream), backend, name, dtype, y, expected, tol)
            if emulate:
                y = metal_activation.emulate(xa, aa, ba, up, down, geom)
                failures += not _check_row("emulated Metal (CPU)", "metal", name, dtype, y, expected, tol)
    return failures
