"""``patch_mlx()``: ``mx.conv1d`` / ``mx.conv_transpose1d`` routed to mlx_deconv keep MLX's signatures, results
and errors, from any thread; ``unpatch_mlx()`` puts MLX's own objects back; ``convert()`` swaps layers in place.

Every comparison is against MLX's functions as the test session found them (``MLX_*`` below), and where
the definition gives an output, against the float64 references of tests/reference.py too.
"""

import re
import subprocess
import sys
import threading
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Optional

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import mlx_deconv as md
import reference as ref
from helpers import EPS
from mlx_deconv import backends
from mlx_deconv.bench import patched_decoders as bench_models
from mlx_deconv.ops import functional, patch

MLX_CONV1D = mx.conv1d
MLX_CONV_TRANSPOSE1D = mx.conv_transpose1d
#: A stream of this (the main) thread, made once: hypothesis runs every example here.
OWN_STREAM = mx.new_stream(mx.cpu)
ROOT = Path(__file__).resolve().parent.parent
HAS_MLX_AUDIO = bench_models.has_mlx_audio()


@pytest.fixture(autouse=True)
def unpatched():
    """Every test starts and ends with MLX's own functions in place."""
    md.unpatch_mlx()
    assert mx.conv1d is MLX_CONV1D and mx.conv_transpose1d is MLX_CONV_TRANSPOSE1D
    yield
    md.unpatch_mlx()
    assert mx.conv1d is MLX_CONV1D and mx.conv_transpose1d is MLX_CONV_TRANSPOSE1D


class Routed:
    """What the patched functions did since the fixture started (``patch.statistics()``'s difference):
    ``routed[op]``, the calls of ``op`` the package took up (computed, on MLX's op as it would run it, refused
    or failed); ``routed["computed"]``, those it computed or ran on MLX's op as it would have (counted once
    they ran); ``routed["failed"]``, those it failed on."""

    def __init__(self):
        self.start = patch.statistics()

    def _delta(self, op, kinds):
        now = patch.statistics()[op]
        return sum(now[k] - self.start[op][k] for k in kinds)

    def __getitem__(self, key):
        ops = ("conv1d", "conv_transpose1d")
        if key in ops:
            return self._delta(key, ("package", "mlx_op", "refused", "failed"))
        kinds = {"computed": ("package", "mlx_op"), "failed": ("failed",)}[key]
        return sum(self._delta(op, kinds) for op in ops)


@pytest.fixture
def routed():
    """Counts the calls the patch hands to the package (and which of them it computed)."""
    return Routed()


# -- one call, drawn at random ------------------------------------------------------------------

#: What can be wrong with a call (None: nothing). Each gets MLX's answer: its error, or its result.
FLAWS = [None] * 12 + ["channels", "out_groups", "negative_padding", "zero_stride", "zero_dilation",
                       "negative_output_padding", "float_arg", "numpy_int", "bool_arg", "two_d", "four_d", "int_dtype",
                       "float64", "mixed_dtype", "numpy_input", "string_stream", "short_input", "empty_kernel",
                       "empty_batch"]
STREAMS = ["none", "cpu", "device", "default_stream", "own_stream", "context", "thread_local"]
FORMS = ["positional", "keyword", "non_default_keywords", "mixed"]


@dataclass
class Call:
    transposed: bool
    batch: int
    length: int
    groups: int
    cig: int
    cog: int
    taps: int
    stride: int
    padding: int
    dilation: int
    output_padding: int
    dtype: object
    form: str
    stream: str
    flaw: Optional[str]
    seed: int

    @property
    def name(self):
        return "conv_transpose1d" if self.transposed else "conv1d"

    def arrays(self):
        rng = np.random.default_rng(self.seed)
        c_in = self.groups * self.cig + (self.flaw == "channels")
        c_out = self.groups * self.cog + (self.flaw == "out_groups")
        taps = 0 if self.flaw == "empty_kernel" else self.taps
        batch = 0 if self.flaw == "empty_batch" else self.batch
        x = rng.standard_normal((batch, self.length, c_in)).astype(np.float32)
        w = rng.standard_normal((c_out, taps, self.cig)).astype(np.float32)
        if self.flaw == "two_d":
            x = x[0]
        if self.flaw == "four_d":  # MLX's conv1d runs a 2-D convolution on these
            x, w = x[:, :, None, :], w[:, :, None, :]
        return x, w

    def mlx_arrays(self):
        x, w = self.arrays()
        if self.flaw == "numpy_input":
            return x, mx.array(w, self.dtype)
        dtype_x = dtype_w = self.dtype
        if self.flaw == "int_dtype":
            dtype_x = dtype_w = mx.int32
        elif self.flaw == "float64":
            dtype_x = dtype_w = mx.float64
        elif self.flaw == "mixed_dtype":
            dtype_w = mx.float32 if self.dtype != mx.float32 else mx.float16
        xa = mx.array(x).astype(dtype_x, stream=mx.cpu)
        wa = mx.array(w).astype(dtype_w, stream=mx.cpu)
        mx.eval(xa, wa)
        return xa, wa

    def arguments(self):
        """``{name: value}`` of the integer arguments, as MLX orders them, flaw applied."""
        values = dict(stride=self.stride, padding=self.padding, dilation=self.dilation)
        if self.transposed:
            values["output_padding"] = self.output_padding
        values["groups"] = self.groups
        flaw = self.flaw
        if flaw == "negative_padding":
            values["padding"] = -1 - self.padding % 2
        elif flaw == "zero_stride":
            values["stride"] = 0
        elif flaw == "zero_dilation":
            values["dilation"] = 0
        elif flaw == "zero_groups":
            values["groups"] = 0
        elif flaw == "negative_output_padding" and self.transposed:
            values["output_padding"] = -1
        elif flaw == "float_arg":
            values["stride"] = float(self.stride)
        elif flaw == "numpy_int":
            values["padding"] = np.int64(self.padding)
        elif flaw == "bool_arg":
            values["dilation"] = True
        return values

    def stream_arg(self):
        return {"none": None, "cpu": mx.cpu, "device": mx.Device(mx.cpu), "default_stream": mx.default_stream(mx.cpu),
                "own_stream": OWN_STREAM, "context": None, "thread_local": THREAD_LOCAL,
                "string": "cpu"}["string" if self.flaw == "string_stream" else self.stream]

    def invoke(self, fn, x, w):
        """``fn`` called in this call's form; an exception is returned, not raised."""
        args = self.arguments()
        kwargs = {}
        stream = self.stream_arg()
        if stream is not None:
            kwargs["stream"] = stream
        names = list(args)
        if self.form == "positional":
            positional = [args[n] for n in names]
        elif self.form == "keyword":
            positional, kwargs = [], {**args, **kwargs}
        elif self.form == "non_default_keywords":
            defaults = dict(stride=1, padding=0, dilation=1, output_padding=0, groups=1)
            positional = []
            kwargs.update({n: v for n, v in args.items() if not (type(v) is int and v == defaults[n])})
        else:  # mixed: the first two positional
            positional = [args[n] for n in names[:2]]
            kwargs.update({n: args[n] for n in names[2:]})
        try:
            if self.stream == "context":
                with mx.stream(OWN_STREAM):
                    y = fn(x, w, *positional, **kwargs)
            else:
                y = fn(x, w, *positional, **kwargs)
            mx.eval(y)
            return y
        except Exception as err:  # noqa: BLE001 (the type is what is compared)
            return err

    @property
    def real_flaw(self):
        """The flaw, or None when it changes nothing for this call (e.g. ``out_groups`` with one group)."""
        if (self.flaw == "out_groups" and self.groups == 1 or self.flaw == "negative_output_padding"
                and not self.transposed or self.flaw == "short_input" and self.transposed):
            return None
        return self.flaw

    def defined(self):
        """True when the definition gives this output (MLX returns uninitialised memory for some others)."""
        if self.real_flaw in ("empty_kernel", "short_input", "negative_padding"):  # (MLX's own, in both calls)
            return False
        span = self.dilation * (self.taps - 1) + 1
        return self.transposed or self.length + 2 * self.padding >= span

    def routable(self):
        """A call the patch must hand to the package."""
        if self.real_flaw not in (None, "empty_batch") or self.stream == "thread_local" and THREAD_LOCAL is None:
            return False
        if self.transposed:
            span = self.dilation * (self.taps - 1)
            out = (self.length - 1) * self.stride + span + 1 - 2 * self.padding + self.output_padding
            return self.padding <= span and out >= 1
        return self.defined()

    def reference(self, x, w):
        """Float64 output from the definition (MLX's meaning of padding and output_padding)."""
        if self.transposed:
            return ref.conv_transpose1d(x, w, None, self.stride, self.padding, self.padding - self.output_padding,
                                        self.dilation, self.groups)
        return ref.conv1d(x, w, None, self.stride, self.padding, self.padding, self.dilation, self.groups)


