"""``StreamingBigVGAN``: a :class:`~mlx_deconv.bigvgan.BigVGAN` run on mel frames that arrive in chunks.

Every convolution runs through its layer's own stream (:mod:`mlx_deconv.nn.streaming`),
and the graph around them (residual sums, the mean of the blocks) through the
same stream combinators as :class:`~mlx_deconv.hifigan.StreamingHiFiGAN`.

The anti-aliased activations need care: each pads its input by replicating
the first and the last sample (before upsampling, and again at the high rate
before downsampling), and those pads belong to the true ends of the signal
only. An :class:`ActivationStream` therefore runs the layer itself on a
window of the input that reaches ``left`` samples before the first output it
still owes (or to the signal's true start) and holds back the last ``right``
outputs until more input (or the true end, at :meth:`~ActivationStream.flush`)
has come. Outputs whose input window lies inside the stream's window do not
see the window's own edge pads, so every output equals the offline one
(the filters' products summed in the same order, up to the convolutions'
float32 rounding). For NVIDIA's activation (ratio 2, 12 taps) ``left = right = 5``.
"""

from __future__ import annotations

import math
from typing import Optional, Tuple

import mlx.core as mx

from ...nn.stream_combinators import Chain, Mean, Residual
from ..stages import MelLayout, mel_data_format
from .model import AMPBlock1, BigVGAN

__all__ = ["ActivationStream", "StreamingBigVGAN", "activation_context"]


def activation_context(ratio: int = 2, up_taps: int = 12, down_taps: Optional[int] = None) -> Tuple[int, int]:
    """``(left, right)``: input samples before and after ``t`` that output ``t`` of an ``Activation1d`` reads.

    NVIDIA's layer upsamples by ``ratio`` with an ``up_taps``-tap transposed conv (edge padding of
    ``p = up_taps // ratio - 1`` samples, a crop of ``p * ratio + (up_taps - ratio) // 2`` on the left),
    applies the activation at the high rate, and low-passes with a ``down_taps``-tap conv of stride
    ``ratio`` (edge padding ``down_taps // 2 - (down_taps even)`` on the left). Output ``t`` reads
    high-rate samples ``[ratio*t - pad, ratio*t - pad + down_taps)``, and high-rate sample ``s`` reads
    inputs ``i`` with ``0 <= s + (up_taps - ratio)//2 - ratio*i < up_taps``. In a window of the signal,
    an output is untouched by the window's own edge pads (and by the zeros beyond them) when every input
    and every high-rate sample it reads lies inside the window: ``left`` outputs from its start and
    ``right`` from its end are not.
    """
    r, ku = int(ratio), int(up_taps)
    kd = ku if down_taps is None else int(down_taps)
    shift = (ku - r) // 2
    down_left = kd // 2 - (1 - kd % 2)
    lo_high, hi_high = -down_left, -down_left + kd - 1  # high-rate samples output 0 reads
    lo_in = math.ceil((lo_high + shift - (ku - 1)) / r)  # inputs those read
    hi_in = (hi_high + shift) // r
    # Window-relative: output t is clear of the left edge when t + lo_in >= 0 and r*t + lo_high >= 0.
    left = max(-lo_in, math.ceil(-lo_high / r), 0)
    # Clear of the right edge of a window of m inputs when t + hi_in <= m - 1 and r*t + hi_high <= r*m - 1.
    right = max(hi_in, math.ceil((hi_high + 1) / r) - 1, 0)
    return left, right


def _layer_context(layer) -> Tuple[int, int]:
    """``activation_context`` of an :class:`~mlx_deconv.Activation1d` (its ratio and its filters' lengths)."""
    ratio = getattr(layer, "ratio", 2)
    try:
        up, down = layer.upsample["filter"].size, layer.downsample["lowpass"]["filter"].size
    except (AttributeError, KeyError, TypeError):
        up = down = 12  # NVIDIA's
    return activation_context(ratio, up, down)


