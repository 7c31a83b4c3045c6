"""Bad input: a ValueError/TypeError naming the argument and the value, never a crash or a wrong answer."""

import mlx.core as mx
import numpy as np
import pytest

import mlx_deconv as md

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
    ("padding triple", dict(padding=(1, 2, 3)), ValueError, ["padding", "(1, 2, 3)"]),
    ("output_padding too big", dict(stride=2, output_padding=2), ValueError, ["output_padding=2", "stride=2"]),
    ("output_padding negative", dict(stride=2, output_padding=-1), ValueError, ["output_padding", "-1"]),
    ("float stride", dict(stride=2.0), TypeError, ["stride", "2.0"]),
    ("bool dilation", dict(dilation=True), TypeError, ["dilation", "True"]),
    ("string groups", dict(groups="2"), TypeError, ["groups", "'2'"]),
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


def test_float64_numpy_input_is_cast_not_refused():
    # numpy float64 becomes MLX float32, which the op accepts.
    y = md.conv_transpose1d(np.zeros((1, 3, 4)), np.zeros((6, 3, 4)))
    assert y.dtype == mx.float32
