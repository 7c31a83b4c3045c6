"""Fuzzed arguments: every call returns the reference's result or raises a ValueError/TypeError naming the argument.

A valid call is drawn (shapes, every padding form, layouts, dtypes, spellings
such as 1-tuples and numpy integers), then at most one argument is replaced
by a bad value: negative, zero, huge, a wrong type, a wrong shape, an empty
array, a wrong dtype. A valid call must match the float64 reference of
tests/reference.py; a corrupted one must raise ``ValueError`` or
``TypeError`` whose message names the corrupted argument (or, for values
that only conflict with another argument, one of the arguments involved).
Nothing else is allowed: another exception type, a crash or a hang (each
call runs under an alarm).
"""

import faulthandler
import re
import signal
import subprocess
import sys
import textwrap
from contextlib import contextmanager

import mlx.core as mx
import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import mlx_deconv as md
import reference as ref
from helpers import atol
from strategies import Case

SECONDS_PER_CALL = 20
# Past MLX's 32-bit limit: always refused. Within it (2**30, 2**31 - 1) a stride, dilation or channel count
# can be valid (a stride of 2**30 over one input row), so those go only where they always overflow: padding
# and output_size. (A valid 2**30-sample output is not run: it would be allocated.)
HUGE = (10**12, 2**31, 2**63)
HUGE_WITHIN = (2**31 - 1, 2**30)
GPU_MISSING = not mx.is_available(mx.gpu)
# Each bad argument gets its own run, so every one is drawn often; valid calls get a longer run.
FUZZ_VALID = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FUZZ_BAD = settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@contextmanager
def no_hang():
    """Turns a call that runs past :data:`SECONDS_PER_CALL` into a test failure."""
    if not hasattr(signal, "SIGALRM"):
        yield
        return

    def alarm(signum, frame):
        raise AssertionError(f"the call ran for more than {SECONDS_PER_CALL} s")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(SECONDS_PER_CALL)
    # The alarm runs only once MLX returns to Python: a call stuck inside MLX ends the run instead.
    faulthandler.dump_traceback_later(3 * SECONDS_PER_CALL, exit=True)
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def names_one_of(message, names):
    return any(re.search(rf"(?<![\w.]){re.escape(n)}(?!\w)", message) for n in names)


def outcome(call, corrupted, allowed):
    """Runs ``call``; returns its output as float64 numpy, or None after checking the error it raised.

    Args:
        corrupted: the name of the argument made bad, or None for a valid call.
        allowed: the argument names the error may name.
    """
    try:
        with no_hang():
            y = call()
            mx.eval(y)
    except (ValueError, TypeError) as err:
        assert corrupted is not None, f"a valid call raised {type(err).__name__}: {err}"
        assert names_one_of(str(err), allowed), f"{corrupted} was bad, but the error names none of {allowed}: {err}"
        return None
    assert corrupted is None, f"bad {corrupted} was accepted"
    return np.array(y.astype(mx.float32), np.float64)


# ---- valid calls --------------------------------------------------------------------------------------

DTYPES = [mx.float32, mx.float16, mx.bfloat16]


def as_given(a, dtype):
    """``a`` rounded to ``dtype`` (float64 numpy stays float64: the op computes it in float32)."""
    if dtype == "float64":
        return a.astype(np.float64), np.float32
    return mx.array(a, dtype), dtype


def seen(a, dtype):
    """The values of ``a`` as the op sees them after casting to ``dtype``, in float64."""
    return np.array(mx.array(np.asarray(a, np.float32)).astype(dtype).astype(mx.float32), np.float64)


def _padding_form(draw, form):
    if form == "int":
        return draw(st.integers(0, 3))
    return (draw(st.integers(0, 3)), draw(st.integers(0, 3))) if form == "pair" else form


def spell_int(draw, value):
    """An integer argument in one of the spellings the ops accept."""
    form = draw(st.sampled_from(["int", "int", "numpy", "tuple"]))
    return {"int": value, "numpy": np.int64(value), "tuple": (value,)}[form]


