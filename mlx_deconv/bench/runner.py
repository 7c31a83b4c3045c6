"""``python -m mlx_deconv bench``: the decoder shapes of docs/design.md, every backend, one run.

Six parts, each optional: the transposed rows (:mod:`.transposed`),
the ``conv1d`` rows (:mod:`.conv1d`), the end-to-end HiFi-GAN V1
generator (:mod:`.decoder`), the short calls (:mod:`.short_calls`, with
HiFi-GAN V1 streamed a few frames a step, :mod:`.streaming`),
mlx-audio's decoders plain against patched (:mod:`.patched_decoders`), and BigVGAN's
anti-aliased activation and generator (:mod:`.bigvgan`). Each figure is the median of ``repeat``
timed runs after ``warmup`` untimed ones, the backends timed in turn within
each repetition; calls of MLX's naive loops, seconds each, are timed fewer
times (:func:`~mlx_deconv.bench.timing.timed_medians`). Ratios compare
backends measured in the same run on the same stream, so a noisy machine
moves them less than it moves the times. PyTorch is timed in its own phase
after every MLX timing of the run: calls of both interleaved in one process
slowed PyTorch down.
"""

from __future__ import annotations

import json

import mlx.core as mx

from . import bigvgan as bench_bigvgan, conv1d as bench_conv1d, decoder as bench_decoder, patched_decoders as bench_models, short_calls
from . import streaming as bench_streaming, training as bench_training
from .decoder import HIFIGAN_STACK, long_signal  # noqa: F401  (re-exported)
from .timing import machine, machine_details, medians_phrase  # noqa: F401  (machine, machine_details: re-exported)
from .transposed import (SHAPES, Shape, add_torch, interleaved_medians, plot, run, run_mlx,  # noqa: F401
                               table)

#: The parts of a run, in the order they run.
PARTS = ("transposed", "conv1d", "decoder", "short", "models", "bigvgan", "training", "streams")
#: Parts that run only when ``--only`` names them: ``streams`` streams whole decoders through
#: :func:`mlx_deconv.stream`, which first measures each one's receptive field (minutes).
OPT_IN = ("streams",)


def select(args) -> tuple:
    """``(transposed shapes, conv1d shapes, decoder?)`` from ``--only``, ``--shapes``, ``--no-decoder``, ``--backward``.

    ``--shapes`` picks from both shape lists and leaves out the parts it names
    no shape of (the decoder too, unless ``--only`` names it).
    """
    only = getattr(args, "only", None)
    parts = set(only or [p for p in PARTS if p not in OPT_IN])
    if getattr(args, "no_decoder", False):
        parts.discard("decoder")
    shapes = [s for s in SHAPES if not args.shapes or s.name in args.shapes]
    conv = [s for s in bench_conv1d.CONV1D_SHAPES if not args.shapes or s.name in args.shapes]
    if args.shapes:
        known = [s.name for s in SHAPES] + [s.name for s in bench_conv1d.CONV1D_SHAPES]
        unknown = [n for n in args.shapes if n not in known]
        if unknown or not (shapes or conv):
            raise SystemExit(f"--shapes: {unknown or args.shapes} not among {known}")
        if not only:
            parts.discard("decoder")
    if args.backward and "decoder" in parts:
        if only and "decoder" in only:
            raise SystemExit("--backward: the end-to-end decoder row times inference only; leave out --only decoder")
        parts.discard("decoder")
    return (shapes if "transposed" in parts else [], conv if "conv1d" in parts else [], "decoder" in parts)


