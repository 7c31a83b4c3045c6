"""``mlx-deconv bench``: the benchmark's command-line face; the parts themselves are :mod:`mlx_deconv.bench`."""

from __future__ import annotations

from ..bench import runner as bench
from .usage import stream_argument


def add_parser(sub) -> None:
    """Registers ``bench`` on the command line's subparsers."""
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
    b.set_defaults(run=run)


def run(args) -> int:
    """Runs the parts ``args`` select and prints their tables."""
    stream_argument(args.stream)  # a bad --stream is one line before minutes of work, not a traceback after
    bench.main(args)
    return 0