@st.composite
def transposed_calls(draw, corrupt=None):
    """``(kwargs, expected, corrupted, allowed)`` for ``conv_transpose1d``."""
    batch = draw(st.integers(1, 2))
    groups = draw(st.sampled_from([1, 1, 2, 3]))
    cig, cog = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    stride, dilation = draw(st.integers(1, 4)), draw(st.integers(1, 3))
    taps, length = draw(st.integers(1, 6)), draw(st.integers(1, 8))
    form = draw(st.sampled_from(["int", "pair", "valid", "same", "causal"]))
    padding = _padding_form(draw, form)
    output_padding = draw(st.one_of(st.none(), st.integers(0, max(stride, dilation) - 1)))
    case = Case(batch, length, groups, cig, cog, taps, stride, dilation, padding, output_padding,
                draw(st.booleans()), draw(st.integers(0, 2**31 - 1)))
    left, right = case.crops()
    out_len = (length - 1) * stride + dilation * (taps - 1) + 1 - left - right
    if out_len < 1:  # a valid draw needs an output; a short one is the "padding too large" corruption below
        padding = 0
        case = Case(batch, length, groups, cig, cog, taps, stride, dilation, 0, output_padding, case.use_bias,
                    case.seed)
        left, right = case.crops()
        out_len = (length - 1) * stride + dilation * (taps - 1) + 1 - left - right
    x, w, b = case.arrays()
    dtype = draw(st.sampled_from(DTYPES + ["float64"]))
    w_dtype = draw(st.sampled_from([dtype, mx.float32])) if dtype != "float64" else "float64"
    compute = mx.float32 if dtype == "float64" else dtype
    expected = case.expected(seen(x, compute), seen(w, compute), None if b is None else seen(b, compute))

    data_format = draw(st.sampled_from(["NLC", "NCL"]))
    weight_format = draw(st.sampled_from(["mlx", "torch"]))
    batched = batch > 1 or draw(st.booleans())
    xin = x if data_format == "NLC" else x.transpose(0, 2, 1)
    if not batched:
        xin = xin[0]
    win = w if weight_format == "mlx" else ref.torch_weight(w, groups)
    kwargs = dict(x=as_given(xin, dtype)[0], weight=as_given(win, w_dtype)[0],
                  bias=None if b is None else as_given(b, w_dtype)[0],
                  stride=spell_int(draw, stride),
                  padding=list(padding) if isinstance(padding, tuple) and draw(st.booleans()) else padding,
                  output_padding=output_padding, dilation=spell_int(draw, dilation), groups=spell_int(draw, groups),
                  data_format=data_format, weight_format=weight_format,
                  backend=draw(st.sampled_from(["auto", "builtin", "gemm", "winograd"])),
                  stream=draw(st.sampled_from([None, "cpu", mx.cpu, mx.Device(mx.cpu)])))
    if not isinstance(padding, str) and output_padding is not None and draw(st.booleans()):
        kwargs.update(output_padding=None, output_size=out_len)  # the same output through output_size
    if not batched:
        expected = expected[:1]
    corrupted, allowed = None, ()
    if corrupt is not None:
        corrupted, allowed = TRANSPOSED_CORRUPTIONS[corrupt](draw, kwargs, case, out_len)
    return kwargs, (expected, data_format, batched, compute, taps * cig), corrupted, allowed


def _bad_int(draw, name, kwargs, minimum=1):
    kwargs[name] = draw(st.sampled_from([minimum - 1, -1, -(10**12), 1.5, float(minimum), "2", True, None, (1, 2), [],
                                         *HUGE]))
    if kwargs[name] is None and name in ("output_padding", "output_size"):
        kwargs[name] = -1  # None is these arguments' default
    return name, (name,)


def _bad_array(draw, name, kwargs, case, out_len):
    value = kwargs[name]
    ndim = value.ndim
    choice = draw(st.sampled_from(["int dtype", "bool dtype", "string", "rank", "empty", "object"]))
    if choice == "int dtype":
        kwargs[name] = mx.zeros(value.shape, mx.int32)
    elif choice == "bool dtype":
        kwargs[name] = np.zeros(value.shape, bool)
    elif choice == "string":
        kwargs[name] = "not an array"
    elif choice == "object":
        kwargs[name] = {"a": 1}
    elif choice == "rank":
        kwargs[name] = mx.zeros((1,) * (ndim + 2 if ndim > 1 else 3) if name != "bias" else (2, 2))
        if name == "x" and ndim == 3:
            kwargs[name] = mx.zeros((1, 1, 2, 2))
    else:  # an empty axis (the batch axis stays: empty batches are tested on their own)
        shape = list(value.shape)
        shape[-1] = 0
        kwargs[name] = mx.zeros(tuple(shape))
    return name, (name,)


def _bad_bias(draw, kwargs, case, out_len):
    if kwargs["bias"] is None:
        return _word("bias", ["b", 3])(draw, kwargs, case, out_len)
    return _bad_array(draw, "bias", kwargs, case, out_len)


def _x_channels(draw, kwargs, case, out_len):
    """x with one channel too many: a conflict between x, the weight and the layout arguments."""
    x = kwargs["x"]
    axis = -1 if kwargs["data_format"] == "NLC" else -2
    shape = list(x.shape)
    shape[axis] += 1
    kwargs["x"] = mx.zeros(tuple(shape))
    return "x", ("x", "weight", "groups", "data_format", "weight_format")


