"""BigVGAN's generator (Lee et al., 2023; NVIDIA's v2) built from this package's layers, with its PyTorch checkpoints.

The generator maps a mel spectrogram to a waveform:

* ``conv_pre``: ``Conv1d(num_mels, C, 7, padding=3)``;
* for each upsampling stage ``i`` (rate ``u``, kernel ``k``):
  ``ConvTranspose1d(C/2^i, C/2^(i+1), k, stride=u, padding=(k-u)//2)`` (no
  activation before it, unlike HiFi-GAN), then the mean of one AMP block per
  ``(kernel, dilations)`` pair;
* ``activation_post`` (an anti-aliased Snake/SnakeBeta), ``conv_post``:
  ``Conv1d(C/2^n, 1, 7, padding=3)`` (bias only with ``use_bias_at_final``),
  then ``tanh`` (``use_tanh_at_final``) or a clamp to ``[-1, 1]``.

AMP block ``"1"`` (``AMPBlock1``): for each dilation ``d``,
``x += conv2(act2(conv1_d(act1(x))))``; block ``"2"`` (``AMPBlock2``): for each
``d``, ``x += conv_d(act(x))``. Every convolution is "same"-length (padding
``d*(k-1)//2``) and every activation is an :class:`~mlx_deconv.Activation1d`:
2x upsampling with a Kaiser-windowed sinc, Snake or SnakeBeta at the high rate,
2x low-pass downsampling, with replicate padding at the signal's ends.

Checkpoints are NVIDIA's ``bigvgan_generator.pt`` (a ``torch.save`` file whose
``"generator"`` entry is the state dict; a bare state dict works too), with
weight norm (legacy ``weight_g``/``weight_v``, or the newer parametrizations)
or without it. Parameter names are NVIDIA's (``ups.i.0``,
``resblocks.j.activations.m.act.alpha``, ...). The activations' filters are
buffers of the checkpoint (``...upsample.filter``,
``...downsample.lowpass.filter``) and are read from it, not recomputed.

torch is imported only to read a ``.pt`` file (:func:`load_torch_checkpoint`).
"""

from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

import mlx.core as mx
import mlx.nn as nn
import numpy as np
from mlx.utils import tree_flatten, tree_unflatten

from ...nn.anti_aliased import Activation1d
from ...nn.interop import check_state_dict, to_numpy
from ...nn.layers import Conv1d, ConvTranspose1d
from ..hifigan.model import load_torch_checkpoint, same_padding
from ..mismatch import explain_mismatch
from ..stages import MelLayout, StageBlocks, mel_data_format
from .config import BigVGANConfig

__all__ = ["AMPBlock1", "AMPBlock2", "BigVGAN", "activation_layer", "from_checkpoint", "load_torch_checkpoint"]


def activation_layer(channels: int, config: BigVGANConfig) -> Activation1d:
    """One anti-aliased activation of the generator: NVIDIA's ``Activation1d`` (ratio 2, 12 taps, as NVIDIA's
    code fixes them) around ``config.activation`` with ``config.snake_logscale``."""
    return Activation1d(channels, activation=config.activation, logscale=config.snake_logscale, ratio=2, kernel_size=12)


class AMPBlock1(nn.Module):
    """Pairs of a dilated and a plain conv, each behind an anti-aliased activation, each pair a residual step.

    ``activations[2m]`` comes before ``convs1[m]`` and ``activations[2m + 1]`` before ``convs2[m]``, as in NVIDIA's code.
    """

    def __init__(self, config: BigVGANConfig, channels: int, kernel_size: int, dilations: Sequence[int], **layer_kwargs):
        super().__init__()
        self.convs1 = [Conv1d(channels, channels, kernel_size, padding=same_padding(kernel_size, d), dilation=d, **layer_kwargs)
                       for d in dilations]
        self.convs2 = [Conv1d(channels, channels, kernel_size, padding=same_padding(kernel_size, 1), **layer_kwargs)
                       for _ in dilations]
        self.activations = [activation_layer(channels, config) for _ in range(2 * len(dilations))]

    def steps(self) -> List[Tuple[nn.Module, ...]]:
        """``(act1, conv1, act2, conv2)`` of each residual step."""
        a = self.activations
        return [(a[2 * m], c1, a[2 * m + 1], c2) for m, (c1, c2) in enumerate(zip(self.convs1, self.convs2))]

    def __call__(self, x: mx.array) -> mx.array:
        for a1, c1, a2, c2 in self.steps():
            x = x + c2(a2(c1(a1(x))))
        return x


