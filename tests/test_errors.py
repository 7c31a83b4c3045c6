"""Bad input: a ValueError/TypeError naming the argument and the value, never a crash or a wrong answer."""

import mlx.core as mx
import numpy as np
import pytest

import mlx_deconv as md
import reference as ref

X = mx.zeros((2, 5, 4))
W = mx.zeros((6, 3, 4))

CASES = [
    # (description, call kwargs, exception, words the message must contain)
    ("x 1-D", dict(x=mx.zeros((5,))), ValueError, ["x", "(5,)"]),
    ("x 4-D", dict(x=mx.zeros((1, 2, 5, 4))), ValueError, ["x", "(1, 2, 5, 4)"]),
    ("weight 2-D", dict(weight=mx.zeros((6, 3))), ValueError, ["weight", "(6, 3)"]),
    ("channels mismatch", dict(x=mx.zeros((2, 5, 3))), ValueError, ["C_in=3", "(6, 3, 4)"]),
    ("torch channels mismatch", dict(weight=mx.zeros((3, 2, 3)), weight_format="torch"), ValueError, ["C_in=4", "C_in=3"]),
    ("groups not dividing C_in", dict(x=mx.zeros((2, 5, 6)), weight=mx.zeros((6, 3, 2)), groups=4), ValueError, ["groups=4", "C_in=6"]),
    ("groups not dividing C_out", dict(weight=mx.zeros((5, 3, 2)), groups=2), ValueError, ["groups=2", "C_out=5"]),
    ("groups zero", dict(groups=0), ValueError, ["groups", "0"]),
    ("stride zero", dict(stride=0), ValueError, ["stride", "0"]),
    ("dilation negative", dict(dilation=-1), ValueError, ["dilation", "-1"]),
    ("negative padding", dict(padding=-1), ValueError, ["padding", "-1"]),
    ("negative padding pair", dict(padding=(1, -2)), ValueError, ["padding[1]", "-2"]),
    ("padding triple", dict(padding=(1, 2, 3)), ValueError, ["padding", "(left, right) pair", "(1, 2, 3)"]),
    ("empty padding", dict(padding=()), ValueError, ["padding", "(left, right) pair", "()"]),
    ("output_padding too big", dict(stride=2, output_padding=2), ValueError, ["output_padding=2", "stride=2"]),
    ("output_padding negative", dict(stride=2, output_padding=-1), ValueError, ["output_padding", "-1"]),
    ("float stride", dict(stride=2.0), TypeError, ["stride", "2.0"]),
    ("bool dilation", dict(dilation=True), TypeError, ["dilation", "True"]),
    ("string groups", dict(groups="2"), TypeError, ["groups", "'2'"]),
    # Unhashable, so no cache key: still refused by the checks, not by the key's hash.
    ("numpy array stride", dict(stride=np.array([2])), TypeError, ["stride", "array([2])"]),
    ("set padding", dict(padding={1}), TypeError, ["padding", "{1}"]),
    ("bias shape", dict(bias=mx.zeros((5,))), ValueError, ["bias", "(6,)", "(5,)"]),
    ("bias 2-D", dict(bias=mx.zeros((1, 6))), ValueError, ["bias", "(1, 6)"]),
    ("no output left", dict(padding=9), ValueError, ["padding=9", "output length would be"]),
    ("empty input", dict(x=mx.zeros((2, 0, 4))), ValueError, ["x", "(2, 0, 4)"]),
    ("unknown padding", dict(padding="full"), ValueError, ["padding", "'full'"]),
    ("unknown data_format", dict(data_format="NHWC"), ValueError, ["data_format", "'NHWC'"]),
    ("unknown weight_format", dict(weight_format="keras"), ValueError, ["weight_format", "'keras'"]),
    ("unknown backend", dict(backend="cudnn"), ValueError, ["backend", "'cudnn'"]),
    ("metal on cpu", dict(backend="metal", stream="cpu"), ValueError, ["backend", "'metal'"]),
    ("unknown stream", dict(stream="tpu"), ValueError, ["stream", "'tpu'"]),
    ("stream type", dict(stream=3), TypeError, ["stream", "3"]),
    ("integer x", dict(x=mx.zeros((2, 5, 4), dtype=mx.int32)), TypeError, ["x", "int32"]),
    ("integer weight", dict(weight=mx.zeros((6, 3, 4), dtype=mx.int32)), TypeError, ["weight", "int32"]),
    ("integer bias", dict(bias=mx.zeros((6,), dtype=mx.int32)), TypeError, ["bias", "int32"]),
    ("not an array", dict(x=object()), TypeError, ["x", "object"]),
    ("unreachable output_size", dict(stride=2, output_size=20), ValueError, ["output_size=20", "11..12"]),
    ("output_size and output_padding", dict(stride=2, output_size=11, output_padding=0), ValueError, ["output_size", "output_padding"]),
]


