"""``BigVGANConfig``: the generator's shape as NVIDIA's ``config.json`` spells it, and the v2 presets.

The keys are NVIDIA's (``resblock``, ``upsample_rates``, ``activation``,
``snake_logscale``, ``use_tanh_at_final``, ...); training keys (batch size,
discriminators, losses) are ignored when reading a file. Keys NVIDIA's code
reads with a default (``use_tanh_at_final``, ``use_bias_at_final``: both
``True``) have the same default here, so the v1 configs, which lack them, read
as NVIDIA's code reads them.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Dict, Optional, Tuple

from ..stages import checked_shape, config_from_dict, flag

#: The activations NVIDIA's generator knows.
ACTIVATIONS = ("snake", "snakebeta")


@dataclass(frozen=True)
class BigVGANConfig:
    """The generator's shape, with the keys of NVIDIA's ``config.json``.

    Args:
        resblock (str): ``"1"`` (AMPBlock1: pairs of a dilated and a plain conv) or ``"2"``
            (AMPBlock2: single dilated convs).
        upsample_rates: the stride of each upsampling layer; their product is the hop size.
        upsample_kernel_sizes: the kernel of each upsampling layer (padding ``(k - u) // 2``).
        upsample_initial_channel (int): channels after ``conv_pre``; halved by every upsampling.
        resblock_kernel_sizes: one AMP block per kernel size, in every stage.
        resblock_dilation_sizes: the dilations of each of those blocks.
        activation (str): ``"snake"`` or ``"snakebeta"``, inside every anti-aliased activation.
        snake_logscale (bool): the activations' ``alpha`` (and ``beta``) are stored as logarithms.
        num_mels (int): mel bands of the input.
        use_tanh_at_final (bool): ``tanh`` at the end; ``False``: clamp to ``[-1, 1]``. Default: ``True``.
        use_bias_at_final (bool): ``conv_post`` has a bias. Default: ``True``.
        sampling_rate (int): of the audio, for writing it. Default: ``22050``.
        hop_size (int, optional): audio samples per mel frame; must be the product of the
            rates when given. Default: that product.
    """

    resblock: str
    upsample_rates: Tuple[int, ...]
    upsample_kernel_sizes: Tuple[int, ...]
    upsample_initial_channel: int
    resblock_kernel_sizes: Tuple[int, ...]
    resblock_dilation_sizes: Tuple[Tuple[int, ...], ...]
    activation: str
    snake_logscale: bool
    num_mels: int
    use_tanh_at_final: bool = True
    use_bias_at_final: bool = True
    sampling_rate: int = 22050
    hop_size: Optional[int] = None

    def __post_init__(self):
        put = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731 (frozen)
        for name, value in checked_shape(self).items():
            put(name, value)
        if not isinstance(self.activation, str) or self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {self.activation!r}")
        for name in ("snake_logscale", "use_tanh_at_final", "use_bias_at_final"):
            put(name, flag(name, getattr(self, name)))
        product = math.prod(self.upsample_rates)
        if self.hop_size is None:
            put("hop_size", product)
        elif int(self.hop_size) != product:
            raise ValueError(f"hop_size={self.hop_size} is not the product of upsample_rates {self.upsample_rates} "
                             f"({product}): the generator makes {product} samples per mel frame")
        else:
            put("hop_size", int(self.hop_size))

    @classmethod
    def from_dict(cls, values: Dict) -> "BigVGANConfig":
        """From a ``config.json``'s dictionary; training keys (batch size, losses, discriminators...) are ignored."""
        if not isinstance(values, dict):
            raise ValueError(f"a BigVGAN config is a JSON object, got {type(values).__name__}")
        return config_from_dict(cls, values, "BigVGAN")

    @classmethod
    def from_json(cls, path) -> "BigVGANConfig":
        """Reads NVIDIA's ``config.json``."""
        try:
            values = json.loads(Path(path).read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{path} is not JSON: {err}") from None
        return cls.from_dict(values)

    def to_dict(self) -> Dict:
        """The keys of ``config.json`` (lists, as JSON has them), enough for NVIDIA's code to build the generator."""
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "resblock_dilation_sizes":
                value = [list(ds) for ds in value]
            elif isinstance(value, tuple):
                value = list(value)
            out[f.name] = value
        return out

    def channels(self, stage: int) -> int:
        """Channels after ``stage`` upsampling layers (``0``: after ``conv_pre``); each halves them."""
        return self.upsample_initial_channel // 2 ** stage

    def upsample_padding(self, i: int) -> int:
        """The padding of upsampling layer ``i``: ``(k - u) // 2``, as NVIDIA's code has it."""
        return (self.upsample_kernel_sizes[i] - self.upsample_rates[i]) // 2


def _v2(num_mels: int, sampling_rate: int, rates, kernels) -> BigVGANConfig:
    return BigVGANConfig(resblock="1", upsample_rates=rates, upsample_kernel_sizes=kernels, upsample_initial_channel=1536,
                         resblock_kernel_sizes=(3, 7, 11), resblock_dilation_sizes=((1, 3, 5),) * 3,
                         activation="snakebeta", snake_logscale=True, num_mels=num_mels, use_tanh_at_final=False,
                         use_bias_at_final=False, sampling_rate=sampling_rate)


#: NVIDIA's ``bigvgan_v2_22khz_80band_256x`` (also the shape of ``..._fmax8k_256x``).
V2_22KHZ_80BAND_256X = _v2(80, 22050, (4, 4, 2, 2, 2, 2), (8, 8, 4, 4, 4, 4))
#: NVIDIA's ``bigvgan_v2_24khz_100band_256x``.
V2_24KHZ_100BAND_256X = _v2(100, 24000, (4, 4, 2, 2, 2, 2), (8, 8, 4, 4, 4, 4))
#: NVIDIA's ``bigvgan_v2_44khz_128band_256x``.
V2_44KHZ_128BAND_256X = _v2(128, 44100, (4, 4, 2, 2, 2, 2), (8, 8, 4, 4, 4, 4))
#: NVIDIA's ``bigvgan_v2_44khz_128band_512x``.
V2_44KHZ_128BAND_512X = _v2(128, 44100, (8, 4, 2, 2, 2, 2), (16, 8, 4, 4, 4, 4))

#: The presets by the names of NVIDIA's ``configs/*.json`` (and Hugging Face repositories ``nvidia/<name>``).
PRESETS = {
    "bigvgan_v2_22khz_80band_256x": V2_22KHZ_80BAND_256X,
    "bigvgan_v2_22khz_80band_fmax8k_256x": V2_22KHZ_80BAND_256X,
    "bigvgan_v2_24khz_100band_256x": V2_24KHZ_100BAND_256X,
    "bigvgan_v2_44khz_128band_256x": V2_44KHZ_128BAND_256X,
    "bigvgan_v2_44khz_128band_512x": V2_44KHZ_128BAND_512X,
}
