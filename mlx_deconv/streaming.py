"""Chunk-by-chunk synthesis that equals the whole-sequence output exactly.

Input row ``l`` writes full-output samples ``[l*stride, l*stride + span)``
(``span = dilation*(K-1) + 1``). After ``n`` rows, every full-output sample
before ``n*stride`` is final. The layer's output is the full output cropped to
``[left, full_length - right)``, and ``right`` does not depend on the length,
so a final sample can be emitted as soon as it is also known to lie before
the right crop: ``t < (n-1)*stride + span - right``. The state is the
overlap-add tail of partial sums, ``span - stride`` samples plus whatever the
right crop holds back — never the history.
"""

from __future__ import annotations

from typing import Optional

import mlx.core as mx

from .functional import conv_transpose1d
from .geometry import dilated_kernel_size, resolve_padding


class StreamingConvTranspose1d:
    """Runs a :class:`mlx_deconv.ConvTranspose1d` on a signal that arrives in chunks.

    ``step(chunk)`` returns every output sample the chunk made final;
    ``flush()`` returns the rest; the concatenation equals ``layer(whole)``
    to float rounding, for any chunking (empty chunks and single rows too).

    Args:
        layer: the layer to run; its current parameters are read on every step.
    """

    def __init__(self, layer):
        self.layer = layer
        self._span = dilated_kernel_size(layer.kernel_size, layer.dilation)
        self._left, self._right = resolve_padding(
            layer.padding, layer.kernel_size, layer.stride, layer.dilation, layer.output_padding
        )
        self._time_axis = 1 if layer.data_format == "NLC" else 2
        self.reset()

    @property
    def latency(self) -> int:
        """Output samples that wait for more input beyond the chunk's own ``len(chunk) * stride``.

        ``0`` for ``"causal"`` padding, and for any padding whose right crop is at
        most ``span - stride``; the output of a chunk of ``m`` rows is otherwise
        ``m * stride`` samples, ``latency`` of them late.
        """
        return max(0, self._right - (self._span - self.layer.stride))

    def reset(self) -> None:
        """Forgets the signal so far."""
        self._rows = 0  # input rows seen
        self._start = 0  # full-output position of the first pending sample
        self._pending: Optional[mx.array] = None  # (N, P, C_out) partial sums from _start
        self._batched = None

    def _to_nlc(self, chunk: mx.array) -> mx.array:
        batched = chunk.ndim == 3
        if self._batched is None:
            self._batched = batched
        elif batched != self._batched:
            raise ValueError(f"chunk of shape {chunk.shape}: the stream started {'' if self._batched else 'un'}batched")
        if not batched:
            chunk = chunk[None]
        return chunk if self.layer.data_format == "NLC" else chunk.transpose(0, 2, 1)

    def _from_nlc(self, y: mx.array) -> mx.array:
        """Bias, the layer's layout, activation: what the layer does after the convolution."""
        if "bias" in self.layer:
            y = y + self.layer.bias.astype(y.dtype)
        if self.layer.data_format == "NCL":
            y = y.transpose(0, 2, 1)
        y = self.layer.apply_activation(y)
        return y if self._batched else mx.squeeze(y, axis=0)  # y[0] would gather a copy

    def _emit(self, stop: int, batch: int, dtype) -> mx.array:
        """Pops full-output samples ``[_start, stop)``, drops those in the left crop, returns the rest."""
        channels = self.layer.out_channels
        count = max(0, stop - self._start)
        pending = self._pending if self._pending is not None else mx.zeros((batch, 0, channels), dtype)
        if pending.shape[1] < count:
            pending = mx.concatenate([pending, mx.zeros((batch, count - pending.shape[1], channels), pending.dtype)], 1)
        ready, self._pending = pending[:, :count], pending[:, count:]
        skip = min(count, max(0, self._left - self._start))
        self._start += count
        return self._from_nlc(ready[:, skip:])

    def step(self, chunk: mx.array) -> mx.array:
        """Feeds ``chunk`` (the layer's layout, ``L`` any length >= 0); returns the samples it made final."""
        x = self._to_nlc(mx.array(chunk) if not isinstance(chunk, mx.array) else chunk)
        batch, rows = x.shape[0], x.shape[1]
        if rows:
            layer = self.layer
            # The chunk's full output, uncropped and without bias: padding (0, 0).
            contribution = conv_transpose1d(
                x, layer.effective_weight(), None, stride=layer.stride, padding=(0, 0),
                output_padding=0, dilation=layer.dilation, groups=layer.groups, backend=layer.backend,
            )
            offset = self._rows * layer.stride - self._start
            pending = self._pending if self._pending is not None else mx.zeros((batch, 0, layer.out_channels), contribution.dtype)
            end = max(pending.shape[1], offset + contribution.shape[1])
            pending = mx.pad(pending, [(0, 0), (0, end - pending.shape[1]), (0, 0)])
            contribution = mx.pad(contribution, [(0, 0), (offset, end - offset - contribution.shape[1]), (0, 0)])
            self._pending = pending + contribution
            self._rows += rows
        stop = min(self._rows * self.layer.stride, (self._rows - 1) * self.layer.stride + self._span - self._right)
        return self._emit(stop if self._rows else 0, batch, x.dtype)

    def flush(self) -> mx.array:
        """Returns the remaining samples (the right end of the output) and resets the stream."""
        if self._rows == 0:
            raise ValueError("flush() before any input: the output of an empty signal is undefined")
        batch = self._pending.shape[0]
        stop = (self._rows - 1) * self.layer.stride + self._span - self._right
        tail = self._emit(stop, batch, self._pending.dtype)
        self.reset()
        return tail
