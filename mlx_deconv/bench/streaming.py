"""``bench``'s streaming rows: :class:`~mlx_deconv.hifigan.StreamingHiFiGAN` (V1) fed a few mel frames a step.

One part of the benchmark in one module (about 390 lines): HiFi-GAN V1's stream against PyTorch, and
whole decoders through :func:`mlx_deconv.stream` (:func:`run_decoders`, ``bench --only streams``).

For each chunk size the stream is fed chunks of random mel frames; each step (``step`` and the
evaluation of the audio it returns) is timed once the stream is steady (its context filled, a whole
chunk of audio out per step) and after ``warmup`` more.
The real-time factor is the median step over the audio one chunk makes (``frames * hop / rate``).

PyTorch's column: no streaming generator exists there, so it is what a PyTorch user does instead,
the same network (same weights) run on the chunk with the left context that the chunk's audio
depends on (:func:`left_context`), in its own phase after every MLX timing.
"""

from __future__ import annotations

import math
import sys
from typing import Dict, List, Optional, Sequence

import mlx.core as mx
import numpy as np

from .timing import torch_phase

#: Mel frames per step.
CHUNKS = (2, 8, 32)


def _one_side(kernel: int, dilation: int = 1) -> float:
    return dilation * (kernel - 1) / 2


def left_context(config) -> int:
    """Mel frames before a chunk that its audio depends on: every layer's one-sided reach, in frames.

    ``conv_pre`` and every stage's residual blocks (the widest block's reach, at that stage's rate),
    the upsampling layers' overlap, and ``conv_post`` at the audio rate.
    """
    reach, rate = _one_side(7), 1
    for u, k in zip(config.upsample_rates, config.upsample_kernel_sizes):
        reach += (k / u) / 2  # the transposed layer's overlap, in input frames
        rate *= u
        per_block = []
        for kernel, dilations in zip(config.resblock_kernel_sizes, config.resblock_dilation_sizes):
            one = sum(_one_side(kernel, d) for d in dilations)
            if config.resblock == "1":
                one += len(dilations) * _one_side(kernel)
            per_block.append(one)
        reach += max(per_block) / rate
    reach += _one_side(7) / rate
    return math.ceil(reach)


def run(chunks: Sequence[int] = CHUNKS, *, config=None, stream=None, warmup: int = 2, repeat: int = 5,
        with_torch: bool = True, seed: int = 0) -> Dict:
    """Times the streaming steps (MLX phase; PyTorch's in :func:`add_torch`).

    Args:
        chunks: mel frames per step. Default: :data:`CHUNKS`.
        config: a :class:`~mlx_deconv.hifigan.HiFiGANConfig`. Default: HiFi-GAN V1.
        stream: where the steps run (``None``: the default stream).
        warmup, repeat (int): steps left out, then timed, per chunk size.
        with_torch (bool): build PyTorch's twin of the generator for :func:`add_torch`.

    Returns:
        dict: ``rows`` (per chunk size: ``frames``, ``audio_seconds``, ``seconds`` per variant),
        ``context`` (PyTorch's left frames), ``config`` (its name) and private entries for :func:`add_torch`.
    """
    import time

    from ..models.hifigan import V1, HiFiGAN, StreamingHiFiGAN, torch_generator
    from ..runtime.devices import resolve_stream

    config = config or V1
    stream = resolve_stream(stream)
    torch_model = None
    if with_torch:
        try:
            import torch

            torch.manual_seed(seed)
            torch_model = torch_generator(config, weight_norm=None).eval()
        except ImportError:
            torch_model = None
    model = HiFiGAN(config)
    if torch_model is not None:
        model.load_torch_state_dict({k: v.detach().numpy() for k, v in torch_model.state_dict().items()})
    mx.eval(model.parameters())
    rng = np.random.default_rng(seed)
    hop, context = math.prod(config.upsample_rates), left_context(config)
    rows: List[Dict] = []
    for frames in chunks:
        sys.stderr.write(f"streaming: HiFi-GAN steps of {frames} frames\n")
        streamer = StreamingHiFiGAN(model)
        # The first steps only fill the layers' context (little or no audio out): untimed.
        untimed = warmup + math.ceil(2 * context / frames)
        mels = [rng.normal(0, 1, (1, frames, config.num_mels)).astype(np.float32) for _ in range(untimed + repeat)]
        times = []
        with mx.stream(stream):
            for i, mel in enumerate(mels):
                chunk = mx.array(mel)
                mx.eval(chunk)
                start = time.perf_counter()
                audio = streamer.step(chunk)
                mx.eval(audio)
                if i >= untimed:
                    times.append(time.perf_counter() - start)
                    if audio.shape[-1] != frames * hop:
                        raise RuntimeError(f"a steady step of {frames} frames gave {audio.shape[-1]} samples, "
                                           f"not {frames * hop}")
        rows.append(dict(frames=frames, audio_seconds=frames * hop / config.sampling_rate,
                         seconds={"mlx_deconv": float(np.median(times))}, runs={"mlx_deconv": len(times)}))
    return dict(rows=rows, context=context, hop=hop, _torch=torch_model, _rng=rng)


