"""Forward values of every backend against the float64 reference."""

import mlx.core as mx
import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import mlx_deconv as md
import reference as ref
from helpers import forward_atol, run
from strategies import Case, cases

BACKENDS = ["builtin", "gemm", "winograd"]


@pytest.mark.parametrize("backend", BACKENDS)
@given(case=cases(), data_format=st.sampled_from(["NLC", "NCL"]), weight_format=st.sampled_from(["mlx", "torch"]), batched=st.booleans())
def test_matches_reference(backend, case, data_format, weight_format, batched):
    if not batched:
        case.batch = 1
    x, w, b = case.arrays()
    expected = case.expected(x, w, b)
    got = run(case, x, w, b, backend, data_format, weight_format, batched)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=0, atol=forward_atol(case))


@given(case=cases())
def test_two_references_agree(case):
    """The scatter and zero-stuffed forms are written independently; they must coincide."""
    x, w, b = case.arrays()
    left, right = case.crops()
    span = case.dilation * (case.taps - 1) + 1
    scatter = ref.conv_transpose1d(x, w, b, case.stride, left, right, case.dilation, case.groups)
    stuffed = ref.conv_transpose1d_stuffed(
        x, w, b, case.stride, span - 1 - left, span - 1 - right, case.dilation, case.groups
    )
    np.testing.assert_allclose(scatter, stuffed, atol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [mx.float16, mx.bfloat16])
@given(case=cases(max_length=8))
def test_half_precision(backend, dtype, case):
    x, w, b = case.arrays()
    # Round the inputs to the dtype first so only the op's own rounding is measured.
    x, w = (np.array(mx.array(a, dtype=dtype).astype(mx.float32), dtype=np.float64) for a in (x, w))
    if b is not None:
        b = np.array(mx.array(b, dtype=dtype).astype(mx.float32), dtype=np.float64)
    expected = case.expected(x, w, b)
    got = run(case, x, w, b, backend, dtype=dtype)
    np.testing.assert_allclose(got, expected, rtol=0, atol=forward_atol(case, dtype))


EDGES = {
    "L=1": Case(2, 1, 1, 3, 2, 4, 2, 1, 0, None, True, 1),
    "K=1": Case(2, 5, 1, 3, 2, 1, 3, 1, 0, None, True, 2),
    "K=1 stride 1": Case(1, 5, 1, 3, 2, 1, 1, 1, 0, None, False, 3),
    "stride > K": Case(2, 4, 1, 2, 3, 2, 5, 1, 0, 2, True, 4),
    "dilation > L": Case(1, 3, 1, 2, 2, 3, 1, 7, 1, None, True, 5),
    "depthwise": Case(2, 9, 6, 1, 1, 12, 2, 1, 0, None, True, 6),
    "depthwise multiplier": Case(2, 9, 3, 1, 2, 5, 2, 2, 2, 1, True, 7),
    "C_in=1": Case(2, 6, 1, 1, 4, 3, 2, 1, 1, None, True, 8),
    "C_in=1 C_out=1": Case(1, 6, 1, 1, 1, 3, 3, 1, 0, None, False, 9),
    "asymmetric": Case(1, 6, 1, 2, 2, 4, 2, 1, (3, 0), 1, True, 10),
    "same even": Case(1, 7, 1, 2, 2, 4, 2, 1, "same", None, False, 11),
    "same odd": Case(1, 7, 1, 2, 2, 5, 3, 1, "same", None, False, 12),
    "same dilated": Case(1, 7, 2, 2, 2, 3, 2, 2, "same", 1, True, 13),
    "valid stride > K": Case(1, 5, 1, 2, 2, 2, 4, 1, "valid", None, True, 14),
    "causal": Case(2, 5, 1, 3, 3, 16, 8, 1, "causal", None, True, 15),
    "causal stride > span": Case(1, 5, 1, 2, 2, 2, 4, 1, "causal", None, True, 16),
    "padding crops everything left": Case(1, 3, 1, 1, 1, 2, 2, 1, (6, 0), 1, True, 17),
    "grouped hifigan-like": Case(2, 16, 4, 8, 8, 4, 2, 1, 1, None, True, 18),
}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", list(EDGES))
def test_edge_cases(backend, name):
    case = EDGES[name]
    x, w, b = case.arrays()
    expected = case.expected(x, w, b)
    got = run(case, x, w, b, backend)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=0, atol=forward_atol(case))


