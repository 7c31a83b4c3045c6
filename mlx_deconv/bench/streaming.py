"""``bench``'s streaming rows: :class:`~mlx_deconv.hifigan.StreamingHiFiGAN` (V1) fed a few mel frames a step.

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