def _padding(draw, kwargs, case, out_len):
    kind = draw(st.sampled_from(["negative", "pair negative", "triple", "word", "float", "huge", "too large", "dict"]))
    value = {"negative": -1, "pair negative": (0, -2), "triple": (1, 2, 3), "word": "full", "float": 1.5,
             "huge": draw(st.sampled_from(HUGE + HUGE_WITHIN)), "dict": {"left": 1}}.get(kind)
    if kind == "too large":  # more cropped than the full output holds: no sample left
        value = ((case.length - 1) * case.stride + case.dilation * (case.taps - 1) + 2, 0)
        kwargs["output_padding"] = None
        kwargs.pop("output_size", None)
    kwargs["padding"] = value
    return "padding", ("padding", "output_padding")


def _output_padding(draw, kwargs, case, out_len):
    kwargs.pop("output_size", None)
    if isinstance(kwargs["padding"], str) and kwargs["padding"] == "causal" and draw(st.booleans()):
        pass
    if draw(st.booleans()):
        kwargs["output_padding"] = max(case.stride, case.dilation)  # must stay below
        return "output_padding", ("output_padding", "stride", "dilation")
    return _bad_int(draw, "output_padding", kwargs, minimum=0)


def _output_size(draw, kwargs, case, out_len):
    kwargs["output_padding"] = None
    if draw(st.booleans()):
        unreachable = out_len + max(case.stride, case.dilation) + 2 + 2 * case.length * case.stride
        kwargs["output_size"] = draw(st.sampled_from([unreachable, *HUGE_WITHIN]))
        return "output_size", ("output_size",)
    return _bad_int(draw, "output_size", kwargs)


def _groups(draw, kwargs, case, out_len):
    if draw(st.booleans()):
        kwargs["groups"] = case.groups * case.in_per_group * case.out_per_group + 1  # divides neither channel count
        return "groups", ("groups",)
    return _bad_int(draw, "groups", kwargs)


def _word(name, values):
    def corrupt(draw, kwargs, case, out_len):
        kwargs[name] = draw(st.sampled_from(values))
        return name, (name,)
    return corrupt


STREAMS = [3, "tpu", 1.5] + (["gpu", mx.gpu] if GPU_MISSING else [])

TRANSPOSED_CORRUPTIONS = {
    "x": lambda d, k, c, o: _bad_array(d, "x", k, c, o),
    "weight": lambda d, k, c, o: _bad_array(d, "weight", k, c, o),
    "bias": lambda d, k, c, o: _bad_bias(d, k, c, o),
    "x channels": _x_channels,
    "stride": lambda d, k, c, o: _bad_int(d, "stride", k),
    "dilation": lambda d, k, c, o: _bad_int(d, "dilation", k),
    "groups": _groups,
    "padding": _padding,
    "output_padding": _output_padding,
    "output_size": _output_size,
    "data_format": _word("data_format", ["LNC", "nlc ", None, 3, "NCHW"]),
    "weight_format": _word("weight_format", ["tf", None, 3]),
    "backend": _word("backend", ["foo", None, 3, "metal"]),
    "stream": _word("stream", STREAMS),
}


def _check_output(got, expected_info):
    """Either op's output against the float64 value the call's strategy computed."""
    expected, data_format, batched, dtype, terms = expected_info
    if not batched:
        got = got[None]
    if data_format == "NCL":
        got = got.transpose(0, 2, 1)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=2 * float(np.finfo(np.float16).eps) if dtype != mx.float32 else 1e-6,
                               atol=atol(terms, dtype) * (1 + np.abs(expected).max()))


@FUZZ_VALID
@given(call=transposed_calls())
def test_conv_transpose1d_valid_calls(call):
    kwargs, expected_info, corrupted, allowed = call
    got = outcome(lambda: md.conv_transpose1d(**kwargs), corrupted, allowed)
    _check_output(got, expected_info)


@pytest.mark.parametrize("bad", list(TRANSPOSED_CORRUPTIONS))
@FUZZ_BAD
@given(data=st.data())
def test_conv_transpose1d_bad_argument(bad, data):
    kwargs, expected_info, corrupted, allowed = data.draw(transposed_calls(bad))
    got = outcome(lambda: md.conv_transpose1d(**kwargs), corrupted, allowed)
    if got is not None:
        _check_output(got, expected_info)


# ---- conv1d -------------------------------------------------------------------------------------------