@pytest.mark.parametrize("name,kwargs,exc,words", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_named(name, kwargs, exc, words):
    call = dict(x=X, weight=W)
    call.update(kwargs)
    with pytest.raises(exc) as info:
        md.conv_transpose1d(**call)
    for word in words:
        assert word in str(info.value), f"{word!r} missing from: {info.value}"


def test_gpu_stream_unavailable_is_named():
    if mx.is_available(mx.gpu):
        pytest.skip("this machine has a GPU")
    with pytest.raises(ValueError, match="not available"):
        md.conv_transpose1d(X, W, stream="gpu")


@pytest.mark.parametrize("backend", ["builtin", "gemm"])
def test_thread_local_stream_is_accepted_from_any_thread(backend):
    """``mx.new_thread_local_stream`` gives what MLX's own ops take as ``stream`` (each thread runs it on
    a stream of its own); both ops take it too, from two threads at once, with the reference's results."""
    import threading

    from mlx_deconv.runtime.devices import resolve_stream

    shared = mx.new_thread_local_stream(mx.cpu)
    rng = np.random.default_rng(0)
    x, w, b = (rng.standard_normal(shape).astype(np.float32) for shape in ((2, 9, 4), (6, 3, 4), (6,)))
    expected = (ref.conv_transpose1d(x, w, b, stride=2, left=1, right=1), ref.conv1d(x, w, b, 2, 1, 1))
    xa, wa, ba = mx.array(x), mx.array(w), mx.array(b)
    mx.eval(xa, wa, ba)  # made here, read there: evaluated before the threads start
    got, errors, streams = {}, [], {}
    barrier = threading.Barrier(2)

    def work(i):
        try:
            barrier.wait()
            for _ in range(4):
                got[i] = (np.array(md.conv_transpose1d(xa, wa, ba, stride=2, padding=1, backend=backend, stream=shared)),
                          np.array(md.conv1d(xa, wa, ba, stride=2, padding=1, backend=backend, stream=shared)))
            streams[i] = resolve_stream(shared)
        except Exception as err:  # noqa: BLE001 (reported below, with the thread's traceback lost otherwise)
            errors.append(err)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert isinstance(streams[0], mx.Stream) and streams[0].device == mx.cpu and streams[0] != streams[1]
    for i in range(2):
        for y, want in zip(got[i], expected):
            np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-5)


def test_float64_numpy_input_is_cast_not_refused():
    # numpy float64 becomes MLX float32, which the op accepts.
    y = md.conv_transpose1d(np.zeros((1, 3, 4)), np.zeros((6, 3, 4)))
    assert y.dtype == mx.float32


# -- conv1d: the same rules ------------------------------------------------------

W1 = mx.zeros((6, 3, 4))  # (C_out, K, C_in) for conv1d

