"""``mlx-deconv tune``: autotune the bench shapes or a model's layers and print the choices as a table."""

from __future__ import annotations

import sys
from typing import List, Optional

import mlx.core as mx

from ..bench import runner as bench
from ..geometry.validation import conv_geometry
from ..tuning import tuner as autotune
from ..choice import tuned_entry
from ..tuning.cache import Signature
from .usage import UsageError, stream_argument


def speedup(entry: dict) -> Optional[float]:
    """How many times faster the tuned choice ran than the rule's, or None if the rule's was not timed."""
    seconds = entry["seconds"]
    if entry["rule"] not in seconds or entry["choice"] not in seconds:
        return None
    return seconds[entry["rule"]] / seconds[entry["choice"]]


def table(entries: List[dict]) -> str:
    """A Markdown table of tuned entries: signature, the rule's choice, the tuned one, times, speed-up."""
    names = sorted({n for e in entries for n in e["seconds"]}, key=lambda n: ("builtin", "gemm", "winograd",
                                                                              "metal").index(n)
                   if n in ("builtin", "gemm", "winograd", "metal") else 9)
    head = ["signature", "rule", "tuned"] + [f"{n} ms" for n in names] + ["tuned / rule speed-up"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for e in entries:
        sig = Signature(**e["signature"]).key() if isinstance(e.get("signature"), dict) else "?"
        up = speedup(e)
        cells = [sig, e["rule"], e["choice"]]
        cells += [f"{e['seconds'][n] * 1e3:.2f}" if n in e["seconds"] else "—" for n in names]
        cells.append("—" if up is None else f"{up:.2f}x")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _hifigan_v1():
    """HiFi-GAN V1's generator (random weights): the shapes are what tuning needs."""
    from ..models.hifigan import HiFiGAN, HiFiGANConfig

    return HiFiGAN(HiFiGANConfig(resblock="1", upsample_rates=(8, 8, 2, 2), upsample_kernel_sizes=(16, 16, 4, 4),
                                 upsample_initial_channel=512, resblock_kernel_sizes=(3, 7, 11),
                                 resblock_dilation_sizes=((1, 3, 5),) * 3))


#: ``tune --model NAME``: a factory and a sample input shape (N, frames, mel bands) per name.
MODELS = {"hifigan": (_hifigan_v1, (1, 100, 80))}


def _model(spec: str):
    """``hifigan`` or ``pkg.mod:fn`` -> ``fn()``, an ``mlx.nn.Module``."""
    import importlib

    if spec in MODELS:
        return MODELS[spec][0]()
    module, _, attr = spec.partition(":")
    if not module or not attr:
        raise UsageError(f"--model must be one of {sorted(MODELS)} or 'package.module:factory', got {spec!r}")
    try:
        imported = importlib.import_module(module)
    except ImportError as err:
        raise UsageError(f"--model {spec!r}: cannot import {module}: {err}") from None
    factory = getattr(imported, attr, None)
    if not callable(factory):
        raise UsageError(f"--model {spec!r}: {attr!r} is not a callable in {module}")
    return factory()


def add_parser(sub) -> None:
    """Registers ``tune`` on the command line's subparsers."""
    t = sub.add_parser("tune", help="autotune backend='auto' on the bench shapes or a model's layers; print the choices")
    t.add_argument("--shapes", nargs="*", help=f"subset of {[s.name for s in bench.SHAPES]}")
    t.add_argument("--model", metavar="MODULE:FACTORY", help="tune the layers of FACTORY() (an mlx.nn.Module) instead")
    t.add_argument("--input-shape", help="the sample input's shape for --model, e.g. 1,100,80")
    t.add_argument("--backward", action="store_true", help="time forward + backward (training)")
    t.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    t.add_argument("--stream", default=None, help="'cpu' or 'gpu' (default: the default stream)")
    t.add_argument("--clear", action="store_true", help="delete the tuning cache (memory and disk) and exit")
    t.set_defaults(run=run)


def run(args) -> int:
    """``mlx-deconv tune``: tune the bench shapes or a model's layers and print the table."""
    tuner = autotune.tuner()
    if args.clear:
        removed = tuner.clear()
        folder = tuner.files.folder()
        print(f"removed {len(removed)} file(s) from {folder}" if removed else f"nothing to remove in {folder}")
        return 0
    stream = stream_argument(args.stream)
    dtype = getattr(mx, args.dtype)
    if args.model:
        if args.input_shape:
            try:
                shape = tuple(int(v) for v in args.input_shape.split(","))
            except ValueError:
                raise UsageError(f"--input-shape must be integers separated by commas, got {args.input_shape!r}") from None
        elif args.model in MODELS:
            shape = MODELS[args.model][1]
        elif ":" not in args.model:
            raise UsageError(f"--model must be one of {sorted(MODELS)} or 'package.module:factory', got {args.model!r}")
        else:
            raise UsageError(f"--model {args.model!r} needs --input-shape, e.g. --input-shape 1,100,80")
        device = mx.default_device()
        mx.set_default_device(stream.device)  # the model's layers run on the default stream
        try:
            entries = autotune.tune_model(_model(args.model), mx.random.normal(shape).astype(dtype), args.backward)
        finally:
            mx.set_default_device(device)
        what = f"the conv layers of {args.model} on an input of shape {shape}"
    else:
        valid = [s.name for s in bench.SHAPES]
        unknown = [name for name in args.shapes or () if name not in valid]
        if unknown:
            raise SystemExit(f"--shapes: unknown {', '.join(unknown)}; the bench shapes are {', '.join(valid)}")
        shapes = bench.SHAPES if not args.shapes else [s for s in bench.SHAPES if s.name in args.shapes]
        entries = []
        for s in shapes:
            geom, _ = conv_geometry((s.batch, s.length, s.in_channels),
                                    (s.out_channels, s.kernel_size, s.in_channels // s.groups), **s.kwargs())
            entries.append(tuned_entry(geom, stream, dtype, args.backward))
            print(f"tuned {s.name}", file=sys.stderr)
        what = "the bench shapes"
    kind = "forward+backward" if args.backward else "forward"
    print(f"\nautotuned {what}, {kind}, {args.dtype}, {stream}; cache {tuner.files.folder()}\n")
    print(table(entries) if entries else "no conv_transpose1d/conv1d call with backend='auto' was met")
    return 0