@st.composite
def conv1d_calls(draw, corrupt=None):
    batch = draw(st.integers(1, 2))
    groups = draw(st.sampled_from([1, 1, 2, 3]))
    cig, cog = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    stride, dilation = draw(st.integers(1, 4)), draw(st.integers(1, 3))
    taps, length = draw(st.integers(1, 5)), draw(st.integers(1, 16))
    form = draw(st.sampled_from(["int", "pair", "valid", "same", "causal"]))
    padding = _padding_form(draw, form)
    left, right = ref.conv1d_pads(padding, length, taps, stride, dilation)
    out_len = ref.conv1d_output_length(length, taps, stride, left, right, dilation)
    if out_len < 1:
        length = dilation * (taps - 1) + 1
        left, right = ref.conv1d_pads(padding, length, taps, stride, dilation)
        out_len = ref.conv1d_output_length(length, taps, stride, left, right, dilation)
    rng = np.random.default_rng(draw(st.integers(0, 2**31 - 1)))
    x = rng.standard_normal((batch, length, groups * cig))
    w = rng.standard_normal((groups * cog, taps, cig))
    b = rng.standard_normal(groups * cog) if draw(st.booleans()) else None
    dtype = draw(st.sampled_from(DTYPES + ["float64"]))
    compute = mx.float32 if dtype == "float64" else dtype
    expected = ref.conv1d(seen(x, compute), seen(w, compute), None if b is None else seen(b, compute),
                          stride, left, right, dilation, groups)
    data_format = draw(st.sampled_from(["NLC", "NCL"]))
    weight_format = draw(st.sampled_from(["mlx", "torch"]))
    batched = batch > 1 or draw(st.booleans())
    xin = x if data_format == "NLC" else x.transpose(0, 2, 1)
    if not batched:
        xin, expected = xin[0], expected[:1]
    win = w if weight_format == "mlx" else ref.torch_conv1d_weight(w)
    kwargs = dict(x=as_given(xin, dtype)[0], weight=as_given(win, dtype)[0],
                  bias=None if b is None else as_given(b, dtype)[0], stride=spell_int(draw, stride),
                  padding=padding, dilation=spell_int(draw, dilation), groups=spell_int(draw, groups),
                  data_format=data_format, weight_format=weight_format,
                  backend=draw(st.sampled_from(["auto", "builtin"])), stream=draw(st.sampled_from([None, "cpu"])))
    case = Case(batch, length, groups, cig, cog, taps, stride, dilation, padding, None, b is not None, 0)
    corrupted, allowed = None, ()
    if corrupt is not None:
        corrupted, allowed = CONV1D_CORRUPTIONS[corrupt](draw, kwargs, case, out_len)
    return kwargs, (expected, data_format, batched, compute, taps * cig), corrupted, allowed


def _conv1d_padding(draw, kwargs, case, out_len):
    kind = draw(st.sampled_from(["negative", "triple", "word", "float", "huge"]))
    kwargs["padding"] = {"negative": -1, "triple": (1, 2, 3), "word": "full", "float": 1.5,
                         "huge": draw(st.sampled_from(HUGE + HUGE_WITHIN + ((0, 2**31 - 1),)))}[kind]
    return "padding", ("padding",)


def _conv1d_too_short(draw, kwargs, case, out_len):
    """A kernel longer than the padded input: no output sample."""
    kwargs["padding"] = 0
    kwargs["dilation"] = case.length + 1
    if case.taps == 1:
        return _bad_int(draw, "dilation", kwargs)
    return "dilation", ("dilation", "kernel_size", "padding", "x")


CONV1D_CORRUPTIONS = {
    "x": lambda d, k, c, o: _bad_array(d, "x", k, c, o),
    "weight": lambda d, k, c, o: _bad_array(d, "weight", k, c, o),
    "bias": lambda d, k, c, o: _bad_bias(d, k, c, o),
    "x channels": _x_channels,
    "stride": lambda d, k, c, o: _bad_int(d, "stride", k),
    "dilation": lambda d, k, c, o: _bad_int(d, "dilation", k),
    "groups": _groups,
    "padding": _conv1d_padding,
    "kernel longer than input": _conv1d_too_short,
    "data_format": _word("data_format", ["LNC", None, 3]),
    "weight_format": _word("weight_format", ["tf", None, 3]),
    "backend": _word("backend", ["foo", None, 3, "metal"]),
    "stream": _word("stream", STREAMS),
}


@FUZZ_VALID
@given(call=conv1d_calls())
def test_conv1d_valid_calls(call):
    kwargs, expected_info, corrupted, allowed = call
    got = outcome(lambda: md.conv1d(**kwargs), corrupted, allowed)
    _check_output(got, expected_info)


@pytest.mark.parametrize("bad", list(CONV1D_CORRUPTIONS))
@FUZZ_BAD
@given(data=st.data())
def test_conv1d_bad_argument(bad, data):
    kwargs, expected_info, corrupted, allowed = data.draw(conv1d_calls(bad))
    got = outcome(lambda: md.conv1d(**kwargs), corrupted, allowed)
    if got is not None:
        _check_output(got, expected_info)


