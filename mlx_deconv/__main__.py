"""The command line: ``mlx-deconv`` or ``python -m mlx_deconv``, with info, demo, check, bench and tune."""

from __future__ import annotations

import argparse
import os
import sys
from typing import List, Optional

import mlx.core as mx
import numpy as np

from . import __version__, backends
from .tuning import tuner as autotune, command as autotune_command
from .bench import runner as bench
from .cli import vocode
from .ops import patch, reference
from .runtime.devices import is_metal, resolve_stream
from .ops.functional import conv_transpose1d
from .geometry.validation import conv_geometry


def streams() -> List[mx.Stream]:
    """The default stream of every device this machine has."""
    found = [mx.default_stream(mx.cpu)]
    if mx.is_available(mx.gpu):
        found.append(mx.default_stream(mx.gpu))
    return found


def info(_args=None) -> None:
    print(f"mlx_deconv {__version__} on {bench.machine()}")
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


def _print_blas() -> None:
    """Which library serves MLX's CPU matmul, whether it is the optimized one, and its measured rate."""
    from .runtime.blas import blas_info

    found = blas_info()
    state = "optimized (loaded by mlx_deconv)" if found["optimized"] else "MLX's own"
    print(f"CPU matmul BLAS: {state}: {found['provider'] or 'cannot be told on this platform'}")
    if found["library"]:
        print(f"  library: {found['library']}")
    threads = found["threads"] if found["threads"] is not None else "left to the library / environment"
    print(f"  threads: {threads}; MLX matmul (2048x512 @ 512x2048, float32): {found['matmul_gflops']} GFLOP/s")
    for note in found["notes"]:
        print(f"  note: {note}")


CHECKS = [
    # (name, N, L, C_in, C_out, K, conv kwargs)
    ("dense stride 4", 2, 9, 6, 4, 8, dict(stride=4, padding=2)),
    ("dense 3 row shifts", 2, 10, 6, 4, 5, dict(stride=2, padding=1)),
    ("grouped dilated", 2, 7, 8, 6, 3, dict(stride=2, dilation=3, groups=2, padding="same")),
    ("depthwise", 1, 11, 5, 5, 12, dict(stride=2, groups=5, padding="causal")),
    ("L=1 K=1", 3, 1, 3, 2, 1, dict(stride=3, output_padding=2)),
    ("stride > K asym", 1, 6, 2, 3, 2, dict(stride=5, padding=(1, 3))),
]


# Column widths of check's table: the longest entry plus two spaces, so columns never touch.
_STREAM_WIDTH = max(len("emulated Metal (CPU)"), len(str(mx.default_stream(mx.cpu))) + 1) + 2
_BACKEND_WIDTH = max(len(name) for name in ("builtin", "gemm", "winograd", "metal", "backend")) + 2
_CASE_WIDTH = max(len(case[0]) for case in CHECKS) + 2
_DTYPE_WIDTH = len("bfloat16") + 2


def _check_line(label: str, backend: str, case: str, dtype: str, err: str, ok: str) -> str:
    return f"{label:<{_STREAM_WIDTH}}{backend:<{_BACKEND_WIDTH}}{case:<{_CASE_WIDTH}}{dtype:<{_DTYPE_WIDTH}}{err:>11}  {ok}"


def _check_row(label: str, backend: str, case: str, dtype, y: mx.array, expected: np.ndarray, tol: float) -> bool:
    err = float(np.abs(np.array(y.astype(mx.float32)) - expected).max())
    ok = err <= tol * (1 + np.abs(expected).max())
    dt = str(dtype).split(".")[-1]
    print(_check_line(label, backend, case, dt, f"{err:.2e}", "yes" if ok else "NO"))
    return ok


