"""Chunk-by-chunk runs of the layers, equal to the whole-sequence call to float32 rounding, with bounded state.

Transposed (:class:`StreamingConvTranspose1d`): input row ``l`` writes
full-output samples ``[l*stride, l*stride + span)`` (``span = dilation*(K-1) + 1``).
After ``n`` rows, every full-output sample before ``n*stride`` is final. The
layer's output is the full output cropped to ``[left, full_length - right)``,
and ``right`` does not depend on the length, so a final sample can be emitted
as soon as it is also known to lie before the right crop:
``t < (n-1)*stride + span - right``. The state is the overlap-add tail of
partial sums, ``span - stride`` samples plus whatever the right crop holds
back — never the history.

Direct (:class:`StreamingConv1d`): output ``t`` reads padded input samples
``[t*stride, t*stride + span)``. It can be computed once those have arrived;
the state is the input samples the next output still reads (the left
context, fewer than ``span`` of them plus the left padding at the start).
The right padding is appended at :meth:`~StreamingConv1d.flush`.

Both run the layer's own op on the chunk and then the layer's own
:meth:`~mlx_deconv.nn.layers.ConvLayer.finish` (bias, layout, activation). A
``step`` that raises (wrong rank, channels, dtype or batch size) leaves the
stream as it was.
"""

from __future__ import annotations

from typing import Optional, Tuple

import mlx.core as mx

from ..ops.functional import as_float_array
from ..geometry.records import conv1d_padding, resolve_padding


class _Stream:
    """Chunk checks shared by both streams: nothing is changed until a step has succeeded."""

    def __init__(self, layer):
        self.layer = layer
        self.reset()

    @property
    def config(self):
        """The layer's config, read on every step (a Keras-spelled layer gets its input channels when built)."""
        return self.layer.config

    def reset(self) -> None:
        """Forgets the signal so far."""
        self._rows = 0  # input rows seen
        self._batched: Optional[bool] = None
        self._batch: Optional[int] = None
        self._dtype = None
        self._reset_state()

    def _reset_state(self) -> None:
        raise NotImplementedError

    def _check(self, chunk) -> Tuple[mx.array, bool]:
        """The chunk as a batched NLC array, after checking it against the layer and the stream so far."""
        x = as_float_array("chunk", chunk)  # the ops' dtype rule (float64 is computed in float32)
        if self._dtype is not None and x.dtype != self._dtype:
            raise TypeError(f"chunk has dtype {x.dtype} but the stream started with {self._dtype}")
        if x.ndim not in (2, 3):
            raise ValueError(f"chunk must be 2-D (unbatched) or 3-D, got shape {tuple(x.shape)}")
        batched, shape = x.ndim == 3, tuple(x.shape)
        if self._batched is not None and batched != self._batched:
            raise ValueError(f"chunk of shape {shape}: the stream started {'' if self._batched else 'un'}batched")
        if not batched:
            x = x[None]
        channel_axis = 2 if self.config.data_format == "NLC" else 1
        if x.shape[channel_axis] != self.config.in_channels:
            raise ValueError(
                f"chunk of shape {shape} has {x.shape[channel_axis]} channels on the channel axis of "
                f"data_format={self.config.data_format!r}; the layer takes in_channels={self.config.in_channels}"
            )
        if self._batch is not None and x.shape[0] != self._batch:
            raise ValueError(f"chunk has batch size {x.shape[0]} but the stream started with batch size {self._batch}")
        return (x if self.config.data_format == "NLC" else x.transpose(0, 2, 1)), batched

    def _started(self, x: mx.array, batched: bool) -> None:
        """Records the stream's batch, dtype and batching after its first successful step."""
        self._batched, self._batch, self._dtype = batched, x.shape[0], x.dtype

    def _convolve(self, x: mx.array, **padding) -> mx.array:
        """The layer's bare op (no bias, no activation) on batched NLC ``x``, with the stream's own padding."""
        kwargs = dict(self.config.op_kwargs(), data_format="NLC", **padding)
        return self.layer._op(x, self.layer.effective_weight(), None, **kwargs)

    def _empty(self, x: mx.array) -> mx.array:
        return mx.zeros((x.shape[0], 0, self.config.out_channels), x.dtype)