# ---- layers -------------------------------------------------------------------------------------------

LAYER_INTS = ["in_channels", "out_channels", "kernel_size", "stride", "dilation", "groups"]


@st.composite
def layer_calls(draw, transposed, corrupt=None):
    groups = draw(st.sampled_from([1, 2]))
    args = dict(in_channels=groups * draw(st.integers(1, 3)), out_channels=groups * draw(st.integers(1, 3)),
                kernel_size=draw(st.integers(1, 5)), stride=draw(st.integers(1, 3)), dilation=draw(st.integers(1, 2)),
                groups=groups, padding=draw(st.sampled_from([0, 1, (1, 0), "same", "valid", "causal"])),
                bias=draw(st.booleans()), data_format=draw(st.sampled_from(["NLC", "NCL", "channels_last"])),
                backend=draw(st.sampled_from(["auto", "builtin"])))
    if transposed:
        args["output_padding"] = draw(st.one_of(st.none(), st.integers(0, max(args["stride"], args["dilation"]) - 1)))
    length = draw(st.integers(args["dilation"] * (args["kernel_size"] - 1) + 1, 12))
    k, s, d = args["kernel_size"], args["stride"], args["dilation"]
    if transposed:  # a valid draw has an output sample
        case = Case(1, length, groups, 1, 1, k, s, d, args["padding"], args["output_padding"], False, 0)
        left, right = case.crops()
        assume((length - 1) * s + d * (k - 1) + 1 - left - right >= 1)
    else:
        left, right = ref.conv1d_pads(args["padding"], length, k, s, d)
        assume(ref.conv1d_output_length(length, k, s, left, right, d) >= 1)
    x = np.random.default_rng(draw(st.integers(0, 2**31 - 1))).standard_normal((draw(st.integers(1, 2)), length,
                                                                                  args["in_channels"]))
    corrupted, allowed = None, ()
    name = corrupt
    if corrupt is not None:
        if name in LAYER_INTS:
            bad = [0, -1, 1.5, "2", True, *HUGE] + ([] if name == "in_channels" else [None])
            args[name] = draw(st.sampled_from(bad))  # in_channels=None: see test_layer_without_in_channels
            corrupted, allowed = name, (name,)
            if name == "groups" and args[name] is True:
                args[name] = 5  # divides no channel count here (True would be 1 if bools were ints)
                allowed = ("groups", "in_channels", "out_channels")
        elif name == "padding":
            args["padding"] = draw(st.sampled_from([-1, (1, 2, 3), "full", 1.5, *HUGE]))  # HUGE_WITHIN: see
            # test_layer_names_the_argument_behind_a_size
            corrupted, allowed = "padding", ("padding",)
        elif name in ("data_format", "backend"):
            args[name] = draw(st.sampled_from(["XYZ", 3]))
            corrupted, allowed = name, (name,)
        elif name == "x":  # wrong channel count (still a multiple of groups: see test_layer_names_x_for_wrong_channels)
            x = np.zeros((1, length, args["in_channels"] + groups))
            corrupted, allowed = "x", ("x", "in_channels", "data_format")
        elif name == "x dtype":
            x = np.zeros(x.shape, np.int32)
            corrupted, allowed = "x", ("x",)
        else:
            x = np.zeros((1, 1) + x.shape)
            corrupted, allowed = "x", ("x",)
    return args, x, corrupted, allowed


def _layer_run(cls, args, x):
    layer = cls(**args)
    xin = x if layer.config.data_format == "NLC" else np.swapaxes(x, 1, 2)
    y = layer(mx.array(xin, mx.float32) if xin.dtype != np.int32 else mx.array(xin))
    return layer, y


def _layer_expected(layer, args, x, transposed):
    w = np.array(layer.weight, np.float64)
    b = np.array(layer.bias, np.float64) if args["bias"] else None
    if transposed:
        case = Case(x.shape[0], x.shape[1], args["groups"], w.shape[2], w.shape[0] // args["groups"], w.shape[1],
                    args["stride"], args["dilation"], args["padding"], args["output_padding"], b is not None, 0)
        return case.expected(x, w, b)
    left, right = ref.conv1d_pads(args["padding"], x.shape[1], w.shape[1], args["stride"], args["dilation"])
    return ref.conv1d(x, w, b, args["stride"], left, right, args["dilation"], args["groups"])


LAYER_CORRUPTIONS = [None] + LAYER_INTS + ["padding", "data_format", "backend", "x", "x dtype", "x rank"]