CONV1D_CASES = [
    ("x 1-D", dict(x=mx.zeros((5,))), ValueError, ["x", "(5,)"]),
    ("x 4-D", dict(x=mx.zeros((1, 2, 5, 4))), ValueError, ["x", "(1, 2, 5, 4)"]),
    ("weight 2-D", dict(weight=mx.zeros((6, 3))), ValueError, ["weight", "(6, 3)"]),
    ("torch weight 2-D", dict(weight=mx.zeros((6, 3)), weight_format="torch"), ValueError, ["weight", "(C_out, C_in/groups, K)"]),
    ("channels mismatch", dict(x=mx.zeros((2, 5, 3))), ValueError, ["C_in=3", "(6, 3, 4)"]),
    ("torch channels mismatch", dict(weight=mx.zeros((6, 3, 3)), weight_format="torch"), ValueError, ["C_in=4", "(6, 3, 3)"]),
    ("groups not dividing C_in", dict(x=mx.zeros((2, 5, 6)), weight=mx.zeros((6, 3, 2)), groups=4), ValueError, ["groups=4", "C_in=6"]),
    ("groups not dividing C_out", dict(weight=mx.zeros((5, 3, 2)), groups=2), ValueError, ["groups=2", "C_out=5"]),
    ("groups zero", dict(groups=0), ValueError, ["groups", "0"]),
    ("stride zero", dict(stride=0), ValueError, ["stride", "0"]),
    ("dilation negative", dict(dilation=-1), ValueError, ["dilation", "-1"]),
    ("negative padding", dict(padding=-1), ValueError, ["padding", "-1"]),
    ("negative padding pair", dict(padding=(1, -2)), ValueError, ["padding[1]", "-2"]),
    ("padding triple", dict(padding=(1, 2, 3)), ValueError, ["padding", "(1, 2, 3)"]),
    ("float stride", dict(stride=2.0), TypeError, ["stride", "2.0"]),
    ("bool dilation", dict(dilation=True), TypeError, ["dilation", "True"]),
    ("string groups", dict(groups="2"), TypeError, ["groups", "'2'"]),
    ("float padding", dict(padding=1.5), TypeError, ["padding", "1.5"]),
    ("bias shape", dict(bias=mx.zeros((5,))), ValueError, ["bias", "(6,)", "(5,)"]),
    ("bias 2-D", dict(bias=mx.zeros((1, 6))), ValueError, ["bias", "(1, 6)"]),
    ("kernel longer than input", dict(weight=mx.zeros((6, 4, 4)), dilation=2), ValueError, ["dilation=2", "kernel_size=4", "7", "5"]),
    ("empty input", dict(x=mx.zeros((2, 0, 4))), ValueError, ["x", "(2, 0, 4)"]),
    ("empty weight", dict(weight=mx.zeros((6, 0, 4))), ValueError, ["weight", "(6, 0, 4)"]),
    ("unknown padding", dict(padding="full"), ValueError, ["padding", "'full'"]),
    ("unknown data_format", dict(data_format="NHWC"), ValueError, ["data_format", "'NHWC'"]),
    ("unknown weight_format", dict(weight_format="keras"), ValueError, ["weight_format", "'keras'"]),
    ("unknown backend", dict(backend="cudnn"), ValueError, ["backend", "'cudnn'"]),
    ("metal on cpu", dict(backend="metal", stream="cpu"), ValueError, ["backend", "'metal'"]),
    ("unknown stream", dict(stream="tpu"), ValueError, ["stream", "'tpu'"]),
    ("stream type", dict(stream=3), TypeError, ["stream", "3"]),
    ("integer x", dict(x=mx.zeros((2, 5, 4), dtype=mx.int32)), TypeError, ["x", "int32"]),
    ("integer weight", dict(weight=mx.zeros((6, 3, 4), dtype=mx.int32)), TypeError, ["weight", "int32"]),
    ("integer bias", dict(bias=mx.zeros((6,), dtype=mx.int32)), TypeError, ["bias", "int32"]),
    ("not an array", dict(x=object()), TypeError, ["x", "object"]),
    ("winograd has no conv1d", dict(backend="winograd"), ValueError, ["backend", "'winograd'", "conv1d"]),
]


@pytest.mark.parametrize("name,kwargs,exc,words", CONV1D_CASES, ids=[c[0] for c in CONV1D_CASES])
def test_conv1d_bad_input_is_named(name, kwargs, exc, words):
    call = dict(x=X, weight=W1)
    call.update(kwargs)
    with pytest.raises(exc) as info:
        md.conv1d(**call)
    for word in words:
        assert word in str(info.value), f"{word!r} missing from: {info.value}"


# -- layout mistakes name the argument that fixes them (both ops) -----------------

