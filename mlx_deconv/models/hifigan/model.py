"""HiFi-GAN's generator (Kong et al., 2020) built from this package's layers, with its PyTorch checkpoints.

The generator maps a mel spectrogram to a waveform:

* ``conv_pre``: ``Conv1d(n_mels, C, 7, padding=3)``;
* for each upsampling stage ``i`` (rate ``u``, kernel ``k``): leaky ReLU (slope
  0.1), ``ConvTranspose1d(C/2^i, C/2^(i+1), k, stride=u, padding=(k-u)//2)``,
  then the mean of one residual block per ``(kernel, dilations)`` pair;
* leaky ReLU (PyTorch's default slope, 0.01, as the original code has it),
  ``conv_post``: ``Conv1d(C/2^n, 1, 7, padding=3)``, ``tanh``.

Residual block ``"1"``: for each dilation ``d``, ``x += conv2(lrelu(conv1_d(lrelu(x))))``
with ``conv1_d`` dilated by ``d`` and ``conv2`` not dilated; block ``"2"``: for
each ``d``, ``x += conv_d(lrelu(x))``. Every convolution is "same"-length
(padding ``d*(k-1)//2``).

Checkpoints of the original repository are a ``torch.save`` file whose
``"generator"`` entry is the state dict (a bare state dict works too), with
weight norm (``weight_g``/``weight_v``, or the newer parametrizations) or
without it; the names are kept, so :meth:`HiFiGAN.load_torch_state_dict`
reads them as they are. Forks whose upsampling layers have an odd
``kernel - rate`` and ``output_padding=1`` are ``upsample_output_padding=True``.

torch is imported only to read a ``.pt`` file (:func:`load_torch_checkpoint`).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Callable, Dict, List, Sequence, Tuple

import mlx.core as mx
import mlx.nn as nn

from ...nn.activations import leaky_relu  # each thread's own compiled copy (docs/threads-exit.md)
from ...nn.interop import check_state_dict
from ...nn.layers import Conv1d, ConvTranspose1d
from ..mismatch import explain_mismatch
from ..stages import MelLayout, StageBlocks, checked_shape, config_from_dict, flag, mel_data_format

LRELU_SLOPE = 0.1
#: The slope of the last leaky ReLU: the original code calls it without one, so PyTorch's default.
POST_LRELU_SLOPE = 0.01


@dataclass(frozen=True)
class HiFiGANConfig:
    """The generator's shape, as the original repository's ``config.json`` spells it.

    Args:
        resblock (str): ``"1"`` (pairs of dilated and plain convs) or ``"2"`` (single dilated convs).
        upsample_rates: the stride of each upsampling layer; their product is the hop size.
        upsample_kernel_sizes: the kernel of each upsampling layer.
        upsample_initial_channel (int): channels after ``conv_pre``; halved by every upsampling.
        resblock_kernel_sizes: one residual block per kernel size, in every stage.
        resblock_dilation_sizes: the dilations of each of those blocks.
        num_mels (int): mel bands of the input. Default: ``80``.
        sampling_rate (int): of the audio, for writing it. Default: ``22050``.
        upsample_output_padding (bool): upsampling layers with an odd ``kernel - rate`` pad
            ``(k-u+1)//2`` with ``output_padding=1`` (some forks) rather than ``(k-u)//2``. Default: ``False``.
    """

    resblock: str
    upsample_rates: Tuple[int, ...]
    upsample_kernel_sizes: Tuple[int, ...]
    upsample_initial_channel: int
    resblock_kernel_sizes: Tuple[int, ...]
    resblock_dilation_sizes: Tuple[Tuple[int, ...], ...]
    num_mels: int = 80
    sampling_rate: int = 22050
    upsample_output_padding: bool = False

    def __post_init__(self):
        put = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731 (frozen)
        for name, value in checked_shape(self).items():
            put(name, value)
        put("upsample_output_padding", flag("upsample_output_padding", self.upsample_output_padding))

    @classmethod
    def from_dict(cls, values: Dict) -> "HiFiGANConfig":
        """From a ``config.json``'s dictionary; training keys (batch size, learning rate...) are ignored."""
        return config_from_dict(cls, values, "HiFi-GAN")

    @classmethod
    def from_json(cls, path) -> "HiFiGANConfig":
        """Reads the original repository's ``config.json``."""
        return cls.from_dict(json.loads(Path(path).read_text()))

    def to_dict(self) -> Dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @property
    def hop_size(self) -> int:
        """Audio samples per mel frame: the product of the upsampling rates."""
        return math.prod(self.upsample_rates)

    def channels(self, stage: int) -> int:
        """Channels after ``stage`` upsampling layers (``0``: after ``conv_pre``); each halves them."""
        return self.upsample_initial_channel // 2 ** stage

    def upsample_padding(self, i: int) -> Tuple[int, int]:
        """``(padding, output_padding)`` of upsampling layer ``i``."""
        k, u = self.upsample_kernel_sizes[i], self.upsample_rates[i]
        if self.upsample_output_padding and (k - u) % 2:
            return (k - u + 1) // 2, 1
        return (k - u) // 2, 0


