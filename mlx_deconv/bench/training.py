"""``bench``'s training part: one training step of BigVGAN and of HiFi-GAN, against PyTorch's on the same weights.

A step is what a trainer runs for the generator: the forward pass on a batch of mel frames, an L1
loss against a target waveform, and the gradient of every parameter. MLX's step is
``nn.value_and_grad(model, loss)`` evaluated, timed as called and compiled the way MLX's training
examples compile it (``mx.compile(step, inputs=model.state, outputs=model.state)``, where MLX fuses
the whole step); PyTorch's is the forward, ``loss.backward()`` (the gradients set to None before) in
training mode. Both generators hold the same weights: NVIDIA's or
the original code's twin is built by PyTorch's initialisation, and ours loads its state dict.

Each row also says how right each side is: both steps are checked against the same step in float64
(PyTorch's model in double precision), the loss's error and, over every parameter, the largest
``|g - g64| / max|g64|`` of its gradient (PyTorch's gradients are carried onto our parameter names by
the models' own ``load_torch_state_dict``, so no name is mapped twice).
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Dict, List, Optional, Sequence

import mlx.core as mx
import mlx.nn as nn
import numpy as np
from mlx.utils import tree_flatten

from .timing import Clock, paired_cell, paired_phrase, paired_ratios, timed_medians, torch_phase

#: Mel frames per example and examples per batch: a short training crop, as vocoder recipes take.
FRAMES, BATCH = 16, 2


@dataclasses.dataclass(frozen=True)
class TrainingCase:
    """One generator to train: ``family`` ``"bigvgan"`` (the 22 kHz v2 configuration) or ``"hifigan"``
    (V1), at ``channels`` initial channels."""

    name: str
    family: str
    channels: int

    def config(self, tiny: bool = False):
        if self.family == "bigvgan":
            from ..models.bigvgan import V2_22KHZ_80BAND_256X as base
        else:
            from ..models.hifigan import V1 as base
        if tiny:  # tests: two stages, few channels
            extra = dict(hop_size=4) if self.family == "bigvgan" else {}
            return dataclasses.replace(base, upsample_initial_channel=16, upsample_rates=(2, 2),
                                       upsample_kernel_sizes=(4, 4), **extra)
        return dataclasses.replace(base, upsample_initial_channel=self.channels)


#: The cases, by name.
CASES = (TrainingCase("bigvgan-128", "bigvgan", 128), TrainingCase("bigvgan-256", "bigvgan", 256),
         TrainingCase("hifigan-v1", "hifigan", 512))


def select(names: Optional[Sequence[str]] = None) -> List[TrainingCase]:
    """The cases named (all by default).

    Raises:
        ValueError: for a name not in :data:`CASES`.
    """
    known = {c.name: c for c in CASES}
    if names is None:
        return list(CASES)
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"training cases {unknown} not among {list(known)}")
    return [known[n] for n in names]


def _models(case: TrainingCase, config):
    """``(ours, PyTorch's)`` with the same weights; PyTorch's is None without torch."""
    if case.family == "bigvgan":
        from ..models import bigvgan as family
    else:
        from ..models import hifigan as family
    try:
        import torch
    except ImportError:
        theirs = None
    else:
        torch.manual_seed(0)  # the same weights from run to run
        theirs = family.torch_generator(config, weight_norm=None).train()
    ours = family.HiFiGAN(config) if case.family == "hifigan" else family.BigVGAN(config)
    if theirs is not None:
        ours.load_torch_state_dict({k: v.detach().numpy() for k, v in theirs.state_dict().items()})
    mx.eval(ours.parameters())
    return ours, theirs


def _l1(model, mel, target):
    return mx.mean(mx.abs(model(mel).reshape(target.shape) - target))


def _steps(ours, mel_mx: mx.array, target_mx: mx.array, stream, kept: Dict):
    """``(step, compiled_step)`` of one model, keeping their results in ``kept``: a function of its own, so that
    each case's steps hold that case's model (closures in a loop would all see the last case's)."""
    loss_and_grad = nn.value_and_grad(ours, _l1)
    state = [ours.state]
    compiled = mx.compile(lambda mel, target: loss_and_grad(ours, mel, target), inputs=state, outputs=state)

    def step():
        with mx.stream(stream):
            kept["loss"], kept["grads"] = loss_and_grad(ours, mel_mx, target_mx)
        return kept["loss"], kept["grads"]

    def compiled_step():
        with mx.stream(stream):
            kept["compiled"] = compiled(mel_mx, target_mx)
        return kept["compiled"]
    return step, compiled_step


def run(names: Optional[Sequence[str]] = None, *, tiny: bool = False, frames: int = FRAMES, batch: int = BATCH,
        stream=None, warmup: int = 2, repeat: int = 5, clock: Optional[Clock] = None) -> Dict:
    """Times MLX's training steps (PyTorch's follow in :func:`add_torch`).

    Args:
        names: case names of :data:`CASES` (default: all).
        tiny (bool): two-stage, 16-channel generators (tests). Default: ``False``.
        frames, batch (int): the batch's mel frames and examples.
        stream: where the MLX steps run (``None``: the default stream).
        warmup, repeat, clock: as for :func:`~mlx_deconv.bench.timing.timed_medians`.

    Returns:
        dict: ``rows`` (per case: ``name``, ``channels``, ``frames``, ``batch``, ``samples``, ``parameters``,
        ``seconds``/``runs`` per side, ``loss``) and private entries :func:`add_torch` needs.
    """
    from ..runtime.devices import resolve_stream

    stream = resolve_stream(stream)
    extra = {} if clock is None else dict(clock=clock)
    rng = np.random.default_rng(0)
    rows = []
    for case in select(names):
        config = case.config(tiny)
        ours, theirs = _models(case, config)
        mel = rng.normal(0, 1, (batch, frames, config.num_mels)).astype(np.float32)
        hop = int(np.prod(config.upsample_rates))
        target = rng.uniform(-0.5, 0.5, (batch, frames * hop)).astype(np.float32)
        kept = {}
        step, compiled_step = _steps(ours, mx.array(mel), mx.array(target), stream, kept)

        sys.stderr.write(f"training: {case.name}, batch {batch} x {frames} frames\n")
        timings = timed_medians({"mlx_deconv": step, "compiled": compiled_step}, max(warmup, 1), repeat, **extra)
        grads = {k: np.array(v) for k, v in tree_flatten(kept["grads"])}
        compiled_grads = {k: np.array(v) for k, v in tree_flatten(kept["compiled"][1])}
        rows.append(dict(name=case.name, family=case.family, channels=config.upsample_initial_channel,
                         frames=frames, batch=batch, samples=frames * hop,
                         parameters=int(sum(v.size for v in grads.values())),
                         seconds={n: t.seconds for n, t in timings.items()},
                         runs={n: t.runs for n, t in timings.items()},
                         loss=float(kept["loss"].item()),
                         compiled_difference=_largest_difference(compiled_grads, grads),
                         _torch=None if theirs is None else (theirs, ours, mel, target, grads),
                         _steps={"mlx_deconv": step, "compiled": compiled_step}))
    return dict(rows=rows)


def _torch_grads_on_our_names(theirs, ours) -> Dict[str, np.ndarray]:
    """PyTorch's gradients under our parameter names: its state dict with each parameter replaced by its
    gradient (buffers by NaN), loaded into a twin of ours by the model's own loader."""
    import torch

    grads = {name: p.grad for name, p in theirs.named_parameters() if p.grad is not None}
    state = {k: (grads[k] if k in grads else torch.full_like(v, float("nan"))).detach().numpy()
             for k, v in theirs.state_dict().items()}
    twin = type(ours)(ours.config)
    twin.load_torch_state_dict(state)
    return {k: np.array(v) for k, v in tree_flatten(twin.parameters())}


def _relative_error(g: np.ndarray, ref: np.ndarray) -> float:
    """``max|g - ref| / max|ref|`` (over ``max|g - ref|`` alone where ``ref`` is all zeros)."""
    return float(np.abs(g - ref).max()) / (float(np.abs(ref).max()) or 1.0)


def _largest_difference(a: Dict[str, np.ndarray], b: Dict[str, np.ndarray]) -> float:
    """Over every tensor of ``b``, the largest :func:`_relative_error` of ``a``'s (inf when ``a`` lacks a tensor)."""
    worst = 0.0
    for name, g in b.items():
        if name not in a or a[name].shape != g.shape:
            return float("inf")
        worst = max(worst, _relative_error(a[name], g))
    return worst


def _largest_errors(ours: Dict[str, np.ndarray], theirs: Dict[str, np.ndarray], reference: Dict[str, np.ndarray]):
    """``(ours, theirs, tensors compared)``: over every parameter, the largest ``|g - g64| / max|g64|``."""
    worst_ours = worst_theirs = 0.0
    compared = 0
    for name, g in ours.items():
        ref = reference.get(name)
        if ref is None or np.isnan(ref).any():  # a buffer of PyTorch's (the fixed filters): no gradient there
            continue
        worst_ours = max(worst_ours, _relative_error(g, ref))
        worst_theirs = max(worst_theirs, _relative_error(theirs[name], ref))
        compared += 1
    return worst_ours, worst_theirs, compared


def add_torch(result: Dict, warmup: int = 2, repeat: int = 5) -> bool:
    """Times PyTorch's step per row, in its own phase; then checks both sides' loss and gradients against the
    same step in float64 (PyTorch's model in double precision). False without torch.

    A gradient through a leaky ReLU or a Snake changes branch where rounding moves a pre-activation across
    the kink, so float32 gradients of deep generators differ from float64 in places, for PyTorch as for
    us: each row gives both sides' largest error, not one side's agreement with the other."""
    rows = [r for r in result["rows"] if r.get("_torch") is not None]
    if not rows:
        return False
    import copy

    import torch

    with torch_phase():
        for row in rows:
            theirs, ours, mel, target, our_grads = row["_torch"]
            mel_t = torch.from_numpy(mel).permute(0, 2, 1).contiguous()
            target_t = torch.from_numpy(target)
            kept = {}

            def step(model=theirs, mel_t=mel_t, target_t=target_t):
                for p in model.parameters():
                    p.grad = None
                loss = (model(mel_t).reshape(target_t.shape) - target_t).abs().mean()
                loss.backward()
                kept["loss"] = loss

            timing = timed_medians({"torch": step}, warmup, repeat)["torch"]
            row["seconds"]["torch"], row["runs"]["torch"] = timing.seconds, timing.runs
            # Also step by step: the phases above are minutes apart on a machine whose speed drifts.
            row["paired"] = {name: dataclasses.asdict(paired_ratios(ours_step, step, repeat))
                             for name, ours_step in row.get("_steps", {}).items()}
            row["torch_loss"] = float(kept["loss"].item())
            theirs_grads = _torch_grads_on_our_names(theirs, ours)
            double = copy.deepcopy(theirs).double()
            step(double, mel_t.double(), target_t.double())
            reference_loss = float(kept["loss"].item())
            reference = _torch_grads_on_our_names(double, ours)
            worst_ours, worst_theirs, compared = _largest_errors(our_grads, theirs_grads, reference)
            row["loss_error"] = {"mlx_deconv": abs(row["loss"] - reference_loss),
                                 "torch": abs(row["torch_loss"] - reference_loss)}
            row["gradient_error"] = {"mlx_deconv": worst_ours, "torch": worst_theirs}
            row["gradients_compared"] = compared
    return True


def paired_note(result: Dict) -> str:
    """The caption's sentence on the paired columns ("" when no row has them)."""
    paired = next((p for r in result["rows"] for p in r.get("paired", {}).values()), None)
    return paired_phrase(paired) if paired else ""


def public(result: Dict) -> Dict:
    """The result without its private (non-JSON) entries."""
    return dict(rows=[{k: v for k, v in r.items() if not k.startswith("_")} for r in result["rows"]])


def table(result: Dict) -> str:
    """A Markdown table: per generator, the step's time on each side, their ratio (of the phases' medians, and
    step by step), and each side's error against the float64 step."""
    lines = ["| generator | initial channels | batch x frames | parameters | mlx_deconv ms | compiled ms | PyTorch ms "
             "| mlx_deconv / PyTorch | compiled / PyTorch | mlx_deconv / PyTorch, paired | compiled / PyTorch, paired "
             "| loss error, mlx_deconv / PyTorch | largest gradient error, mlx_deconv / PyTorch "
             "| compiled against uncompiled |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        ours, fused, theirs = r["seconds"]["mlx_deconv"], r["seconds"]["compiled"], r["seconds"].get("torch")
        cells = ["-"] * 7
        if theirs is not None:
            loss, grad, paired = r["loss_error"], r["gradient_error"], r.get("paired", {})
            cells = [f"{theirs * 1e3:.0f}", f"{ours / theirs:.2f}x", f"{fused / theirs:.2f}x",
                     paired_cell(paired.get("mlx_deconv")), paired_cell(paired.get("compiled")),
                     f"{loss['mlx_deconv']:.1e} / {loss['torch']:.1e}",
                     f"{grad['mlx_deconv']:.1e} / {grad['torch']:.1e} ({r['gradients_compared']} tensors)"]
        lines.append(f"| {r['name']} | {r['channels']} | {r['batch']} x {r['frames']} | "
                     f"{r['parameters'] / 1e6:.2f} M | {ours * 1e3:.0f} | {fused * 1e3:.0f} | " + " | ".join(cells)
                     + f" | {r['compiled_difference']:.1e} |")
    return "\n".join(lines)