# (op, x shape, weight shape, extra kwargs, the fix the message must name)
LAYOUT_CASES = [
    # A channels-first mel (80 channels, 50 frames) into a channels-last call.
    ("conv_transpose1d", (1, 80, 50), (64, 16, 80), dict(stride=8), 'data_format="NCL"'),
    ("conv_transpose1d", (80, 50), (64, 16, 80), dict(stride=8), 'data_format="NCL"'),
    ("conv_transpose1d", (1, 50, 80), (64, 16, 80), dict(stride=8, data_format="NCL"), 'data_format="NLC"'),
    # A PyTorch ConvTranspose1d weight (C_in, C_out, K) under the default "mlx".
    ("conv_transpose1d", (1, 50, 80), (80, 64, 16), dict(stride=8), 'weight_format="torch"'),
    ("conv_transpose1d", (1, 50, 80), (64, 16, 80), dict(stride=8, weight_format="torch"), 'weight_format="mlx"'),
    ("conv_transpose1d", (1, 80, 50), (80, 64, 16), dict(stride=8), 'data_format="NCL" and weight_format="torch"'),
    # Depthwise: the mismatch shows as groups not dividing the channels.
    ("conv_transpose1d", (1, 64, 50), (64, 4, 1), dict(stride=2, groups=64), 'data_format="NCL"'),
    ("conv1d", (1, 80, 50), (64, 7, 80), {}, 'data_format="NCL"'),
    ("conv1d", (1, 50, 80), (64, 7, 80), dict(data_format="NCL"), 'data_format="NLC"'),
    # A PyTorch Conv1d weight (C_out, C_in, K) under the default "mlx".
    ("conv1d", (1, 50, 80), (64, 80, 7), {}, 'weight_format="torch"'),
    ("conv1d", (1, 50, 80), (64, 7, 80), dict(weight_format="torch"), 'weight_format="mlx"'),
    ("conv1d", (1, 80, 50), (64, 80, 7), {}, 'data_format="NCL" and weight_format="torch"'),
    ("conv1d", (1, 64, 50), (64, 5, 1), dict(groups=64), 'data_format="NCL"'),
]


@pytest.mark.parametrize("op,x_shape,w_shape,kwargs,fix", LAYOUT_CASES)
def test_layout_mistake_names_the_fix(op, x_shape, w_shape, kwargs, fix):
    with pytest.raises(ValueError) as info:
        getattr(md, op)(mx.zeros(x_shape), mx.zeros(w_shape), **kwargs)
    assert fix in str(info.value), str(info.value)
    assert str(x_shape) in str(info.value) or str(w_shape) in str(info.value)
    # The named fix works.
    for part in fix.split(" and "):
        name, value = part.split("=")
        kwargs = dict(kwargs, **{name: value.strip('"')})
    getattr(md, op)(mx.zeros(x_shape), mx.zeros(w_shape), **kwargs)


@pytest.mark.parametrize("op,weight", [("conv_transpose1d", W), ("conv1d", W1)])
def test_no_fix_named_when_no_layout_fits(op, weight):
    with pytest.raises(ValueError) as info:
        getattr(md, op)(mx.zeros((2, 5, 2)), weight)
    assert "C_in=2" in str(info.value)
    assert "data_format=" not in str(info.value) and "weight_format=" not in str(info.value)


@pytest.mark.parametrize("make", [
    lambda **kw: md.ConvTranspose1d(80, 64, 16, stride=8, padding=4, **kw),
    lambda **kw: md.Conv1d(80, 64, 7, padding=3, **kw),
], ids=["ConvTranspose1d", "Conv1d"])
def test_layer_layout_mistake_names_the_fix(make):
    with pytest.raises(ValueError, match='data_format="NCL"'):
        make()(mx.zeros((1, 80, 50)))
    with pytest.raises(ValueError, match='data_format="NLC"'):
        make(data_format="NCL")(mx.zeros((1, 50, 80)))


# -- float64: one rule whether it comes from numpy or MLX --------------------------

