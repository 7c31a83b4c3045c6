"""``bench``'s BigVGAN part: the anti-aliased activation, and BigVGAN v2 end to end.

Activation rows: one :class:`~mlx_deconv.Activation1d` (SnakeBeta, log-scale, ratio 2, 12 taps) per
upsampling stage of BigVGAN v2 24 kHz 100-band 256x, at the shape that stage has for ``frames`` mel
frames. Each is timed fused (``backend="auto"``), as the same steps in this package's unfused ops
(``backend="unfused"``), and as NVIDIA's ``Activation1d`` in PyTorch.

Generator row: that network (1536 initial channels) on one random mel, as
:func:`~mlx_deconv.bigvgan.from_checkpoint` of NVIDIA's generator (its own random initialisation), as
NVIDIA's generator in PyTorch, and, when installed, as mlx-audio's BigVGAN of the same configuration
(its own random weights, so its audio is not compared) on plain MLX and under
:func:`~mlx_deconv.patched_mlx`. PyTorch is timed in its own phase (:func:`add_torch`).
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Dict, List, Optional

import mlx.core as mx
import numpy as np

from .timing import Clock, paired_cell, paired_phrase, paired_ratios, timed_medians, torch_phase

#: Mel frames of the run (0.34 s of 24 kHz audio at hop 256).
FRAMES = 32
#: A variant whose first call takes longer is timed that once (mlx-audio's model on plain MLX).
SLOW = 10.0
#: The generator's variants, in the table's order: name -> what the row says.
VARIANTS = {"auto": "mlx_deconv BigVGAN (`from_checkpoint`)", "torch": "PyTorch, NVIDIA's code (`inference_mode`)",
            "mlx_audio": "mlx-audio BigVGAN, plain MLX", "mlx_audio_patched": "mlx-audio BigVGAN, `patched_mlx()`"}


def _config(tiny: bool):
    import dataclasses

    from ..models.bigvgan import V2_24KHZ_100BAND_256X

    if not tiny:
        return V2_24KHZ_100BAND_256X
    return dataclasses.replace(V2_24KHZ_100BAND_256X, upsample_initial_channel=16, upsample_rates=(2, 2),
                               upsample_kernel_sizes=(4, 4), hop_size=4, num_mels=8)


def activation_shapes(config, frames: int) -> List[Dict]:
    """``(length, channels)`` of the activations after each upsampling stage, for ``frames`` mel frames."""
    rows, length = [], frames
    for i, rate in enumerate(config.upsample_rates):
        length *= rate
        rows.append(dict(stage=i, length=length, channels=config.channels(i + 1)))
    return rows


def _torch():
    try:
        import torch  # noqa: F401

        from ..models.bigvgan import nvidia_module

        return nvidia_module("alias_free_activation.torch.act"), nvidia_module("activations")
    except ImportError:
        return None


def _mlx_audio_model(config):
    """mlx-audio's BigVGAN of ``config`` (its own random weights), or None without mlx-audio."""
    try:
        from mlx_audio.codec.models.bigvgan import BigVGAN, BigVGANConfig
    except ImportError:
        return None
    mx.random.seed(0)
    model = BigVGAN(BigVGANConfig(
        num_mels=config.num_mels, upsample_rates=list(config.upsample_rates),
        upsample_kernel_sizes=list(config.upsample_kernel_sizes),
        upsample_initial_channel=config.upsample_initial_channel, resblock=config.resblock,
        resblock_kernel_sizes=list(config.resblock_kernel_sizes),
        resblock_dilation_sizes=[list(d) for d in config.resblock_dilation_sizes], activation=config.activation,
        snake_logscale=config.snake_logscale, use_bias_at_final=config.use_bias_at_final,
        use_tanh_at_final=config.use_tanh_at_final))
    mx.eval(model.parameters())
    return model


