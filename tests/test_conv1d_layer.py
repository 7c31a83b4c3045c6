"""Conv1d layer: the float64 reference, PyTorch's weight norm and modules, state dicts, streaming."""

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

import mlx_deconv as md
import reference as ref
from helpers import atol, effective_torch_weight, torch_norm, weight_state


@st.composite
def conv_cases(draw, paddings=("valid", "same", "causal", "int", "pair")):
    groups = draw(st.integers(1, 3))
    case = dict(
        groups=groups, cig=draw(st.integers(1, 3)), cog=draw(st.integers(1, 3)), taps=draw(st.integers(1, 6)),
        stride=draw(st.integers(1, 4)), dilation=draw(st.integers(1, 3)), length=draw(st.integers(1, 24)),
        batch=draw(st.integers(1, 2)), bias=draw(st.booleans()), seed=draw(st.integers(0, 2**16)),
    )
    form = draw(st.sampled_from(paddings))
    if form == "int":
        case["padding"] = draw(st.integers(0, 6))
    elif form == "pair":
        case["padding"] = (draw(st.integers(0, 6)), draw(st.integers(0, 6)))
    else:
        case["padding"] = form
    left, right = ref.conv1d_pads(case["padding"], case["length"], case["taps"], case["stride"], case["dilation"])
    assume(ref.conv1d_output_length(case["length"], case["taps"], case["stride"], left, right, case["dilation"]) >= 1)
    return case


def build(case, **kwargs):
    layer = md.Conv1d(case["groups"] * case["cig"], case["groups"] * case["cog"], case["taps"], stride=case["stride"],
                      padding=case["padding"], dilation=case["dilation"], groups=case["groups"], bias=case["bias"], **kwargs)
    rng = np.random.default_rng(case["seed"])
    x = rng.standard_normal((case["batch"], case["length"], case["groups"] * case["cig"]))
    params = {"weight": mx.array(rng.standard_normal(layer.weight.shape), mx.float32)}
    if case["bias"]:
        params["bias"] = mx.array(rng.standard_normal(layer.out_channels), mx.float32)
    layer.update(params)
    return layer, x


def expected(layer, case, x):
    left, right = ref.conv1d_pads(case["padding"], case["length"], case["taps"], case["stride"], case["dilation"])
    bias = np.array(layer.bias) if case["bias"] else None
    return ref.conv1d(x, np.array(layer.weight), bias, case["stride"], left, right, case["dilation"], case["groups"])


@given(case=conv_cases(), data_format=st.sampled_from(["NLC", "NCL"]), batched=st.booleans())
def test_layer_matches_reference(case, data_format, batched):
    if not batched:
        case["batch"] = 1
    layer, x = build(case, data_format=data_format)
    xin = x if data_format == "NLC" else x.transpose(0, 2, 1)
    xin = mx.array(xin if batched else xin[0], mx.float32)
    y = layer(xin)
    assert tuple(layer.output_shape(xin.shape)) == tuple(y.shape)
    y = np.array(y, np.float64)
    if not batched:
        y = y[None]
    if data_format == "NCL":
        y = y.transpose(0, 2, 1)
    np.testing.assert_allclose(y, expected(layer, case, x), atol=atol(case["taps"] * case["cig"]))


def test_activation_mask_and_in_size():
    mask = np.zeros((6, 3, 2), np.float32)
    mask[:, 1] = 1
    layer = md.Conv1d(4, 6, 3, padding=1, groups=2, activation="tanh", w_mask=mask, in_size=(10, 4))
    assert layer.out_size == (10, 6)
    assert set(layer.parameters()) == {"weight", "bias"}
    x = np.random.default_rng(0).standard_normal((2, 10, 4))
    want = np.tanh(ref.conv1d(x, np.array(layer.weight) * mask, np.array(layer.bias), 1, 1, 1, 1, 2))
    np.testing.assert_allclose(np.array(layer(mx.array(x, mx.float32))), want, atol=1e-5)
    snake = md.Conv1d(4, 6, 3, activation="snake", data_format="NCL")
    grads = nn.value_and_grad(snake, lambda m, x: m(x).sum())(snake, mx.ones((1, 4, 7)))[1]
    assert grads["activation"]["alpha"].shape == (6,) and float(mx.abs(grads["activation"]["alpha"]).sum()) > 0
    assert "Conv1d(4, 6, kernel_size=3" in repr(snake) and "activation='snake'" in repr(snake)