@pytest.mark.parametrize("op,weight", [("conv_transpose1d", (6, 3, 4)), ("conv1d", (6, 3, 4))])
def test_float64_is_computed_in_float32_from_numpy_and_mlx(op, weight):
    rng = np.random.default_rng(0)
    x, w, b = rng.standard_normal((2, 7, 4)), rng.standard_normal(weight), rng.standard_normal(6)
    fn = getattr(md, op)
    expected = fn(mx.array(x, mx.float32), mx.array(w, mx.float32), mx.array(b, mx.float32), padding=1)
    from_numpy = fn(x, w, b, padding=1)
    from_mlx = fn(mx.array(x, mx.float64), mx.array(w, mx.float64), mx.array(b, mx.float64), padding=1)
    for y in (from_numpy, from_mlx):
        assert y.dtype == mx.float32
        np.testing.assert_array_equal(np.array(y), np.array(expected))
    assert "float64" in fn.__doc__


@pytest.mark.parametrize("op", ["conv_transpose1d", "conv1d"])
def test_float64_gradient_flows_back_in_float64(op):
    x = mx.array(np.ones((1, 5, 4)), mx.float64)
    w = mx.array(np.ones((6, 3, 4)), mx.float32)
    grad = mx.grad(lambda a: getattr(md, op)(a, w).sum())(x)
    assert grad.dtype == mx.float64 and grad.shape == x.shape


# -- sizes beyond what MLX can hold: refused at once, naming the argument ------------

SIZE_CASES = [
    # (op, kwargs, words) on x (1, 6, 4): each used to hang or be killed for memory.
    ("conv_transpose1d", dict(stride=10**12), ["stride", "1000000000000"]),
    ("conv_transpose1d", dict(dilation=10**12), ["dilation", "1000000000000"]),
    ("conv_transpose1d", dict(stride=2**31 - 1), ["stride=2147483647", "32-bit"]),
    ("conv_transpose1d", dict(dilation=2**30), ["dilation=1073741824", "32-bit"]),
    ("conv_transpose1d", dict(stride=2, output_size=2**32), ["output_size", "4294967296"]),
    ("conv_transpose1d", dict(stride=2**28, output_size=5 * 2**28 + 3), ["stride=268435456", "memory"]),
    ("conv_transpose1d", dict(padding=10**12), ["padding", "1000000000000"]),
    ("conv1d", dict(stride=10**12), ["stride", "1000000000000"]),
    ("conv1d", dict(dilation=10**12), ["dilation", "1000000000000"]),
    ("conv1d", dict(dilation=2**31 - 1), ["dilation=2147483647", "kernel"]),
    ("conv1d", dict(padding=10**12), ["padding", "1000000000000"]),
    ("conv1d", dict(padding=(2**31 - 2, 2**31 - 2)), ["padding=(2147483646, 2147483646)", "32-bit"]),
    ("conv1d", dict(padding=2**29), ["padding=536870912", "memory"]),
]


@pytest.mark.parametrize("op,kwargs,words", SIZE_CASES)
def test_impossible_sizes_are_refused(op, kwargs, words):
    from mlx_deconv.geometry.validation import _memory_bytes

    if "memory" in words and (_memory_bytes() is None or _memory_bytes() > 2**36):
        pytest.skip("needs a machine with under 64 GiB to be sure the array cannot fit")
    x = mx.zeros((1, 6, 64)) if "memory" in words else mx.zeros((1, 6, 4))
    w = mx.zeros((64, 3, x.shape[2]))
    with pytest.raises(ValueError) as info:
        getattr(md, op)(x, w, **kwargs)
    for word in words:
        assert word in str(info.value), f"{word!r} missing from: {info.value}"


@pytest.mark.parametrize("fn,args", [
    ("output_length", (6, 3, 10**12)),
    ("conv1d_output_length", (6, 3, 10**12)),
])
def test_length_functions_refuse_huge_arguments(fn, args):
    with pytest.raises(ValueError, match="stride"):
        getattr(md, fn)(*args)


def test_available_backends_op_is_checked():
    assert "builtin" in md.available_backends(op="conv1d")
    assert "winograd" not in md.available_backends(op="conv1d")
    with pytest.raises(ValueError, match="op.*'conv2d'"):
        md.available_backends(op="conv2d")