def run(frames: int = FRAMES, *, tiny: bool = False, stream=None, warmup: int = 2, repeat: int = 5,
        with_torch: bool = True, slow: Optional[float] = SLOW, clock: Optional[Clock] = None) -> Dict:
    """Times the activation rows and the generator row (MLX phase; PyTorch's in :func:`add_torch`).

    Args:
        frames (int): mel frames. Default: :data:`FRAMES`.
        tiny (bool): a 16-channel, two-stage network (tests). Default: ``False``.
        stream: where the MLX calls run (``None``: the default stream).
        warmup, repeat, slow, clock: as for :func:`~mlx_deconv.bench.timing.timed_medians`.
        with_torch (bool): build the PyTorch twins (timed later by :func:`add_torch`).

    Returns:
        dict: ``activations`` (per stage: ``length``, ``channels``, ``seconds`` and ``runs`` per
        variant, ``max_abs_diff`` fused vs unfused), ``generator`` (``seconds``, ``runs``,
        ``max_abs_diff`` against ours, ``samples``, ``audio_seconds``), ``frames``, ``mlx_audio``
        (installed?) and the private entries :func:`add_torch` needs.
    """
    from ..models import bigvgan
    from ..nn.anti_aliased import Activation1d, anti_aliased_activation
    from ..ops.patch import patched_mlx
    from ..runtime.devices import resolve_stream

    stream = resolve_stream(stream)
    config = _config(tiny)
    extra = {} if clock is None else dict(clock=clock)
    nvidia = _torch() if with_torch else None
    rng = np.random.default_rng(0)
    activations = []
    for shape in activation_shapes(config, frames):
        length, channels = shape["length"], shape["channels"]
        layer = Activation1d(channels, activation=config.activation, logscale=config.snake_logscale)
        layer.alpha = mx.array(rng.normal(0, 0.3, channels).astype(np.float32))
        layer.beta = mx.array(rng.normal(0, 0.3, channels).astype(np.float32))
        x = mx.array(rng.normal(0, 0.5, (1, length, channels)).astype(np.float32))
        filters = dict(up_filter=layer.upsample["filter"], down_filter=layer.downsample["lowpass"]["filter"],
                       activation=config.activation, logscale=config.snake_logscale)
        out: Dict[str, mx.array] = {}

        def variant(name, backend):
            def call():
                with mx.stream(stream):
                    out[name] = anti_aliased_activation(x, layer.alpha, layer.beta, backend=backend, **filters)
                return out[name]
            return call

        sys.stderr.write(f"bigvgan: activation ({length}, {channels}), fused then unfused\n")
        timings = timed_medians({"fused": variant("fused", "auto"),
                                 "unfused": variant("unfused", "unfused")}, warmup, repeat, **extra)
        row = dict(shape, seconds={k: t.seconds for k, t in timings.items()}, runs={k: t.runs for k, t in timings.items()},
                   max_abs_diff=float(np.abs(np.array(out["fused"]) - np.array(out["unfused"])).max()))
        if nvidia is not None:
            row["_torch"] = (nvidia, np.array(layer.alpha), np.array(layer.beta), np.array(x), np.array(out["fused"]))
        activations.append(row)

    # The generator: ours from NVIDIA's weights where torch is there, else its own initialisation.
    torch_model = bigvgan.torch_generator(config, weight_norm=None).eval() if nvidia is not None else None
    ours = (bigvgan.from_checkpoint(torch_model.state_dict(), config) if torch_model is not None
            else bigvgan.BigVGAN(config))
    mx.eval(ours.parameters())
    mel = rng.normal(0, 1, (1, frames, config.num_mels)).astype(np.float32)
    mel_nlc, mel_ncl = mx.array(mel), mx.array(mel.transpose(0, 2, 1))
    kept: Dict[str, mx.array] = {}

    def generator(name, fn, x):
        def call():
            with mx.stream(stream):
                kept[name] = fn(x)
            return kept[name]
        return call

    fns = {"auto": generator("auto", ours, mel_nlc)}
    theirs = _mlx_audio_model(config)
    if theirs is not None:
        def patched(x):
            with patched_mlx():
                return theirs(x)

        fns["mlx_audio"] = generator("mlx_audio", theirs, mel_ncl)
        fns["mlx_audio_patched"] = generator("mlx_audio_patched", patched, mel_ncl)
    sys.stderr.write(f"bigvgan: generator at {frames} frames: {', '.join(fns)}\n")
    timings = timed_medians(fns, warmup, repeat, slow=slow, slow_runs=1, **extra)
    audio = np.array(kept["auto"].astype(mx.float32)).reshape(-1)
    gen = dict(seconds={k: t.seconds for k, t in timings.items()}, runs={k: t.runs for k, t in timings.items()},
               max_abs_diff={}, samples=int(audio.size), audio_seconds=audio.size / config.sampling_rate,
               _torch=None if torch_model is None else (torch_model, mel, audio), _auto=fns["auto"])
    if theirs is not None:
        a, b = (np.array(kept[k].astype(mx.float32)).reshape(-1) for k in ("mlx_audio", "mlx_audio_patched"))
        gen["max_abs_diff"]["mlx_audio_patched"] = float(np.abs(a - b).max())  # the patch against plain MLX
    return dict(activations=activations, generator=gen, frames=frames, mlx_audio=theirs is not None,
                channels=config.upsample_initial_channel)