class AMPBlock2(nn.Module):
    """Single dilated convs, each behind an anti-aliased activation, each a residual step."""

    def __init__(self, config: BigVGANConfig, channels: int, kernel_size: int, dilations: Sequence[int], **layer_kwargs):
        super().__init__()
        self.convs = [Conv1d(channels, channels, kernel_size, padding=same_padding(kernel_size, d), dilation=d, **layer_kwargs)
                      for d in dilations]
        self.activations = [activation_layer(channels, config) for _ in dilations]

    def steps(self) -> List[Tuple[nn.Module, ...]]:
        """``(act, conv)`` of each residual step."""
        return list(zip(self.activations, self.convs))

    def __call__(self, x: mx.array) -> mx.array:
        for a, c in self.steps():
            x = x + c(a(x))
        return x


class BigVGAN(StageBlocks, MelLayout, nn.Module):
    """NVIDIA's BigVGAN generator on :class:`~mlx_deconv.Conv1d`, :class:`~mlx_deconv.ConvTranspose1d` and
    :class:`~mlx_deconv.Activation1d`.

    Parameter names follow NVIDIA's (``conv_pre``, ``ups.i.0``, ``resblocks.j.convs1.m``,
    ``resblocks.j.activations.m``, ``activation_post``, ``conv_post``), so its state dicts load by name.

    Args:
        config (BigVGANConfig): the network's shape.
        backend (str): passed to every convolution: ``"auto"``, or ``"builtin"`` to run on
            MLX's own ``conv1d``/``conv_transpose1d`` (for comparisons). Default: ``"auto"``.
        weight_norm (bool): keep PyTorch's weight norm as parameters (for training);
            ``False`` folds it into plain weights when loading. Default: ``False``.
        data_format (str): the mel's layout, as the layers name theirs: ``"NLC"`` takes
            ``(N, frames, num_mels)`` and returns ``(N, samples)``; ``"NCL"`` takes NVIDIA's (and
            mlx-audio's) ``(N, num_mels, frames)`` and returns ``(N, 1, samples)``, as NVIDIA's
            generator does. Never guessed from the shape (a square mel runs in the layout named).
            Default: ``"NLC"``.

    Call:
        ``mel`` of shape ``(N, frames, num_mels)`` (``"NCL"``: ``(N, num_mels, frames)``) -> audio
        ``(N, frames * hop_size)`` (``"NCL"``: ``(N, 1, frames * hop_size)``) in ``[-1, 1]``.
    """

    def __init__(self, config: BigVGANConfig, *, backend: str = "auto", weight_norm: bool = False,
                 data_format: str = "NLC"):
        super().__init__()
        if not isinstance(config, BigVGANConfig):
            raise TypeError(f"config must be a BigVGANConfig (BigVGANConfig.from_json(path)), got {type(config).__name__}")
        self.config = config
        self.data_format = mel_data_format(data_format)
        kw = dict(backend=backend, weight_norm=weight_norm)
        self.conv_pre = Conv1d(config.num_mels, config.channels(0), 7, padding=3, **kw)
        self.ups = []
        self.resblocks = []
        block = AMPBlock1 if config.resblock == "1" else AMPBlock2
        for i, (u, k) in enumerate(zip(config.upsample_rates, config.upsample_kernel_sizes)):
            # NVIDIA keeps each upsampling layer in a list of its own: ups.i.0
            self.ups.append([ConvTranspose1d(config.channels(i), config.channels(i + 1), k, stride=u,
                                             padding=config.upsample_padding(i), **kw)])
            for kernel, dilations in zip(config.resblock_kernel_sizes, config.resblock_dilation_sizes):
                self.resblocks.append(block(config, config.channels(i + 1), kernel, dilations, **kw))
        last = config.channels(len(self.ups))
        self.activation_post = activation_layer(last, config)
        self.conv_post = Conv1d(last, 1, 7, padding=3, bias=config.use_bias_at_final, **kw)

    def final(self, x: mx.array) -> mx.array:
        """The last step: ``tanh``, or NVIDIA's clamp to ``[-1, 1]`` when ``use_tanh_at_final`` is off."""
        return mx.tanh(x) if self.config.use_tanh_at_final else mx.clip(x, -1.0, 1.0)

    # Cut into tiles over the worker streams, the generator ran 0.94-0.95x (32 and 128 mel frames): its anti-aliased
    # activations are passes over memory, and two streams at once shared its bandwidth (performance-history.md).
    tiled_stages = False

    def __call__(self, mel: mx.array) -> mx.array:
        x = self.conv_pre(self.mel_to_layers(mel))
        for i, (up,) in enumerate(self.ups):
            x = up(x)
            x = self.stage_mean(i, x)
        x = self.conv_post(self.activation_post(x))
        return self.audio_from_layers(self.final(x))

    # -- PyTorch checkpoints -------------------------------------------------------------------------------------
    def conv_layers(self) -> List[Tuple[str, nn.Module]]:
        """``(prefix, layer)`` of every convolution, the prefix as in the PyTorch state dict."""
        return [(name, module) for name, module in self.named_modules() if isinstance(module, (Conv1d, ConvTranspose1d))]

    def activation_layers(self) -> List[Tuple[str, nn.Module]]:
        """``(prefix, layer)`` of every anti-aliased activation, the prefix as in the PyTorch state dict."""
        return [(name, module) for name, module in self.named_modules() if isinstance(module, Activation1d)]

    def load_torch_state_dict(self, state_dict: Dict[str, object]) -> "BigVGAN":
        """Loads NVIDIA's generator state dict (weight norm legacy, parametrized or removed).

        Args:
            state_dict: names to tensors (torch tensors, numpy arrays or array-likes).

        Returns:
            The generator itself.

        Raises:
            ValueError: when a layer's tensors are missing or misshapen, or keys are left over
                (a config that does not match the checkpoint): a
                :class:`~mlx_deconv.models.mismatch.ConfigMismatch` naming the config keys that
                differ from the checkpoint's, when its tensors tell. Nothing is changed then.
        """
        check_state_dict(state_dict)
        try:
            return self._load_torch_state_dict(state_dict)
        except ValueError as err:
            raise explain_mismatch(err, self.config, state_dict, "bigvgan") from None

    def _load_torch_state_dict(self, state_dict: Dict[str, object]) -> "BigVGAN":
        layers = self.conv_layers()
        activations = self.activation_layers()
        used = set()
        for prefix, _ in layers:
            used.update(k for k in state_dict if k.startswith(prefix + "."))
        plans = []
        for prefix, layer in activations:
            names, plan = _activation_plan(prefix, layer, state_dict)
            used.update(names)
            plans.append((prefix, layer, plan))
        extra = sorted(set(state_dict) - used)
        if extra:
            raise ValueError(f"state dict has keys this config has no layer for (are resblock, activation and the "
                             f"kernels right?): {extra[:8]}")
        before = self.parameters()  # references only: every load below replaces, never mutates
        try:
            for prefix, layer in layers:
                try:
                    layer.load_torch_state_dict(state_dict, prefix + ".")
                except ValueError as err:
                    raise ValueError(f"{prefix}: {err}") from None
            for prefix, layer, plan in plans:
                layer.update(tree_unflatten(list(plan.items())))
        except BaseException:
            self.update(before)
            raise
        return self