class ActivationStream:
    """Runs an anti-aliased activation layer on a signal that arrives in chunks, exactly as on the whole.

    ``step(chunk)`` (``(N, L, C)``, any ``L >= 0``) returns the outputs the chunk made final; ``flush()`` the
    rest, with the true right edge. The state is the last ``left + right`` inputs (all inputs, until ``left``
    outputs have been given: the left edge is the signal's start).

    Args:
        layer: an :class:`~mlx_deconv.Activation1d` (its ``ratio`` and filter lengths give the context), or
            any callable over ``(N, L, C)`` with NVIDIA's edge rule (then NVIDIA's ratio 2 and 12 taps).
        context: ``(left, right)`` instead of the layer's :func:`activation_context`.
    """

    def __init__(self, layer, context: Optional[Tuple[int, int]] = None):
        self.layer = layer
        self.left, self.right = _layer_context(layer) if context is None else context
        self.reset()

    def reset(self) -> None:
        """Forgets the signal so far."""
        self._buffer: Optional[mx.array] = None  # inputs from self._start on
        self._start = 0
        self._received = 0
        self._emitted = 0

    @property
    def latency(self) -> int:
        """Outputs held back for more input: ``right``."""
        return self.right

    def step(self, chunk: mx.array) -> mx.array:
        buffer = chunk if self._buffer is None else mx.concatenate([self._buffer, chunk], axis=1)
        received = self._received + chunk.shape[1]
        stop = received - self.right
        if stop <= self._emitted:
            self._buffer, self._received = buffer, received
            return buffer[:, :0]
        y = self.layer(buffer)
        out = y[:, self._emitted - self._start:stop - self._start]
        start = max(self._start, stop - self.left)  # the next output's inputs start at stop - left
        self._buffer, self._start = buffer[:, start - self._start:], start
        self._received, self._emitted = received, stop
        return out

    def flush(self) -> mx.array:
        """The last outputs (the signal's right edge reached); resets the stream."""
        if self._buffer is None or self._received == 0:
            raise ValueError("flush() before any input: the output of an empty signal is undefined")
        if self._emitted == self._received:  # no right context (filters as long as the ratio): all given already
            out = self._buffer[:, :0]
        else:
            out = self.layer(self._buffer)[:, self._emitted - self._start:]
        self.reset()
        return out


class StreamingBigVGAN(MelLayout):
    """Runs a :class:`BigVGAN` on mel frames that arrive in chunks.

    ``step(mel_chunk)`` (``(N, frames, num_mels)``, or ``(N, num_mels, frames)`` with ``"NCL"``; any number of
    frames) returns the audio samples that chunk completed; ``flush()`` the rest. Their concatenation (along
    the last axis) equals ``model(mel)`` to float32 rounding,
    for any chunking. Each anti-aliased activation holds back a few samples for its right context (five at
    its input rate for NVIDIA's), so the first samples come after a few frames.

    Args:
        model (BigVGAN): the generator; its parameters are read on every step.
        data_format (str, optional): the chunks' layout: ``"NLC"`` (``(N, frames, num_mels)`` in,
            ``(N, samples)`` out) or ``"NCL"`` (``(N, num_mels, frames)`` in, ``(N, 1, samples)`` out).
            Default: the model's ``data_format``.
    """

    def __init__(self, model: BigVGAN, data_format: Optional[str] = None):
        self.model = model
        self.data_format = model.data_format if data_format is None else mel_data_format(data_format)
        self.config = model.config
        self.reset()

    def reset(self) -> None:
        """Forgets the signal so far."""
        m = self.model
        self._unbatched = None  # set by the first step
        parts = [m.conv_pre.streaming()]
        for i, (up,) in enumerate(m.ups):
            parts.append(up.streaming())
            blocks = []
            for block in m.stage_blocks(i):
                if isinstance(block, AMPBlock1):
                    steps = [Residual(Chain([ActivationStream(a1), c1.streaming(), ActivationStream(a2), c2.streaming()]))
                             for a1, c1, a2, c2 in block.steps()]
                else:
                    steps = [Residual(Chain([ActivationStream(a), c.streaming()])) for a, c in block.steps()]
                blocks.append(Chain(steps))
            parts.append(Mean(blocks))
        parts += [ActivationStream(m.activation_post), m.conv_post.streaming(), m.final]
        self._chain = Chain(parts)

    def step(self, mel_chunk: mx.array) -> mx.array:
        """Feeds mel frames (in ``data_format``); returns the audio they completed, ``(N, samples)``
        (``"NCL"``: ``(N, 1, samples)``).

        Raises:
            ValueError: for a chunk whose band axis, in ``data_format``, is not ``config.num_mels``, or
                unbatched where the stream started batched (or the reverse).
        """
        return self.audio_step(self._chain, mel_chunk)

    def flush(self) -> mx.array:
        """Returns the last samples (in ``data_format``'s layout) and resets the stream."""
        tail = self.audio_flush(self._chain)
        self.reset()
        return tail