THREAD_LOCAL = mx.new_thread_local_stream(mx.cpu) if hasattr(mx, "new_thread_local_stream") else None


@st.composite
def calls(draw, transposed=None, flaws=FLAWS, dtypes=(mx.float32, mx.float32, mx.float16, mx.bfloat16)):
    transposed = draw(st.booleans()) if transposed is None else transposed
    taps = draw(st.integers(1, 6))
    stride = draw(st.integers(1, 4))
    dilation = draw(st.integers(1, 3))
    span = dilation * (taps - 1)
    flaw = draw(st.sampled_from(flaws))
    call = Call(
        transposed=transposed,
        batch=draw(st.integers(1, 3)),
        length=draw(st.integers(1, 9)),
        groups=draw(st.sampled_from([1, 1, 2, 3])),
        cig=draw(st.integers(1, 3)),
        cog=draw(st.integers(1, 3)),
        taps=taps,
        stride=stride,
        # transposed: a padding past dilation*(K-1) (MLX's own, different, meaning) now and then
        padding=draw(st.integers(0, span + 2)) if transposed else draw(st.integers(0, 4)),
        dilation=dilation,
        # up to past max(stride, dilation): MLX takes any output_padding
        output_padding=draw(st.integers(0, max(stride, dilation) + 2)),
        dtype=draw(st.sampled_from(dtypes)),
        form=draw(st.sampled_from(FORMS)),
        stream=draw(st.sampled_from(STREAMS)),
        flaw=flaw,
        seed=draw(st.integers(0, 2**16)),
    )
    if flaw == "short_input" and not transposed:  # shorter than the dilated kernel even after padding
        call = replace(call, taps=max(call.taps, 3), padding=0, length=1, dilation=1)
    return call


def tolerance(call, scale=1.0):
    terms = call.taps * call.cig
    return 2 * EPS[call.dtype] * (4 + 2 * terms) * scale


def check_same(call, theirs, ours):
    """Same exception type, or same shape, dtype and values (to the dtype's rounding)."""
    if isinstance(theirs, Exception) or isinstance(ours, Exception):
        assert type(ours) is type(theirs), (call, theirs, ours)
        return
    assert ours.shape == theirs.shape and ours.dtype == theirs.dtype, (call, theirs.shape, ours.shape)
    if call.defined() and ours.size:
        a = np.array(theirs.astype(mx.float32))
        b = np.array(ours.astype(mx.float32))
        np.testing.assert_allclose(b, a, rtol=0, atol=tolerance(call, 1 + np.abs(a).max() / 8), err_msg=str(call))


def run_both(call, backend="auto"):
    x, w = call.mlx_arrays()
    original = MLX_CONV_TRANSPOSE1D if call.transposed else MLX_CONV1D
    theirs = call.invoke(original, x, w)
    md.patch_mlx(backend)
    try:
        ours = call.invoke(getattr(mx, call.name), x, w)  # looked up on mlx.core, as callers do
    finally:
        md.unpatch_mlx()
    return theirs, ours


@pytest.mark.parametrize("backend", ["auto", "builtin", "gemm", "winograd"])
@settings(max_examples=150)
@given(call=calls())
def test_fuzzed_calls_match_mlx(backend, call):
    """Random calls of either function, every argument form, stream and dtype, valid or not: MLX's answer."""
    counts = Routed()
    theirs, ours = run_both(call, backend)
    check_same(call, theirs, ours)
    assert counts["failed"] == 0, call
    if call.routable():  # the package computed it (unless a backend forced here cannot take the geometry)
        x, w = call.arrays()
        if backend != "winograd":  # (which the package replaces by another backend where it cannot run)
            assert counts["computed"] == (1 if backend == "auto" or _usable(call, backend) else 0), (call, counts)
        if call.dtype == mx.float32 and x.shape[0]:
            expected = call.reference(x, w)
            np.testing.assert_allclose(np.array(ours), expected, rtol=0,
                                       atol=tolerance(call, 1 + np.abs(expected).max() / 8))
    else:  # MLX's own function computed it, or raised its own error
        assert counts["computed"] == 0, (call, counts)