def add_torch(result: Dict, warmup: int = 2, repeat: int = 5) -> bool:
    """Times PyTorch's generator on each chunk plus its left context, in its own phase; False without torch."""
    model = result.get("_torch")
    if model is None:
        return False
    import time

    import torch

    rng = result["_rng"]
    with torch_phase():
        for row in result["rows"]:
            frames = row["frames"] + result["context"]
            mels = [torch.from_numpy(rng.normal(0, 1, (1, model.conv_pre.in_channels, frames)).astype(np.float32))
                    for _ in range(warmup + repeat)]
            times = []
            for i, mel in enumerate(mels):
                start = time.perf_counter()
                with torch.no_grad():
                    model(mel)
                if i >= warmup:
                    times.append(time.perf_counter() - start)
            row["seconds"]["torch"], row["runs"]["torch"] = float(np.median(times)), len(times)
    return True


def public(result: Dict) -> Dict:
    """The result without what cannot go to JSON."""
    return {k: v for k, v in result.items() if not k.startswith("_")}


def table(result: Dict) -> str:
    """A Markdown table: per chunk size, the step's time and real-time factor, and PyTorch's."""
    head = ["frames per step", "audio per step ms", "step ms", "real-time factor",
            f"PyTorch ms (chunk + {result['context']} frames of context)", "PyTorch real-time factor"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in result["rows"]:
        ours, audio = r["seconds"]["mlx_deconv"], r["audio_seconds"]
        theirs: Optional[float] = r["seconds"].get("torch")
        lines.append("| " + " | ".join([str(r["frames"]), f"{audio * 1e3:.1f}", f"{ours * 1e3:.1f}", f"{ours / audio:.2f}",
                                        "-" if theirs is None else f"{theirs * 1e3:.1f}",
                                        "-" if theirs is None else f"{theirs / audio:.2f}"]) + " |")
    return "\n".join(lines)


# -- Any decoder through mlx_deconv.stream, beside mlx-audio's own streaming and the whole decode -----------------------
#: The decoders of :func:`run_decoders`, in table order.
DECODERS = ("hifigan", "bigvgan", "mlx-audio-bigvgan", "dac", "snac")


def _decoder(name: str, tiny: bool):
    """``(label, fn, make_input(frames), in_axis, out_axis, sampling_rate, own)``; ``own`` is mlx-audio's streaming or None.

    ``own(frames, chunk)`` streams ``frames`` input frames in chunks the way mlx-audio's own streaming does and
    returns ``(whole, pieces, step seconds, note)``.
    """
    from .patched_decoders import _bigvgan, _dac

    rng = np.random.default_rng(1)

    def normal(shape):
        return lambda frames: mx.array(rng.standard_normal(tuple(frames if s is None else s for s in shape))
                                       .astype(np.float32))

    if name in ("hifigan", "bigvgan"):
        if name == "hifigan":
            from ..models.hifigan import V1, HiFiGAN, HiFiGANConfig

            config = HiFiGANConfig(resblock="1", upsample_rates=(4, 2), upsample_kernel_sizes=(8, 4),
                                   upsample_initial_channel=16, resblock_kernel_sizes=(3, 5),
                                   resblock_dilation_sizes=((1, 3), (1, 3)), num_mels=8) if tiny else V1
            mx.random.seed(0)
            model, label = HiFiGAN(config), "mlx_deconv HiFi-GAN V1" + (" (tiny)" if tiny else "")
        else:
            from ..models.bigvgan import BigVGAN, BigVGANConfig
            from ..models.bigvgan.config import V2_24KHZ_100BAND_256X as v2

            config = BigVGANConfig.from_dict({**v2.to_dict(), "upsample_rates": [4, 2], "upsample_kernel_sizes": [8, 4],
                                              "upsample_initial_channel": 16, "resblock_kernel_sizes": [3, 5],
                                              "resblock_dilation_sizes": [[1, 3], [1, 2]], "num_mels": 8,
                                              "hop_size": 8}) if tiny else v2
            mx.random.seed(0)
            model, label = BigVGAN(config), "mlx_deconv BigVGAN v2 24 kHz" + (" (tiny)" if tiny else "")
        mx.eval(model.parameters())
        return label, model, normal((1, None, config.num_mels)), 1, 1, config.sampling_rate, None
    if name == "mlx-audio-bigvgan":
        built = _bigvgan(tiny)
        return ("mlx-audio BigVGAN (256 channels, rates 4, 4, 2, 2)" if not tiny else "mlx-audio BigVGAN (tiny)",
                built.plain, normal((1, 8 if tiny else 100, None)), 2, 2, 24000, None)
    if name == "dac":
        built = _dac(tiny)
        latent = 8 if tiny else 1024
        return ("mlx-audio DAC decoder (384 channels, rates 8, 5, 4, 2)" if not tiny else "mlx-audio DAC decoder (tiny)",
                built.plain, normal((1, None, latent)), 1, 1, 24000, None)  # rates 8, 5, 4, 2: 24 kHz DAC's
    if name == "snac":
        return _snac(tiny)
    raise ValueError(f"decoder {name!r} is not one of {DECODERS}")


def _snac(tiny: bool):
    """SNAC without its noise blocks (random draws: no stream, its own included, can equal a whole decode)."""
    import time

    from mlx_audio.codec.models.snac.snac import SNAC

    mx.random.seed(0)
    if tiny:
        model = SNAC(sampling_rate=24000, encoder_dim=4, encoder_rates=[2, 3], decoder_dim=16, decoder_rates=[3, 2],
                     attn_window_size=None, codebook_size=16, codebook_dim=4, vq_strides=[4, 2, 1], noise=False)
    else:  # 24 kHz SNAC's shape (Orpheus' decoder), at a quarter of its 1024 channels
        model = SNAC(sampling_rate=24000, encoder_dim=48, encoder_rates=[2, 4, 8, 8], decoder_dim=256,
                     decoder_rates=[8, 8, 4, 2], attn_window_size=None, codebook_size=4096, codebook_dim=8,
                     vq_strides=[4, 2, 1], noise=False)
    mx.eval(model.parameters())
    rng = np.random.default_rng(2)
    codes_of = {}

    def codes(frames):
        if frames not in codes_of:  # whole coarse frames: the finest frames rounded up to the coarsest stride
            padded = -(-frames // model.vq_strides[0]) * model.vq_strides[0]
            codes_of[frames] = [mx.array(rng.integers(0, model.codebook_size, (1, padded // s)))
                                for s in model.vq_strides]
        return codes_of[frames]

    def latents(frames):  # what the decoder reads: the codes' embeddings, one per finest code frame
        return model.quantizer.from_codes(codes(frames)).moveaxis(1, 2)[:, :frames]

    def own(frames, chunk):
        """``decode_stream`` as mlx-audio 0.6.2 has it (8 frames of left context, none on the right)."""
        if chunk % model.vq_strides[0]:
            return None
        whole = model.decode(codes(frames))
        pieces, seconds, prev, returned = [], [], None, 0
        for start in range(0, frames, chunk):
            part = [c[:, start // s:(start + chunk) // s] for c, s in zip(codes(frames), model.vq_strides)]
            t0 = time.perf_counter()
            audio, prev = model.decode_stream(part, prev)
            mx.eval(audio)
            seconds.append(time.perf_counter() - t0)
            returned += audio.shape[1]
            # Its crop acts on the last axis, of size 1 here: the context's audio comes back too. Crop time instead.
            context = 0 if start == 0 else min(8, start) * int(model.hop_length)
            piece = audio[:, context:] if audio.shape[-1] == 1 else audio
            # Each piece also holds the decoder's few samples past its chunk (computed against zero padding): a
            # caller keeps chunk * hop of them, but the last piece's, to make the whole length.
            last = start + chunk >= frames
            pieces.append(piece if last else piece[:, :chunk * int(model.hop_length)])
        note = (f"decode_stream returned {returned} samples for {whole.shape[1]} (its crop acts on the last axis, "
                f"of size 1): here each piece is cropped on the time axis to its chunk's samples")
        return whole, pieces, seconds, note

    # The decoder module itself, as a user passes it: stream() can then read its layers.
    return ("mlx-audio SNAC decoder (24 kHz shape, 256 channels, no noise)" if not tiny else "mlx-audio SNAC (tiny)",
            model.decoder, latents, 1, 1, 24000, own)


def _under_patch(fn):
    from ..ops.patch import patched_mlx

    def call(*args):
        with patched_mlx():
            return fn(*args)
    return call


def _max_relative(pieces, whole, axis: int) -> Dict:
    got = np.array(mx.concatenate(pieces, axis=axis).astype(mx.float32))
    want = np.array(whole.astype(mx.float32))
    n = min(got.shape[axis], want.shape[axis])
    diff = np.abs(np.take(got, range(n), axis=axis) - np.take(want, range(n), axis=axis)).max()
    return dict(max_rel=float(diff / np.abs(want).max()), samples=int(got.shape[axis]), whole_samples=int(want.shape[axis]))


def run_decoders(names: Optional[Sequence[str]] = None, chunks: Sequence[int] = CHUNKS, *, tiny: bool = False,
                 steps: int = 5, method: str = "auto", patched: bool = False) -> Dict:
    """Streams each decoder through :func:`mlx_deconv.stream` (and mlx-audio's own streaming where it has one).

    Per decoder and chunk size, the input is ``lookahead + (steps + 3) * chunk`` frames (at least two windows):
    each step's time, the steady step's (median of the last ``steps``), the frames fed and the seconds spent
    until the first sample came out, the real-time factor (steady step over a chunk's audio), and the largest
    difference of the streamed output from the whole decode, over the whole decode's peak. The whole decode of
    the same input is timed once, and mlx-audio's own streaming (SNAC's ``decode_stream``) is run on it too.

    Args:
        names: decoders from :data:`DECODERS` (all by default; mlx-audio's are skipped without it).
        chunks: input frames per step. Default: :data:`CHUNKS`.
        tiny (bool): few-channel versions (tests).
        steps (int): steady steps timed.
        method (str): passed to :func:`mlx_deconv.stream`.
        patched (bool): run mlx-audio's decoders (and SNAC's ``decode_stream``) under
            :func:`~mlx_deconv.patched_mlx`, on this package's convolutions. Default: ``False`` (as written).

    Returns:
        dict: ``rows`` (``name``, ``label``, ``frames``, ``setup_seconds``, ``hop``, ``context``, ``lookahead``,
        ``method``, ``step_seconds``, ``first_audio_frames``, ``first_audio_seconds``, ``audio_seconds``,
        ``max_rel``, ``whole_seconds``, ``own``), ``skipped``.
    """
    import time

    from ..streaming import stream
    from .patched_decoders import has_mlx_audio

    rows: List[Dict] = []
    skipped: Dict[str, str] = {}
    for name in names or DECODERS:
        if name not in ("hifigan", "bigvgan") and not has_mlx_audio():
            skipped[name] = "mlx-audio is not installed"
            continue
        label, fn, make_input, in_axis, out_axis, rate, own = _decoder(name, tiny)
        if patched and name not in ("hifigan", "bigvgan"):
            fn, own, label = _under_patch(fn), own and _under_patch(own), label + ", under patched_mlx()"
        sys.stderr.write(f"streaming: {name}, measuring its receptive field\n")
        t0 = time.perf_counter()
        s = stream(fn, in_axis, out_axis, example=make_input(1), method=method)
        setup = time.perf_counter() - t0
        f = s.field
        for frames in chunks:
            sys.stderr.write(f"streaming: {name} at {frames} frames a step\n")
            # Enough frames for the first audio and `steps` steady steps after the window has filled.
            reach = f.lookahead + f.context if f is not None else 70
            total = reach + (steps + 3) * frames
            x = make_input(total)
            mx.eval(x)
            t0 = time.perf_counter()
            whole = fn(x)
            mx.eval(whole)
            whole_seconds = time.perf_counter() - t0
            pieces, seconds, first = [], [], None
            for start in range(0, total, frames):
                chunk = x[:, start:start + frames] if in_axis == 1 else x[..., start:start + frames]
                mx.eval(chunk)
                t0 = time.perf_counter()
                y = s.step(chunk)
                mx.eval(y)
                seconds.append(time.perf_counter() - t0)
                pieces.append(y)
                if first is None and y.shape[out_axis]:
                    first = (start + frames, float(sum(seconds)))
            pieces.append(s.flush())
            hop = s.hop
            step = float(np.median(seconds[-steps:]))
            row = dict(name=name, label=label, frames=frames, setup_seconds=setup, hop=hop, method=s.method,
                       context=None if f is None else f.context, lookahead=None if f is None else f.lookahead,
                       step_seconds=step, first_audio_frames=first[0] if first else None,
                       first_audio_seconds=first[1] if first else None, audio_seconds=frames * hop / rate,
                       whole_seconds=whole_seconds, own=None, **_max_relative(pieces, whole, out_axis))
            if own is not None:
                result = own(total, frames)
                if result is not None:
                    own_whole, own_pieces, own_seconds, note = result
                    row["own"] = dict(step_seconds=float(np.median(own_seconds[-steps:])), note=note,
                                      first_audio_seconds=own_seconds[0], **_max_relative(own_pieces, own_whole, 1))
            rows.append(row)
    return dict(rows=rows, skipped=skipped, patched=patched)


def decoders_table(result: Dict) -> str:
    """A Markdown table: per decoder and chunk size, this package's stream, mlx-audio's own, the whole decode."""
    head = ["decoder", "frames per step", "how", "step ms", "real-time factor", "first audio after",
            "max diff / peak", "mlx-audio's own: step ms", "its max diff / peak", "whole decode ms (same input)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in result["rows"]:
        own = r["own"]
        first = ("-" if r["first_audio_frames"] is None else
                 f"{r['first_audio_frames']} frames, {r['first_audio_seconds'] * 1e3:.0f} ms")
        lines.append("| " + " | ".join([
            r["name"], str(r["frames"]), r["method"], f"{r['step_seconds'] * 1e3:.1f}",
            f"{r['step_seconds'] / r['audio_seconds']:.2f}", first, f"{r['max_rel']:.1e}",
            "-" if own is None else f"{own['step_seconds'] * 1e3:.1f}",
            "-" if own is None else f"{own['max_rel']:.1e}", f"{r['whole_seconds'] * 1e3:.0f}"]) + " |")
    return "\n".join(lines)


#: The decoders of :data:`DECODERS` that keep state: this package's models, mlx-audio's BigVGAN through a copy, and its
#: DAC and SNAC decoders layer by layer (:mod:`mlx_deconv.streaming.layered`).
STATEFUL = ("hifigan", "bigvgan", "mlx-audio-bigvgan", "dac", "snac")


def compare_methods(names: Sequence[str] = ("hifigan",), chunks: Sequence[int] = CHUNKS, *, tiny: bool = False,
                    steps: int = 5) -> Dict:
    """Both ways of computing a step of :func:`mlx_deconv.stream`, on the same chunks, interleaved step by step.

    For each decoder that can keep state (:data:`STATEFUL`) and each chunk size, a stream
    with ``method="state"`` and one with ``method="recompute"`` are fed the same chunks, one step of each in
    turn, so the machine's drift falls on both alike. Each row holds both steady steps' medians (the last
    ``steps``) and each stream's largest difference from the whole decode, over its peak.

    Args:
        names: of :data:`STATEFUL` (mlx-audio's needs it installed).
        chunks: input frames per step. Default: :data:`CHUNKS`.
        tiny (bool): few-channel versions (tests).
        steps (int): steady steps timed.

    Returns:
        dict: ``rows`` (``name``, ``label``, ``frames``, ``audio_seconds``, and per method ``step_seconds`` and
        ``max_rel``).

    Raises:
        ValueError: for a name not in :data:`STATEFUL`.
    """
    import time

    from ..streaming import stream

    rows: List[Dict] = []
    for name in names:
        if name not in STATEFUL:
            raise ValueError(f"compare_methods takes one of {STATEFUL} (the decoders that keep state), got {name!r}")
        label, fn, make_input, in_axis, out_axis, rate, _ = _decoder(name, tiny)
        sys.stderr.write(f"streaming: {name}, both methods\n")
        recompute = stream(fn, in_axis, out_axis, example=make_input(1), method="recompute")
        f = recompute.field
        for frames in chunks:
            streams = {"state": stream(fn, in_axis, out_axis, method="state", verify=False),
                       "recompute": stream(fn, in_axis, out_axis, field=f, method="recompute", verify=False)}
            total = f.lookahead + f.context + (steps + 3) * frames
            x = make_input(total)
            mx.eval(x)
            whole = fn(x)
            pieces: Dict[str, List[mx.array]] = {m: [] for m in streams}
            seconds: Dict[str, List[float]] = {m: [] for m in streams}
            for start in range(0, total, frames):
                chunk = x[:, start:start + frames] if in_axis == 1 else x[..., start:start + frames]
                mx.eval(chunk)
                for method, s in streams.items():
                    t0 = time.perf_counter()
                    y = s.step(chunk)
                    mx.eval(y)
                    seconds[method].append(time.perf_counter() - t0)
                    pieces[method].append(y)
            row = dict(name=name, label=label, frames=frames, audio_seconds=frames * f.hop / rate)
            for method, s in streams.items():
                pieces[method].append(s.flush())
                row[method] = dict(step_seconds=float(np.median(seconds[method][-steps:])),
                                   **_max_relative(pieces[method], whole, out_axis))
            rows.append(row)
    return dict(rows=rows)


def methods_table(result: Dict) -> str:
    """A Markdown table of :func:`compare_methods`: step time and real-time factor of each method, and their errors."""
    head = ["decoder", "frames per step", "state: step ms (RTF)", "recompute: step ms (RTF)", "recompute / state",
            "max diff / peak, state / recompute"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in result["rows"]:
        st, rc, audio = r["state"], r["recompute"], r["audio_seconds"]
        lines.append("| " + " | ".join([
            r["label"], str(r["frames"]), f"{st['step_seconds'] * 1e3:.1f} ({st['step_seconds'] / audio:.2f})",
            f"{rc['step_seconds'] * 1e3:.1f} ({rc['step_seconds'] / audio:.2f})",
            f"{rc['step_seconds'] / st['step_seconds']:.1f}x", f"{st['max_rel']:.1e} / {rc['max_rel']:.1e}"]) + " |")
    return "\n".join(lines)
