"""``StreamingHiFiGAN``: a :class:`~mlx_deconv.hifigan.HiFiGAN` run on mel frames that arrive in chunks.

Every convolution runs through its layer's own stream (:mod:`mlx_deconv.nn.streaming`);
the generator's graph around them (residual sums, the mean of the blocks) is
rebuilt from small stream combinators that hold samples until every branch
has produced them.
"""

from __future__ import annotations

from typing import Optional

import mlx.core as mx

from ...nn.activations import leaky_relu
from ...nn.stream_combinators import Chain, Mean, Residual
from ..stages import MelLayout, mel_data_format
from .model import LRELU_SLOPE, POST_LRELU_SLOPE, HiFiGAN, ResBlock1


def _lrelu(slope):
    return lambda x: leaky_relu(x, slope)  # each thread's own compiled copy (docs/threads-exit.md)


class StreamingHiFiGAN(MelLayout):
    """Runs a :class:`HiFiGAN` on mel frames that arrive in chunks, through the layers' own streams.

    ``step(mel_chunk)`` (``(N, frames, num_mels)``, or ``(N, num_mels, frames)`` with ``"NCL"``; any number
    of frames) returns the audio samples that chunk completed; ``flush()`` the rest. Their concatenation
    (along the last axis) equals ``model(mel)`` to float32 rounding, for any chunking.

    Args:
        model (HiFiGAN): the generator; its parameters are read on every step.
        data_format (str, optional): the chunks' layout: ``"NLC"`` (``(N, frames, num_mels)`` in,
            ``(N, samples)`` out) or ``"NCL"`` (``(N, num_mels, frames)`` in, ``(N, 1, samples)`` out).
            Default: the model's ``data_format``.
    """

    def __init__(self, model: HiFiGAN, data_format: Optional[str] = None):
        self.model = model
        self.data_format = model.data_format if data_format is None else mel_data_format(data_format)
        self.config = model.config
        self.reset()

    def reset(self) -> None:
        """Forgets the signal so far."""
        m = self.model
        self._unbatched = None  # set by the first step
        parts = [m.conv_pre.streaming()]
        for i, up in enumerate(m.ups):
            parts += [_lrelu(LRELU_SLOPE), up.streaming()]
            blocks = []
            for block in m.stage_blocks(i):
                if isinstance(block, ResBlock1):
                    steps = [Residual(Chain([_lrelu(LRELU_SLOPE), c1.streaming(), _lrelu(LRELU_SLOPE), c2.streaming()]))
                             for c1, c2 in zip(block.convs1, block.convs2)]
                else:
                    steps = [Residual(Chain([_lrelu(LRELU_SLOPE), c.streaming()])) for c in block.convs]
                blocks.append(Chain(steps))
            parts.append(Mean(blocks))
        parts += [_lrelu(POST_LRELU_SLOPE), m.conv_post.streaming(), mx.tanh]
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