@settings(max_examples=120)
@given(call=calls())
def test_a_repeated_call_answers_and_counts_as_its_first(call):
    """The second and third of equal calls take what the thread remembered of the first (one lookup): MLX's
    answer, counted under the same kind as the first, every argument form, stream, dtype and flaw."""
    x, w = call.mlx_arrays()
    theirs = call.invoke(MLX_CONV_TRANSPOSE1D if call.transposed else MLX_CONV1D, x, w)
    deltas, answers = [], []
    md.patch_mlx()
    try:
        for _ in range(3):
            before = patch.statistics()[call.name]
            answers.append(call.invoke(getattr(mx, call.name), x, w))
            deltas.append({k: v - before[k] for k, v in patch.statistics()[call.name].items() if v != before[k]})
    finally:
        md.unpatch_mlx()
    assert deltas[0] == deltas[1] == deltas[2] and sum(deltas[0].values()) == 1, (call, deltas)
    for ours in answers:
        check_same(call, theirs, ours)


def test_a_remembered_call_follows_the_backend_dtype_stream_and_autotuning(monkeypatch):
    """What a thread remembers of a patched call is keyed by all its decision depends on: after the same call on
    ``auto`` (MLX's op), the patch's backend, a dtype, a stream or autotuning on each decide afresh."""
    from mlx_deconv.tuning import tuner

    x, w = mx.ones((1, 6, 3)), mx.ones((4, 3, 3))
    kinds = lambda: dict(patch.statistics()["conv1d"])  # noqa: E731

    def kind_of(*args, **kwargs):
        before = kinds()
        mx.conv1d(*args, **kwargs)
        return [k for k, v in kinds().items() if v != before[k]]

    functional.forget_prepared_calls()
    with md.patched_mlx():
        assert kind_of(x, w, 1, 1) == kind_of(x, w, 1, 1) == ["mlx_op"]
    with md.patched_mlx("gemm"):
        assert kind_of(x, w, 1, 1) == kind_of(x, w, 1, 1) == ["package"]
    decided = []
    real = patch._decide
    monkeypatch.setattr(patch, "_decide", lambda c, *a, **k: decided.append(c) or real(c, *a, **k))
    with md.patched_mlx():
        for _ in range(2):
            kind_of(x.astype(mx.float16), w.astype(mx.float16), 1, 1)
            kind_of(x, w, 1, 1, stream=OWN_STREAM)
            with mx.stream(OWN_STREAM):
                kind_of(x, w, 1, 1)
        assert [c.dtype for c in decided] == [mx.float16, mx.float32, mx.float32]
        assert decided[0].stream != decided[1].stream == decided[2].stream  # each once, though called twice
        monkeypatch.setattr(tuner, "_override", "forward")
        kind_of(x, w, 1, 1)
        kind_of(x, w, 1, 1)
        assert len(decided) == 5 and all(c.tuning is not None for c in decided[3:])
    functional.forget_prepared_calls()


def _usable(call, backend):
    from mlx_deconv.geometry.validation import conv1d_geometry, conv_geometry

    x, w = call.arrays()
    if call.transposed:
        right = call.padding - call.output_padding
        ext = max(0, -right)
        kwargs = dict(padding=(call.padding, max(right, 0)),
                      output_padding=ext if 0 < ext < max(call.stride, call.dilation) else None)
        geom, _ = conv_geometry(x.shape, w.shape, stride=call.stride, dilation=call.dilation, groups=call.groups,
                                **kwargs)
    else:
        geom, _ = conv1d_geometry(x.shape, w.shape, stride=call.stride, padding=call.padding, dilation=call.dilation,
                                  groups=call.groups)
    return backend in backends.usable_backends(geom, mx.default_stream(mx.cpu))


# -- the cases the brief names ------------------------------------------------------------------

def test_signatures_are_mlx_s():
    """Positional-only input and weight, MLX's order (dilation before output_padding), keyword-only stream."""
    import inspect

    assert str(inspect.signature(patch.conv1d)) == \
        "(input, weight, /, stride=1, padding=0, dilation=1, groups=1, *, stream=None)"
    assert str(inspect.signature(patch.conv_transpose1d)) == \
        "(input, weight, /, stride=1, padding=0, dilation=1, output_padding=0, groups=1, *, stream=None)"
    assert "conv1d(input: array, weight: array, /, stride: int = 1, padding: int = 0, dilation: int = 1, groups" \
        in MLX_CONV1D.__doc__
    assert ("conv_transpose1d(input: array, weight: array, /, stride: int = 1, padding: int = 0, dilation: int = 1, "
            "output_padding: int = 0, groups: int = 1, *, stream") in MLX_CONV_TRANSPOSE1D.__doc__
    x, w = mx.zeros((1, 4, 2)), mx.zeros((2, 3, 2))
    md.patch_mlx()
    for bad in (lambda: mx.conv1d(input=x, weight=w), lambda: mx.conv1d(x, w, 1, 0, 1, 1, mx.cpu),
                lambda: mx.conv1d(x, w, strides=2), lambda: mx.conv_transpose1d(x, w, 1, 0, 1, 0, 1, 7)):
        with pytest.raises(TypeError):
            bad()


def dac_case():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((1, 6, 4)).astype(np.float32)
    w = rng.standard_normal((5, 8, 4)).astype(np.float32)
    return x, w


@pytest.mark.parametrize("backend", ["auto", "gemm"])
def test_dac_and_snac_positional_groups_is_output_padding(backend, monkeypatch, routed):
    """mlx-audio's DAC/SNAC layers call ``conv_transpose1d(x, w, stride, padding, dilation, groups)``: MLX takes
    the sixth as output_padding, and so does the patch (one sample longer than with ``groups=1``)."""
    x, w = dac_case()
    xa, wa = mx.array(x), mx.array(w)
    theirs = MLX_CONV_TRANSPOSE1D(xa, wa, 4, 2, 1, 1)
    keyword = MLX_CONV_TRANSPOSE1D(xa, wa, 4, 2, 1, groups=1)
    with md.patched_mlx(backend):
        ours = mx.conv_transpose1d(xa, wa, 4, 2, 1, 1)
    assert ours.shape == theirs.shape == (1, keyword.shape[1] + 1, 5)
    np.testing.assert_allclose(np.array(ours), np.array(theirs), atol=1e-5)
    np.testing.assert_allclose(np.array(ours), ref.conv_transpose1d(x, w, None, 4, 2, 1), atol=1e-5)
    assert routed["computed"] == 1


