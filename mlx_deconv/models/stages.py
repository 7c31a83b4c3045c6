"""What HiFi-GAN and BigVGAN share: after each upsampling layer, one block per ``(kernel, dilations)``
pair, their outputs averaged (HiFi-GAN's offline over tiles of the signal, on every CPU core); a config
read from a ``config.json``'s dictionary; and the mel layout (``data_format``) of their input and output."""

from __future__ import annotations

from dataclasses import MISSING, fields
from typing import Dict, List, Tuple

import mlx.core as mx
import mlx.nn as nn

from ..backends.anti_aliased.gradient import untraced
from ..geometry.records import conv1d_padding
from ..nn.anti_aliased import Activation1d
from ..nn.layers import Conv1d
from ..runtime.worker_streams import mean_over_tiles


class StageBlocks:
    """For a generator whose ``resblocks`` list holds ``len(config.resblock_kernel_sizes)`` blocks per stage, in order."""

    #: Whether :meth:`stage_mean` may cut a stage's signal into tiles on the worker streams (which evaluates the
    #: stage's intermediates during the call); set it to False on a model to keep its call lazy.
    tiled_stages = True

    @property
    def num_kernels(self) -> int:
        return len(self.config.resblock_kernel_sizes)

    def stage_blocks(self, stage: int) -> List:
        """The blocks after upsampling layer ``stage``, whose outputs are averaged."""
        n = self.num_kernels
        return self.resblocks[stage * n:(stage + 1) * n]

    def stage_mean(self, stage: int, x: mx.array) -> mx.array:
        """The mean of the blocks after upsampling layer ``stage``, on ``x`` (``(N, L, C)`` or ``(L, C)``).

        Where :attr:`tiled_stages` allows it, untraced, on a CPU stream behind a serial BLAS with more than one
        core, a long enough signal is cut into overlapping tiles that take the worker streams in turn, each running
        every block (:func:`~mlx_deconv.runtime.worker_streams.mean_over_tiles`); its intermediate arrays are then
        evaluated as it goes. The result equals the plain mean to float32 rounding.
        """
        blocks = self.stage_blocks(stage)
        if self.tiled_stages and untraced(x):
            reaches, macs = zip(*(block_extent(b) for b in blocks))
            tiled = mean_over_tiles([residual_steps(b) for b in blocks], x, max(reaches),
                                    2.0 * (x.size // x.shape[-1]) * sum(macs))
            if tiled is not None:
                return tiled
        total = blocks[0](x)
        for block in blocks[1:]:
            total = total + block(x)
        return total / len(blocks)


def residual_steps(block: nn.Module) -> List:
    """A block as the functions it applies in turn: its ``residual_steps()`` if it has them, else the block itself."""
    steps = getattr(block, "residual_steps", None)
    return steps() if steps is not None else [block]


def _conv_reach(config) -> int:
    """How far, in samples, a stride-1 convolution's output reads its input on either side."""
    left, _ = conv1d_padding(config.padding, 1, config.kernel_size, 1, config.dilation)  # stride 1: no length in it
    return max(left, config.span - 1 - left)


def block_extent(block: nn.Module) -> Tuple[int, int]:
    """``(reach, multiply-adds)`` of a block of stride-1 layers, in one walk over its modules.

    The reach is an upper bound of how far, in samples, the block's output reads its input on either side: the
    sum of its layers' reaches (convolutions; anti-aliased activations at their filter's length; pointwise
    functions and residual sums add nothing). The multiply-adds are its convolutions' per sample.
    """
    reach = macs = 0
    for module in block.modules():
        if isinstance(module, Conv1d):
            reach += _conv_reach(module.config)
            macs += module.config.multiply_adds
        elif isinstance(module, Activation1d):
            reach += int(module.upsample["filter"].size)
    return reach, macs


def config_from_dict(cls, values: Dict, model: str):
    """``cls`` (a config dataclass) from a ``config.json``'s dictionary, keys it has no field for ignored.

    Raises:
        ValueError: naming the fields without a default that ``values`` lacks.
    """
    names = {f.name for f in fields(cls)}
    missing = [f.name for f in fields(cls) if f.default is MISSING and f.name not in values]
    if missing:
        raise ValueError(f"{model} config lacks {missing}")
    return cls(**{k: v for k, v in values.items() if k in names})


def flag(name: str, value) -> bool:
    """A JSON boolean (numpy's ``bool_`` too); strings and numbers are refused, not guessed at."""
    if isinstance(value, bool) or type(value).__name__ == "bool_":
        return bool(value)
    raise ValueError(f"{name} must be true or false, got {value!r}")


def ints(name: str, values) -> Tuple[int, ...]:
    """Integers (``4``, ``4.0``), refusing booleans, fractions and strings."""
    try:
        values = list(values)
        out = tuple(int(v) for v in values)
        bad = any(isinstance(v, (bool, str)) or int(v) != v for v in values)
    except (TypeError, ValueError):
        bad = True
    if bad:
        raise ValueError(f"{name} must be integers, got {values!r}")
    return out


def checked_shape(config) -> Dict[str, object]:
    """The shape fields both generators' configs share, read and checked: ``resblock``, the upsampling rates and
    kernels, the blocks' kernels and dilations, ``upsample_initial_channel``, ``num_mels`` and ``sampling_rate``.

    Returns:
        dict: the fields' checked values (tuples of ints, ints, ``resblock`` as a string), to put on the config.

    Raises:
        ValueError: naming the field and its value.
    """
    out = {"resblock": str(config.resblock)}
    if out["resblock"] not in ("1", "2"):
        raise ValueError(f"resblock must be '1' or '2', got {config.resblock!r}")
    for name in ("upsample_rates", "upsample_kernel_sizes", "resblock_kernel_sizes"):
        out[name] = ints(name, getattr(config, name))
    try:
        dilations = tuple(ints("resblock_dilation_sizes", ds) for ds in config.resblock_dilation_sizes)
    except TypeError:
        raise ValueError(f"resblock_dilation_sizes must be a list of lists of integers, "
                         f"got {config.resblock_dilation_sizes!r}") from None
    out["resblock_dilation_sizes"] = dilations
    rates, kernels, blocks = out["upsample_rates"], out["upsample_kernel_sizes"], out["resblock_kernel_sizes"]
    if len(rates) != len(kernels) or not rates:
        raise ValueError(f"upsample_rates {rates} and upsample_kernel_sizes {kernels} must be non-empty and of one length")
    if len(blocks) != len(dilations) or not blocks:
        raise ValueError(f"resblock_kernel_sizes {blocks} and resblock_dilation_sizes {dilations} must be non-empty "
                         f"and of one length")
    if any(not ds for ds in dilations) or any(d < 1 for ds in dilations for d in ds):
        raise ValueError(f"every block needs dilations >= 1, got resblock_dilation_sizes {dilations}")
    if any(u < 1 for u in rates) or any(k < 1 for k in blocks):
        raise ValueError(f"rates and kernel sizes must be >= 1, got upsample_rates {rates}, resblock_kernel_sizes {blocks}")
    if any(k % 2 == 0 for k in blocks):
        raise ValueError(f"resblock_kernel_sizes must be odd, got {blocks}: a block adds its input to its convolutions' "
                         f"output, whose 'same' padding keeps the length for odd kernels only")
    for k, u in zip(kernels, rates):
        if k < u:
            raise ValueError(f"upsample kernel {k} is shorter than its rate {u}: padding (k-u)//2 would be negative")
    for name in ("upsample_initial_channel", "num_mels", "sampling_rate"):
        value = ints(name, [getattr(config, name)])[0]
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
        out[name] = value
    channels = out["upsample_initial_channel"]
    if channels % 2 ** len(rates):
        raise ValueError(f"upsample_initial_channel={channels} must be divisible by 2**{len(rates)}")
    return out


#: The mel layouts a generator takes, by the layers' own names: ``"NLC"`` is ``(N, frames, num_mels)``,
#: ``"NCL"`` is ``(N, num_mels, frames)`` (NVIDIA's code, the original HiFi-GAN and mlx-audio).
MEL_LAYOUTS = {"NLC": "(N, frames, num_mels)", "NCL": "(N, num_mels, frames)"}


def mel_data_format(data_format) -> str:
    """``"NLC"`` or ``"NCL"`` (the layers' aliases ``"channels_last"``/``"channels_first"`` too).

    Raises:
        ValueError: naming ``data_format`` and its value otherwise.
    """
    from ..nn.config import normalize_data_format

    return normalize_data_format(data_format)


class MelLayout:
    """The mel layout of a generator (``self.data_format``, ``self.config.num_mels``): its input checked and
    put channels-last for the layers, its output put back in the caller's layout."""

    def mel_to_layers(self, mel: mx.array, owner: str = "") -> mx.array:
        """``mel`` in ``self.data_format``, checked, as ``(N, frames, num_mels)`` (or ``(frames, num_mels)``).

        The layout is never guessed: a square mel runs in the layout named. A mel whose band axis, in that
        layout, is not ``config.num_mels`` is refused, with the layout that would fit when the other axis is.

        Raises:
            ValueError: naming ``data_format``, the shape and ``num_mels``.
        """
        owner = owner or type(self).__name__
        fmt, bands = self.data_format, self.config.num_mels
        shape = tuple(getattr(mel, "shape", ()))
        if len(shape) not in (2, 3):
            raise ValueError(f"{owner} (data_format={fmt!r}) takes a mel {MEL_LAYOUTS[fmt]}, or one without N; "
                             f"got shape {shape}")
        axis, other_axis = (-1, -2) if fmt == "NLC" else (-2, -1)
        if shape[axis] != bands:
            message = (f"{owner} (data_format={fmt!r}) takes a mel {MEL_LAYOUTS[fmt]}: shape {shape} has "
                       f"{shape[axis]} mel bands, but config.num_mels={bands}")
            if shape[other_axis] == bands:
                other = "NCL" if fmt == "NLC" else "NLC"
                message += (f"; it looks {MEL_LAYOUTS[other]}: build {owner} with data_format=\"{other}\", "
                            f"or transpose the mel")
            else:
                message += " (is the config the one the mel was made for?)"
            raise ValueError(message)
        return mel if fmt == "NLC" else mx.swapaxes(mel, -1, -2)

    def audio_step(self, chain, mel_chunk) -> mx.array:
        """A stream's step: ``mel_chunk`` through ``chain`` (its layer streams and combinators take a batch), the
        audio it completed in the caller's layout; an unbatched mel (no N) gives unbatched audio, as the model does.

        Raises:
            ValueError: for a mel :meth:`mel_to_layers` refuses, or unbatched where the stream started batched
                (or the reverse).
        """
        mel = self.mel_to_layers(mel_chunk)
        unbatched = mel.ndim == 2
        started = getattr(self, "_unbatched", None)
        if started is not None and started != unbatched:
            raise ValueError(f"chunk of shape {tuple(mel_chunk.shape)}: the stream started "
                             f"{'un' if started else ''}batched")
        y = self.audio_from_layers(chain.step(mel[None] if unbatched else mel))
        self._unbatched = unbatched
        return mx.squeeze(y, 0) if unbatched else y

    def audio_flush(self, chain) -> mx.array:
        """A stream's flush through ``chain``, batched or not as its steps were."""
        y = self.audio_from_layers(chain.flush())
        unbatched, self._unbatched = getattr(self, "_unbatched", None), None
        return mx.squeeze(y, 0) if unbatched else y

    def audio_from_layers(self, y: mx.array) -> mx.array:
        """The last layer's ``(N, samples, 1)`` as the caller's layout has it: ``(N, samples)`` for ``"NLC"``,
        ``(N, 1, samples)`` for ``"NCL"`` (as NVIDIA's generator returns it); without N for an unbatched mel."""
        return y[..., 0] if self.data_format == "NLC" else mx.swapaxes(y, -1, -2)
