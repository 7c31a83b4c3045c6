"""The receptive field of a decoder, found on the decoder itself, and the refusal of decoders that are not local.

One concept in one module (about 400 lines): the measurement of a decoder's field and the refusals
that measurement makes, each needing the other's probes.

A decoder maps ``L`` input frames to ``hop * L + offset`` output samples. It is *local* when input
frame ``t`` changes only output samples ``[hop*t + first, hop*t + last]`` (the same ``first`` and
``last`` for every interior ``t``): then output sample ``n`` depends only on frames
``ceil((n - last) / hop) .. floor((n - first) / hop)``, and overlap-save streams it exactly.

:func:`measure` finds ``hop`` and ``offset`` from the output lengths at three input lengths, and
``first`` and ``last`` by perturbation: it replaces one interior frame of a random input by other
random values and marks the samples whose float32 value changed at all (``!= 0``, not a threshold:
the far tails of a receptive field are tiny but real, and both calls run the same computation, so
a sample the frame does not reach comes out bit-identical). Two neighbouring frames are perturbed,
and the union taken, so a sample that happens not to change for one of them is still counted.
When the changed samples reach an end of the output, the input is doubled, up to
``max_probe_frames``; a decoder whose changes still reach an end is not local and is refused.

:func:`nonlocal_layers` walks an :class:`mlx.nn.Module` (or the modules a bound method or a closure
holds) for recurrent layers and attention, which are refused before any probing.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence, Tuple

import mlx.core as mx
import mlx.nn as nn
import numpy as np

__all__ = ["NonLocalDecoderError", "ReceptiveField", "measure", "nonlocal_layers", "from_frames"]


class NonLocalDecoderError(ValueError):
    """The decoder cannot be streamed exactly: an output sample may depend on input frames arbitrarily far away."""


#: Class-name fragments (case as written: ``TurnNet`` holds no RNN) of layers whose output at one time
#: depends on all earlier (or all) times.
RECURRENT = ("LSTM", "GRU", "RNN", "Recurrent")
ATTENTION = ("Attention", "Transformer", "MHA", "Conformer")
#: ... and of normalisations whose statistics run over the whole signal (a LayerNorm's run over channels only).
NORMALISATION = ("InstanceNorm", "GroupNorm")


@dataclass(frozen=True)
class ReceptiveField:
    """What a decoder's output sample depends on.

    Attributes:
        hop (int): output samples per input frame (``L_out = hop * L + offset``).
        offset (int): output samples beyond ``hop * L`` (negative when the decoder crops).
        first (int): input frame ``t`` changes no output sample before ``hop * t + first``.
        last (int): ... and none after ``hop * t + last``.
        min_frames (int): the shortest input the decoder takes.
        measured (bool): ``first``/``last`` found by probing (``False``: from ``context=``/``lookahead=``).
        output_shape (tuple): the output's shape with its time axis of length 0 (for the example's other axes).
        output_dtype: the output's dtype.
        how (str): how ``first`` and ``last`` were found (``"perturbation"``, ``"perturbation and gradients"``,
            ``"given"``).
    """

    hop: int
    offset: int
    first: int
    last: int
    min_frames: int = 1
    measured: bool = True
    output_shape: Tuple[int, ...] = ()
    output_dtype: object = mx.float32
    how: str = "perturbation"

    @property
    def lookahead(self) -> int:
        """Input frames after a sample's own frame (``n // hop``) that it waits for."""
        return max(0, (self.hop - 1 - self.first) // self.hop)

    @property
    def context(self) -> int:
        """Input frames before a sample's own frame that it depends on."""
        return max(0, self.last // self.hop)

    def ready(self, frames: int) -> int:
        """Output samples final once ``frames`` input frames have arrived (the stream not yet ended)."""
        return max(0, min(self.hop * frames + self.first, self.hop * frames + self.offset))

    def length(self, frames: int) -> int:
        """Output samples of ``frames`` input frames."""
        return self.hop * frames + self.offset

    def first_frame(self, sample: int) -> int:
        """The first input frame output sample ``sample`` (or any later one) depends on."""
        return max(0, -((self.last - sample) // self.hop))  # ceil((sample - last) / hop)


def _check_frames(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"{name} must be an int >= 0 (input frames), got {value!r}")


def check_arguments(context, lookahead, max_probe_frames) -> None:
    """Raises ValueError, naming the argument, for a ``context``/``lookahead``/``max_probe_frames`` out of range."""
    if (context is None) != (lookahead is None):
        raise ValueError(f"pass both context= and lookahead= (or neither, to measure them), got context={context!r} "
                         f"and lookahead={lookahead!r}")
    if context is not None:
        _check_frames("context", context)
        _check_frames("lookahead", lookahead)
    if isinstance(max_probe_frames, bool) or not isinstance(max_probe_frames, (int, np.integer)) or max_probe_frames < 32:
        raise ValueError(f"max_probe_frames must be an int >= 32, got {max_probe_frames!r}")


def from_frames(hop: int, offset: int, context: int, lookahead: int, min_frames: int = 1,
                output_shape: Tuple[int, ...] = (), output_dtype=mx.float32) -> ReceptiveField:
    """The field of a decoder whose samples of frame ``k`` depend on frames ``k - context .. k + lookahead``.

    Raises:
        ValueError: for a negative or non-integer ``context`` or ``lookahead``.
    """
    _check_frames("context", context)
    _check_frames("lookahead", lookahead)
    # Frame t reaches the samples of frames t - lookahead .. t + context.
    return ReceptiveField(hop, offset, -hop * int(lookahead), hop * int(context) + hop - 1, min_frames, measured=False,
                          output_shape=output_shape, output_dtype=output_dtype, how="given")


def _held_modules(fn) -> List[Tuple[str, nn.Module]]:
    """The modules ``fn`` is or holds: itself, a bound method's object, a function's closure and the
    module-level names it reads, a partial's function and arguments, the values of a list, a tuple or a
    dict, and the attributes of any other object (a plain class wrapping a model)."""
    found: List[Tuple[str, nn.Module]] = []
    seen = set()

    def add(name, obj, depth):
        if id(obj) in seen or depth > 3:
            return
        seen.add(id(obj))
        if isinstance(obj, nn.Module):
            found.append((name, obj))
        elif inspect.ismethod(obj):
            add(name, obj.__self__, depth + 1)
        elif inspect.isfunction(obj):
            for var, cell in zip(obj.__code__.co_freevars, obj.__closure__ or ()):
                try:
                    add(var, cell.cell_contents, depth + 1)
                except ValueError:  # an empty cell
                    pass
            for var in obj.__code__.co_names:  # module-level names the function reads (a global model, a dict of them)
                held = obj.__globals__.get(var)
                if isinstance(held, (nn.Module, dict, list, tuple)):
                    add(var, held, depth + 1)
        elif hasattr(obj, "func") and callable(obj.func):  # functools.partial
            add(name, obj.func, depth + 1)
            for i, a in enumerate(getattr(obj, "args", ())):
                add(f"{name}.args[{i}]", a, depth + 1)
        elif isinstance(obj, (list, tuple)):
            for i, item in enumerate(obj):
                add(f"{name}[{i}]", item, depth + 1)
        elif isinstance(obj, dict):
            for key, item in list(obj.items())[:256]:
                add(f"{name}[{key!r}]", item, depth + 1)
        elif not isinstance(obj, (type, mx.array)) and not inspect.ismodule(obj) and hasattr(obj, "__dict__"):
            for key, item in list(vars(obj).items())[:256]:  # a plain object holding the model
                add(f"{name}.{key}", item, depth + 1)

    add(getattr(fn, "__name__", type(fn).__name__), fn, 0)
    return found


def nonlocal_layers(fn) -> List[Tuple[str, str, str]]:
    """Recurrent, attention and whole-signal normalisation layers in the modules ``fn`` is or holds.

    Returns:
        list: ``(path, class name, kind)`` with kind ``"recurrent"``, ``"attention"`` or ``"normalisation"``
        (an instance or group norm, or a batch norm in training mode: statistics over the whole signal).
    """
    exact, named = [], []
    for root, module in _held_modules(fn):
        for path, child in module.named_modules():
            name = type(child).__name__
            where = f"{root}.{path}" if path else root
            if isinstance(child, (nn.LSTM, nn.GRU, nn.RNN)):
                exact.append((where, name, "recurrent"))
            elif isinstance(child, (nn.MultiHeadAttention, nn.Transformer)):
                exact.append((where, name, "attention"))
            elif isinstance(child, (nn.InstanceNorm, nn.GroupNorm)):
                exact.append((where, name, "normalisation"))
            elif isinstance(child, nn.BatchNorm) and child.training:  # its batch's statistics, until .eval()
                exact.append((where, f"{name} in training mode: call .eval() on the model", "normalisation"))
            elif any(k in name for k in RECURRENT):
                named.append((where, name, "recurrent"))
            elif any(k in name for k in ATTENTION):
                named.append((where, name, "attention"))
            elif any(k in name for k in NORMALISATION):
                named.append((where, name, "normalisation"))
    # mlx.nn's own classes name the layer best; otherwise a class name (a model's own LSTM) does.
    hits = exact or named
    # The outermost hit of each kind names it: a transformer's own attention layers add nothing.
    outer = []
    for path, name, kind in hits:
        if not any(path.startswith(p + ".") for p, _, _ in outer):
            outer.append((path, name, kind))
    return outer


def _per_sample(diff: np.ndarray, axis: int) -> np.ndarray:
    """The largest absolute value at each output time (over every other axis)."""
    moved = np.moveaxis(np.abs(diff), axis, 0)
    return moved.reshape(moved.shape[0], -1).max(axis=1) if moved.size else np.zeros(moved.shape[0])


class _Probe:
    """Calls of the decoder on random inputs of the example's shape (time along ``in_axis``)."""

    def __init__(self, fn: Callable, shape: Sequence[int], dtype, in_axis: int, out_axis: int, seed: int):
        self.fn, self.shape, self.dtype = fn, list(shape), dtype
        self.in_axis, self.out_axis = in_axis, out_axis
        self.rng = np.random.default_rng(seed)
        self.calls = 0
        self.output_dtype = mx.float32

    def random(self, frames: int) -> np.ndarray:
        shape = list(self.shape)
        shape[self.in_axis] = frames
        return self.rng.standard_normal(shape).astype(np.float32)

    def warm(self, x: np.ndarray) -> None:
        """One call at ``x``'s shape before the compared ones: a first call may still choose its kernels
        (autotuning), and two calls compared bit for bit must run the same computation."""
        mx.eval(self.fn(mx.array(x).astype(self.dtype)))
        self.calls += 1

    def __call__(self, x: np.ndarray) -> np.ndarray:
        self.calls += 1
        y = self.fn(mx.array(x).astype(self.dtype))
        if not isinstance(y, mx.array):
            raise TypeError(f"the decoder returned {type(y).__name__}, not an mx.array: stream() takes a decoder "
                            f"of one array in and one array out")
        axis = self.out_axis if self.out_axis >= 0 else y.ndim + self.out_axis
        if not 0 <= axis < y.ndim:
            raise ValueError(f"out_axis={self.out_axis} is not an axis of the decoder's output of shape {tuple(y.shape)}")
        self.output_dtype = y.dtype
        return np.array(y.astype(mx.float32))

    def samples(self, y: np.ndarray) -> int:
        return y.shape[self.out_axis]


def _hop(probe: _Probe, lengths: Sequence[int]) -> Tuple[int, int]:
    outs = [probe.samples(probe(probe.random(n))) for n in lengths]
    hop = (outs[1] - outs[0]) / (lengths[1] - lengths[0])
    if hop != int(hop) or hop < 1 or any(o != int(hop) * n + outs[0] - int(hop) * lengths[0] for n, o in zip(lengths, outs)):
        raise NonLocalDecoderError(
            f"the decoder's output lengths {outs} at input lengths {list(lengths)} are not hop * L + offset with a "
            f"whole hop >= 1: stream() needs a fixed number of output samples per input frame")
    hop = int(hop)
    return hop, outs[0] - hop * lengths[0]


def _base_length(probe: _Probe, max_probe_frames: int) -> int:
    """16 frames, or the first doubling of it the decoder takes (a decoder of wide unpadded kernels needs more).

    Raises:
        the decoder's own error at 16 frames, when it takes no input up to ``max_probe_frames``.
    """
    frames, first_error = 16, None
    while True:
        try:
            probe(probe.random(frames))
            return frames
        except Exception as err:  # too short for it, or something else: the first error tells which
            first_error = first_error or err
            if frames >= max_probe_frames:
                raise first_error
            frames = min(2 * frames, max_probe_frames)


def _min_frames(probe: _Probe, hop: int, offset: int, limit: int) -> int:
    """The shortest input (up to ``limit`` frames) the decoder takes and gives ``hop * L + offset`` samples of."""
    for n in range(1, limit + 1):
        if hop * n + offset <= 0:
            continue
        try:
            if probe.samples(probe(probe.random(n))) == hop * n + offset:
                return n
        except Exception:  # a too-short input makes some decoders raise (reflection pads): try a longer one
            continue
    return limit


def _changed(probe: _Probe, base_x: np.ndarray, base_y: np.ndarray, frame: int) -> Optional[Tuple[int, int]]:
    """The first and last output sample that replacing input ``frame`` changes (None: none changed)."""
    x = base_x.copy()
    index = [slice(None)] * x.ndim
    index[probe.in_axis] = slice(frame, frame + 1)
    x[tuple(index)] = 3.0 * probe.random(1)  # a large change, so that small paths still show
    moved = np.flatnonzero(_per_sample(probe(x) - base_y, probe.out_axis) != 0)
    return (int(moved[0]), int(moved[-1])) if moved.size else None


def _gradient_frames(probe: _Probe, x: np.ndarray, y: np.ndarray, lo: int, hi: int) -> Optional[Tuple[int, int]]:
    """The first and last input frame with a nonzero gradient of output samples ``lo .. hi`` (None: none)."""
    cotangent = np.zeros(y.shape, np.float32)
    index = [slice(None)] * y.ndim
    index[probe.out_axis] = slice(lo, hi + 1)
    cotangent[tuple(index)] = 1.0 + probe.rng.random(cotangent[tuple(index)].shape)  # never zero
    probe.calls += 1
    _, (grad,) = mx.vjp(lambda a: probe.fn(a).astype(mx.float32), [mx.array(x).astype(probe.dtype)],
                        [mx.array(cotangent)])
    reached = np.flatnonzero(_per_sample(np.array(grad.astype(mx.float32)), probe.in_axis) != 0)
    return (int(reached[0]), int(reached[-1])) if reached.size else None


def _search(low: int, high: int, holds) -> int:
    """The smallest ``r`` in ``[low, high]`` with ``holds(r)``, for ``holds`` false then true (``high`` holds)."""
    while low < high:
        mid = (low + high) // 2
        if holds(mid):
            high = mid
        else:
            low = mid + 1
    return low


def _refine_by_gradients(probe: _Probe, x: np.ndarray, y: np.ndarray, hop: int, first: int,
                         last: int) -> Optional[Tuple[int, int]]:
    """``first`` and ``last`` widened to every sample with a nonzero gradient (None: the decoder has no gradients).

    A perturbation misses the far tails of a receptive field whose change rounds away against the sample's
    value; a gradient is computed on its own, so every path from a frame to a sample shows (a product of
    weights, zero only where no path exists). The samples of interior frame ``k`` are searched: the last
    frame they read is nondecreasing along the frame's samples, and so is the first.
    """
    k = x.shape[probe.in_axis] // 2
    block = (hop * k, hop * k + hop - 1)
    try:
        whole = _gradient_frames(probe, x, y, *block)
    except Exception:  # an op without a gradient (a custom kernel): the perturbation's bounds stand
        return None
    if whole is None:
        return first, last
    # Lookahead: frame k + ahead is the last any sample of frame k reads; samples from r_first on read it.
    ahead = max(whole[1] - k, (hop - 1 - first) // hop)
    def reads_last(r):
        reached = _gradient_frames(probe, x, y, block[0], block[0] + r)
        return reached is not None and reached[1] >= k + ahead

    r_first = first + hop * ahead if (hop - 1 - first) // hop == ahead else hop - 1
    if r_first > 0 and reads_last(r_first - 1):
        r_first = _search(0, r_first - 1, reads_last)
    # Context: frame k - behind is the first any sample of frame k reads; samples up to r_last read it.
    behind = max(k - whole[0], last // hop)
    def reads_first(r):
        reached = _gradient_frames(probe, x, y, block[0] + r, block[1])
        return reached is not None and reached[0] <= k - behind

    r_last = last - hop * behind if last // hop == behind else 0
    if r_last < hop - 1 and reads_first(r_last + 1):
        r_last = hop - 1 - _search(0, hop - 2 - r_last, lambda back: reads_first(hop - 1 - back))
    return min(first, r_first - hop * ahead), max(last, r_last + hop * behind)


def measure(fn: Callable, example: mx.array, in_axis: int, out_axis: int, *, context: Optional[int] = None,
            lookahead: Optional[int] = None, max_probe_frames: int = 512, seed: int = 0) -> ReceptiveField:
    """Finds the decoder's hop, offset and receptive field by calling it on random inputs shaped like ``example``.

    Args:
        fn: the decoder.
        example: an input (any number of frames): its shape off the time axis and its dtype are used.
        in_axis, out_axis (int): the time axes of input and output (``in_axis`` >= 0).
        context, lookahead (int, optional): input frames before and after a sample's own frame that it
            depends on; given (both), the perturbation probe is skipped (:func:`from_frames`).
        max_probe_frames (int): the longest input tried. Default: ``512``.
        seed (int): of the random inputs.

    Returns:
        ReceptiveField

    Raises:
        NonLocalDecoderError: when the decoder is not deterministic, not a fixed hop, or not local
            (a change of one frame reaches the ends of the output at every probed length).
    """
    check_arguments(context, lookahead, max_probe_frames)
    probe = _Probe(fn, example.shape, example.dtype, in_axis, out_axis, seed)
    base = _base_length(probe, max_probe_frames)
    hop, offset = _hop(probe, (base, base + 1, base + 3))
    x = probe.random(base)
    probe.warm(x)
    once, twice = probe(x), probe(x)
    if not np.array_equal(once, twice):
        diff = float(np.abs(once - twice).max())
        raise NonLocalDecoderError(
            f"the decoder is not deterministic: two calls on one input differ by {diff:.3g} (a random draw inside, "
            f"such as a noise layer): no stream can equal a whole decode; build it without the random layer")
    shape = list(once.shape)
    shape[out_axis] = 0
    output_shape = tuple(shape)
    min_frames = _min_frames(probe, hop, offset, base)
    if context is not None:
        return from_frames(hop, offset, context, lookahead, min_frames, output_shape, probe.output_dtype)
    frames = 32
    while True:
        frames = min(frames, max_probe_frames)
        x = probe.random(frames)
        probe.warm(x)
        y = probe(x)
        total = probe.samples(y)
        first, last, edge = math.inf, -math.inf, False
        for t in (frames // 2, frames // 2 + 1):
            changed = _changed(probe, x, y, t)
            if changed is None:
                continue
            a, b = changed
            first, last = min(first, a - hop * t), max(last, b - hop * t)
            edge = edge or a < 2 * hop or b >= total - 2 * hop
        if first == math.inf:
            raise NonLocalDecoderError(
                f"changing input frames {frames // 2} and {frames // 2 + 1} of {frames} changed no output sample: "
                f"the decoder does not depend on its input along in_axis={in_axis}")
        if not edge:
            refined = _refine_by_gradients(probe, x, y, hop, int(first), int(last))
            how = "perturbation"
            if refined is not None:
                first, last, how = refined[0], refined[1], "perturbation and gradients"
                edge = hop * t + first < 2 * hop or hop * t + last >= total - 2 * hop
        if not edge:
            return ReceptiveField(hop, offset, int(first), int(last), min_frames, True, output_shape, probe.output_dtype,
                                  how)
        if frames >= max_probe_frames:
            t = frames // 2
            reach = []
            if hop * t + first < 2 * hop:
                reach.append(f"back to the start (sample {max(0, hop * t + int(first))})")
            if hop * t + last >= total - 2 * hop:
                reach.append(f"to the end (sample {min(total - 1, hop * t + int(last))} of {total})")
            raise NonLocalDecoderError(
                f"the decoder is not local in time: changing input frame {t} of {frames} changed output samples "
                f"{' and '.join(reach)} (a recurrent layer, attention over all frames, or a normalisation over the "
                f"whole signal); raise max_probe_frames={max_probe_frames} if its receptive field is wider")
        frames *= 2