@pytest.mark.parametrize("kwargs,words", [
    (dict(in_channels=5, groups=2), ["groups=2", "C_in=5"]),
    (dict(padding="full"), ["padding", "'full'"]),
    (dict(output_padding=1), ["output_padding", "1"]),
    (dict(stride=0), ["stride", "0"]),
    (dict(weight_norm=True, weight_norm_dim=4), ["dim", "4"]),
    (dict(activation="swishy"), ["activation", "'swishy'"]),
])
def test_argument_errors(kwargs, words):
    args = dict(in_channels=4, out_channels=6, kernel_size=3)
    args.update(kwargs)
    if "output_padding" in args:
        with pytest.raises(TypeError):  # Conv1d has no such argument at all
            md.Conv1d(**args)
        with pytest.raises(ValueError) as info:
            md.ConvConfig(False, 4, 6, 3, output_padding=1)
    else:
        with pytest.raises((ValueError, TypeError)) as info:
            md.Conv1d(**args)
    for word in words:
        assert word in str(info.value), str(info.value)


# -- weight norm and state dicts (numpy only) ------------------------------------------------------
@pytest.mark.parametrize("dim", [0, 1, 2, None])
def test_weight_norm_is_pytorch_conv1d_semantics(dim):
    layer = md.Conv1d(4, 6, 5, groups=2, weight_norm=True, weight_norm_dim=dim)
    vt = ref.torch_conv1d_weight(np.array(layer.weight_v, np.float64))  # (C_out, C_in/groups, K)
    g_shape = () if dim is None else tuple(n if a == dim else 1 for a, n in enumerate(vt.shape))
    assert layer.weight_g.shape == g_shape
    if dim == 0:
        assert g_shape == (6, 1, 1)  # one norm per OUTPUT channel, as torch.nn.Conv1d
    np.testing.assert_allclose(np.array(layer.weight_g), torch_norm(vt, dim).reshape(g_shape), rtol=1e-5)
    g = np.random.default_rng(1).uniform(0.5, 2, g_shape)
    layer.weight_g = mx.array(g, mx.float32)
    want = g * vt / torch_norm(vt, dim).reshape(g_shape)
    got = ref.torch_conv1d_weight(np.array(layer.effective_weight()))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def conv_state(style, dim=0, bias=True, seed=0):
    rng = np.random.default_rng(seed)
    v = rng.standard_normal((6, 2, 5)).astype(np.float32)  # (C_out, C_in/groups, K), groups=2, C_in=4
    state = weight_state(v, style, dim, rng)
    if bias:
        state["bias"] = rng.standard_normal(6).astype(np.float32)
    return state


@pytest.mark.parametrize("style,dim", [("plain", 0), ("legacy", 0), ("legacy", 1), ("parametrizations", 0),
                                       ("parametrizations", 2)])
def test_state_dict_round_trip_against_reference(style, dim):
    state = conv_state(style, dim)
    layer = md.Conv1d.from_torch(state, stride=2, padding=3, dilation=2, groups=2, data_format="NCL")
    assert layer.uses_weight_norm == (style != "plain")
    x = np.random.default_rng(2).standard_normal((2, 4, 17)).astype(np.float32)
    w_mlx = np.asarray(effective_torch_weight(state, dim)).transpose(0, 2, 1)
    want = ref.conv1d(x.transpose(0, 2, 1), w_mlx, state["bias"], 2, 3, 3, 2, 2).transpose(0, 2, 1)
    np.testing.assert_allclose(np.array(layer(mx.array(x))), want, atol=1e-4)
    exported = layer.torch_state_dict(style="legacy" if style == "legacy" else "parametrizations")
    assert set(exported) == set(state)
    for key, value in state.items():
        np.testing.assert_allclose(exported[key], value, rtol=1e-6, atol=1e-6)