@pytest.mark.parametrize("stride, padding, dilation, output_padding, taps", [
    (2, 1, 1, 2, 4),   # output_padding == stride
    (2, 1, 1, 3, 4),   # past the full output: zeros
    (2, 3, 1, 3, 5),   # == padding, >= stride
    (1, 0, 1, 2, 3),   # stride 1
    (3, 1, 2, 5, 3),   # past max(stride, dilation) and padding
    (2, 4, 2, 2, 3),   # dilated, padding == dilation*(K-1)
    (4, 0, 1, 1, 4),   # within PyTorch's rule
])
def test_output_padding_as_large_as_mlx_takes(stride, padding, dilation, output_padding, taps, routed):
    rng = np.random.default_rng(stride * 100 + output_padding)
    x = rng.standard_normal((2, 5, 3)).astype(np.float32)
    w = rng.standard_normal((4, taps, 3)).astype(np.float32)
    theirs = MLX_CONV_TRANSPOSE1D(mx.array(x), mx.array(w), stride, padding, dilation, output_padding)
    with md.patched_mlx():
        ours = mx.conv_transpose1d(mx.array(x), mx.array(w), stride, padding, dilation, output_padding)
    expected = ref.conv_transpose1d(x, w, None, stride, padding, padding - output_padding, dilation)
    assert ours.shape == theirs.shape == expected.shape
    np.testing.assert_allclose(np.array(theirs), expected, atol=1e-5)  # MLX's meaning, read from the definition
    np.testing.assert_allclose(np.array(ours), expected, atol=1e-5)
    assert routed["computed"] == 1