def add_torch(result: Dict, warmup: int = 2, repeat: int = 5) -> bool:
    """Times NVIDIA's ``Activation1d`` per row and its generator, in PyTorch's phase; False without torch."""
    import importlib.util

    if importlib.util.find_spec("torch") is None:
        return False
    import torch

    done = False
    with torch_phase():
        for row in result["activations"]:
            if "_torch" not in row:
                continue
            (act, activations), alpha, beta, x, fused = row["_torch"]
            module = act.Activation1d(activations.SnakeBeta(row["channels"], alpha_logscale=True))
            with torch.no_grad():
                module.act.alpha.copy_(torch.from_numpy(alpha))
                module.act.beta.copy_(torch.from_numpy(beta))
            xt = torch.from_numpy(x).permute(0, 2, 1).contiguous()
            kept = {}

            def fn():
                with torch.inference_mode():
                    kept["y"] = module(xt)

            timing = timed_medians({"torch": fn}, warmup, repeat)["torch"]
            row["seconds"]["torch"], row["runs"]["torch"] = timing.seconds, timing.runs
            row["torch_max_abs_diff"] = float(np.abs(kept["y"].permute(0, 2, 1).numpy() - fused).max())
            done = True
        gen = result["generator"]
        if gen.get("_torch") is not None:
            model, mel, audio = gen["_torch"]
            xt = torch.from_numpy(mel).permute(0, 2, 1).contiguous()
            kept = {}

            def run_model():
                with torch.inference_mode():
                    kept["audio"] = model(xt)

            timing = timed_medians({"torch": run_model}, warmup, repeat)["torch"]
            gen["seconds"]["torch"], gen["runs"]["torch"] = timing.seconds, timing.runs
            gen["max_abs_diff"]["torch"] = float(np.abs(kept["audio"].numpy().reshape(-1) - audio).max())
            gen["paired"] = dataclasses.asdict(paired_ratios(gen["_auto"], run_model, repeat))
            done = True
    return done


def public(result: Dict) -> Dict:
    """The result without what cannot go to JSON (models, arrays)."""
    return dict({k: v for k, v in result.items() if k not in ("activations", "generator")},
                activations=[{k: v for k, v in r.items() if not k.startswith("_")} for r in result["activations"]],
                generator={k: v for k, v in result["generator"].items() if not k.startswith("_")})


def _ms(seconds: float, runs: int, repeat: int) -> str:
    return f"{seconds * 1e3:.3g}" + ("*" if runs < repeat else "")


def activation_table(result: Dict, repeat: int) -> str:
    """A Markdown table: per stage, the fused time, the unfused time and PyTorch's, and the ratios."""
    head = ["stage", "length x channels", "fused ms", "unfused ms", "PyTorch ms", "unfused / fused",
            "fused / PyTorch", "max abs diff (unfused, PyTorch)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in result["activations"]:
        s, n = r["seconds"], r["runs"]
        torch_cells = ([_ms(s["torch"], n["torch"], repeat), "", f"{s['fused'] / s['torch']:.2f}x"]
                       if "torch" in s else ["-", "", "-"])
        diffs = f"{r['max_abs_diff']:.1e}" + (f", {r['torch_max_abs_diff']:.1e}" if "torch_max_abs_diff" in r else "")
        lines.append("| " + " | ".join([str(r["stage"]), f"{r['length']} x {r['channels']}",
                                        _ms(s["fused"], n["fused"], repeat), _ms(s["unfused"], n["unfused"], repeat),
                                        torch_cells[0], f"{s['unfused'] / s['fused']:.2f}x", torch_cells[2],
                                        diffs]) + " |")
    return "\n".join(lines)


def generator_table(result: Dict, repeat: int) -> str:
    """A Markdown table: per variant, seconds, real-time factor and the ratio to ours."""
    gen = result["generator"]
    s, n = gen["seconds"], gen["runs"]
    head = ["BigVGAN v2 24 kHz generator", "seconds", "real-time factor", "time / mlx_deconv's",
            "time / PyTorch's, paired", "max abs diff"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, label in VARIANTS.items():
        if name not in s:
            continue
        diff = gen["max_abs_diff"].get(name)
        note = "" if diff is None else (f"{diff:.1e} vs mlx_deconv" if name == "torch" else f"{diff:.1e} vs plain MLX")
        lines.append("| " + " | ".join([label, f"{s[name]:.3g}" + ("*" if n[name] < repeat else ""),
                                        f"{s[name] / gen['audio_seconds']:.2f}", f"{s[name] / s['auto']:.2f}x",
                                        paired_cell(gen.get("paired")) if name == "auto" else "-", note]) + " |")
    return "\n".join(lines)


def caption(result: Dict, repeat: int, warmup: int) -> str:
    """What the rows are and how they were timed."""
    from .timing import medians_phrase

    gen = result["generator"]
    once = any(v < repeat for v in gen["runs"].values())
    return (f"BigVGAN v2 24 kHz 100-band 256x ({result['channels']} initial channels, snakebeta, log-scale), "
            f"{result['frames']} mel frames -> {gen['audio_seconds']:.3f} s of audio, batch 1, float32; "
            f"{medians_phrase(repeat, warmup)}" + (f"; \\* timed once: its first call took over {SLOW:g} s" if once else "")
            + ". mlx_deconv's generator has NVIDIA's generator's random weights; mlx-audio's has its own"
            + ("" if result["mlx_audio"] else " (mlx-audio is not installed: its rows are left out)") + "."
            + (" " + paired_phrase(gen["paired"]) if gen.get("paired") else ""))
