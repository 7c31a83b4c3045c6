"""``bench``'s models part: whole decoders of mlx-audio on plain MLX and under :func:`~mlx_deconv.patch_mlx`.

One module (about 370 lines) for one part of the benchmark: each decoder's builder is a few lines of
the same concept, mlx-audio's model built with random weights.

Each row is one decoder with random weights (its own initialisation, seeded) run on one random
input twice in the same process, timed round-robin (:func:`~mlx_deconv.bench.timing.timed_medians`):
as written, on MLX's ``mx.conv1d`` / ``mx.conv_transpose1d``, and with those routed to this package by
:func:`~mlx_deconv.patched_mlx` around the call. Nothing in the model changes; the two outputs are
compared (max abs diff). Every decoder runs at a short and a long input (24 and 256 frames by
default). The last row is this package's own HiFi-GAN, whose layers take ``backend="builtin"`` (MLX's
ops) or ``"auto"`` instead of the patch.

mlx-audio is not a dependency: without it the part says so and runs the HiFi-GAN row only. The
decoders are mlx-audio 0.6.2's classes, built from their constructors; widths are the published
models' unless the row's description says otherwise (plain MLX on a CPU takes tens of seconds a call
at full width).
"""

from __future__ import annotations

import importlib.util
import math
import sys
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import mlx.core as mx
import numpy as np

from .timing import Clock, timed_medians

#: Input lengths in frames (latent frames for codecs, mel frames for vocoders).
FRAMES = (24, 256)
#: A variant whose first call takes longer is timed that once (plain MLX's naive loops on a CPU).
SLOW = 10.0
#: The two outputs agree when their max abs difference is at most this times the plain output's max abs value.
AGREE = 1e-4


@dataclass
class Built:
    """A decoder ready to run.

    Attributes:
        plain: the call as the model is written (on MLX's functions when unpatched).
        fast: the call this package makes faster (``plain`` under the patch, or another model).
        make_input: ``frames -> input array`` (seeded, the same every time).
        stochastic: the model draws random numbers in its forward pass (SNAC's noise blocks):
            the global seed is reset before each call so that both variants draw the same.
    """

    plain: Callable[[mx.array], mx.array]
    fast: Callable[[mx.array], mx.array]
    make_input: Callable[[int], mx.array]
    stochastic: bool = False


@dataclass(frozen=True)
class ModelCase:
    """One row family of the part.

    Attributes:
        name (str): for ``--models``.
        label (str): what the row says (which model, which width).
        build: ``tiny -> Built``; ``tiny=True`` gives a few-channel version (tests).
        needs_mlx_audio (bool): skipped when mlx-audio is not installed.
    """

    name: str
    label: str
    build: Callable[[bool], Built]
    needs_mlx_audio: bool = True


def has_mlx_audio() -> bool:
    """True when ``mlx_audio.codec`` can be imported."""
    try:
        return importlib.util.find_spec("mlx_audio.codec") is not None
    except (ImportError, ValueError):
        return False


def _patched(fn: Callable[[mx.array], mx.array]) -> Callable[[mx.array], mx.array]:
    from ..ops.patch import patched_mlx

    def call(x):
        with patched_mlx():
            return fn(x)
    return call


def _random(shape: Sequence[int], seed: int = 1) -> Callable[[int], mx.array]:
    """``frames -> normal input`` of ``shape`` with the frames axis marked ``None``."""
    def make(frames: int) -> mx.array:
        return mx.random.normal(tuple(frames if s is None else s for s in shape), key=mx.random.key(seed))
    return make


def _eval_params(model) -> None:
    mx.eval(model.parameters())
    if hasattr(model, "eval"):
        model.eval()


def _bigvgan(tiny: bool) -> Built:
    from mlx_audio.codec.models.bigvgan import BigVGAN, BigVGANConfig

    mx.random.seed(0)
    config = BigVGANConfig(num_mels=8 if tiny else 100, upsample_rates=[2, 2] if tiny else [4, 4, 2, 2],
                           upsample_kernel_sizes=[4, 4] if tiny else [8, 8, 4, 4],
                           upsample_initial_channel=16 if tiny else 256, resblock="1",
                           resblock_kernel_sizes=[3, 7] if tiny else [3, 7, 11],
                           resblock_dilation_sizes=[[1, 3]] * 2 if tiny else [[1, 3, 5]] * 3,
                           activation="snakebeta", snake_logscale=True)
    model = BigVGAN(config)
    _eval_params(model)
    return Built(model, _patched(model), _random((1, config.num_mels, None)))


