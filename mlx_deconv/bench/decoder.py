"""``bench``'s end-to-end row: HiFi-GAN V1 on MLX's own ops, on ``mlx_deconv``, and in PyTorch.

One network, one set of random weights, one random mel spectrogram, run
three ways: :class:`~mlx_deconv.hifigan.HiFiGAN` with ``backend="builtin"``
(every layer on ``mx.conv1d``/``mx.conv_transpose1d``: the model as ported
with MLX's ops), the same with ``backend="auto"``, and
:func:`~mlx_deconv.hifigan.torch_generator` under ``torch.no_grad()``. The
three waveforms are compared after the tanh.

Also :func:`long_signal`: the upsampling stack's peak memory over a long input.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from typing import Dict, List, Optional

import mlx.core as mx
import numpy as np

from .timing import Clock, medians_phrase, paired_cell, paired_phrase, paired_ratios, timed_medians, torch_phase

#: The variants, in the table's order: name -> what the row says.
VARIANTS = {"builtin": "MLX ops (`backend=\"builtin\"`)", "auto": "mlx_deconv (`backend=\"auto\"`)",
            "torch": "PyTorch (`torch.no_grad()`)"}
#: Agreement after the tanh, as the HiFi-GAN parity tests ask of float32.
AGREE = 1e-4
#: A variant whose first call takes longer (MLX's ops on a CPU: tens of seconds or more) is timed that once.
SLOW = 10.0


def v1_config():
    """HiFi-GAN V1 (Kong et al., 2020): 512 channels, rates 8, 8, 2, 2, kernels 16, 16, 4, 4, resblock "1"."""
    from ..models.hifigan import V1

    return V1


def frames_for(seconds: float, config) -> int:
    """Mel frames that make ``seconds`` of audio (86 for one second at 22.05 kHz, hop 256)."""
    return max(1, round(seconds * config.sampling_rate / config.hop_size))


def _models(config, with_torch: bool, seed: int):
    """The two MLX generators with one set of random weights, and the PyTorch one (or None) with the same."""
    from ..models.hifigan import HiFiGAN, torch_generator

    auto, builtin = HiFiGAN(config, backend="auto"), HiFiGAN(config, backend="builtin")
    torch_model = None
    if with_torch:
        try:
            import torch
        except ImportError:
            with_torch = False
    if with_torch:
        torch.manual_seed(seed)
        torch_model = torch_generator(config, weight_norm=None).eval()
        state = {k: v.detach().numpy() for k, v in torch_model.state_dict().items()}
        auto.load_torch_state_dict(state)
        builtin.load_torch_state_dict(state)
    else:
        builtin.update(auto.parameters())
    mx.eval(auto.parameters(), builtin.parameters())
    return auto, builtin, torch_model


def run(config=None, seconds: float = 1.0, stream=None, warmup: int = 2, repeat: int = 5,
        with_torch: bool = True, slow: Optional[float] = SLOW, clock: Optional[Clock] = None,
        seed: int = 0) -> Dict:
    """Times the generator on MLX's ops and on ``mlx_deconv`` (MLX phase; PyTorch's in :func:`add_torch`).

    ``builtin`` takes tens of seconds per call on a CPU: a variant whose first
    call exceeds ``slow`` seconds is timed that once.

    Args:
        config: a :class:`~mlx_deconv.hifigan.HiFiGANConfig`. Default: HiFi-GAN V1.
        seconds (float): of audio to make. Default: ``1.0``.

    Returns:
        dict: ``config``, ``frames``, ``audio_seconds``, ``seconds`` and ``runs``
        per variant, ``max_abs_diff`` (``builtin`` vs ``auto``), and in private
        ``_audio``/``_torch`` what :func:`add_torch` needs (left out of JSON).
    """
    from ..runtime.devices import resolve_stream

    config = v1_config() if config is None else config
    stream = resolve_stream(stream)
    frames = frames_for(seconds, config)
    auto, builtin, torch_model = _models(config, with_torch, seed)
    mel = mx.random.normal((1, frames, config.num_mels), key=mx.random.key(seed))
    mx.eval(mel)
    audio: Dict[str, mx.array] = {}

    def variant(name, model):
        def fn():
            with mx.stream(stream):
                audio[name] = model(mel)
            return audio[name]
        return fn

    extra = {} if clock is None else dict(clock=clock)
    sys.stderr.write(f"end to end: {frames} mel frames on MLX's ops (tens of seconds or more for HiFi-GAN V1 "
                     "on a CPU), then on mlx_deconv\n")
    timings = timed_medians({"builtin": variant("builtin", builtin), "auto": variant("auto", auto)}, warmup, repeat,
                            slow=slow, slow_runs=1, **extra)
    out = {name: np.array(a.astype(mx.float32)) for name, a in audio.items()}
    return dict(
        config=config.to_dict(), frames=frames, audio_seconds=frames * config.hop_size / config.sampling_rate,
        seconds={n: t.seconds for n, t in timings.items()}, runs={n: t.runs for n, t in timings.items()},
        max_abs_diff={"builtin": float(np.abs(out["builtin"] - out["auto"]).max())},
        _audio=out, _torch=(torch_model, np.array(mel)), _auto=variant("auto", auto),
    )


def add_torch(result: Dict, warmup: int = 2, repeat: int = 5) -> bool:
    """Times the PyTorch generator on the same mel, in its own phase and paired with ours, and compares its audio.

    ``paired``: our time over PyTorch's, one call of each a pause apart per round
    (:func:`~mlx_deconv.bench.timing.paired_ratios`), ``repeat`` rounds.

    Returns:
        bool: False without PyTorch.
    """
    torch_model, mel = result.get("_torch") or (None, None)
    if torch_model is None:
        return False
    import torch

    x = torch.from_numpy(mel).permute(0, 2, 1).contiguous()
    kept = {}

    def fn():
        with torch.no_grad():
            kept["audio"] = torch_model(x)

    with torch_phase():
        timing = timed_medians({"torch": fn}, warmup, repeat)["torch"]
    result["seconds"]["torch"], result["runs"]["torch"] = timing.seconds, timing.runs
    audio = kept["audio"][:, 0].numpy()
    result["max_abs_diff"]["torch"] = float(np.abs(audio - result["_audio"]["auto"]).max())
    result["paired"] = dataclasses.asdict(paired_ratios(result["_auto"], fn, repeat))
    return True


def public(result: Dict) -> Dict:
    """The result without what cannot go to JSON (the models and waveforms)."""
    return {k: v for k, v in result.items() if not k.startswith("_")}


def table(result: Dict, repeat: int) -> str:
    """A Markdown table: per variant its time, real-time factor, speed-ups over MLX's ops and PyTorch, agreement.

    Times timed fewer than ``repeat`` times are marked ``*`` (see :func:`caption`).
    """
    sec, runs = result["seconds"], result["runs"]
    head = ["HiFi-GAN V1 generator", "seconds", "real-time factor", "speed-up over MLX ops",
            "speed-up over PyTorch", "time / PyTorch's, paired", "max abs diff vs mlx_deconv"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, label in VARIANTS.items():
        if name not in sec:
            continue
        once = "*" if runs[name] < repeat else ""
        diff = result["max_abs_diff"].get(name)
        agree = "" if diff is None else f"{diff:.1e} ({'agree' if diff <= AGREE else 'DISAGREE'})"
        cells = [label, f"{sec[name]:.3g}{once}", f"{sec[name] / result['audio_seconds']:.3g}",
                 f"{sec['builtin'] / sec[name]:.1f}x",
                 f"{sec['torch'] / sec[name]:.2f}x" if "torch" in sec else "—",
                 paired_cell(result.get("paired")) if name == "auto" else "—", agree or "—"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def caption(result: Dict, repeat: int, warmup: int, slow: Optional[float], primed: bool = True) -> str:
    """The table's caption: input, audio, timing counts (which variant ran once, and why), how RTF is defined."""
    counts = {n: r for n, r in result["runs"].items() if r < repeat}
    once = ", ".join(f"`{n}` {'once' if r == 1 else f'{r} times'}" for n, r in counts.items())
    return (f"{result['frames']} mel frames of {result['config']['num_mels']} bands -> "
            f"{result['audio_seconds']:.3f} s of {result['config']['sampling_rate']} Hz audio, random weights, "
            f"batch 1; {medians_phrase(repeat, warmup, primed)}"
            + (f" (\\* {once}: its first call took over {slow:g} s)" if once else "")
            + "; real-time factor = wall time / audio duration."
            + (" " + paired_phrase(result["paired"]) if result.get("paired") else ""))