@pytest.mark.parametrize("bad", LAYER_CORRUPTIONS, ids=["valid"] + LAYER_CORRUPTIONS[1:])
@pytest.mark.parametrize("transposed", [True, False], ids=["ConvTranspose1d", "Conv1d"])
@FUZZ_BAD
@given(data=st.data())
def test_layers_fuzzed(transposed, bad, data):
    args, x, corrupted, allowed = data.draw(layer_calls(transposed, bad))
    cls = md.ConvTranspose1d if transposed else md.Conv1d
    box = {}

    def call():
        box["layer"], y = _layer_run(cls, args, x)
        return y

    got = outcome(call, corrupted, allowed)
    if got is None:
        return  # a bad argument, refused with an error that outcome() has checked: no output to compare
    layer = box["layer"]
    if layer.config.data_format != "NLC":
        got = np.swapaxes(got, 1, 2)
    expected = _layer_expected(layer, args, x, transposed)
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=atol(args["kernel_size"] * args["in_channels"]))


# ---- cases found by fuzzing, kept as plain tests -------------------------------------------------------

def test_error_names_are_matched_as_words():
    """The matcher behind every check above: ``padding`` is not found inside ``output_padding``."""
    assert names_one_of("output_padding must be >= 0", ("output_padding",))
    assert not names_one_of("output_padding must be >= 0", ("padding",))
    assert not names_one_of("weight_format must be 'mlx'", ("weight",))
    assert names_one_of("x has C_in=5 channels", ("x",))
    assert not names_one_of("max(stride=2, dilation=1)", ("x",))


@pytest.mark.parametrize("backend", ["builtin", "gemm", "winograd"])
@pytest.mark.parametrize("op", ["conv_transpose1d", "conv1d"])
def test_empty_batch(op, backend):
    """Found by fuzzing: a batch of 0 signals failed inside MLX's reshape on the matmul paths. It gives
    an empty output of the right shape, and gradients (zero for the weight)."""
    if backend not in md.available_backends(None, op="conv1d" if op == "conv1d" else "conv_transpose1d"):
        pytest.skip(f"{backend} has no {op}")
    f = getattr(md, op)
    x, w = mx.zeros((0, 6, 4)), mx.ones((3, 4, 4))
    y = f(x, w, mx.ones((3,)), backend=backend)
    length = 9 if op == "conv_transpose1d" else 3
    assert y.shape == (0, length, 3)
    assert f(x.transpose(0, 2, 1), w, backend=backend, data_format="NCL").shape == (0, 3, length)
    gw = mx.grad(lambda w: f(x, w, backend=backend).sum())(w)
    assert gw.shape == w.shape and not np.array(gw).any()