def test_load_converts_between_weight_norm_and_plain_and_failures_change_nothing():
    state = conv_state("legacy")
    plain = md.Conv1d(4, 6, 5, groups=2).load_torch_state_dict(state)
    normed = md.Conv1d(4, 6, 5, groups=2, weight_norm=True, weight_norm_dim=1).load_torch_state_dict(state)
    x = mx.random.normal((1, 9, 4), key=mx.random.key(0))
    assert mx.allclose(plain(x), normed(x), atol=1e-5)
    np.testing.assert_allclose(plain.torch_state_dict()["weight"], effective_torch_weight(state), rtol=1e-5, atol=1e-6)
    before = {k: np.array(v) for k, v in plain.parameters().items()}
    broken = dict(conv_state("plain", seed=5), bias=np.zeros(7, np.float32))  # a good weight, a bad bias
    with pytest.raises(ValueError, match="bias"):
        plain.load_torch_state_dict(broken)
    for key, value in plain.parameters().items():
        np.testing.assert_array_equal(np.array(value), before[key])


def test_torch_init_bound_is_conv1d_fan_in():
    layer = md.Conv1d(64, 96, 7, groups=2, bias_init="torch")
    bound = 1 / np.sqrt(32 * 7)  # PyTorch's Conv1d: fan_in = (C_in/groups) * K
    assert 0.98 * bound < float(mx.abs(layer.weight).max()) <= bound
    assert float(mx.abs(layer.bias).max()) <= bound


# -- streaming ---------------------------------------------------------------------------------------
@given(case=conv_cases(paddings=("causal", "int", "pair", "valid")), data=st.data(),
       data_format=st.sampled_from(["NLC", "NCL"]), activation=st.sampled_from([None, "tanh", "snake"]),
       batched=st.booleans())
def test_streaming_any_chunking_equals_whole_sequence(case, data, data_format, activation, batched):
    if not batched:
        case["batch"] = 1
    layer, x = build(case, data_format=data_format, activation=activation)
    x = mx.array(x if data_format == "NLC" else x.transpose(0, 2, 1), mx.float32)
    if not batched:
        x = x[0]
    axis = (1 if data_format == "NLC" else 2) - (0 if batched else 1)
    whole = layer(x)
    sizes = data.draw(st.lists(st.integers(0, 6), max_size=12))
    stream = layer.streaming()
    span = case["dilation"] * (case["taps"] - 1) + 1
    pieces, start = [], 0
    for size in sizes + [case["length"]]:  # the last piece takes whatever is left
        size = min(size, case["length"] - start)
        index = [slice(None)] * x.ndim
        index[axis] = slice(start, start + size)
        pieces.append(stream.step(x[tuple(index)]))
        start += size
        # The state is the left context only: fewer input samples than the kernel's span.
        assert stream._buffer.shape[1] <= span - 1
    pieces.append(stream.flush())
    streamed = mx.concatenate(pieces, axis=axis)
    assert streamed.shape == whole.shape
    # Equal to float32 rounding: a chunk's products may be summed in another order than the whole call's.
    np.testing.assert_allclose(np.array(streamed), np.array(whole), rtol=1e-6, atol=atol(case["taps"] * case["cig"]))