def _activation_plan(prefix: str, layer: nn.Module, state_dict) -> Tuple[List[str], Dict[str, mx.array]]:
    """The state-dict keys of one ``Activation1d`` and the arrays they give its parameters, checked.

    NVIDIA's names are ``<prefix>.act.alpha`` (``.act.beta`` for SnakeBeta), ``<prefix>.upsample.filter`` and
    ``<prefix>.downsample.lowpass.filter``; the layer's ``alpha``/``beta`` are matched with or without the
    ``act.`` level, and an array of the same number of elements is reshaped to the layer's shape.
    """
    ours = dict(tree_flatten(layer.parameters()))
    used, plan = [], {}
    for name, current in ours.items():
        # NVIDIA's name first: alpha and beta sit one level down, in the Snake module "act"
        candidates = [f"{prefix}.act.{name}", f"{prefix}.{name}"] if "." not in name else [f"{prefix}.{name}"]
        key = next((k for k in candidates if k in state_dict), None)
        if key is None:
            hint = f" (is activation {'snakebeta' if 'beta' in ours else 'snake'} right?)" if "." not in name else ""
            raise ValueError(f"{prefix}: the state dict has no {candidates[0]}{hint}")
        value = to_numpy(state_dict[key])
        if value.size != current.size:
            raise ValueError(f"{key} has shape {tuple(value.shape)}, this layer's {name} has {tuple(current.shape)}")
        used.append(key)
        plan[name] = mx.array(np.ascontiguousarray(value).reshape(current.shape)).astype(current.dtype)
    mx.eval(plan)
    return used, plan


def from_checkpoint(checkpoint, config: BigVGANConfig, *, backend: str = "auto", data_format: str = "NLC") -> BigVGAN:
    """A generator with the weights of NVIDIA's ``bigvgan_generator.pt`` (a path) or a state dict, weight norm folded.

    The file is read with ``torch.load(..., weights_only=True)``: no code in it runs. ``backend`` and
    ``data_format`` are :class:`BigVGAN`'s.
    """
    state = checkpoint if isinstance(checkpoint, dict) else load_torch_checkpoint(checkpoint)
    return BigVGAN(config, backend=backend, data_format=data_format).load_torch_state_dict(state)