class StreamingConvTranspose1d(_Stream):
    """Runs a :class:`mlx_deconv.ConvTranspose1d` on a signal that arrives in chunks.

    ``step(chunk)`` returns every output sample the chunk made final;
    ``flush()`` returns the rest; the concatenation equals ``layer(whole)``
    to float32 rounding (chunks are summed in another order), for any chunking
    (empty chunks and single rows too).

    Args:
        layer: the layer to run; its current parameters are read on every step.
    """

    def __init__(self, layer):
        c = layer.config
        self._span = c.span
        self._left, self._right = resolve_padding(c.padding, c.kernel_size, c.stride, c.dilation, c.output_padding)
        super().__init__(layer)

    @property
    def latency(self) -> int:
        """Output samples that wait for more input beyond the chunk's own ``len(chunk) * stride``.

        ``0`` for ``"causal"`` padding, and for any padding whose right crop is at
        most ``span - stride``; the output of a chunk of ``m`` rows is otherwise
        ``m * stride`` samples, ``latency`` of them late.
        """
        return max(0, self._right - (self._span - self.config.stride))

    def _reset_state(self) -> None:
        self._start = 0  # full-output position of the first pending sample
        self._pending: Optional[mx.array] = None  # (N, P, C_out) partial sums from _start

    def _emit(self, pending: mx.array, stop: int, batched: bool):
        """Splits full-output samples ``[_start, stop)`` off ``pending``; returns (output, rest, new start)."""
        count = max(0, stop - self._start)
        if pending.shape[1] < count:
            pad = mx.zeros((pending.shape[0], count - pending.shape[1], pending.shape[2]), pending.dtype)
            pending = mx.concatenate([pending, pad], 1)
        skip = min(count, max(0, self._left - self._start))
        out = self.layer.finish(pending[:, skip:count], batched)
        return out, pending[:, count:], self._start + count

    def step(self, chunk: mx.array) -> mx.array:
        """Feeds ``chunk`` (the layer's layout, ``L`` any length >= 0); returns the samples it made final.

        Raises:
            ValueError, TypeError: for a chunk of the wrong rank, channels, dtype or
                batch size; the stream is then unchanged.
        """
        x, batched = self._check(chunk)
        c = self.config
        rows = self._rows + x.shape[1]
        pending = self._pending if self._pending is not None else self._empty(x)
        if x.shape[1]:
            # The chunk's full output, uncropped and without bias: padding (0, 0).
            contribution = self._convolve(x, padding=(0, 0), output_padding=0)
            offset = self._rows * c.stride - self._start
            end = max(pending.shape[1], offset + contribution.shape[1])
            pending = mx.pad(pending, [(0, 0), (0, end - pending.shape[1]), (0, 0)])
            contribution = mx.pad(contribution, [(0, 0), (offset, end - offset - contribution.shape[1]), (0, 0)])
            pending = pending + contribution
        stop = min(rows * c.stride, (rows - 1) * c.stride + self._span - self._right) if rows else 0
        out, pending, start = self._emit(pending, stop, batched)
        self._started(x, batched)
        self._pending, self._rows, self._start = pending, rows, start
        return out

    def flush(self) -> mx.array:
        """Returns the remaining samples (the right end of the output) and resets the stream."""
        if self._rows == 0:
            raise ValueError("flush() before any input: the output of an empty signal is undefined")
        stop = (self._rows - 1) * self.config.stride + self._span - self._right
        tail, _, _ = self._emit(self._pending, stop, self._batched)
        self.reset()
        return tail