@pytest.mark.parametrize("dtype", [mx.float32, mx.float16, mx.bfloat16])
def test_vocoder_layers_against_the_float64_reference(dtype):
    """A few vocoder-like layers, patched, against the definition in float64 (and against MLX)."""
    rng = np.random.default_rng(7)
    cases = [(True, 24, 32, 16, 16, 8, 4, 1, 0, 1), (True, 24, 16, 16, 4, 2, 1, 1, 0, 16),
             (False, 96, 16, 16, 7, 1, 9, 3, 0, 1), (False, 96, 16, 16, 7, 1, 3, 1, 0, 16),
             (True, 20, 8, 4, 8, 4, 2, 1, 1, 1)]
    eps = {mx.float32: 1e-4, mx.float16: 3e-2, mx.bfloat16: 2.5e-1}[dtype]
    for transposed, length, c_in, c_out, k, s, p, d, op, g in cases:
        x = rng.standard_normal((1, length, c_in)).astype(np.float32)
        w = (rng.standard_normal((c_out, k, c_in // g)) / np.sqrt(k * c_in / g)).astype(np.float32)
        xa, wa = mx.array(x, dtype), mx.array(w, dtype)
        with md.patched_mlx():
            if transposed:
                ours = mx.conv_transpose1d(xa, wa, s, p, d, op, g)
            else:
                ours = mx.conv1d(xa, wa, s, p, d, g)
        if transposed:
            expected = ref.conv_transpose1d(x, w, None, s, p, p - op, d, g)
            theirs = MLX_CONV_TRANSPOSE1D(xa, wa, s, p, d, op, g)
        else:
            expected = ref.conv1d(x, w, None, s, p, p, d, g)
            theirs = MLX_CONV1D(xa, wa, s, p, d, g)
        assert ours.dtype == theirs.dtype == dtype and ours.shape == theirs.shape == expected.shape
        np.testing.assert_allclose(np.array(ours.astype(mx.float32)), expected, atol=eps * (1 + np.abs(expected).max()))


def test_four_d_and_other_calls_pass_through_to_mlx(routed):
    """2-D convolutions through conv1d, float64, mixed dtypes, numpy inputs: MLX's function, its result."""
    rng = np.random.default_rng(0)
    x4 = mx.array(rng.standard_normal((1, 5, 6, 3)).astype(np.float32))
    w4 = mx.array(rng.standard_normal((2, 3, 3, 3)).astype(np.float32))
    x = mx.array(rng.standard_normal((1, 8, 3)).astype(np.float32))
    w = mx.array(rng.standard_normal((2, 3, 3)).astype(np.float32))
    calls_ = [lambda f: f(x4, w4), lambda f: f(x4, w4, 1, 1),
              lambda f: f(x.astype(mx.float64, stream=mx.cpu), w.astype(mx.float64, stream=mx.cpu), stream=mx.cpu),
              lambda f: f(x.astype(mx.float16), w), lambda f: f(x, w, np.int64(2)), lambda f: f(x, w, 1, True)]
    for make in calls_:
        for transposed in (False, True):
            original = MLX_CONV_TRANSPOSE1D if transposed else MLX_CONV1D
            try:
                theirs = make(original)
                mx.eval(theirs)
            except Exception as err:  # noqa: BLE001
                theirs = err
            with md.patched_mlx():
                try:
                    ours = make(mx.conv_transpose1d if transposed else mx.conv1d)
                    mx.eval(ours)
                except Exception as err:  # noqa: BLE001
                    ours = err
            if isinstance(theirs, Exception):
                assert type(ours) is type(theirs)
            else:
                assert ours.shape == theirs.shape and ours.dtype == theirs.dtype
                assert np.array_equal(np.array(ours.astype(mx.float32)), np.array(theirs.astype(mx.float32)))
    assert routed["conv1d"] == routed["conv_transpose1d"] == 0


@pytest.mark.parametrize("transposed", [False, True])
@settings(max_examples=60)
@given(call=calls(flaws=[None], dtypes=(mx.float32,)))
def test_gradients_match_mlx_and_the_definition(transposed, call):
    """``mx.grad`` through the patched functions: the float64 VJP of the definition, and MLX's gradients
    wherever MLX's agree with it (MLX 0.32's input gradient of a transposed conv with an output_padding
    past the full output comes out in the wrong shape: there the patch is right and MLX is not)."""
    call = replace(call, transposed=transposed, stream="none", form="positional",
                   padding=min(call.padding, call.dilation * (call.taps - 1)) if transposed else call.padding)
    if not call.routable():
        return
    x, w = call.mlx_arrays()
    args = list(call.arguments().values())
    out = call.invoke(MLX_CONV_TRANSPOSE1D if transposed else MLX_CONV1D, x, w)
    ct = mx.array(np.random.default_rng(call.seed).standard_normal(out.shape).astype(np.float32))

    def loss(a, b):
        return ((getattr(mx, call.name)(a, b, *args)) * ct).sum()

    xn, wn = call.arrays()
    if transposed:
        expected = ref.conv_transpose1d_vjp(xn, wn, np.array(ct), call.stride, call.padding,
                                            call.padding - call.output_padding, call.dilation, call.groups)[:2]
    else:
        expected = ref.conv1d_vjp(xn, wn, np.array(ct), call.stride, call.padding, call.padding, call.dilation,
                                  call.groups)[:2]
    with md.patched_mlx():
        ours = mx.grad(loss, argnums=(0, 1))(x, w)
        mx.eval(ours)
    theirs = mx.grad(loss, argnums=(0, 1))(x, w)
    mx.eval(theirs)

    def close(got, want):
        tol = tolerance(call, 1 + np.abs(want).max()) * (call.batch * call.length + 4)
        return got.shape == want.shape and np.allclose(np.array(got), want, rtol=0, atol=tol)

    for a, b, e in zip(theirs, ours, expected):
        assert close(b, e), (call, b.shape, e.shape)
        if not close(a, e):
            assert transposed and a.shape != e.shape, call  # the only way MLX's own was seen to go wrong
            continue
        assert close(b, np.array(a, np.float64)), call


def test_compile_traces_the_patched_functions(routed):
    rng = np.random.default_rng(1)
    x = mx.array(rng.standard_normal((2, 12, 4)).astype(np.float32))
    w1 = mx.array(rng.standard_normal((6, 5, 4)).astype(np.float32))
    w2 = mx.array(rng.standard_normal((4, 3, 6)).astype(np.float32))

    def f(a):
        return mx.conv1d(mx.conv_transpose1d(a, w1, 2, 1, 1, 1), w2, 1, 2, 2)

    theirs = f(x)
    with md.patched_mlx():
        compiled = mx.compile(f)
        ours = compiled(x)
        again = compiled(x + 1)
        mx.eval(ours, again)
    assert routed["computed"] == 2  # traced once, under the patch
    np.testing.assert_allclose(np.array(ours), np.array(theirs), atol=1e-4)
    np.testing.assert_allclose(np.array(again), np.array(f(x + 1)), atol=1e-4)


def test_vmap_matches_mlx():
    rng = np.random.default_rng(2)
    xs = mx.array(rng.standard_normal((3, 2, 10, 4)).astype(np.float32))
    w = mx.array(rng.standard_normal((6, 3, 4)).astype(np.float32))
    ws = mx.array(rng.standard_normal((3, 4, 3, 6)).astype(np.float32))
    cases = [(lambda a: mx.conv1d(a, w, 2, 1), (xs,), 0),
             (lambda a: mx.conv_transpose1d(a, w, 2, 1, 1, 1), (xs,), 0),
             (lambda a: mx.conv1d(a, w), (xs[:, 0],), 0),  # 2-D per example: MLX refuses, so must the patch
             (lambda a, b: mx.conv_transpose1d(a, b, 3, 0), (mx.zeros((3, 2, 5, 6)), ws), (0, 0))]
    for fn, args, axes in cases:
        def run():
            try:
                y = mx.vmap(fn, in_axes=axes)(*args)
                mx.eval(y)
                return y
            except Exception as err:  # noqa: BLE001
                return err
        theirs = run()
        with md.patched_mlx():
            ours = run()
        if isinstance(theirs, Exception):
            assert type(ours) is type(theirs)
        else:
            assert ours.shape == theirs.shape
            np.testing.assert_allclose(np.array(ours), np.array(theirs), atol=1e-4)


@pytest.mark.parametrize("transform", ["vmap", "shapeless compile"])
def test_transforms_the_package_s_graphs_cannot_go_through_trace_mlx_s_ops(transform):
    """``mx.vmap`` has no rule for the strided views and ordered writes of the package's blocks, and a shapeless
    ``mx.compile`` no shapes for its slices: under the patch, the functions they trace call MLX's convolutions,
    on shapes where the package would compute (gemm, split between workers)."""
    mx.random.seed(3)
    up = nn.ConvTranspose1d(64, 32, 16, stride=8, padding=4)
    res = nn.Conv1d(32, 32, 9, padding=12, dilation=3)
    mx.eval(up.parameters(), res.parameters())
    model = lambda a: res(up(a))  # noqa: E731
    x = mx.random.normal((2, 1, 400, 64))
    wrap = (lambda f: mx.vmap(f)) if transform == "vmap" else (lambda f: mx.compile(f, shapeless=True))
    args = [x] if transform == "vmap" else [x[0], x[0, :, :301]]  # shapeless: one trace, two lengths
    theirs = [wrap(model)(a) for a in args]
    before = patch.statistics()
    with md.patched_mlx():
        ours = [wrap(model)(a) for a in args]
        routed_call = up(x[0])
    after = patch.statistics()
    for a, b in zip(ours, theirs):
        assert a.shape == b.shape and mx.allclose(a, b, atol=1e-5).item()
    assert after["conv_transpose1d"]["package"] == before["conv_transpose1d"]["package"] + 1  # only the plain call
    assert after["conv1d"]["passed"] > before["conv1d"]["passed"]
    mx.eval(routed_call)


def test_builtin_backend_inside_the_patch_does_not_loop(monkeypatch, routed):
    """The builtin backend calls ``mx.conv_transpose1d`` itself: under the patch that call is MLX's."""
    x, w = dac_case()
    with md.patched_mlx("builtin"):
        ours = mx.conv_transpose1d(mx.array(x), mx.array(w), 4, 2)
        direct = md.conv_transpose1d(mx.array(x), mx.array(w), stride=4, padding=2, backend="builtin")
    np.testing.assert_allclose(np.array(ours), ref.conv_transpose1d(x, w, None, 4, 2, 2), atol=1e-5)
    np.testing.assert_allclose(np.array(direct), np.array(ours), atol=1e-5)


def test_mlx_nn_layers_are_reached_at_call_time(routed):
    """``nn.Conv1d`` and ``nn.ConvTranspose1d`` look ``mx.conv1d`` up when called: built before, patched after."""
    mx.random.seed(0)
    conv = nn.Conv1d(4, 6, 5, stride=2, padding=2, dilation=1, groups=2)
    up = nn.ConvTranspose1d(6, 3, 4, stride=2, padding=1, output_padding=1)
    x = mx.random.normal((2, 11, 4))
    theirs = up(conv(x))
    with md.patched_mlx():
        ours = up(conv(x))
    assert routed["conv1d"] == routed["conv_transpose1d"] == 1
    np.testing.assert_allclose(np.array(ours), np.array(theirs), atol=1e-5)


# -- patching itself -----------------------------------------------------------------------------

def test_patch_is_idempotent_and_unpatch_restores_the_objects():
    mlx_vmap, mlx_compile = mx.vmap, mx.compile
    first = md.patch_mlx()
    assert first.names == ("conv1d", "conv_transpose1d", "vmap", "compile") == first.changed and first
    assert mx.conv1d is patch.conv1d and mx.conv_transpose1d is patch.conv_transpose1d
    assert mx.vmap is not mlx_vmap and mx.compile is not mlx_compile
    second = md.patch_mlx()
    assert second.names == first.names and second.changed == ()
    assert patch.original("conv1d") is MLX_CONV1D and patch.original("conv_transpose1d") is MLX_CONV_TRANSPOSE1D
    assert "mx.conv1d" in patch.status()
    undone = md.unpatch_mlx()
    assert undone.names == () and undone.changed == first.names and not undone
    assert mx.conv1d is MLX_CONV1D and mx.conv_transpose1d is MLX_CONV_TRANSPOSE1D
    assert mx.vmap is mlx_vmap and mx.compile is mlx_compile
    assert md.unpatch_mlx().changed == () and patch.status().startswith("no")
    with pytest.raises(ValueError):
        patch.original("conv2d")


def test_patched_blocks_nest_and_close_in_any_order():
    a, b = md.patched_mlx(), md.patched_mlx()
    assert a.__enter__().changed == patch.NAMES
    assert b.__enter__().changed == ()
    a.__exit__(None, None, None)
    assert patch.is_patched() == patch.NAMES  # b still open
    b.__exit__(None, None, None)
    assert mx.conv1d is MLX_CONV1D
    with md.patched_mlx():
        md.patch_mlx()  # explicit: stays after the block
    assert patch.is_patched() == patch.NAMES
    md.unpatch_mlx()
    with md.patched_mlx():
        md.unpatch_mlx()  # at once, inside the block; its exit changes nothing
        assert mx.conv1d is MLX_CONV1D
    assert mx.conv1d is MLX_CONV1D
    with pytest.raises(KeyError):
        with md.patched_mlx():
            raise KeyError("an error inside the block still unpatches")
    assert mx.conv1d is MLX_CONV1D


def test_unpatch_leaves_someone_else_s_replacement_alone():
    md.patch_mlx()
    theirs = lambda *a, **k: "theirs"  # noqa: E731
    mx.conv1d = theirs
    try:
        record = md.unpatch_mlx()
        assert record.changed == ("conv_transpose1d", "vmap", "compile") and record.skipped == ("conv1d",)
        assert mx.conv1d is theirs
    finally:
        mx.conv1d = MLX_CONV1D


def test_patching_from_one_thread_while_others_call():
    """Four threads call ``mx.conv1d`` / ``mx.conv_transpose1d`` (looked up each time) while a fifth patches,
    unpatches and opens blocks; every result is MLX's."""
    rng = np.random.default_rng(5)
    work = []
    for i in range(4):
        x = mx.array(rng.standard_normal((1, 16 + i, 8)).astype(np.float32))
        w = mx.array(rng.standard_normal((8, 4, 8)).astype(np.float32))
        wt = mx.array(rng.standard_normal((6, 5, 8)).astype(np.float32))
        expected = (MLX_CONV1D(x, w, 1, 2, 2), MLX_CONV_TRANSPOSE1D(x, wt, 2, 1, 1, 1))
        mx.eval(x, w, wt, *expected)
        work.append((x, w, wt, [np.array(e) for e in expected]))
    stop, errors = threading.Event(), []

    def caller(x, w, wt, expected):
        try:
            while not stop.is_set():
                got = (mx.conv1d(x, w, 1, 2, 2), mx.conv_transpose1d(x, wt, 2, 1, 1, 1))
                for g, e in zip(got, expected):
                    np.testing.assert_allclose(np.array(g), e, atol=1e-4)
        except Exception as err:  # noqa: BLE001
            errors.append(err)

    def toggler():
        try:
            for i in range(200):
                if i % 3 == 0:
                    md.patch_mlx()
                elif i % 3 == 1:
                    md.unpatch_mlx()
                else:
                    with md.patched_mlx():
                        pass
        except Exception as err:  # noqa: BLE001
            errors.append(err)

    threads = [threading.Thread(target=caller, args=item) for item in work]
    for t in threads:
        t.start()
    togglers = [threading.Thread(target=toggler) for _ in range(2)]
    for t in togglers:
        t.start()
    for t in togglers:
        t.join()
    stop.set()
    for t in threads:
        t.join()
    assert not errors, errors[:3]
    md.unpatch_mlx()
    assert mx.conv1d is MLX_CONV1D and mx.conv_transpose1d is MLX_CONV_TRANSPOSE1D


def test_info_says_whether_patched(monkeypatch, capsys):
    from mlx_deconv.cli import info as cli

    monkeypatch.setattr(cli, "_print_blas", lambda: None)  # no matmul measured here
    cli.run()
    assert "mx.conv1d / mx.conv_transpose1d patched: no" in capsys.readouterr().out
    with md.patched_mlx():
        cli.run()
    assert "patched: mx.conv1d, mx.conv_transpose1d -> mlx_deconv" in capsys.readouterr().out


# -- convert ----------------------------------------------------------------------------------

class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.convs = [nn.Conv1d(4, 6, 3, padding=1), nn.Conv1d(6, 6, 5, padding=4, dilation=2, groups=3, bias=False)]
        self.heads = {"up": nn.ConvTranspose1d(6, 4, 4, stride=2, padding=1, output_padding=1),
                      "wide": nn.ConvTranspose1d(6, 4, 5, stride=2, padding=3, output_padding=2)}  # op >= stride, <= p

    def __call__(self, x):
        for conv in self.convs:
            x = nn.relu(conv(x))
        return self.heads["up"](x)[:, :20] + self.heads["wide"](x)[:, :20]


class OddConv(nn.Conv1d):
    """A subclass: convert must leave it alone."""


class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.pre = nn.Conv1d(3, 4, 7, padding=3, stride=1)
        self.blocks = [Block(), Block()]
        self.odd = OddConv(4, 4, 3, padding=1)
        self.past = nn.ConvTranspose1d(4, 4, 3, stride=2, padding=3)  # padding > dilation*(K-1): MLX's own meaning
        self.post = nn.ConvTranspose1d(4, 2, 3, stride=1, padding=1)

    def __call__(self, x):
        x = self.odd(self.pre(x))
        y = sum(block(x) for block in self.blocks)
        return self.post(y), self.past(x)


def test_convert_keeps_keys_values_and_outputs(tmp_path):
    from mlx.utils import tree_flatten

    mx.random.seed(4)
    model = Model()
    model.blocks[1].convs[0].freeze()
    model.eval()
    x = mx.random.normal((2, 20, 3))
    before = model(x)
    keys = {k: v.shape for k, v in tree_flatten(model.parameters())}
    trainable = sorted(k for k, _ in tree_flatten(model.trainable_parameters()))
    path = str(tmp_path / "weights.safetensors")
    model.save_weights(path)
    random_state = mx.random.state[0]

    assert md.convert(model) is model
    assert np.array_equal(np.array(mx.random.state[0]), np.array(random_state))  # no random numbers drawn
    assert isinstance(model.pre, md.Conv1d) and isinstance(model.blocks[0].convs[1], md.Conv1d)
    assert isinstance(model.blocks[1].heads["up"], md.ConvTranspose1d)
    assert isinstance(model.blocks[1].heads["wide"], md.ConvTranspose1d) and isinstance(model.post, md.ConvTranspose1d)
    assert type(model.odd) is OddConv and type(model.past) is nn.ConvTranspose1d  # left as they were
    assert model.blocks[0].convs[1].groups == 3 and model.blocks[0].convs[1].dilation == 2
    assert "bias" not in model.blocks[0].convs[1] and not model.training
    assert {k: v.shape for k, v in tree_flatten(model.parameters())} == keys
    assert sorted(k for k, _ in tree_flatten(model.trainable_parameters())) == trainable
    after = model(x)
    for a, b in zip(before, after):
        assert a.shape == b.shape
        np.testing.assert_allclose(np.array(b), np.array(a), atol=1e-5)

    # Weights saved before load into the converted model by the same keys, strictly.
    mx.random.seed(9)
    fresh = md.convert(Model())
    fresh.eval()
    fresh.load_weights(path)
    for a, b in zip(before, fresh(x)):
        np.testing.assert_allclose(np.array(b), np.array(a), atol=1e-5)
    # And weights saved after conversion load into a plain model.
    path2 = str(tmp_path / "after.safetensors")
    model.save_weights(path2)
    plain = Model()
    plain.eval()
    plain.load_weights(path2)
    for a, b in zip(before, plain(x)):
        np.testing.assert_allclose(np.array(b), np.array(a), atol=1e-5)
    assert md.convert(model) is model  # again: nothing left to change


def test_convert_a_layer_itself_returns_its_replacement():
    layer = nn.ConvTranspose1d(3, 2, 4, stride=2, padding=1)
    new = md.convert(layer)
    assert isinstance(new, md.ConvTranspose1d) and new.weight is layer.weight and new.bias is layer.bias
    x = mx.random.normal((1, 5, 3))
    np.testing.assert_allclose(np.array(new(x)), np.array(layer(x)), atol=1e-5)


# -- real clients (mlx-audio), when installed -------------------------------------------------

@pytest.mark.parametrize("name", ["bigvgan", "dac", "snac", "encodec", "vocos", "mimi"])
@pytest.mark.parametrize("backend", ["auto", "gemm"])
def test_mlx_audio_decoders_agree_plain_and_patched(name, backend, monkeypatch, routed):
    pytest.importorskip("mlx_audio.codec")

    case = next(m for m in bench_models.MODELS if m.name == name)
    built = case.build(True)
    x = built.make_input(7)
    mx.random.seed(0)
    plain = built.plain(x)
    mx.eval(plain)
    assert routed["computed"] == 0
    mx.random.seed(0)
    with md.patched_mlx(backend):  # the decoder's own patched_mlx() block keeps this backend
        fast = built.fast(x)
        mx.eval(fast)
    assert routed["computed"] > 0 and routed["failed"] == 0
    assert fast.shape == plain.shape and fast.dtype == plain.dtype
    np.testing.assert_allclose(np.array(fast), np.array(plain), atol=2e-5 * (1 + float(mx.abs(plain).max())))


def test_snac_transposed_layer_keeps_its_longer_output():
    pytest.importorskip("mlx_audio.codec")
    from mlx_audio.codec.models.snac.layers import WNConvTranspose1d

    mx.random.seed(1)
    layer = WNConvTranspose1d(6, 4, kernel_size=8, stride=4, padding=2, output_padding=0)
    x = mx.random.normal((1, 5, 6))
    theirs = layer(x)
    with md.patched_mlx():
        ours = layer(x)
    assert ours.shape == theirs.shape == (1, 5 * 4 + 1, 4)  # groups=1 taken as output_padding=1
    np.testing.assert_allclose(np.array(ours), np.array(theirs), atol=1e-5)


# -- the guide's examples ---------------------------------------------------------------------

GUIDE = ROOT / "docs" / "patching.md"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```$", re.S | re.M)
GUIDE_BLOCKS = [(GUIDE.read_text().count("\n", 0, m.start()) + 1, m.group(2))
                for m in FENCE.finditer(GUIDE.read_text()) if m.group(1) == "python"] if GUIDE.exists() else []


def test_guide_has_python_blocks():
    assert len(GUIDE_BLOCKS) >= 3


@pytest.mark.parametrize("line, code", GUIDE_BLOCKS, ids=[f"line{b[0]}" for b in GUIDE_BLOCKS])
def test_guide_block_runs_in_a_fresh_process(line, code, tmp_path):
    """As the README's blocks: each a whole program, run alone; a print's trailing comment is what it prints."""
    if "mlx_audio" in code and not HAS_MLX_AUDIO:
        pytest.skip("this block needs mlx-audio")
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"docs/patching.md block at line {line}:\n{result.stderr[-3000:]}"
    prints = [l for l in code.splitlines() if l.startswith("print(")]
    printed = result.stdout.splitlines()
    assert len(printed) == len(prints), result.stdout
    for source, got in zip(prints, printed):
        assert "#" in source, f"docs/patching.md line {line}: say what {source!r} prints"
        want = source.split("#", 1)[1].split(":")[0]
        assert got.replace(" ", "") == want.replace(" ", ""), \
            f"docs/patching.md line {line}: {source!r} printed {got!r}"


@pytest.mark.parametrize("name", ["encodec", "vocos"])
def test_convert_mlx_audio_decoders_built_on_mlx_nn(name):
    """EnCodec's decoder and Vocos' backbone are built on ``mlx.nn.Conv1d`` / ``ConvTranspose1d`` (depthwise
    in Vocos): converted, they keep their parameter keys and outputs."""
    pytest.importorskip("mlx_audio.codec")
    from mlx.utils import tree_flatten

    if name == "encodec":
        built = next(m for m in bench_models.MODELS if m.name == name).build(True)
        model, x = built.plain, built.make_input(9)
    else:
        from mlx_audio.codec.models.vocos.vocos import VocosBackbone

        mx.random.seed(0)
        model = VocosBackbone(input_channels=8, dim=16, intermediate_dim=24, num_layers=2)
        x = mx.random.normal((1, 9, 8))
    before = model(x)
    keys = sorted(k for k, _ in tree_flatten(model.parameters()))
    assert md.convert(model) is model
    assert sorted(k for k, _ in tree_flatten(model.parameters())) == keys
    found = [type(layer) for _, layer in model.named_modules()]
    assert md.Conv1d in found and nn.Conv1d not in found and nn.ConvTranspose1d not in found
    after = model(x)
    np.testing.assert_allclose(np.array(after), np.array(before), atol=2e-5 * (1 + float(mx.abs(before).max())))


def test_a_signature_is_prepared_once_and_a_builtin_one_is_mlx_s_call(routed, monkeypatch):
    """A signature is prepared once per thread, in the table ``md.conv1d`` uses too; where the package would
    run MLX's op with the caller's arguments (builtin), the call is MLX's function (MLX's answer); a new
    dtype, stream or backend is prepared afresh."""
    prepared = []
    real = functional._prepare
    monkeypatch.setattr(functional, "_prepare", lambda call, stream: prepared.append(call) or real(call, stream))
    functional.forget_prepared_calls()
    rng = np.random.default_rng(4)
    small = (mx.array(rng.standard_normal((1, 6, 3)).astype(np.float32)),
             mx.array(rng.standard_normal((4, 3, 3)).astype(np.float32)))
    with md.patched_mlx():
        for _ in range(3):
            y = mx.conv1d(*small, 1, 1)
    assert len(prepared) == 1 and routed["conv1d"] == 3
    assert patch.statistics()["conv1d"]["mlx_op"] - routed.start["conv1d"]["mlx_op"] == 3
    assert np.array_equal(np.array(y), np.array(MLX_CONV1D(*small, 1, 1)))
    with md.patched_mlx():
        mx.conv1d(small[0].astype(mx.float16), small[1].astype(mx.float16), 1, 1)
        mx.conv1d(*small, 1, 1, stream=mx.new_stream(mx.cpu))
    assert len(prepared) == 3
    with md.patched_mlx("gemm"):
        for _ in range(2):
            y = mx.conv1d(*small, 1, 1)
    assert len(prepared) == 4 and prepared[-1].backend == "gemm"
    md.conv1d(*small, padding=1, backend="gemm")  # the same record, reached through the package's own op
    assert len(prepared) == 4
    np.testing.assert_allclose(np.array(y), ref.conv1d(np.array(small[0]), np.array(small[1]), None, 1, 1, 1, 1, 1),
                               atol=1e-5)


def test_a_failure_of_the_package_is_raised_in_tests_and_warned_in_use(monkeypatch):
    """A backend that fails on a routed call: raised under ``MLX_DECONV_PATCH_STRICT=1`` (the suite's
    setting), else counted and warned about, with MLX's function computing the call; never silent."""
    from dataclasses import replace
    from mlx_deconv import backends

    def broken(*args, **kwargs):
        raise RuntimeError("a bug in the backend")

    monkeypatch.setitem(backends.BACKENDS, "gemm", replace(backends.BACKENDS["gemm"], conv1d=broken))
    functional.forget_prepared_calls()
    x, w = mx.ones((1, 300, 8)), mx.ones((8, 3, 8))
    with md.patched_mlx("gemm"):
        with pytest.raises(RuntimeError, match="a bug in the backend"):
            mx.conv1d(x, w, 1, 1)
        monkeypatch.setenv(patch.ENV_STRICT, "0")
        before = patch.statistics()["conv1d"]["failed"]
        with pytest.warns(patch.PatchFailureWarning, match="a bug in the backend"):
            y = mx.conv1d(x, w, 1, 1)
    assert patch.statistics()["conv1d"]["failed"] == before + 1
    assert np.array_equal(np.array(y), np.array(MLX_CONV1D(x, w, 1, 1)))
    functional.forget_prepared_calls()


def test_patch_backend_is_checked_and_restored_by_the_block():
    with pytest.raises(ValueError, match="backend must be 'auto' or one of .*got 'nope'"):
        md.patch_mlx("nope")
    assert not patch.is_patched()
    with md.patched_mlx("gemm"):
        with md.patched_mlx():
            assert patch._STATE["backend"] == "gemm"
        assert patch._STATE["backend"] == "gemm"
    assert patch._STATE["backend"] == "auto"


def test_the_documented_nan_difference_with_padding():
    """docs/patching.md names one difference of values: a NaN weight tap meeting zero padding. MLX leaves the
    padding's products out; the patched call puts NaN where the definition (zeros times NaN) does."""
    x = mx.ones((1, 3000, 32))
    w = np.ones((32, 9, 32), np.float32)
    w[:, 0, :] = np.nan
    theirs = MLX_CONV1D(x, mx.array(w), 1, 4, 4)
    with md.patched_mlx():
        ours = mx.conv1d(x, mx.array(w), 1, 4, 4)
    assert int(mx.isnan(theirs).sum()) == 95_104 and int(mx.isnan(ours).sum()) == 95_232
    # The definition: the input zero-padded, every product taken (tests/reference.py skips the padding, as MLX).
    padded = np.pad(np.ones((1, 3000, 32)), ((0, 0), (4, 4), (0, 0)))
    expected = np.zeros((1, 2976, 32))
    with np.errstate(invalid="ignore"):
        for k in range(9):
            expected += padded[:, 4 * k:4 * k + 2976] @ w[:, k, :].astype(np.float64).T
    np.testing.assert_array_equal(np.isnan(np.array(ours)), np.isnan(expected))
    finite = ~np.isnan(np.array(theirs)) & ~np.isnan(np.array(ours))
    np.testing.assert_allclose(np.array(ours)[finite], np.array(theirs)[finite], rtol=1e-5)