def _long_signal(args) -> None:
    result = long_signal(args.long_signal, stream=args.stream)
    print(f"HiFi-GAN V1 upsampling stack over {result['seconds_of_audio']:g} s of 24 kHz audio "
          f"({result['samples']} samples) in {result['wall_seconds']:.1f} s; {machine()}")
    print("| layer | input MB | output MB | peak MB above what was allocated before the layer | peak / output |")
    print("|---|---|---|---|---|")
    for r in result["layers"]:
        print(f"| {r['layer']} | {r['in_bytes'] / 1e6:.0f} | {r['out_bytes'] / 1e6:.0f} | "
              f"{r['peak_above_inputs'] / 1e6:.0f} | {r['peak_above_inputs'] / r['out_bytes']:.2f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(machine=machine(), machine_details=machine_details(), **result), f, indent=2)


def _short_calls_selected(args) -> bool:
    """The short-calls grid runs unless ``--only`` leaves it out, or ``--shapes``/``--backward`` narrow the run."""
    only = getattr(args, "only", None)
    if only:
        return "short" in only
    return not args.shapes and not args.backward and not getattr(args, "no_decoder", False)


def select_models(args) -> list:
    """The cases of the models part (:mod:`.patched_decoders`, mlx-audio's decoders plain and patched) this run takes.

    Like the decoder, the part runs unless ``--only`` leaves it out, or ``--shapes``,
    ``--backward`` (it times inference only), ``--no-decoder`` or ``--no-models`` narrow the run;
    ``--models`` picks cases by name.
    """
    only = getattr(args, "only", None)
    if only:
        if "models" not in only:
            return []
        if getattr(args, "backward", False):
            raise SystemExit("--backward: the models part times inference only; leave out --only models")
    elif (args.shapes or args.backward or getattr(args, "no_decoder", False)
          or getattr(args, "no_models", False)):
        return []
    return bench_models.select(getattr(args, "models", None))


def _training_selected(args) -> bool:
    """The training part runs unless ``--only`` leaves it out, or ``--shapes``/``--backward``/``--no-decoder``
    narrow the run (``--only training`` runs it under ``--backward`` too: a step is forward and backward)."""
    only = getattr(args, "only", None)
    return "training" in only if only else _short_calls_selected(args)


def _bigvgan_selected(args) -> bool:
    """The BigVGAN part runs unless ``--only`` leaves it out, or ``--shapes``/``--backward``/``--no-decoder`` narrow the run."""
    only = getattr(args, "only", None)
    if only and "bigvgan" in only and getattr(args, "backward", False):
        raise SystemExit("--backward: the bigvgan part times inference only; leave out --only bigvgan")
    return "bigvgan" in only if only else _short_calls_selected(args)


def main(args) -> None:
    """``bench``: the MLX phase of every selected part, then PyTorch's, then the tables (and JSON, plot)."""
    if args.long_signal:
        return _long_signal(args)
    shapes, conv_shapes, decoder = select(args)
    dtype = getattr(mx, args.dtype)
    with_torch, with_tuned = not args.no_torch, not getattr(args, "no_tuned", False)
    slow = getattr(args, "slow", 0.5)
    common = dict(stream=args.stream, warmup=args.warmup, repeat=args.repeat)
    # MLX phase: every MLX timing of the run.
    rows = run_mlx(shapes, dtype=dtype, backward=args.backward, with_tuned=with_tuned, **common) if shapes else []
    conv_rows = bench_conv1d.run(conv_shapes, dtype=dtype, backward=args.backward, with_tuned=with_tuned,
                                 slow=slow, **common) if conv_shapes else []
    dec = bench_decoder.run(seconds=getattr(args, "decoder_seconds", 1.0), with_torch=with_torch,
                            slow=bench_decoder.SLOW, **common) if decoder else None
    short_rows = short_calls.run(dtype=dtype, stream=args.stream) if _short_calls_selected(args) else []
    streamed = bench_streaming.run(with_torch=with_torch, **common) if _short_calls_selected(args) else None
    model_cases = select_models(args)
    models = bench_models.run(model_cases, frames=getattr(args, "model_frames", None) or bench_models.FRAMES,
                              slow=bench_models.SLOW, **common) if model_cases else None
    big = bench_bigvgan.run(getattr(args, "bigvgan_frames", None) or bench_bigvgan.FRAMES, with_torch=with_torch,
                            **common) if _bigvgan_selected(args) else None
    trained = bench_training.run(**common) if _training_selected(args) else None
    decoders = (bench_streaming.run_decoders(steps=args.repeat, patched=True)
                if "streams" in (getattr(args, "only", None) or ()) else None)
    # PyTorch phase.
    if with_torch:
        if big is not None:
            bench_bigvgan.add_torch(big, args.warmup, args.repeat)
        if streamed is not None:
            bench_streaming.add_torch(streamed, args.warmup, args.repeat)
        if trained is not None:
            bench_training.add_torch(trained, args.warmup, args.repeat)
        add_torch(rows, dtype, args.warmup, args.repeat, args.backward)
        bench_conv1d.add_torch(conv_rows, dtype, args.warmup, args.repeat, args.backward)
        if dec is not None:
            bench_decoder.add_torch(dec, args.warmup, args.repeat)
    kind = "forward+backward" if args.backward else "forward"
    settings = f"{args.dtype}, stream {args.stream or 'default'}; {machine()}; {medians_phrase(args.repeat, args.warmup)}"
    tuned = (" \"tuned\": autotuning's choice (cached from an earlier run on this machine, or timed now), "
             "timed in this run." if with_tuned else "")
    details = machine_details()
    torch_note = (f" PyTorch {details['torch']} timed after every MLX timing of the run, with "
                  f"{details['torch_threads']} threads (its default)." if with_torch and details["torch"] else "")
    if rows:
        print(f"\nconv_transpose1d, {kind}, {settings}.{tuned}{torch_note}\n")
        print(table(rows, args.backward))
    if conv_rows:
        print(f"\nconv1d (HiFi-GAN V1 residual blocks, {bench_conv1d.FRAMES} mel frames), {kind}, {settings}."
              f"{tuned}{torch_note}\n")
        print(bench_conv1d.table(conv_rows, args.repeat, slow))
    if dec is not None:
        print(f"\nHiFi-GAN V1 generator end to end, float32, stream {args.stream or 'default'}; {machine()}; "
              + bench_decoder.caption(dec, args.repeat, args.warmup, bench_decoder.SLOW) + torch_note + "\n")
        print(bench_decoder.table(dec, args.repeat))
    if short_rows:
        short_settings = (f"the fitting grid in {args.dtype}, stream {args.stream or 'default'}; {machine()}; "
                          f"{short_calls.timing_phrase()}")
        print(f"\nShort calls: `auto` against MLX's function called directly on {len(short_rows)} calls, "
              f"{short_settings}. {short_calls.caption(short_rows)}. Per grid, the 25 lowest ratios, then every "
              "cell's summary\n")
        print(short_calls.table(short_rows, worst=25))
    if streamed is not None:
        print(f"\nStreaming HiFi-GAN V1 (`StreamingHiFiGAN.step`), batch 1, float32, stream {args.stream or 'default'}; "
              f"{machine()}; median of {args.repeat} steps after {args.warmup}. PyTorch: the same weights run on "
              f"the chunk plus the {streamed['context']} mel frames of left context its audio depends on, "
              f"under `torch.no_grad()`.{torch_note}\n")
        print(bench_streaming.table(streamed))
    if decoders is not None:
        print(f"\nWhole decoders streamed through mlx_deconv.stream (mlx-audio's under patch_mlx()), against their "
              f"whole decode and mlx-audio's own streaming, float32, stream {args.stream or 'default'}; {machine()}; "
              f"median of {args.repeat} steady steps.\n")
        print(bench_streaming.decoders_table(decoders))
    if models is not None:
        caption = bench_models.caption(models, args.repeat, args.warmup, bench_models.SLOW)
        print(f"\nWhole decoders, plain MLX against mlx_deconv.patch_mlx(), float32, "
              f"stream {args.stream or 'default'}; {machine()}. {caption}\n")
        print(bench_models.table(models, args.repeat))
    if big is not None:
        print(f"\nBigVGAN's anti-aliased activation, fused against unfused and PyTorch, stream {args.stream or 'default'}; "
              f"{machine()}. " + bench_bigvgan.caption(big, args.repeat, args.warmup) + torch_note + "\n")
        print(bench_bigvgan.activation_table(big, args.repeat))
        print()
        print(bench_bigvgan.generator_table(big, args.repeat))
    if trained is not None:
        print(f"\nA training step (forward, L1 loss, the gradient of every parameter), float32, "
              f"stream {args.stream or 'default'}; {machine()}; {medians_phrase(args.repeat, args.warmup)}."
              f"{torch_note} {bench_training.paired_note(trained)}\n")
        print(bench_training.table(trained))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(machine=machine(), machine_details=details, kind=kind, dtype=args.dtype,
                           stream=args.stream or "default", repeat=args.repeat, warmup=args.warmup, timing="primed",
                           slow_seconds=slow, decoder_slow_seconds=bench_decoder.SLOW, rows=rows,
                           conv1d_rows=conv_rows, decoder=None if dec is None else bench_decoder.public(dec),
                           short_calls=short_rows, short_calls_summary=short_calls.summary(short_rows),
                           models=models, bigvgan=None if big is None else bench_bigvgan.public(big),
                           streaming=None if streamed is None else bench_streaming.public(streamed),
                           streamed_decoders=decoders,
                           training=None if trained is None else bench_training.public(trained)),
                      f, indent=2)
    if args.plot and rows:
        try:
            plot(rows, args.plot, f"{kind}, {args.dtype}")
            print(f"\nwrote {args.plot}")
        except ImportError:
            print("\n--plot needs matplotlib (pip install 'mlx-deconv[examples]'): no figure written")