@pytest.mark.parametrize("padding", ["causal", 2, (4, 1), "same"])
def test_streaming_one_sample_at_a_time(padding):
    layer = md.Conv1d(3, 5, 5, padding=padding, dilation=2)
    x = mx.random.normal((2, 20, 3), key=mx.random.key(3))
    stream = layer.streaming()
    outs = [stream.step(x[:, i:i + 1]) for i in range(20)]
    if padding == "causal":
        assert stream.lookahead == 0 and all(o.shape == (2, 1, 5) for o in outs)  # no waiting
    out = mx.concatenate(outs + [stream.flush()], axis=1)
    np.testing.assert_allclose(np.array(out), np.array(layer(x)), rtol=1e-6, atol=atol(5 * 3))


def test_streaming_refuses_same_with_stride():
    with pytest.raises(ValueError, match="'same' with stride=2"):
        md.Conv1d(3, 5, 4, stride=2, padding="same").streaming()
    stream = md.Conv1d(3, 5, 4, padding="valid").streaming()
    with pytest.raises(ValueError, match="before any input"):
        stream.flush()
    stream.step(mx.ones((1, 2, 3)))
    with pytest.raises(ValueError, match="shorter than the kernel"):
        stream.flush()


# -- PyTorch itself ----------------------------------------------------------------------------------
@st.composite
def torch_geometries(draw):
    groups = draw(st.sampled_from([1, 2]))
    padding = draw(st.one_of(st.integers(0, 4), st.sampled_from(["valid", "same"])))
    stride = 1 if padding == "same" else draw(st.integers(1, 3))  # PyTorch's "same" needs stride 1
    return dict(in_channels=2 * groups, out_channels=2 * draw(st.integers(1, 2)) * groups,
                kernel_size=draw(st.integers(1, 5)), stride=stride, padding=padding,
                dilation=draw(st.integers(1, 3)), groups=groups, bias=draw(st.booleans()))


@given(geometry=torch_geometries(), norm=st.sampled_from([None, "legacy", "parametrizations"]),
       length=st.integers(1, 20), seed=st.integers(0, 1000))
def test_from_torch_module_matches_pytorch(geometry, norm, length, seed):
    torch = pytest.importorskip("torch")
    span = geometry["dilation"] * (geometry["kernel_size"] - 1) + 1
    pad = 0 if geometry["padding"] == "valid" else (span - 1 if geometry["padding"] == "same" else 2 * geometry["padding"])
    assume(length + pad >= span)
    torch.manual_seed(seed)
    module = torch.nn.Conv1d(**geometry)
    if norm == "legacy":
        module = torch.nn.utils.weight_norm(module)
    elif norm == "parametrizations":
        module = torch.nn.utils.parametrizations.weight_norm(module)
    x = torch.randn(2, geometry["in_channels"], length)
    with torch.no_grad():
        want = module(x).numpy()
    layer = md.Conv1d.from_torch(module, data_format="NCL")
    assert layer.uses_weight_norm == (norm is not None)
    if norm is not None:
        assert layer.weight_g.shape == (geometry["out_channels"], 1, 1)
    np.testing.assert_allclose(np.array(layer(mx.array(x.numpy()))), want, atol=1e-5)
    # Its export loads back into the module and gives the same output.
    module.load_state_dict({k: torch.from_numpy(v) for k, v in layer.torch_state_dict(style=norm or "parametrizations").items()})
    with torch.no_grad():
        np.testing.assert_allclose(module(x).numpy(), want, atol=1e-5)


def test_from_torch_refuses_what_it_cannot_express():
    torch = pytest.importorskip("torch")
    with pytest.raises(ValueError, match="padding_mode='reflect'"):
        md.Conv1d.from_torch(torch.nn.Conv1d(2, 3, 3, padding=1, padding_mode="reflect"))
    with pytest.raises(TypeError, match="torch.nn.Conv1d"):
        md.Conv1d.from_torch(torch.nn.ConvTranspose1d(2, 3, 3))
    with pytest.raises(ValueError, match="come from the module"):
        md.Conv1d.from_torch(torch.nn.Conv1d(2, 3, 3), stride=2)