def check(_args=None) -> int:
    """Every backend on every stream against the float64 oracle; returns the number of failures.

    Without Metal (Linux), the Metal kernel runs in the CPU emulator instead,
    from the exact source MLX generates, when a C++ compiler is present.
    """
    from .backends import metal_emulator

    emulate = not mx.metal.is_available() and metal_emulator.compiler() is not None
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
                y = metal_emulator.run(xa, wa, ba, geom)
                failures += not _check_row("emulated Metal (CPU)", "metal", name, dtype, y, expected, tol)
    if not mx.metal.is_available():
        if emulate:
            print("Metal is not available here: the metal rows ran MLX's generated Metal source, compiled with a C++ compiler, on the CPU.")
        else:
            print("Metal is not available here, and no C++ compiler was found to emulate it: the metal backend was not checked.")
    print("all backends agree with the float64 reference" if not failures else f"{failures} FAILED")
    return failures


def demo(_args=None) -> None:
    """A HiFi-GAN-style upsampling stack on a random mel spectrogram, checked against the oracle."""
    stream = resolve_stream(None)
    rng = np.random.default_rng(0)
    # (C_in, C_out, K, stride, padding) of HiFi-GAN V1's four upsampling layers, channels / 8.
    stack = [(64, 32, 16, 8, 4), (32, 16, 16, 8, 4), (16, 8, 4, 2, 1), (8, 4, 4, 2, 1)]
    h = mx.array(rng.standard_normal((1, 50, 64)), mx.float32)
    print(f"input (N, L, C) = {h.shape}: 50 mel frames")
    worst = 0.0
    for c_in, c_out, k, s, p in stack:
        w = mx.array(rng.standard_normal((c_out, k, c_in)) / np.sqrt(c_in * k), mx.float32)
        b = mx.array(rng.standard_normal(c_out) * 0.1, mx.float32)
        geom, _ = conv_geometry(h.shape, w.shape, stride=s, padding=p)
        chosen = backends.resolve_backend("auto", geom, stream)
        y = conv_transpose1d(h, w, b, stride=s, padding=p)
        expected = reference.conv_transpose1d(np.array(h), np.array(w), np.array(b), geom)
        err = float(np.abs(np.array(y) - expected).max())
        worst = max(worst, err)
        print(f"  ConvTranspose K={k:<2} stride={s} padding={p}: {tuple(h.shape)} -> {tuple(y.shape)}  "
              f"backend={chosen}  max |y - float64 reference| = {err:.2e}")
        h = mx.maximum(y, 0.1 * y)  # leaky ReLU between layers, as in HiFi-GAN
    print(f"upsampled 50 frames x 256 = {h.shape[1]} samples; worst error {worst:.2e} (float32)")
    if worst > 1e-4:
        raise SystemExit("demo: disagreement with the reference")


def program_name(argv0: Optional[str] = None) -> str:
    """How the user invoked us: ``mlx-deconv`` for the script, ``python -m mlx_deconv`` for the module."""
    argv0 = sys.argv[0] if argv0 is None else argv0
    name = os.path.basename(argv0)
    if not name or name in ("__main__.py", "-c", "-m"):
        return "python -m mlx_deconv"
    return name


DESCRIPTION = ("1-D transposed convolution for MLX: device info (info), a checked upsampling stack (demo), "
               "every backend against a float64 reference (check), the benchmark (bench), and measured "
               "choices for backend='auto' on this machine (tune); and a vocoder checkpoint's mel spectrogram to a WAV (vocode).")


