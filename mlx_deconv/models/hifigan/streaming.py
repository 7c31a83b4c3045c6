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
from ..stages import MelLayout, mel_data_format
from .model import LRELU_SLOPE, POST_LRELU_SLOPE, HiFiGAN, ResBlock1


class _Queue:
    """Samples waiting to be added to another branch's (later) output, along the length axis."""

    def __init__(self):
        self.items: Optional[mx.array] = None

    def push(self, x: mx.array) -> None:
        self.items = x if self.items is None else mx.concatenate([self.items, x], axis=1)

    def pop(self, n: int) -> mx.array:
        out, self.items = self.items[:, :n], self.items[:, n:]
        return out

    def __len__(self) -> int:
        return 0 if self.items is None else self.items.shape[1]


class _Chain:
    """Streams and elementwise functions one after the other."""

    def __init__(self, parts):
        self.parts = parts

    def step(self, x):
        for p in self.parts:
            x = p.step(x) if hasattr(p, "step") else p(x)
        return x

    def flush(self):
        x = None
        for p in self.parts:
            if hasattr(p, "step"):
                x = p.flush() if x is None else mx.concatenate([p.step(x), p.flush()], axis=1)
            elif x is not None:
                x = p(x)
        return x


class _Residual:
    """``x + branch(x)``, with ``x`` held until the branch's output for it arrives (stride 1)."""

    def __init__(self, branch):
        self.branch, self.skip = branch, _Queue()

    def step(self, x):
        self.skip.push(x)
        y = self.branch.step(x)
        return y + self.skip.pop(y.shape[1])

    def flush(self):
        y = self.branch.flush()
        return y + self.skip.pop(y.shape[1])


class _Mean:
    """The mean of several branches' outputs, emitted as far as all of them have come."""

    def __init__(self, branches):
        self.branches = branches
        self.queues = [_Queue() for _ in branches]

    def _emit(self):
        n = min(len(q) for q in self.queues)
        total = self.queues[0].pop(n)
        for q in self.queues[1:]:
            total = total + q.pop(n)
        return total / len(self.queues)

    def step(self, x):
        for b, q in zip(self.branches, self.queues):
            q.push(b.step(x))
        return self._emit()

    def flush(self):
        for b, q in zip(self.branches, self.queues):
            q.push(b.flush())
        return self._emit()


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
        parts = [m.conv_pre.streaming()]
        for i, up in enumerate(m.ups):
            parts += [_lrelu(LRELU_SLOPE), up.streaming()]
            blocks = []
            for block in m.stage_blocks(i):
                if isinstance(block, ResBlock1):
                    steps = [_Residual(_Chain([_lrelu(LRELU_SLOPE), c1.streaming(), _lrelu(LRELU_SLOPE), c2.streaming()]))
                             for c1, c2 in zip(block.convs1, block.convs2)]
                else:
                    steps = [_Residual(_Chain([_lrelu(LRELU_SLOPE), c.streaming()])) for c in block.convs]
                blocks.append(_Chain(steps))
            parts.append(_Mean(blocks))
        parts += [_lrelu(POST_LRELU_SLOPE), m.conv_post.streaming(), mx.tanh]
        self._chain = _Chain(parts)

    def step(self, mel_chunk: mx.array) -> mx.array:
        """Feeds mel frames (in ``data_format``); returns the audio they completed, ``(N, samples)``
        (``"NCL"``: ``(N, 1, samples)``).

        Raises:
            ValueError: for a chunk whose band axis, in ``data_format``, is not ``config.num_mels``.
        """
        return self.audio_from_layers(self._chain.step(self.mel_to_layers(mel_chunk)))

    def flush(self) -> mx.array:
        """Returns the last samples (in ``data_format``'s layout) and resets the stream."""
        tail = self.audio_from_layers(self._chain.flush())
        self.reset()
        return tail