def _dac(tiny: bool) -> Built:
    from mlx_audio.codec.models.descript.dac import Decoder

    mx.random.seed(0)
    latent, channels, rates = (8, 16, [2, 3]) if tiny else (1024, 384, [8, 5, 4, 2])
    model = Decoder(latent, channels, rates)
    _eval_params(model)
    return Built(model, _patched(model), _random((1, None, latent)))


def _snac_of_width(channels: int) -> Callable[[bool], Built]:
    def build(tiny: bool) -> Built:
        from mlx_audio.codec.models.snac.layers import Decoder

        mx.random.seed(0)
        latent, width, rates = (8, 16, [2, 3]) if tiny else (768, channels, [8, 8, 4, 2])
        model = Decoder(latent, width, rates, noise=True, depthwise=True, attn_window_size=None)
        _eval_params(model)
        return Built(model, _patched(model), _random((1, None, latent)), stochastic=True)
    return build


def _encodec(tiny: bool) -> Built:
    from mlx_audio.codec.models.encodec.encodec import EncodecConfig, EncodecDecoder

    mx.random.seed(0)
    config = EncodecConfig(num_filters=4 if tiny else 32, hidden_size=8 if tiny else 128,
                           upsampling_ratios=[2, 3] if tiny else [8, 5, 4, 2],
                           num_lstm_layers=1 if tiny else 2)
    model = EncodecDecoder(config)
    # The LSTMs start at zero weights: give them random ones, so that they pass a signal on.
    for lstm in model.layers[1].lstm:
        scale = 1 / math.sqrt(lstm.hidden_size)
        lstm.Wx = mx.random.uniform(-scale, scale, lstm.Wx.shape)
        lstm.Wh = mx.random.uniform(-scale, scale, lstm.Wh.shape)
    _eval_params(model)
    return Built(model, _patched(model), _random((1, None, config.hidden_size)))


def _vocos(tiny: bool) -> Built:
    from mlx_audio.codec.models.vocos.vocos import ISTFTHead, VocosBackbone

    mx.random.seed(0)
    mels, dim, inter, layers, n_fft, hop = (8, 16, 24, 2, 64, 16) if tiny else (100, 512, 1536, 8, 1024, 256)
    backbone = VocosBackbone(input_channels=mels, dim=dim, intermediate_dim=inter, num_layers=layers)
    head = ISTFTHead(dim=dim, n_fft=n_fft, hop_length=hop)
    _eval_params(backbone)
    _eval_params(head)

    def decode(x):
        return head(backbone(x))
    return Built(decode, _patched(decode), _random((1, None, mels)))


def _mimi(tiny: bool) -> Built:
    from mlx_audio.codec.models.mimi.modules.seanet import SeanetConfig, SeanetDecoder

    mx.random.seed(0)
    config = SeanetConfig(dimension=8 if tiny else 512, channels=1, causal=True, nfilters=4 if tiny else 64,
                          nresidual_layers=1, ratios=[3, 2] if tiny else [8, 6, 5, 4], ksize=7, residual_ksize=3,
                          last_ksize=3, dilation_base=2, pad_mode="constant", true_skip=True, compress=2)
    model = SeanetDecoder(config)
    # Its layers start at weights of 1/(C_in*K): after a dozen layers the signal is 1e-13. PyTorch's bound
    # 1/sqrt(C_in*K) keeps it near 1e-2, like the other decoders here.
    from mlx.utils import tree_flatten, tree_unflatten

    weights = [(k, mx.random.uniform(-1, 1, v.shape) / math.sqrt(v.shape[1] * v.shape[2]))
               for k, v in tree_flatten(model.parameters()) if k.endswith("weight") and v.ndim == 3]
    model.update(tree_unflatten(weights))
    for _, module in model.named_modules():
        if hasattr(module, "update_in_place"):  # its transposed layers keep a copy of the weight
            module.update_in_place()
    _eval_params(model)
    return Built(model, _patched(model), _random((1, config.dimension, None)))