@pytest.mark.parametrize("args", [(10**6, 3, 10**6), (4, 3, 2**31 - 1)], ids=["wide", "long kernel"])
def test_layer_with_an_impossible_weight_is_refused(args):
    """Found by fuzzing: a weight past 2**31 elements (each axis within MLX's limit) was not refused, and MLX's
    initializer killed the process with SIGSEGV; run in a subprocess so that this test survives the bug."""
    code = textwrap.dedent(f"""
        import mlx_deconv as md
        try:
            md.ConvTranspose1d(*{args!r})
        except ValueError as err:
            print("ValueError:", err)
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"the process died with status {result.returncode}"
    c_in, c_out, k = args
    assert "ValueError:" in result.stdout, result.stdout
    for name, value in (("in_channels", c_in), ("out_channels", c_out), ("kernel_size", k)):
        assert f"{name}={value}" in result.stdout, result.stdout


@pytest.mark.parametrize("cls", [md.ConvTranspose1d, md.Conv1d, lambda *a, **k: md.Conv1DTranspose(*a[1:], **k)],
                         ids=["ConvTranspose1d", "Conv1d", "Conv1DTranspose"])
@pytest.mark.parametrize("c_in, c_out, k, groups", [(2**16, 2**16, 1, 1), (2**11, 2**11, 2**10, 2),
                                                    (1, 2**31 - 1, 2, 1)])
def test_weight_past_32_bit_elements_is_refused_before_it_is_made(cls, c_in, c_out, k, groups):
    """Each axis within MLX's limit, the whole past it: refused naming the arguments (in process: the
    check comes before any array is made). The Keras spelling refuses it at its first call."""
    if cls is md.Conv1d or cls is md.ConvTranspose1d:
        call = lambda: cls(c_in, c_out, k, groups=groups)  # noqa: E731
    else:
        layer = md.Conv1DTranspose(c_out, k)
        call = lambda: layer(mx.zeros((1, 1, c_in)))  # noqa: E731
        if groups != 1:
            pytest.skip("the Keras spelling has no groups")
    with pytest.raises(ValueError, match=rf"in_channels={c_in}, out_channels={c_out}, kernel_size={k}.*32-bit"):
        call()


def test_weight_that_fits_32_bits_but_not_memory_is_refused(monkeypatch):
    """Below 2**31 elements, a float32 weight larger than the machine's memory is refused too (geometry's
    memory check, 4 bytes an element)."""
    from mlx_deconv.geometry import validation

    monkeypatch.setattr(validation, "_memory_bytes", lambda: 4 * 10**6 - 4)
    with pytest.raises(ValueError, match=r"in_channels=1000, out_channels=1000, kernel_size=1 make the weight "
                                         r"1000000 elements \(4 bytes each\), more than"):
        md.Conv1d(1000, 1000, 1)
    monkeypatch.setattr(validation, "_memory_bytes", lambda: 4 * 10**6)
    assert md.Conv1d(1000, 1000, 1, bias=False).weight.size == 10**6


@pytest.mark.parametrize("cls", [md.ConvTranspose1d, md.Conv1d], ids=["ConvTranspose1d", "Conv1d"])
def test_layer_names_x_for_wrong_channels(cls):
    """Found by fuzzing: x with channels groups does not divide was blamed on groups ('groups=2 must divide
    C_in=3'), naming neither x nor in_channels; the layer's groups are not what the caller got wrong."""
    layer = cls(2, 2, 1, groups=2)
    with pytest.raises(ValueError) as err:
        layer(mx.zeros((1, 4, 3)))
    message = str(err.value)
    assert names_one_of(message, ("x",)) and "3 channels" in message and "in_channels=2" in message, message
    assert "looks" not in message, message  # no layout hint: neither axis of (1, 4, 3) has 2 channels


@pytest.mark.parametrize("data_format, shape, other", [("NLC", (1, 2, 5), "NCL"), ("NLC", (2, 5), "NCL"),
                                                       ("NCL", (1, 5, 2), "NLC"), ("NCL", (5, 2), "NLC")])
def test_layer_suggests_the_data_format_that_fits_x(data_format, shape, other):
    layer = md.Conv1d(2, 3, 1, data_format=data_format)
    with pytest.raises(ValueError, match=rf"x of shape {re.escape(str(shape))} has 5 channels.*in_channels=2.*"
                                         rf'data_format="{other}"'):
        layer(mx.zeros(shape))


@pytest.mark.parametrize("cls", [md.ConvTranspose1d, md.Conv1d], ids=["ConvTranspose1d", "Conv1d"])
def test_layer_without_in_channels(cls):
    """Found by fuzzing: in_channels=None built a layer without a weight, whose call raised AttributeError.
    These layers make their weight at construction (the Keras spelling infers C_in at its first call)."""
    with pytest.raises(TypeError, match=r"in_channels must be an integer .*got None"):
        cls(None, 3, 2)
    assert not md.Conv1DTranspose(3, 2).built  # the spelling that does infer it still may


@pytest.mark.parametrize("cls, kwargs, probe", [
    (md.ConvTranspose1d, dict(padding=2**31 - 1), 4294967295),
    (md.Conv1d, dict(dilation=2**31 - 1), 2147483648),
    (md.Conv1d, dict(padding=2**31 - 1), 2),
    (md.ConvTranspose1d, dict(dilation=2**31 - 1), 1),
    (md.ConvTranspose1d, dict(padding=(1, 1), stride=2**31 - 1), 2),
], ids=["ConvTranspose1d padding", "Conv1d dilation", "Conv1d padding", "ConvTranspose1d dilation",
        "ConvTranspose1d stride"])
def test_layer_names_the_argument_behind_a_size(cls, kwargs, probe):
    """Found by fuzzing: the layers check their arguments on a probe input sized from them, and a size error
    named the probe's length ("length 4294967295", which the caller never gave), not the argument."""
    with pytest.raises(ValueError) as err:
        cls(2, 2, 2, **kwargs)
    message = str(err.value)
    for name, value in kwargs.items():
        assert f"{name}={value!r}" in message, message
    assert f"length {probe}" not in message and "32-bit" in message, message


@pytest.mark.parametrize("cls", [md.ConvTranspose1d, md.Conv1d], ids=["ConvTranspose1d", "Conv1d"])
@pytest.mark.parametrize("name, bad", [("bias", "yes"), ("bias", 1), ("bias", None), ("weight_norm", "no")])
def test_layer_flags_must_be_bools(cls, name, bad):
    """Found by fuzzing: bias="yes" was taken as True (and "no" would be too)."""
    with pytest.raises(TypeError, match=rf"{name} must be a bool, got {re.escape(repr(bad))}"):
        cls(2, 2, 2, **{name: bad})
    assert ("bias" in cls(2, 2, 2, bias=np.bool_(False))) is False


@pytest.mark.parametrize("op, weight", [("conv_transpose1d", (100, 1, 1)), ("conv1d", (100, 1, 1))])
def test_output_memory_counts_4_bytes_an_element(monkeypatch, op, weight):
    """The ops compute in float32 (on the CPU even for half inputs): an output of more bytes than the machine
    has is refused at 4 bytes an element; it was counted at 2, so up to twice the memory passed."""
    from mlx_deconv.ops import functional
    from mlx_deconv.geometry import validation

    functional.forget_prepared_calls()  # the check runs when a call signature is prepared, not on a cached one
    x = mx.zeros((1, 1000, 1))
    monkeypatch.setattr(validation, "_memory_bytes", lambda: 3 * 100 * 1000)  # 3 bytes an output element
    with pytest.raises(ValueError, match=r"100000 elements \(4 bytes each\), more than this machine's 300000 bytes"):
        getattr(md, op)(x, mx.zeros(weight), mx.zeros((100,)))
    monkeypatch.setattr(validation, "_memory_bytes", lambda: 4 * 100 * 1000)
    assert getattr(md, op)(x, mx.zeros(weight), mx.ones((100,))).shape == (1, 1000, 100)  # 4 bytes each: fits


@pytest.mark.parametrize("op", ["conv_transpose1d", "conv1d"])
@pytest.mark.parametrize("name, bad", [("dilation", 1.0), ("stride", True), ("groups", np.float64(1.0)),
                                       ("padding", (0, 0.0))])
def test_a_prepared_call_is_not_reused_for_an_equal_value_of_another_type(op, name, bad):
    """Found by fuzzing: ``1.0 == True == 1`` hash alike, so the prepared-call cache handed a bad value
    the call prepared (and checked) for a good one, skipping its checks."""
    x, w = mx.zeros((1, 5, 2)), mx.zeros((2, 1, 2))
    good = (0, 0) if name == "padding" else 1
    mx.eval(getattr(md, op)(x, w, **{name: good}))
    with pytest.raises(TypeError, match=name):
        getattr(md, op)(x, w, **{name: bad})


# ---- sizes past 32 bits ------------------------------------------------------------------------------

@pytest.mark.parametrize("dims", [
    dict(batch=4, length=2**30, in_channels=8, out_channels=8, kernel_size=3, stride=1, dilation=1, groups=1),
    dict(batch=2, length=2**27, in_channels=64, out_channels=32, kernel_size=16, stride=8, dilation=1, groups=1),
    dict(batch=8, length=2**28, in_channels=16, out_channels=16, kernel_size=4, stride=2, dilation=1, groups=16),
    dict(batch=3, length=2**29, in_channels=6, out_channels=6, kernel_size=5, stride=3, dilation=1, groups=2),
], ids=["dense 2^32 rows", "vocoder 2^31 out", "depthwise 2^31 rows", "grouped"])
@pytest.mark.parametrize("minimal_filtering", [False, True], ids=["gemm", "winograd"])
def test_gemm_blocks_of_a_signal_past_2_31_elements_keep_32_bit_axes(dims, minimal_filtering):
    """gemm's block arithmetic is Python's (unbounded), but each block's arrays are MLX's, whose axes
    are 32-bit: batch * rows of a block (a matmul's row axis) and every block length stay below 2**31,
    and the blocks tile the output exactly, for signals whose elements pass 2**31 (never allocated)."""
    from mlx_deconv.backends.gemm import transposed_paths, schedule
    from mlx_deconv.geometry.records import MAX_AXIS, Geometry, full_length

    out_len = full_length(dims["length"], dims["kernel_size"], dims["stride"], dims["dilation"]) - 2
    geom = Geometry(**dims, crop=1, output_length=out_len)
    assert geom.batch * geom.length * geom.in_channels > 2**31 or geom.batch * out_len * geom.out_channels > 2**31
    path = transposed_paths.path_for(geom, minimal_filtering=minimal_filtering)
    for workers in (1, 2, 8):
        for backward in (False, True):
            count = schedule.block_count(geom, path.per_row, workers, backward)
            cuts = schedule.bounds(out_len, count)
            assert cuts[0] == 0 and cuts[-1] == out_len and all(a <= b for a, b in zip(cuts, cuts[1:]))
            if path.per_row is None and not backward:
                continue  # fused depthwise: no block intermediate, blocks only share the work
            for _, start, stop, lo, hi in schedule.block_spans(geom, cuts):
                assert 0 <= lo <= hi <= geom.length
                assert geom.batch * (hi - lo + geom.kernel_size * geom.dilation) <= MAX_AXIS
                assert stop - start <= MAX_AXIS