def build_parser() -> argparse.ArgumentParser:
    """The command line's parser: one subcommand per job."""
    parser = argparse.ArgumentParser(prog=program_name(), description=DESCRIPTION)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="version, devices, backends per stream")
    sub.add_parser("demo", help="a small upsampling stack, checked against the float64 reference")
    sub.add_parser("check", help="every backend on every stream against the float64 reference")
    b = sub.add_parser("bench", help="time the decoder shapes (HiFi-GAN, BigVGAN, ...) on every backend, "
                                     "conv1d's residual-block shapes, and a HiFi-GAN generator end to end")
    b.add_argument("--shapes", nargs="*", help=f"subset of {[s.name for s in bench.SHAPES]} (conv_transpose1d) "
                                               f"and {[s.name for s in bench.bench_conv1d.CONV1D_SHAPES]} (conv1d); "
                                               "leaves out the end-to-end decoder unless --only names it")
    b.add_argument("--only", nargs="+", choices=bench.PARTS, metavar="PART",
                   help=f"run only these parts, of {list(bench.PARTS)} (default: all)")
    b.add_argument("--no-decoder", action="store_true",
                   help="leave out the end-to-end HiFi-GAN V1 decoder (on MLX's ops it takes tens of seconds or more)")
    b.add_argument("--decoder-seconds", type=float, default=1.0, metavar="SECONDS",
                   help="audio the end-to-end decoder makes (default: 1 s at 22.05 kHz)")
    b.add_argument("--no-models", action="store_true",
                   help="leave out the models part (mlx-audio's decoders on plain MLX and under patch_mlx())")
    b.add_argument("--models", nargs="+", choices=[m.name for m in bench.bench_models.MODELS], metavar="MODEL",
                   help=f"the models part's decoders, of {[m.name for m in bench.bench_models.MODELS]} (default: all)")
    b.add_argument("--model-frames", nargs="+", type=int, metavar="FRAMES",
                   help="the models part's input lengths in frames "
                        f"(default: {' '.join(map(str, bench.bench_models.FRAMES))})")
    b.add_argument("--bigvgan-frames", type=int, metavar="FRAMES",
                   help=f"mel frames of the bigvgan part (default: {bench.bench_bigvgan.FRAMES})")
    b.add_argument("--slow", type=float, default=0.5, metavar="SECONDS",
                   help="a conv1d backend whose first call takes longer is timed twice, without warm-up (default 0.5)")
    b.add_argument("--no-tuned", action="store_true", help="leave out the tuned column (autotuning's choice)")
    b.add_argument("--backward", action="store_true", help="time forward + gradients w.r.t. x and weight")
    b.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    b.add_argument("--stream", default=None, help="'cpu' or 'gpu' (default: the default stream)")
    b.add_argument("--repeat", type=int, default=5)
    b.add_argument("--warmup", type=int, default=2)
    b.add_argument("--json", help="also write the rows to this JSON file")
    b.add_argument("--plot", help="also write a bar chart of the speed-ups to this PNG (needs matplotlib)")
    b.add_argument("--long-signal", type=float, metavar="SECONDS",
                   help="instead: run the HiFi-GAN V1 stack over this much 24 kHz audio and report peak memory")
    b.add_argument("--no-torch", action="store_true", help="leave out the PyTorch column even when torch is installed")
    t = sub.add_parser("tune", help="autotune backend='auto' on the bench shapes or a model's layers; print the choices")
    t.add_argument("--shapes", nargs="*", help=f"subset of {[s.name for s in bench.SHAPES]}")
    t.add_argument("--model", metavar="MODULE:FACTORY", help="tune the layers of FACTORY() (an mlx.nn.Module) instead")
    t.add_argument("--input-shape", help="the sample input's shape for --model, e.g. 1,100,80")
    t.add_argument("--backward", action="store_true", help="time forward + backward (training)")
    t.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    t.add_argument("--stream", default=None, help="'cpu' or 'gpu' (default: the default stream)")
    t.add_argument("--clear", action="store_true", help="delete the tuning cache (memory and disk) and exit")
    vocode.add_parser(sub)
    return parser


def main(argv: Optional[List[str]] = None) -> None:
    """Runs one command.

    Args:
        argv: the arguments after the program name; default ``sys.argv[1:]``.
    """
    args = build_parser().parse_args(argv)
    if args.command == "vocode":
        sys.exit(args.handler(args))
    if args.command == "tune":
        autotune_command.main(args)
    elif args.command == "info":
        info()
    elif args.command == "demo":
        demo()
    elif args.command == "check":
        sys.exit(1 if check() else 0)
    else:
        bench.main(args)


if __name__ == "__main__":
    main()
