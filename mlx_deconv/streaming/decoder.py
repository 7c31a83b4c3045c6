"""``stream(fn)``: any local decoder run on frames that arrive in chunks, equal to the whole decode.

Overlap-save. The stream keeps the input frames from ``start`` on and, on every step that makes new
samples final, decodes that window and returns the samples it has not returned yet whose receptive
field has fully arrived (:meth:`ReceptiveField.ready`). Then it drops the frames no later sample
depends on (:meth:`ReceptiveField.first_frame`). A returned sample's whole receptive field lies inside
the window, so it sees the same inputs as in the whole decode: while ``start`` is 0 the window begins
at the true start (the decoder's own left padding), and :meth:`DecoderStream.flush` decodes the last
window up to the true end (its right padding). The window is at most the field's width plus the chunk
and a few frames, whatever the length of the stream.

For this package's :class:`~mlx_deconv.hifigan.HiFiGAN` and :class:`~mlx_deconv.bigvgan.BigVGAN`,
``method="state"`` runs their own streams instead, which keep each layer's state and compute every
sample once (:mod:`mlx_deconv.models.hifigan.streaming`); mlx-audio's BigVGAN streams so through a copy in
this package's layers (:mod:`mlx_deconv.models.bigvgan.mlx_audio`).
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional, Tuple

import mlx.core as mx
import numpy as np

from .receptive_field import NonLocalDecoderError, ReceptiveField, check_arguments, measure, nonlocal_layers

__all__ = ["DecoderStream", "stream"]

#: A stream's check run agrees with the whole decode within this fraction of the output's peak.
VERIFY_TOLERANCE = 1e-5
HALF = (mx.float16, mx.bfloat16)
METHODS = ("auto", "recompute", "state")


def _take(x: mx.array, axis: int, start: int, stop: Optional[int] = None) -> mx.array:
    index = [slice(None)] * x.ndim
    index[axis] = slice(start, stop)
    return x[tuple(index)]


@dataclasses.dataclass(frozen=True)
class _StateForm:
    """How a decoder can keep state: a maker of a new stateful stream, the time axes it takes, and what it is."""

    make: Callable[[], object]
    in_axes: Tuple[int, ...]
    out_axes: Tuple[int, ...]
    hop: int
    what: str
    checked: bool = False  # new machinery for this decoder: a check stream runs first, whatever verify says


def _state_form(fn) -> Tuple[Optional[_StateForm], str]:
    """``(form, why not)``: this package's own stateful stream for ``fn`` where it has one (its HiFiGAN and BigVGAN,
    and mlx-audio's BigVGAN through a copy in this package's layers), else ``(None, reason)``."""
    from ..models.bigvgan import BigVGAN, StreamingBigVGAN
    from ..models.bigvgan.mlx_audio import from_mlx_audio, is_mlx_audio_bigvgan
    from ..models.hifigan import HiFiGAN, StreamingHiFiGAN

    def form(model, stream_class, what):
        ncl = model.data_format == "NCL"  # (N, mels, frames) -> (N, 1, samples); else (N, frames, mels) -> (N, samples)
        return _StateForm(lambda: stream_class(model), (2, -1) if ncl else (1, -2), (2, -1) if ncl else (1, -1),
                          model.config.hop_size, what)

    if isinstance(fn, HiFiGAN):
        return form(fn, StreamingHiFiGAN, "the model's own layer-by-layer stream"), ""
    if isinstance(fn, BigVGAN):
        return form(fn, StreamingBigVGAN, "the model's own layer-by-layer stream"), ""
    if is_mlx_audio_bigvgan(fn):
        try:
            copy = from_mlx_audio(fn)
        except ValueError as err:
            return None, f"mlx-audio's BigVGAN could not be copied into this package's layers: {err}"
        return form(copy, StreamingBigVGAN, "a layer-by-layer stream of this package's BigVGAN, holding a copy of "
                                            "mlx-audio's weights taken when the stream was made"), ""
    from . import layered

    make, hop, why_not = layered.plan(fn)
    if make is not None:
        return _StateForm(make, (1, -2), (1, -2), hop, "a layer-by-layer stream of its modules", checked=True), ""
    return None, (f"{type(fn).__name__} is not one of this package's HiFiGAN or BigVGAN, nor mlx-audio's BigVGAN, "
                  f"nor a tree of modules streamed layer by layer ({why_not})")


class DecoderStream:
    """A decoder run on input frames that arrive in chunks; made by :func:`stream`.

    ``step(chunk)`` returns every output sample whose input frames have all arrived; ``flush()`` the
    rest (the true end reached) and resets the stream. Their concatenation along ``out_axis`` equals
    ``fn(whole)`` to float32 rounding, for any chunking.
    """

    def __init__(self, fn: Callable, in_axis: int, out_axis: int, *, context=None, lookahead=None, field=None,
                 example=None, method: str = "auto", verify: bool = True, max_probe_frames: int = 512, seed: int = 0):
        if not callable(fn):
            raise TypeError(f"fn must be a callable decoder (one array in, one array out), got {type(fn).__name__}")
        for name, value in (("in_axis", in_axis), ("out_axis", out_axis)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise ValueError(f"{name} must be an int (the time axis), got {value!r}")
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        check_arguments(context, lookahead, max_probe_frames)
        if field is not None and not isinstance(field, ReceptiveField):
            raise TypeError(f"field must be a ReceptiveField (another stream's .field), got {type(field).__name__}")
        if field is not None and context is not None:
            raise ValueError("pass field= or context=/lookahead=, not both")
        self._given_field = field
        self.fn, self.in_axis, self.out_axis = fn, int(in_axis), int(out_axis)
        self._context, self._lookahead = context, lookahead
        self._max_probe_frames, self._seed, self._verify = max_probe_frames, seed, bool(verify)
        layers = nonlocal_layers(fn)
        if layers:
            raise NonLocalDecoderError(
                "the decoder is not local in time, so it cannot be streamed exactly by overlap-save: it holds "
                + "; ".join(f"{kind} layer {path} ({name})" for path, name, kind in layers))
        form, why_not = (None, "method='recompute'") if method == "recompute" else _state_form(fn)
        if method == "state" and form is None:
            raise ValueError(f"method='state' needs a decoder that can keep state: {why_not}")
        if form is not None and not (self.in_axis in form.in_axes and self.out_axis in form.out_axes):
            why_not = (f"its stateful stream takes in_axis in {form.in_axes} and out_axis in {form.out_axes}, got "
                       f"in_axis={in_axis}, out_axis={out_axis}")
            if method == "state":
                raise ValueError(f"method='state': {why_not}")
            form = None
        # "auto" keeps state where that was measured faster (docs/streaming.md): wherever it can.
        self._state_form = form
        self.method = "state" if form is not None else "recompute"
        self._why_not_state = why_not
        self._method = method
        self.field: Optional[ReceptiveField] = None
        self._prepared = False
        self._ndim: Optional[int] = None
        self._compute_dtype: Optional[mx.Dtype] = None
        self.reset()
        if example is not None:
            self._prepare(mx.array(example) if not isinstance(example, mx.array) else example)

    # -- set-up -------------------------------------------------------------------------------------------

    def _axis(self, ndim: int) -> int:
        axis = self.in_axis + ndim if self.in_axis < 0 else self.in_axis
        if not 0 <= axis < ndim:
            raise ValueError(f"in_axis={self.in_axis} is not an axis of a {ndim}-D chunk")
        return axis

    def _prepare(self, example: mx.array) -> None:
        """Measures (or takes) the receptive field on inputs shaped like ``example``, then checks a stream of it.

        The stateful path needs no field (each layer's stream holds its own context): it is not measured.
        """
        axis = self._axis(example.ndim)
        shape = list(example.shape)
        shape[axis] = 0
        field = None
        if self.method == "state" and example.ndim != 3:
            if self._method == "state":
                raise ValueError(f"method='state' takes 3-D chunks (a batch of mels), got {tuple(example.shape)}")
            self._recompute_instead(f"the models' stateful streams take 3-D chunks, got {tuple(example.shape)}")
        if self.method == "recompute" and self._given_field is not None:
            field = self._given_field
            # The field's output shape is the measuring example's: take this example's from one short call.
            probe = list(example.shape)
            probe[axis] = field.min_frames
            y = self.fn(mx.zeros(probe, example.dtype))
            out_shape = list(y.shape)
            out_shape[self.out_axis] = 0
            field = dataclasses.replace(field, output_shape=tuple(out_shape), output_dtype=y.dtype)
        elif self.method == "recompute":
            field = measure(self.fn, example, axis, self.out_axis, context=self._context, lookahead=self._lookahead,
                            max_probe_frames=self._max_probe_frames, seed=self._seed)
        self.field, self._ndim, self._shape, self._dtype = field, example.ndim, tuple(shape), example.dtype
        self._prepared = True
        if self.method == "state":
            self._compute_dtype = self._whole_dtype(example, axis)
        if self.method == "state" and self._state_form.checked:
            try:
                self._check_against_whole()
            except Exception as err:  # a module that cannot run on chunks, or a stream that is not exact
                self.field, self._ndim, self._prepared = None, None, False
                if self._method == "state":
                    self.reset()
                    raise NonLocalDecoderError(f"method='state': the layer-by-layer stream is not exact here: "
                                               f"{err}") from err
                self._recompute_instead(f"the layer-by-layer stream was not exact: {err}")
                return self._prepare(example)
            return
        if self._verify:
            try:
                self._check_against_whole()
            except Exception:  # unmeasured and empty again, as before this call
                self.field, self._ndim, self._prepared = None, None, False
                self.reset()
                raise

    def _whole_dtype(self, example: mx.array, axis: int) -> Optional[mx.Dtype]:
        """The dtype the decoder computes a chunk's dtype in, where it is wider (a half-precision mel through
        float32 weights gives float32 samples): the stateful stream casts its chunks to it. None: the chunk's own."""
        if example.dtype not in HALF:
            return None
        shape = list(example.shape)
        shape[axis] = 64
        try:
            out = self.fn(mx.zeros(shape, example.dtype)).dtype
        except Exception:  # noqa: BLE001 (a decoder that cannot take this input: its check below says why)
            return None
        return out if out in (mx.float32, mx.float64) else None

    def _recompute_instead(self, why: str) -> None:
        """``method="auto"`` gives up keeping state, saying why (``repr``), and recomputes from now on."""
        self.method, self._state_form, self._why_not_state = "recompute", None, why
        self.reset()

    def _check_against_whole(self) -> None:
        """Streams a random input in uneven chunks (1 frame first) and compares it with its whole decode."""
        f = self.field
        window = 8 if f is None else (f.last - f.first) // f.hop + f.min_frames + 2
        frames = max(2 * window + 6, 16)  # the start, two slides of the window and the end
        shape = list(self._shape)
        axis = self._axis(len(shape))
        shape[axis] = frames
        # Half precision is checked in float32: the check tests where the stream's windows and states lie, which
        # half's rounding (1e-3 of the peak through a deep decoder) would hide.
        dtype = mx.float32 if self._dtype in HALF else self._dtype
        x = mx.array(np.random.default_rng(self._seed + 1).standard_normal(shape).astype(np.float32)).astype(dtype)
        whole = self.fn(x)
        sizes, start = [1, 2, 3], 0
        pieces = []
        kept_dtypes = self._dtype, self._compute_dtype
        self._dtype, self._compute_dtype = dtype, None
        try:
            while start < frames:
                size = sizes[len(pieces)] if len(pieces) < len(sizes) else window
                pieces.append(self.step(_take(x, axis, start, start + size)))
                start += size
            pieces.append(self.flush())
        finally:
            self._dtype, self._compute_dtype = kept_dtypes
        streamed = mx.concatenate(pieces, axis=self.out_axis)
        if streamed.shape != whole.shape:
            raise NonLocalDecoderError(f"a check stream of {frames} frames gave shape {tuple(streamed.shape)}, the whole "
                                       f"decode {tuple(whole.shape)}: the decoder is not shift-invariant in time")
        a, b = np.array(streamed.astype(mx.float32)), np.array(whole.astype(mx.float32))
        peak = float(np.abs(b).max())
        err = float(np.abs(a - b).max())
        if not err <= VERIFY_TOLERANCE * peak:
            given = "" if f is None or f.measured else f" (with context={self._context}, lookahead={self._lookahead} as given)"
            raise NonLocalDecoderError(
                f"a check stream of {frames} frames differs from the whole decode by {err:.3g} ({err / max(peak, 1e-30):.2g} "
                f"of its peak){given}: the decoder is not shift-invariant or its receptive field is wider than found")

    # -- the stream ---------------------------------------------------------------------------------------

    def reset(self) -> None:
        """Forgets the signal so far (the measured receptive field is kept)."""
        self._buffer: Optional[mx.array] = None  # input frames from self._start on
        self._start = 0
        self._received = 0
        self._emitted = 0
        self._state = self._state_form.make() if self._state_form is not None else None

    def _check_chunk(self, chunk) -> mx.array:
        x = chunk if isinstance(chunk, mx.array) else mx.array(chunk)
        if self._ndim is not None:
            shape = list(x.shape)
            if x.ndim != self._ndim:
                raise ValueError(f"chunk has shape {tuple(x.shape)}, {x.ndim}-D, but the stream takes {self._ndim}-D "
                                 f"chunks shaped like {self._shape} (0 on the time axis {self.in_axis})")
            shape[self._axis(x.ndim)] = 0
            if tuple(shape) != self._shape:
                raise ValueError(f"chunk has shape {tuple(x.shape)}; off the time axis in_axis={self.in_axis} the "
                                 f"stream takes {self._shape}")
            if x.dtype != self._dtype:
                raise TypeError(f"chunk has dtype {x.dtype} but the stream takes {self._dtype}")
        else:
            self._axis(x.ndim)
        return x

    def step(self, chunk) -> mx.array:
        """Feeds input frames (any number along ``in_axis``, 0 included); returns the samples they made final.

        The first step measures the receptive field (unless ``example=`` or ``context=``/``lookahead=``
        were given), which calls the decoder a few dozen times.

        Raises:
            ValueError, TypeError: for a chunk of another rank, shape off the time axis, or dtype
                than the first; the stream is then unchanged.
            NonLocalDecoderError: at the first step, when the decoder cannot be streamed exactly.
        """
        x = self._check_chunk(chunk)
        if not self._prepared:
            self._prepare(x)
        axis = self._axis(x.ndim)
        if self._state is not None:
            out = self._state.step(x if self._compute_dtype is None else x.astype(self._compute_dtype))
            self._received += x.shape[axis]
            return out
        buffer = x if self._buffer is None else mx.concatenate([self._buffer, x], axis=axis)
        f, start = self.field, self._start
        received = self._received + x.shape[axis]
        ready = f.ready(received)
        out = None
        if ready > self._emitted and received - start >= f.min_frames:
            y = self.fn(buffer)
            out = _take(y, self.out_axis, self._emitted - f.hop * start, ready - f.hop * start)
            emitted = ready
        else:
            emitted = self._emitted
        # Drop the frames no sample after `emitted` depends on, keeping the decoder's shortest input. The window
        # starts at or before frame `emitted // hop` too: its output begins at sample `hop * start`, and a decoder
        # that crops its start makes a sample depend on frames past its own.
        keep = max(start, min(f.first_frame(emitted), emitted // f.hop, received - f.min_frames))
        buffer = _take(buffer, axis, keep - start)
        mx.eval(buffer)  # the window alone, not the graph of every chunk before it
        self._buffer, self._start, self._received, self._emitted = buffer, keep, received, emitted
        return out if out is not None else self._empty()

    def _empty(self) -> mx.array:
        return mx.zeros(self.field.output_shape, self.field.output_dtype)

    def flush(self) -> mx.array:
        """Returns the last samples (the decoder's right edge at the true end) and resets the stream.

        Raises:
            ValueError: before any input, or when the whole signal is shorter than the decoder takes.
        """
        if self._state is not None and self._received:
            tail = self._state.flush()
            self.reset()
            return tail
        if self._received == 0:
            raise ValueError("flush() before any input: the output of an empty signal is undefined")
        f = self.field
        if self._received - self._start < f.min_frames:
            raise ValueError(f"the signal of {self._received} frames is shorter than the {f.min_frames} frames the "
                             f"decoder takes")
        y = self.fn(self._buffer)
        tail = _take(y, self.out_axis, self._emitted - f.hop * self._start)
        expected = f.length(self._received) - self._emitted
        self.reset()
        if tail.shape[self.out_axis] != expected:
            raise NonLocalDecoderError(f"the last window gave {tail.shape[self.out_axis]} samples where {expected} "
                                       f"were due: the decoder's output length is not hop * L + offset here")
        return tail

    # -- what it is ---------------------------------------------------------------------------------------

    @property
    def hop(self) -> Optional[int]:
        """Output samples per input frame (``None`` until measured, for a stream that recomputes)."""
        if self._state_form is not None:
            return self._state_form.hop
        return None if self.field is None else self.field.hop

    @property
    def window_frames(self) -> Optional[int]:
        """The most input frames a step decodes besides its chunk (``None`` until measured)."""
        f = self.field
        if f is None:
            return None
        return max(f.min_frames, (f.last - f.first) // f.hop + 2)

    def __repr__(self) -> str:
        name = getattr(self.fn, "__name__", type(self.fn).__name__)
        head = f"DecoderStream({name}, in_axis={self.in_axis}, out_axis={self.out_axis}"
        f = self.field
        if self.method == "state":
            f = self._state_form
            return (f"{head}, hop={f.hop}; each step runs {f.what}, every layer keeping the context it needs as "
                    f"state, so each sample is computed once and returned as soon as its frames have arrived)")
        if f is None:
            return head + ", receptive field not measured yet: at the first step)"
        how = f"measured by {f.how}" if f.measured else "as given"
        if self._given_field is not None:
            how += ", from field="
        steps = (f"each step decodes the kept window (at most {self.window_frames} frames plus the chunk) and "
                 f"returns the samples not returned yet whose frames have all arrived; no kept state: "
                 f"{self._why_not_state}")
        return (f"{head}, hop={f.hop}, offset={f.offset}, context={f.context} frames, lookahead={f.lookahead} frames "
                f"({how}: frame t reaches samples hop*t{f.first:+d} .. hop*t{f.last:+d}), min_frames={f.min_frames}; "
                f"{steps})")


def stream(fn: Callable, in_axis: int = 1, out_axis: int = 1, *, context: Optional[int] = None,
           lookahead: Optional[int] = None, field: Optional[ReceptiveField] = None, example=None,
           method: str = "auto", verify: bool = True, max_probe_frames: int = 512, seed: int = 0) -> DecoderStream:
    """Streams a decoder that is local in time, exactly: chunks of frames in, the samples they made final out.

    The concatenation of what ``step`` and ``flush`` return equals ``fn(whole)`` to float32 rounding,
    for any chunk sizes; each sample comes out as soon as every input frame it depends on has
    arrived (the decoder's own lookahead), and each step's memory and time are bounded whatever the
    stream's length. The receptive field is measured on the decoder by perturbing its input
    (:func:`~mlx_deconv.streaming.measure`), at construction with ``example=`` or else at the first
    step; decoders with recurrent layers, attention or random draws, or whose outputs depend on
    frames arbitrarily far away, are refused with :class:`NonLocalDecoderError`.

    Args:
        fn: the decoder: one array of frames in, one array of samples out.
        in_axis (int): the input's time (frames) axis. Default: ``1`` (``(N, frames, channels)``).
        out_axis (int): the output's time (samples) axis. Default: ``1``.
        context, lookahead (int, optional): input frames before and after a sample's own frame
            (``sample // hop``) that it depends on; given (both), they replace the measurement.
        field (ReceptiveField, optional): another stream's ``.field`` for the same decoder, to skip the
            measurement (a new stream per utterance, say).
        example (array, optional): an input to measure on now (its values are not used); otherwise the
            first chunk's shape is used at the first step.
        method (str): ``"recompute"`` (decode the kept window every step), ``"state"`` (this package's
            HiFiGAN and BigVGAN, mlx-audio's BigVGAN through a copy of its weights taken now, and trees of
            known modules such as mlx-audio's DAC and SNAC decoders (:mod:`.layered`, after a check stream):
            layer-by-layer stateful streams) or ``"auto"`` (``"state"`` where it applies; ``repr`` says why
            not elsewhere). Default: ``"auto"``.
        verify (bool): stream a random input once after measuring and compare it with its whole decode
            (within 1e-5 of its peak), refusing the decoder when they differ. Default: ``True``.
        max_probe_frames (int): the longest input the measurement tries. Default: ``512``.
        seed (int): of the measurement's random inputs. Default: ``0``.

    Returns:
        DecoderStream: with ``step(chunk)``, ``flush()``, ``reset()`` and the measured ``field``.

    Raises:
        NonLocalDecoderError: the decoder cannot be streamed exactly (the message says why).
        ValueError: for arguments out of range.

    Example:
        >>> s = stream(decoder, in_axis=1, out_axis=1)
        >>> audio = mx.concatenate([s.step(c) for c in chunks] + [s.flush()], axis=1)
    """
    return DecoderStream(fn, in_axis, out_axis, context=context, lookahead=lookahead, field=field, example=example,
                         method=method, verify=verify, max_probe_frames=max_probe_frames, seed=seed)