@pytest.mark.parametrize("backend", BACKENDS)
def test_output_size_picks_output_padding(backend):
    case = Case(1, 6, 1, 2, 3, 4, 3, 1, 1, None, True, 20)
    x, w, b = case.arrays()
    for size in (17, 18, 19):
        y = md.conv_transpose1d(mx.array(x, mx.float32), mx.array(w, mx.float32), mx.array(b, mx.float32),
                                stride=3, padding=1, output_size=size, backend=backend)
        expected = ref.conv_transpose1d(x, w, b, 3, 1, 1 - (size - 17), 1, 1)
        assert y.shape == (1, size, 3)
        np.testing.assert_allclose(np.array(y), expected, atol=1e-4)


def test_numpy_inputs_are_accepted():
    case = EDGES["L=1"]
    x, w, b = case.arrays()
    y = md.conv_transpose1d(x.astype(np.float32), w.astype(np.float32), b.astype(np.float32), stride=2)
    np.testing.assert_allclose(np.array(y), case.expected(x, w, b), atol=1e-4)


def test_weight_dtype_follows_input():
    x = mx.ones((1, 4, 2), dtype=mx.float16)
    w = mx.ones((3, 2, 2), dtype=mx.float32)
    assert md.conv_transpose1d(x, w, stride=2).dtype == mx.float16


@pytest.mark.parametrize("stream", [None, "cpu", mx.cpu, mx.default_stream(mx.cpu), mx.new_stream(mx.cpu)])
def test_stream_forms(stream):
    case = EDGES["causal"]
    x, w, b = case.arrays()
    y = md.conv_transpose1d(mx.array(x, mx.float32), mx.array(w, mx.float32), mx.array(b, mx.float32),
                            **case.kwargs(), stream=stream)
    np.testing.assert_allclose(np.array(y), case.expected(x, w, b), atol=1e-4)


def test_available_backends_on_cpu():
    assert md.available_backends("cpu") == ["builtin", "gemm", "winograd"]


def test_prepared_calls_are_kept_apart():
    """Each call signature is validated and compiled once, then looked up: calls that share
    shapes but differ in an argument, a layout, a dtype or the bias must not share an answer.
    A list as padding cannot be a lookup key; it is prepared afresh, still right."""
    base = dict(batch=2, length=7, groups=2, in_per_group=3, out_per_group=2, taps=4, stride=2,
                dilation=1, padding=1, output_padding=None, use_bias=True, seed=30)
    variants = [dict(), dict(padding=0), dict(padding=[2, 1]), dict(dilation=2), dict(output_padding=1),
                dict(stride=3), dict(use_bias=False)]
    for _ in range(2):  # the second round is served by the prepared calls
        for change in variants:
            case = Case(**{**base, **change})
            x, w, b = case.arrays()
            for data_format in ("NLC", "NCL"):
                got = run(case, x, w, b, "auto", data_format)
                np.testing.assert_allclose(got, case.expected(x, w, b), rtol=0, atol=forward_atol(case))
        case = Case(**base)
        x, w, b = case.arrays()
        got = run(case, x, w, b, "auto", dtype=mx.float16)
        np.testing.assert_allclose(got, case.expected(x, w, b), rtol=0, atol=forward_atol(case, mx.float16))


def test_auto_shares_the_call_of_the_backend_it_picks():
    """``auto`` runs the very prepared call of its choice (one compiled function per choice), and a
    call asked by another name keeps its own: each still computes the definition."""
    from mlx_deconv.choice import choose
    from mlx_deconv.geometry.validation import conv_geometry
    from mlx_deconv.ops import functional
    from mlx_deconv.runtime.devices import resolve_stream

    case = Case(batch=1, length=9, groups=1, in_per_group=3, out_per_group=2, taps=3, stride=2, dilation=1,
                padding=1, output_padding=None, use_bias=False, seed=31)
    x, w, b = case.arrays()
    functional.forget_prepared_calls()
    calls = functional._prepared_calls()
    for backend in ("auto", "builtin", "gemm"):
        np.testing.assert_allclose(run(case, x, w, b, backend), case.expected(x, w, b), rtol=0, atol=forward_atol(case))
    by_backend = {key.backend: entry.run for key, entry in calls.items() if key.op == "conv_transpose1d"}
    assert set(by_backend) == {"auto", "builtin", "gemm"}
    chosen = choose(conv_geometry(x.shape, w.shape, **case.kwargs())[0], resolve_stream(None)).name
    other = ({"builtin", "gemm"} - {chosen}).pop()
    assert by_backend["auto"] is by_backend[chosen]
    assert by_backend["auto"] is not by_backend[other]