# HiFi-GAN V1's upsampling stack: (C_in, C_out, K, stride, padding); 256 samples per mel frame.
HIFIGAN_STACK = [(512, 256, 16, 8, 4), (256, 128, 16, 8, 4), (128, 64, 4, 2, 1), (64, 32, 4, 2, 1)]


def long_signal(seconds: float, sample_rate: int = 24000, stream=None) -> Dict:
    """Runs the HiFi-GAN V1 upsampling stack (random weights) over ``seconds`` of audio, layer by layer.

    Returns:
        dict: time, final output bytes, and for each layer its input + output
        bytes and the peak MLX memory while it ran: the ``gemm`` backend writes
        its blocks into the output one by one, so the peak stays near input +
        output plus the few blocks in flight, whatever the length.
    """
    from ..ops.functional import conv_transpose1d

    frames = int(seconds * sample_rate) // 256
    h = mx.random.normal((1, frames, HIFIGAN_STACK[0][0]), key=mx.random.key(0))
    mx.eval(h)
    layers: List[Dict] = []
    start = time.perf_counter()
    for i, (c_in, c_out, k, s, p) in enumerate(HIFIGAN_STACK):
        w = mx.random.normal((c_out, k, c_in), key=mx.random.key(i + 1)) / (c_in * k) ** 0.5
        mx.eval(w)
        mx.synchronize()
        base = mx.get_active_memory()
        mx.reset_peak_memory()
        y = conv_transpose1d(h, w, stride=s, padding=p, stream=stream)
        mx.eval(y)
        layers.append(dict(layer=i + 1, in_bytes=h.nbytes, out_bytes=y.nbytes,
                           peak_above_inputs=mx.get_peak_memory() - base))
        h = mx.maximum(y, 0.1 * y)  # HiFi-GAN's leaky ReLU, outside the measured op
        del y
        mx.eval(h)
    return dict(seconds_of_audio=seconds, samples=h.shape[1], wall_seconds=time.perf_counter() - start,
                output_bytes=h.nbytes, layers=layers)