#: The original repository's V1 (22.05 kHz, hop 256), the configuration of its best-known checkpoints.
V1 = HiFiGANConfig(resblock="1", upsample_rates=(8, 8, 2, 2), upsample_kernel_sizes=(16, 16, 4, 4),
                   upsample_initial_channel=512, resblock_kernel_sizes=(3, 7, 11),
                   resblock_dilation_sizes=((1, 3, 5), (1, 3, 5), (1, 3, 5)))


def same_padding(kernel_size: int, dilation: int) -> int:
    """The original code's padding on each side: the same length out for odd kernels (one sample less for even)."""
    return dilation * (kernel_size - 1) // 2


class ResBlock1(nn.Module):
    """Pairs of a dilated and a plain conv, each pair a residual step."""

    def __init__(self, channels: int, kernel_size: int, dilations: Sequence[int], **layer_kwargs):
        super().__init__()
        self.convs1 = [Conv1d(channels, channels, kernel_size, padding=same_padding(kernel_size, d), dilation=d, **layer_kwargs)
                       for d in dilations]
        self.convs2 = [Conv1d(channels, channels, kernel_size, padding=same_padding(kernel_size, 1), **layer_kwargs)
                       for _ in dilations]

    def __call__(self, x: mx.array) -> mx.array:
        for step in self.residual_steps():
            x = step(x)
        return x

    def residual_steps(self) -> List[Callable[[mx.array], mx.array]]:
        """The block as functions applied in turn, one per pair: ``x + c2(lrelu(c1(lrelu(x))))``."""
        def step(c1, c2):
            return lambda x: x + c2(leaky_relu(c1(leaky_relu(x, LRELU_SLOPE)), LRELU_SLOPE))
        return [step(c1, c2) for c1, c2 in zip(self.convs1, self.convs2)]


class ResBlock2(nn.Module):
    """Single dilated convs, each a residual step."""

    def __init__(self, channels: int, kernel_size: int, dilations: Sequence[int], **layer_kwargs):
        super().__init__()
        self.convs = [Conv1d(channels, channels, kernel_size, padding=same_padding(kernel_size, d), dilation=d, **layer_kwargs)
                      for d in dilations]

    def __call__(self, x: mx.array) -> mx.array:
        for step in self.residual_steps():
            x = step(x)
        return x

    def residual_steps(self) -> List[Callable[[mx.array], mx.array]]:
        """The block as functions applied in turn, one per conv: ``x + c(lrelu(x))``."""
        def step(c):
            return lambda x: x + c(leaky_relu(x, LRELU_SLOPE))
        return [step(c) for c in self.convs]