def test_prepared_calls_stay_within_their_bound(monkeypatch):
    """Each new "auto" signature also files its choice's entry: the table still keeps at most its bound."""
    from mlx_deconv.ops import functional

    monkeypatch.setattr(functional, "PREPARED_CALLS", 4)
    functional.forget_prepared_calls()
    calls = functional._prepared_calls()
    w = mx.ones((2, 3, 2))
    for length in range(3, 13):
        md.conv1d(mx.ones((1, length, 2)), w)
        assert len(calls) <= 4
        assert len(functional._hot_table()) <= 4


@pytest.mark.parametrize("op", ["conv1d", "conv_transpose1d"])
@pytest.mark.parametrize("name,value", [("stride", 1.0), ("stride", True), ("dilation", 1.0), ("groups", True)])
def test_a_prepared_call_is_not_served_to_an_argument_of_another_type(op, name, value):
    """``1.0 == True == 1`` and they hash alike: once the int call is prepared, the same call with a float or
    bool argument must still reach validation and be refused, not be handed the int call's prepared form."""
    fn = getattr(md, op)
    x, w = mx.ones((1, 6, 2)), mx.ones((2, 3, 2))
    mx.eval(fn(x, w, **{name: 1}))
    with pytest.raises((TypeError, ValueError), match=name):
        fn(x, w, **{name: value})


def test_a_call_keys_on_the_stream_it_runs_on():
    """The prepared call's stream text follows the default stream a ``with mx.stream`` sets, and comes back
    with it: a call on another stream is prepared for that stream."""
    from mlx_deconv.ops import functional

    x, w = mx.ones((1, 6, 2)), mx.ones((2, 3, 2))
    other = mx.new_stream(mx.cpu)
    default = repr(mx.default_stream(mx.default_device()))
    functional.forget_prepared_calls()
    calls = functional._prepared_calls()
    mx.eval(md.conv1d(x, w))
    with mx.stream(other):
        mx.eval(md.conv1d(x, w))
    mx.eval(md.conv1d(x, w))
    streams = {key.stream for key in calls if key.op == "conv1d"}
    assert streams == {default, repr(other)}
    assert functional.stream_text(mx.default_stream(mx.default_device())) == default


@pytest.mark.parametrize("op", ["conv1d", "conv_transpose1d"])
def test_a_repeated_plain_call_takes_the_hot_path_and_a_bad_one_never_does(op, monkeypatch):
    """The second of two plain calls skips the record and the prepared table; an int weight, a float64 input, a
    float stride, another stream or autotuning after it still go the whole way (refused, cast, typed, keyed)."""
    from mlx_deconv.ops import functional
    from mlx_deconv.tuning import tuner

    fn = getattr(md, op)
    functional.forget_prepared_calls()
    seen = []
    original = functional.prepared
    monkeypatch.setattr(functional, "prepared", lambda call, stream: seen.append(call) or original(call, stream))
    x, w, b = mx.ones((1, 6, 2)), mx.ones((2, 3, 2)), mx.zeros((2,))
    first = fn(x, w, b, stride=2)
    assert len(seen) == 1
    again = fn(x, w, b, stride=2)
    assert len(seen) == 1  # the hot table's run
    np.testing.assert_array_equal(np.array(again), np.array(first))
    with pytest.raises(TypeError, match="weight"):
        fn(x, w.astype(mx.int32), b, stride=2)
    with pytest.raises(TypeError, match="stride"):
        fn(x, w, b, stride=2.0)
    for x64 in (np.ones((1, 6, 2)), np.ones((1, 6, 2)), mx.ones((1, 6, 2), mx.float64), mx.ones((1, 6, 2), mx.float64)):
        y = fn(x64, w, b, stride=2)  # float64 is cast each time, never kept under its own dtype
        assert y.dtype == mx.float32
        np.testing.assert_array_equal(np.array(y), np.array(first))
    assert all(key[1] in functional._FLOATS for key in functional._hot_table())
    calls = len(seen)
    with mx.stream(mx.new_stream(mx.cpu)):
        fn(x, w, b, stride=2)
    assert len(seen) == calls + 1
    monkeypatch.setattr(tuner, "_override", "forward")
    monkeypatch.setattr(tuner, "tune", lambda *a, **k: {"choice": "builtin"})  # no timing in a test
    assert not tuner.autotune_off()
    fn(x, w, b, stride=2)
    assert len(seen) == calls + 2


HOT_STREAM = mx.new_stream(mx.cpu)


@settings(max_examples=80, deadline=None)
@given(transposed=st.booleans(), length=st.integers(1, 9), groups=st.sampled_from([1, 2, 3]), cig=st.integers(1, 3),
       cog=st.integers(1, 3), taps=st.integers(1, 5), stride=st.integers(1, 3), dilation=st.integers(1, 3),
       padding=st.integers(0, 5), with_bias=st.booleans(), own_stream=st.booleans(), seed=st.integers(0, 2**16))