def _hifigan(tiny: bool) -> Built:
    """HiFi-GAN V2 (Kong et al., 2020): V1's network at 128 initial channels, on this package's layers."""
    from ..models.hifigan import HiFiGAN, HiFiGANConfig

    if tiny:
        config = HiFiGANConfig(resblock="1", upsample_rates=(2, 2), upsample_kernel_sizes=(4, 4),
                               upsample_initial_channel=16, resblock_kernel_sizes=(3, 5),
                               resblock_dilation_sizes=((1, 3), (1, 3)), num_mels=8)
    else:
        config = HiFiGANConfig(resblock="1", upsample_rates=(8, 8, 2, 2), upsample_kernel_sizes=(16, 16, 4, 4),
                               upsample_initial_channel=128, resblock_kernel_sizes=(3, 7, 11),
                               resblock_dilation_sizes=((1, 3, 5),) * 3)
    mx.random.seed(0)
    auto, builtin = HiFiGAN(config, backend="auto"), HiFiGAN(config, backend="builtin")
    builtin.update(auto.parameters())
    mx.eval(auto.parameters())
    return Built(builtin, auto, _random((1, None, config.num_mels)))


MODELS: Tuple[ModelCase, ...] = (
    ModelCase("bigvgan", "mlx-audio BigVGAN (256 initial channels, rates 4, 4, 2, 2, snakebeta, 100 bands)", _bigvgan),
    ModelCase("dac", "mlx-audio DAC decoder (rates 8, 5, 4, 2; 384 channels: a quarter of the published 1536)", _dac),
    ModelCase("snac", "mlx-audio SNAC decoder (rates 8, 8, 4, 2, depthwise, noise; 256 channels: a quarter of 24 kHz "
                      "SNAC's 1024; no local attention)", _snac_of_width(256)),
    ModelCase("snac-24khz", "mlx-audio SNAC decoder at 24 kHz SNAC's published width (1024 channels, latent 768, "
                            "rates 8, 8, 4, 2, depthwise, noise, no local attention)", _snac_of_width(1024)),
    ModelCase("encodec", "mlx-audio EnCodec decoder (24 kHz: 32 filters, rates 8, 5, 4, 2, two LSTM layers)", _encodec),
    ModelCase("vocos", "mlx-audio Vocos decoder (24 kHz mel: 512 dims, 8 ConvNeXt blocks, iSTFT head)", _vocos),
    ModelCase("mimi", "mlx-audio Mimi SEANet decoder (512 dims, 64 filters, rates 8, 6, 5, 4; "
                      "weights drawn within PyTorch's default bound, not Mimi's 1/(C_in*K))", _mimi),
    ModelCase("hifigan", "mlx_deconv HiFi-GAN V2 (128 initial channels): layers on backend=\"builtin\" vs \"auto\"",
              _hifigan, needs_mlx_audio=False),
)


def select(names: Optional[Sequence[str]] = None) -> List[ModelCase]:
    """The model cases named (all by default).

    Raises:
        SystemExit: for a name not in :data:`MODELS`.
    """
    if not names:
        return list(MODELS)
    known = [m.name for m in MODELS]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise SystemExit(f"--models: {unknown} not among {known}")
    return [m for m in MODELS if m.name in names]


def run(models: Optional[Sequence[ModelCase]] = None, frames: Sequence[int] = FRAMES, *, tiny: bool = False,
        stream=None, warmup: int = 2, repeat: int = 5, slow: Optional[float] = SLOW,
        clock: Optional[Clock] = None, seed: int = 0) -> Dict:
    """Times every model, plain and patched, at every length, in this process (MLX only: no PyTorch here).

    Args:
        models: the cases to run. Default: all of :data:`MODELS`.
        frames: input lengths. Default: :data:`FRAMES`.
        tiny (bool): few-channel versions of every model (tests). Default: ``False``.
        stream: where the calls run (``None``: the default stream).
        warmup, repeat, slow, clock: as for :func:`~mlx_deconv.bench.timing.timed_medians`
            (a variant whose first call takes over ``slow`` seconds is timed that once).
        seed (int): of the global generator before each call of a stochastic model.

    Returns:
        dict: ``rows`` (one per model and length: ``name``, ``label``, ``frames``, ``samples``,
        ``seconds`` and ``runs`` per variant, ``max_abs_diff``, ``max_abs``), ``skipped``
        (``{name: reason}``) and ``mlx_audio`` (its version, or None).
    """
    from ..runtime.devices import resolve_stream

    models = list(MODELS if models is None else models)
    stream = resolve_stream(stream)
    audio = has_mlx_audio()
    rows: List[Dict] = []
    skipped: Dict[str, str] = {}
    extra = {} if clock is None else dict(clock=clock)
    for case in models:
        if case.needs_mlx_audio and not audio:
            skipped[case.name] = "mlx-audio is not installed (pip install mlx-audio)"
            continue
        try:
            built = case.build(tiny)
        except Exception as err:  # an mlx-audio version whose constructors differ: say so, go on
            skipped[case.name] = f"could not be built: {type(err).__name__}: {err}"
            continue
        for n in frames:
            x = built.make_input(n)
            mx.eval(x)
            out: Dict[str, mx.array] = {}

            def variant(name, fn):
                def call():
                    if built.stochastic:
                        mx.random.seed(seed)
                    with mx.stream(stream):
                        out[name] = fn(x)
                    return out[name]
                return call

            sys.stderr.write(f"models: {case.name} at {n} frames, plain MLX then patched\n")
            timings = timed_medians({"plain": variant("plain", built.plain), "patched": variant("patched", built.fast)},
                                    warmup, repeat, slow=slow, slow_runs=1, **extra)
            plain = np.array(out["plain"].astype(mx.float32))
            fast = np.array(out["patched"].astype(mx.float32))
            rows.append(dict(name=case.name, label=case.label, frames=n, samples=int(plain.size),
                             seconds={k: t.seconds for k, t in timings.items()},
                             runs={k: t.runs for k, t in timings.items()},
                             max_abs_diff=float(np.abs(plain - fast).max()) if plain.shape == fast.shape else None,
                             max_abs=float(np.abs(plain).max())))
    version = None
    if audio:
        try:
            from importlib.metadata import version as _version

            version = _version("mlx-audio")
        except Exception:
            version = "unknown"
    return dict(rows=rows, skipped=skipped, mlx_audio=version, frames=list(frames))


