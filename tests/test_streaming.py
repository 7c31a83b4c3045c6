"""Streaming: any chunking of the input gives the whole-sequence output, with bounded state."""

import mlx.core as mx
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import mlx_deconv as md
from strategies import cases


@given(case=cases(max_length=16), data=st.data(), data_format=st.sampled_from(["NLC", "NCL"]),
       activation=st.sampled_from([None, "tanh", "snake"]), batched=st.booleans())
def test_any_chunking_equals_whole_sequence(case, data, data_format, activation, batched):
    if not batched:
        case.batch = 1
    layer = md.ConvTranspose1d(case.in_channels, case.out_channels, case.taps, bias=case.use_bias,
                               **case.kwargs(), data_format=data_format, activation=activation)
    x, _, _ = case.arrays()
    x = mx.array(x if data_format == "NLC" else x.transpose(0, 2, 1), mx.float32)
    if not batched:
        x = x[0]
    axis = (1 if data_format == "NLC" else 2) - (0 if batched else 1)
    whole = layer(x)

    sizes = data.draw(st.lists(st.integers(0, 5), max_size=12))
    stream = layer.streaming()
    pieces, start = [], 0
    for size in sizes + [case.length]:  # the last piece takes whatever is left
        size = min(size, case.length - start)
        index = [slice(None)] * x.ndim
        index[axis] = slice(start, start + size)
        pieces.append(stream.step(x[tuple(index)]))
        start += size
        # Bounded state: the overlap-add tail plus the held-back right crop, never the history.
        if stream._pending is not None:
            assert stream._pending.shape[1] <= case.dilation * (case.taps - 1) + 1 + stream.latency + case.stride
    pieces.append(stream.flush())
    streamed = mx.concatenate(pieces, axis=axis)
    assert streamed.shape == whole.shape
    np.testing.assert_allclose(np.array(streamed), np.array(whole), atol=1e-5 * (1 + case.taps * case.in_per_group))


def test_chunks_of_one_and_latency_of_causal_is_zero():
    layer = md.ConvTranspose1d(4, 3, 16, stride=8, padding="causal")
    stream = layer.streaming()
    assert stream.latency == 0
    x = mx.random.normal((2, 10, 4), key=mx.random.key(0))
    outs = [stream.step(x[:, i : i + 1]) for i in range(10)]
    assert all(o.shape == (2, 8, 3) for o in outs)  # every row yields stride samples at once
    tail = stream.flush()
    assert tail.shape == (2, 0, 3)
    assert mx.allclose(mx.concatenate(outs + [tail], axis=1), layer(x), atol=1e-5)


def test_latency_of_symmetric_padding():
    # span 16, stride 8, padding 4: right crop 4 <= span - stride, so nothing is held back.
    assert md.ConvTranspose1d(4, 3, 16, stride=8, padding=4).streaming().latency == 0
    # "valid" with K=3, stride 1: right crop 0 <= 2: none either; padding 5 holds back 3.
    assert md.ConvTranspose1d(4, 3, 3, padding=5).streaming().latency == 3


def test_reset_and_weight_updates_are_seen():
    layer = md.ConvTranspose1d(2, 2, 4, stride=2, padding=1)
    stream = layer.streaming()
    x = mx.random.normal((1, 6, 2), key=mx.random.key(1))
    stream.step(x[:, :3])
    stream.reset()
    layer.weight = layer.weight * 2
    out = mx.concatenate([stream.step(x), stream.flush()], axis=1)
    assert mx.allclose(out, layer(x), atol=1e-5)


def make_stream(kind):
    if kind == "transposed":
        layer = md.ConvTranspose1d(3, 4, 6, stride=2, padding=2, activation="tanh")
    else:
        layer = md.Conv1d(3, 4, 5, padding=2, dilation=2, activation="tanh")
    return layer, layer.streaming()


BAD_CHUNKS = {
    "channels": lambda: mx.ones((1, 4, 2)),
    "dtype": lambda: mx.ones((1, 4, 3), mx.float16),
    "integer dtype": lambda: mx.ones((1, 4, 3), mx.int32),
    "rank": lambda: mx.ones((1, 1, 4, 3)),
    "unbatched after batched": lambda: mx.ones((4, 3)),
    "batch size": lambda: mx.ones((2, 4, 3)),
}


@pytest.mark.parametrize("kind", ["transposed", "direct"])
@pytest.mark.parametrize("bad", sorted(BAD_CHUNKS))
def test_a_failed_step_leaves_the_stream_as_it_was(kind, bad):
    layer, stream = make_stream(kind)
    x = mx.random.normal((1, 12, 3), key=mx.random.key(4))
    pieces = [stream.step(x[:, :5])]
    with pytest.raises((ValueError, TypeError)):
        stream.step(BAD_CHUNKS[bad]())
    pieces += [stream.step(x[:, 5:])]
    pieces.append(stream.flush())
    np.testing.assert_allclose(np.array(mx.concatenate(pieces, axis=1)), np.array(layer(x)), atol=1e-5)


@pytest.mark.parametrize("kind", ["transposed", "direct"])
def test_errors_name_what_is_wrong(kind):
    _, stream = make_stream(kind)
    stream.step(mx.ones((1, 2, 3)))
    with pytest.raises(ValueError, match="batch size 2 but the stream started with batch size 1"):
        stream.step(mx.ones((2, 2, 3)))
    with pytest.raises(TypeError, match="float16 but the stream started with mlx.core.float32"):
        stream.step(mx.ones((1, 2, 3), mx.float16))
    with pytest.raises(ValueError, match="in_channels=3"):
        stream.step(mx.ones((1, 3, 2)))


@pytest.mark.parametrize("kind", ["transposed", "direct"])
def test_float64_chunks_follow_the_ops_rule(kind):
    """float64, from numpy or MLX, is computed in float32 as the ops do, in the same stream as float32 chunks."""
    layer, stream = make_stream(kind)
    x = np.random.default_rng(5).standard_normal((1, 9, 3))
    pieces = [stream.step(x[:, :4]), stream.step(mx.array(x[:, 4:7], mx.float32)), stream.step(x[:, 7:]), stream.flush()]
    assert all(p.dtype == mx.float32 for p in pieces)
    np.testing.assert_allclose(np.array(mx.concatenate(pieces, axis=1)), np.array(layer(mx.array(x, mx.float32))),
                               atol=1e-5)