def test_repeated_plain_calls_match_the_definition(transposed, length, groups, cig, cog, taps, stride, dilation, padding,
                                                   with_bias, own_stream, seed):
    """The second and third of equal plain calls (the hot table's run, or MLX's op called with the call's own
    arguments) equal the float64 definition, as the first does."""
    span = dilation * (taps - 1)
    if transposed:
        assume((length - 1) * stride + span + 1 - 2 * padding >= 1)
    else:
        assume(length + 2 * padding - span - 1 >= 0)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, length, groups * cig)).astype(np.float32)
    w = rng.standard_normal((groups * cog, taps, cig)).astype(np.float32)
    b = rng.standard_normal(groups * cog).astype(np.float32) if with_bias else None
    fn, reference = (md.conv_transpose1d, ref.conv_transpose1d) if transposed else (md.conv1d, ref.conv1d)
    expected = reference(x, w, b, stride, padding, padding, dilation, groups)
    args = (mx.array(x), mx.array(w), None if b is None else mx.array(b))
    stream = dict(stream=HOT_STREAM) if own_stream else {}
    for _ in range(3):
        y = fn(*args, stride=stride, padding=padding, dilation=dilation, groups=groups, **stream)
        np.testing.assert_allclose(np.array(y), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["data_format", "weight_format", "backend"])
def test_an_unhashable_string_argument_is_named_after_a_plain_call(name):
    x, w = mx.ones((1, 6, 2)), mx.ones((2, 3, 2))
    mx.eval(md.conv1d(x, w))
    with pytest.raises((TypeError, ValueError), match=name):
        md.conv1d(x, w, **{name: ["NLC"]})


def test_a_thread_making_a_stream_per_call_keeps_a_bounded_few_hot_tables():
    from mlx_deconv.ops import functional

    x, w = mx.ones((1, 6, 2)), mx.ones((2, 3, 2))
    for _ in range(3 * functional.HOT_STREAMS):
        with mx.stream(mx.new_stream(mx.cpu)):
            mx.eval(md.conv1d(x, w))
    assert len(functional._LOCAL.hot_tables) <= functional.HOT_STREAMS


@pytest.mark.parametrize("op", ["conv1d", "conv_transpose1d"])
def test_a_call_passing_its_stream_takes_the_hot_path_of_that_stream_only(op, monkeypatch):
    """``stream=`` an ``mx.Stream``: the second call skips the prepared table; another stream, or a default stream
    of the same value as a passed one, is prepared for itself; a thread making a stream per call keeps a few tables."""
    from mlx_deconv.ops import functional

    fn = getattr(md, op)
    functional.forget_prepared_calls()
    seen = []
    original = functional.prepared
    monkeypatch.setattr(functional, "prepared", lambda call, stream: seen.append(stream) or original(call, stream))
    x, w = mx.ones((1, 6, 2)), mx.ones((2, 3, 2))
    one, two = mx.new_stream(mx.cpu), mx.new_stream(mx.cpu)
    first = fn(x, w, stride=2, stream=one)
    fn(x, w, stride=2, stream=one)
    assert seen == [one]
    fn(x, w, stride=2, stream=two)
    assert seen == [one, two]
    with mx.stream(one):
        fn(x, w, stride=2)  # the default stream's table knows nothing of calls that passed their stream
    assert len(seen) == 3 and seen[2] == one
    np.testing.assert_array_equal(np.array(fn(x, w, stride=2, stream=two)), np.array(first))
    for _ in range(3 * functional.HOT_STREAMS):
        fn(x, w, stride=2, stream=mx.new_stream(mx.cpu))
    assert len(functional._LOCAL.stream_tables) <= functional.HOT_STREAMS


def test_a_bound_call_casts_its_weight_and_bias_on_the_call_s_stream():
    """The dtype rule in front of a bound backend casts on the stream the call names, as the backend runs there
    (not on the caller's default stream, which may be another stream or device)."""
    from mlx_deconv.ops import functional

    class Fake:  # just what the dtype rule reads: a dtype, and astype recording its stream
        def __init__(self, dtype, casts):
            self.dtype, self.casts = dtype, casts

        def astype(self, dtype, stream=None):
            self.casts.append(stream)
            return Fake(dtype, self.casts)

    casts, seen = [], []
    stream = mx.new_stream(mx.cpu)
    run = functional._plain_layout(lambda x, w, b: seen.append((w.dtype, b.dtype)), stream)
    run(Fake(mx.float16, casts), Fake(mx.float32, casts), Fake(mx.bfloat16, casts))
    assert casts == [stream, stream] and seen == [(mx.float16, mx.float16)]