def relative_diff(row: Dict) -> Optional[float]:
    """The row's max abs difference over the plain output's max abs value (None when the shapes differ)."""
    diff = row["max_abs_diff"]
    if diff is None:
        return None
    return diff / row["max_abs"] if row["max_abs"] else (0.0 if diff == 0 else math.inf)


def agrees(row: Dict) -> bool:
    """True when the row's two outputs have one shape and differ by at most :data:`AGREE` of the plain one's max."""
    relative = relative_diff(row)
    return relative is not None and relative <= AGREE


def table(result: Dict, repeat: int) -> str:
    """A Markdown table: per model and length, both times, the speed-up, and the agreement.

    Times timed fewer than ``repeat`` times are marked ``*``.
    """
    head = ["model", "frames", "samples", "plain MLX s", "patched s", "speed-up", "max abs diff",
            "/ max abs of plain"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in result["rows"]:
        sec, runs = r["seconds"], r["runs"]
        mark = lambda name: "*" if runs[name] < repeat else ""  # noqa: E731
        diff = r["max_abs_diff"]
        if diff is None:
            cells = ["shapes differ", "DISAGREE"]
        else:
            cells = [f"{diff:.1e}", f"{relative_diff(r):.1e} ({'agree' if agrees(r) else 'DISAGREE'})"]
        lines.append("| " + " | ".join([r["name"], str(r["frames"]), str(r["samples"]),
                                        f"{sec['plain']:.3g}{mark('plain')}", f"{sec['patched']:.3g}{mark('patched')}",
                                        f"{sec['plain'] / sec['patched']:.2f}x"] + cells) + " |")
    return "\n".join(lines)


def caption(result: Dict, repeat: int, warmup: int, slow: Optional[float] = SLOW) -> str:
    """What the table's rows are, what was skipped, and how they were timed."""
    from .timing import medians_phrase

    once = slow is not None and any(n < repeat for r in result["rows"] for n in r["runs"].values())
    seen, labels = set(), []
    for r in result["rows"]:
        if r["name"] not in seen:
            seen.add(r["name"])
            labels.append(f"{r['name']}: {r['label']}")
    text = ("Whole decoders with random weights, batch 1, each call timed as written on MLX (\"plain MLX\") and "
            "with `mlx_deconv.patched_mlx()` around it (\"patched\"; the hifigan row: its layers' "
            "`backend=\"builtin\"` against `\"auto\"`), in the same process, round-robin; "
            f"{medians_phrase(repeat, warmup)}"
            + (f"; \\* timed once: its first call took over {slow:g} s" if once else "") + ". "
            + f"mlx-audio {result['mlx_audio'] or 'not installed'}. " + "; ".join(labels) + ".")
    if result["skipped"]:
        text += " Skipped: " + "; ".join(f"{k} ({v})" for k, v in result["skipped"].items()) + "."
    return text