class HiFiGAN(StageBlocks, MelLayout, nn.Module):
    """HiFi-GAN's generator on :class:`~mlx_deconv.Conv1d` and :class:`~mlx_deconv.ConvTranspose1d`.

    Parameter names follow the original repository (``conv_pre``, ``ups.i``,
    ``resblocks.j.convs1.m``, ``conv_post``), so its state dicts load by name.

    Args:
        config (HiFiGANConfig): the network's shape.
        backend (str): passed to every layer: ``"auto"``, or ``"builtin"`` to run
            on MLX's own ``conv1d``/``conv_transpose1d`` (for comparisons). Default: ``"auto"``.
        weight_norm (bool): keep PyTorch's weight norm as parameters (for training);
            ``False`` folds it into plain weights when loading. Default: ``False``.
        data_format (str): the mel's layout, as the layers name theirs: ``"NLC"`` takes
            ``(N, frames, num_mels)`` and returns ``(N, samples)``; ``"NCL"`` takes the original
            repository's ``(N, num_mels, frames)`` and returns ``(N, 1, samples)``, as its generator
            does. Never guessed from the shape (a square mel runs in the layout named). Default: ``"NLC"``.

    Call:
        ``mel`` of shape ``(N, frames, num_mels)`` (``"NCL"``: ``(N, num_mels, frames)``) -> audio
        ``(N, frames * hop_size)`` (``"NCL"``: ``(N, 1, frames * hop_size)``) in ``[-1, 1]``.
    """

    def __init__(self, config: HiFiGANConfig, *, backend: str = "auto", weight_norm: bool = False,
                 data_format: str = "NLC"):
        super().__init__()
        self.config = config
        self.data_format = mel_data_format(data_format)
        kw = dict(backend=backend, weight_norm=weight_norm)
        self.conv_pre = Conv1d(config.num_mels, config.channels(0), 7, padding=3, **kw)
        self.ups = []
        self.resblocks = []
        block = ResBlock1 if config.resblock == "1" else ResBlock2
        for i, (u, k) in enumerate(zip(config.upsample_rates, config.upsample_kernel_sizes)):
            padding, output_padding = config.upsample_padding(i)
            self.ups.append(ConvTranspose1d(config.channels(i), config.channels(i + 1), k, stride=u, padding=padding,
                                            output_padding=output_padding, **kw))
            for kernel, dilations in zip(config.resblock_kernel_sizes, config.resblock_dilation_sizes):
                self.resblocks.append(block(config.channels(i + 1), kernel, dilations, **kw))
        self.conv_post = Conv1d(config.channels(len(self.ups)), 1, 7, padding=3, **kw)

    def __call__(self, mel: mx.array) -> mx.array:
        x = self.conv_pre(self.mel_to_layers(mel))
        for i, up in enumerate(self.ups):
            x = up(leaky_relu(x, LRELU_SLOPE))
            x = self.stage_mean(i, x)
        x = self.conv_post(leaky_relu(x, POST_LRELU_SLOPE))
        return self.audio_from_layers(mx.tanh(x))

    def conv_layers(self) -> List[Tuple[str, nn.Module]]:
        """``(prefix, layer)`` of every convolution, the prefix as in the PyTorch state dict."""
        return [(name, module) for name, module in self.named_modules() if isinstance(module, (Conv1d, ConvTranspose1d))]

    def load_torch_state_dict(self, state_dict: Dict[str, object]) -> "HiFiGAN":
        """Loads the original repository's generator state dict (weight norm on or removed).

        Args:
            state_dict: names to tensors (torch tensors, numpy arrays or array-likes).

        Returns:
            The generator itself.

        Raises:
            ValueError: when a layer's tensors are missing or misshapen, or keys are left
                over (a config that does not match the checkpoint): a
                :class:`~mlx_deconv.models.mismatch.ConfigMismatch` naming the config keys
                that differ from the checkpoint's, when its tensors tell. Nothing is changed then.
        """
        check_state_dict(state_dict)
        try:
            return self._load_torch_state_dict(state_dict)
        except ValueError as err:
            raise explain_mismatch(err, self.config, state_dict, "hifigan") from None

    def _load_torch_state_dict(self, state_dict: Dict[str, object]) -> "HiFiGAN":
        layers = self.conv_layers()
        used = set()
        for prefix, _ in layers:
            used.update(k for k in state_dict if k.startswith(prefix + "."))
        extra = sorted(set(state_dict) - used)
        if extra:
            raise ValueError(f"state dict has keys this config has no layer for (is resblock / the kernels right?): {extra[:8]}")
        before = self.parameters()  # references only: every layer's load replaces, never mutates
        for prefix, layer in layers:
            try:
                layer.load_torch_state_dict(state_dict, prefix + ".")
            except ValueError as err:
                self.update(before)
                raise ValueError(f"{prefix}: {err}") from None
        return self


def load_torch_checkpoint(path) -> Dict[str, object]:
    """The generator state dict from a HiFi-GAN ``.pt`` file (its ``"generator"`` entry, or the file itself).

    Reads with ``torch.load(..., map_location="cpu", weights_only=True)``: no code in the file runs.

    Raises:
        ImportError: when torch is not installed (needed to read ``.pt`` files only).
        ValueError: when the file holds no state dict.
    """
    try:
        import torch
    except ImportError as err:
        raise ImportError("reading a PyTorch checkpoint needs torch (pip install torch); "
                          "a converted .safetensors file does not") from err
    data = torch.load(str(path), map_location="cpu", weights_only=True)
    if isinstance(data, dict) and "generator" in data:
        data = data["generator"]
    if not isinstance(data, dict) or not all(hasattr(v, "shape") for v in data.values()):
        raise ValueError(f"{path} holds no generator state dict (expected a 'generator' entry or a dict of tensors)")
    return data


def from_checkpoint(checkpoint, config: HiFiGANConfig, *, backend: str = "auto", data_format: str = "NLC") -> HiFiGAN:
    """A generator with the weights of a ``.pt`` checkpoint (path) or a state dict, weight norm folded.

    ``backend`` and ``data_format`` are :class:`HiFiGAN`'s."""
    state = checkpoint if isinstance(checkpoint, dict) else load_torch_checkpoint(checkpoint)
    model = HiFiGAN(config, backend=backend, data_format=data_format)
    return model.load_torch_state_dict(state)