class StreamingConv1d(_Stream):
    """Runs a :class:`mlx_deconv.Conv1d` on a signal that arrives in chunks.

    ``step(chunk)`` returns every output whose input window has arrived;
    ``flush()`` applies the right padding and returns the rest. The
    concatenation equals ``layer(whole)`` to float32 rounding (a chunk's
    products may be summed in another order), for any chunking. The state is
    the left context only: the input samples later outputs still read.

    Padding may be an int, ``(left, right)``, ``"valid"``, ``"causal"``, or
    ``"same"`` with stride 1 (with a larger stride, ``"same"``'s padding depends
    on the whole length, which a stream does not know).

    Args:
        layer: the layer to run; its current parameters are read on every step.

    Raises:
        ValueError: for ``"same"`` padding with a stride above 1.
    """

    def __init__(self, layer):
        c = layer.config
        if isinstance(c.padding, str) and c.padding.lower() == "same" and c.stride > 1:
            raise ValueError(
                f"padding='same' with stride={c.stride} pads by an amount that depends on the whole signal's length: "
                f"a stream needs padding 'causal', an int or (left, right)"
            )
        self._span = c.span
        self._left, self._right = conv1d_padding(c.padding, 1, c.kernel_size, c.stride, c.dilation)
        super().__init__(layer)

    @property
    def lookahead(self) -> int:
        """Input samples after row ``t*stride`` that output ``t`` waits for (``0`` for ``"causal"``)."""
        return max(0, self._span - 1 - self._left)

    def _reset_state(self) -> None:
        self._buffer: Optional[mx.array] = None  # padded input samples from position _start on
        self._start = 0
        self._emitted = 0

    def _advance(self, buffer: mx.array, available: int, batched: bool):
        """Computes outputs ``[_emitted, ready)``; returns (output, kept buffer, its start, ready)."""
        c = self.config
        ready = max(self._emitted, (available - self._span) // c.stride + 1 if available >= self._span else 0)
        if ready == self._emitted:
            y = self._empty(buffer)
        else:
            lo = self._emitted * c.stride - self._start
            hi = (ready - 1) * c.stride + self._span - self._start
            y = self._convolve(buffer[:, lo:hi], padding=0)
        start = min(ready * c.stride, available)  # the next output's window starts at ready * stride
        return self.layer.finish(y, batched), buffer[:, start - self._start:], start, ready

    def step(self, chunk: mx.array) -> mx.array:
        """Feeds ``chunk`` (the layer's layout, ``L`` any length >= 0); returns the outputs it completed.

        Raises:
            ValueError, TypeError: for a chunk of the wrong rank, channels, dtype or
                batch size; the stream is then unchanged.
        """
        x, batched = self._check(chunk)
        buffer = self._buffer
        if buffer is None:
            buffer = mx.zeros((x.shape[0], self._left, x.shape[2]), x.dtype)
        buffer = mx.concatenate([buffer, x], axis=1)
        available = self._left + self._rows + x.shape[1]
        out, buffer, start, ready = self._advance(buffer, available, batched)
        self._started(x, batched)
        self._buffer, self._start, self._emitted, self._rows = buffer, start, ready, self._rows + x.shape[1]
        return out

    def flush(self) -> mx.array:
        """Appends the right padding, returns the remaining outputs and resets the stream.

        Raises:
            ValueError: before any input, or when the whole signal is too short for one output.
        """
        if self._rows == 0:
            raise ValueError("flush() before any input: the output of an empty signal is undefined")
        available = self._left + self._rows + self._right
        if available < self._span:
            raise ValueError(
                f"the signal of {self._rows} samples is shorter than the kernel's span {self._span} with padding "
                f"({self._left}, {self._right}): it has no output"
            )
        pad = mx.zeros((self._buffer.shape[0], self._right, self._buffer.shape[2]), self._buffer.dtype)
        tail, _, _, _ = self._advance(mx.concatenate([self._buffer, pad], axis=1), available, self._batched)
        self.reset()
        return tail
