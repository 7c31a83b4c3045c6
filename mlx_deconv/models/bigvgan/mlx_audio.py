"""mlx-audio's ``BigVGAN`` as this package's: the same network, its config read off its layers and its weights
carried over, so that :func:`mlx_deconv.stream` can keep each layer's state instead of recomputing a window.

mlx-audio (0.6.2) builds NVIDIA's generator with its own layers and MLX weight layouts, and keeps no config
object. The config is read from the layers themselves (kernel sizes, strides, dilations, the activation's
class), the weights are put back in PyTorch's layout and loaded by :meth:`BigVGAN.load_torch_state_dict`,
which checks every name and shape. :func:`from_mlx_audio` then compares both generators on a random mel.
"""

from __future__ import annotations

import math
import numbers

from typing import Dict

import mlx.core as mx
import numpy as np
from mlx.utils import tree_flatten

from .config import BigVGANConfig
from .model import BigVGAN


def is_mlx_audio_bigvgan(obj) -> bool:
    """True for an instance of mlx-audio's ``BigVGAN`` (``mlx_audio.codec.models.bigvgan``), without importing it."""
    cls = type(obj)
    return cls.__name__ == "BigVGAN" and cls.__module__.startswith("mlx_audio.")


def config_of(model) -> BigVGANConfig:
    """The :class:`BigVGANConfig` of mlx-audio's generator, read off its layers.

    Raises:
        ValueError: when a layer does not have the shape NVIDIA's generator gives it (naming it).
    """
    try:
        ups = [step[0] for step in model.ups]
        n = model.num_kernels
        blocks = list(model.resblocks[:n])
        kind = {"AMPBlock1": "1", "AMPBlock2": "2"}[type(blocks[0]).__name__]
        dilated = [b.convs1 if kind == "1" else b.convs for b in blocks]
        act = model.activation_post.act
        values = dict(
            resblock=kind,
            upsample_rates=[int(u.stride) for u in ups],
            upsample_kernel_sizes=[int(u.kernel_size) for u in ups],
            upsample_initial_channel=int(model.conv_pre["weight_v"].shape[0]),
            resblock_kernel_sizes=[int(convs[0].kernel_size) for convs in dilated],
            resblock_dilation_sizes=[[int(c.dilation) for c in convs] for convs in dilated],
            activation={"SnakeBeta": "snakebeta", "Snake": "snake"}[type(act).__name__],
            snake_logscale=bool(act.alpha_logscale),
            num_mels=int(model.conv_pre["weight_v"].shape[2]),
            use_tanh_at_final=bool(model.use_tanh_at_final),
            use_bias_at_final="bias" in model.conv_post,
        )
    except (AttributeError, KeyError, IndexError, TypeError) as err:
        raise ValueError(f"mlx-audio's BigVGAN does not have the layers of NVIDIA's generator: {err!r}") from None
    return BigVGANConfig.from_dict(values)


def torch_state_dict(model) -> Dict[str, np.ndarray]:
    """mlx-audio's parameters under NVIDIA's names, in PyTorch's layouts (``weight_g``/``weight_v`` kept)."""
    out = {}
    for name, value in tree_flatten(model.parameters()):
        a = np.array(value.astype(mx.float32))
        if name.startswith("ups.") and name.rsplit(".", 1)[-1] in ("weight_v", "weight_g", "weight"):
            a = a.transpose(2, 0, 1)  # MLX's (C_out, K, C_in) -> PyTorch's transposed (C_in, C_out, K)
        elif name.endswith(("weight_v", "weight")) and a.ndim == 3:
            a = a.transpose(0, 2, 1)  # (C_out, K, C_in) -> (C_out, C_in, K)
        elif name.endswith("filter"):
            a = a.reshape(1, 1, -1)
        out[name] = a
    return out


def from_mlx_audio(model, *, check_frames: int = 8, tolerance: float = 1e-5) -> BigVGAN:
    """This package's :class:`BigVGAN` equal to mlx-audio's ``model``, taking the mel as it does (``"NCL"``).

    Its weights are a copy, folded from weight norm, taken now: later changes to ``model`` do not reach it.

    Args:
        model: an instance of ``mlx_audio.codec.models.bigvgan.BigVGAN``.
        check_frames (int): frames of the random mel both generators decode to be compared.
        tolerance (float): the largest difference allowed, over the output's peak.

    Returns:
        BigVGAN: with ``data_format="NCL"``: ``(N, num_mels, frames)`` in, ``(N, 1, samples)`` out, as mlx-audio's.

    Raises:
        ValueError: when the config or a weight does not map, or when the two generators' outputs differ by more
            than ``tolerance`` of the peak (saying by how much).
    """
    if not is_mlx_audio_bigvgan(model):
        raise ValueError(f"model must be mlx-audio's BigVGAN, got {type(model).__module__}.{type(model).__name__}")
    if isinstance(check_frames, bool) or not isinstance(check_frames, numbers.Integral) or check_frames < 1:
        raise ValueError(f"check_frames must be an int >= 1, got {check_frames!r}")
    if isinstance(tolerance, bool) or not isinstance(tolerance, numbers.Real) or not 0 <= tolerance < math.inf:
        raise ValueError(f"tolerance must be a finite number >= 0, got {tolerance!r}")
    check_frames = int(check_frames)
    config = config_of(model)
    ours = BigVGAN(config, data_format="NCL").load_torch_state_dict(torch_state_dict(model))
    mel = mx.array(np.random.default_rng(0).standard_normal((1, config.num_mels, check_frames)).astype(np.float32))
    want, got = np.array(model(mel)), np.array(ours(mel))
    err = float(np.abs(want - got).max()) if want.shape == got.shape else float("inf")
    peak = float(np.abs(want).max())
    if not err <= tolerance * max(peak, 1e-30):
        raise ValueError(f"this package's BigVGAN built from mlx-audio's differs from it by {err:.3g} "
                         f"({err / max(peak, 1e-30):.2g} of the peak) on a random mel of {check_frames} frames")
    return ours
