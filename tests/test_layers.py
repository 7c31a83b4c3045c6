"""ConvTranspose1d: every argument against the float64 reference, mlx.nn tooling, weight norm."""

from functools import partial

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import mlx_deconv as md
import reference as ref
from helpers import mlx_weight_from_torch
from strategies import cases


def layer_for(case, **kwargs):
    layer = md.ConvTranspose1d(case.in_channels, case.out_channels, case.taps, bias=case.use_bias, **case.kwargs(), **kwargs)
    x, w, b = case.arrays()
    params = {"weight": mx.array(w, mx.float32)}
    if case.use_bias:
        params["bias"] = mx.array(b, mx.float32)
    layer.update(params)
    return layer, x, w, b


@given(case=cases(), data_format=st.sampled_from(["NLC", "NCL"]), batched=st.booleans())
def test_layer_matches_reference(case, data_format, batched):
    if not batched:
        case.batch = 1
    layer, x, w, b = layer_for(case, data_format=data_format)
    xin = x if data_format == "NLC" else x.transpose(0, 2, 1)
    xin = mx.array(xin if batched else xin[0], mx.float32)
    y = np.array(layer(xin), np.float64)
    if not batched:
        y = y[None]
    if data_format == "NCL":
        y = y.transpose(0, 2, 1)
    np.testing.assert_allclose(y, case.expected(x, w, b), atol=1e-4 * (1 + case.taps * case.in_per_group))
    assert tuple(layer.output_shape(xin.shape)) == tuple(layer(xin).shape)


@pytest.mark.parametrize("name,fn", [
    ("relu", lambda y: np.maximum(y, 0)),
    ("tanh", np.tanh),
    ("leaky_relu", lambda y: np.where(y > 0, y, 0.01 * y)),
    ("silu", lambda y: y / (1 + np.exp(-y))),
    ("snake", lambda y: y + np.sin(y) ** 2),
])
def test_activations(name, fn):
    layer = md.ConvTranspose1d(3, 4, 4, stride=2, padding=1, activation=name)
    x = np.random.default_rng(0).standard_normal((2, 5, 3))
    expected = fn(ref.conv_transpose1d(x, np.array(layer.weight), np.array(layer.bias), 2, 1, 1))
    np.testing.assert_allclose(np.array(layer(mx.array(x, mx.float32))), expected, atol=1e-5)


def test_callable_activation_and_snake_is_trainable():
    layer = md.ConvTranspose1d(3, 4, 4, stride=2, activation=lambda y: 2 * y)
    base = md.ConvTranspose1d(3, 4, 4, stride=2)
    base.update(layer.parameters())
    x = mx.ones((1, 5, 3))
    assert mx.allclose(layer(x), 2 * base(x))
    snake = md.ConvTranspose1d(3, 4, 4, stride=2, activation="snake", data_format="NCL")
    assert snake.parameters()["activation"]["alpha"].shape == (4,)
    grads = nn.value_and_grad(snake, lambda m, x: m(x).sum())(snake, mx.ones((1, 3, 5)))[1]
    assert float(mx.abs(grads["activation"]["alpha"]).sum()) > 0


def test_w_mask_multiplies_and_is_not_a_parameter():
    mask = np.zeros((4, 4, 3), np.float32)
    mask[:, ::2] = 1
    layer = md.ConvTranspose1d(3, 4, 4, stride=2, w_mask=mask)
    assert set(layer.parameters()) == {"weight", "bias"}
    x = np.random.default_rng(1).standard_normal((1, 6, 3))
    expected = ref.conv_transpose1d(x, np.array(layer.weight) * mask, np.array(layer.bias), 2)
    np.testing.assert_allclose(np.array(layer(mx.array(x, mx.float32))), expected, atol=1e-5)
    grad = nn.value_and_grad(layer, lambda m, x: m(x).sum())(layer, mx.array(x, mx.float32))[1]["weight"]
    assert float(mx.abs(grad[:, 1::2]).max()) == 0.0


@pytest.mark.parametrize("dim", [0, 1, 2, -1, None])
@pytest.mark.parametrize("groups", [1, 2])
def test_weight_norm_is_pytorch_semantics(dim, groups):
    layer = md.ConvTranspose1d(4, 6, 5, stride=2, groups=groups, weight_norm=True, weight_norm_dim=dim)
    v = np.array(layer.weight_v, np.float64)
    vt = ref.torch_weight(v, groups)  # PyTorch layout (C_in, C_out/groups, K)
    dim = None if dim == -1 else dim  # PyTorch: -1 (its stored None) is one norm over the whole weight
    axes = tuple(a for a in range(3) if a != (dim % 3 if dim is not None else None))
    norm = np.sqrt((vt ** 2).sum(axis=axes, keepdims=dim is not None))
    expected_g_shape = () if dim is None else tuple(n if a == dim % 3 else 1 for a, n in enumerate(vt.shape))
    assert layer.weight_g.shape == expected_g_shape
    # Fresh: g = ||v||, so the effective weight is v itself (as torch's weight_norm starts).
    np.testing.assert_allclose(np.array(layer.weight_g), norm.reshape(expected_g_shape), rtol=1e-5)
    g = np.random.default_rng(2).uniform(0.5, 2, expected_g_shape)
    layer.weight_g = mx.array(g, mx.float32)
    wt = g * vt / norm.reshape(expected_g_shape if dim is not None else ())
    w = mlx_weight_from_torch(wt, groups)
    np.testing.assert_allclose(np.array(layer.effective_weight()), w, rtol=1e-5, atol=1e-6)


def test_weight_norm_gradients_match_finite_differences():
    layer = md.ConvTranspose1d(3, 4, 4, stride=2, padding=1, weight_norm=True)
    x = mx.array(np.random.default_rng(3).standard_normal((2, 5, 3)), mx.float32)
    loss = lambda m: (m(x) ** 2).sum()
    grads = nn.value_and_grad(layer, lambda m: loss(m))(layer)[1]
    g0 = np.array(layer.weight_g, np.float64)
    for idx in [(0, 0, 0), (2, 0, 0)]:
        eps = 1e-2
        values = []
        for sign in (1, -1):
            g = g0.copy()
            g[idx] += sign * eps
            layer.weight_g = mx.array(g, mx.float32)
            values.append(float(loss(layer)))
        layer.weight_g = mx.array(g0, mx.float32)
        numeric = (values[0] - values[1]) / (2 * eps)
        assert abs(float(grads["weight_g"][idx]) - numeric) <= 1e-2 * (1 + abs(numeric))


def test_mlx_nn_tooling(tmp_path):
    layer = md.ConvTranspose1d(4, 6, 4, stride=2, padding=1, groups=2, weight_norm=True, activation="snake")
    x = mx.random.normal((2, 8, 4), key=mx.random.key(0))
    target = mx.random.normal((2, 16, 6), key=mx.random.key(1))
    opt = optim.Adam(learning_rate=1e-2)
    loss_and_grad = nn.value_and_grad(layer, lambda m, x, t: ((m(x) - t) ** 2).mean())

    state = [layer.state, opt.state]

    @partial(mx.compile, inputs=state, outputs=state)
    def step(x, t):
        loss, grads = loss_and_grad(layer, x, t)
        opt.update(layer, grads)
        return loss

    losses = [float(step(x, target)) for _ in range(30)]
    mx.eval(layer.parameters())
    assert losses[-1] < 0.8 * losses[0]
    path = tmp_path / "layer.safetensors"
    layer.save_weights(str(path))
    other = md.ConvTranspose1d(4, 6, 4, stride=2, padding=1, groups=2, weight_norm=True, activation="snake")
    other.load_weights(str(path))
    assert mx.allclose(other(x), layer(x))


def test_output_shape_and_in_size():
    layer = md.ConvTranspose1d(16, 8, 4, stride=2, padding="same", in_size=(28, 16))
    assert layer.out_size == (56, 8)
    assert layer.output_shape((3, 28, 16)) == (3, 56, 8)
    assert layer(mx.ones((28, 16))).shape == (56, 8)
    ncl = md.ConvTranspose1d(16, 8, 4, stride=2, data_format="NCL")
    assert ncl.output_shape((3, 16, 28)) == (3, 8, 58)
    with pytest.raises(ValueError, match="in_size"):
        md.ConvTranspose1d(16, 8, 4, in_size=(28, 15))
    with pytest.raises(TypeError, match="in_size must be .* got 'ab'"):
        md.ConvTranspose1d(16, 8, 4, in_size="ab")


@pytest.mark.parametrize("cls, backend", [(md.Conv1d, "foo"), (md.Conv1d, None), (md.Conv1d, "winograd"),
                                          (md.ConvTranspose1d, "Gemm"), (md.ConvTranspose1d, 3)])
def test_a_backend_the_layer_never_takes_is_refused_at_construction(cls, backend):
    with pytest.raises(ValueError, match=f"backend must be 'auto' or one of .* got {backend!r}"):
        cls(4, 2, 3, backend=backend)


@pytest.mark.parametrize("cls", [md.Conv1d, md.ConvTranspose1d])
def test_in_size_is_channels_last_in_either_data_format(cls):
    """brainstate's ``in_size=(L, C_in)`` and ``out_size=(L_out, C_out)`` whatever layout the layer takes."""
    for fmt in ("NLC", "NCL"):
        layer = cls(4, 6, 3, stride=2, data_format=fmt, in_size=(10, 4))
        y = layer(mx.zeros((10, 4) if fmt == "NLC" else (4, 10)))
        assert layer.in_size == (10, 4)
        assert layer.out_size == (y.shape if fmt == "NLC" else y.shape[::-1])


def test_repr_names_the_configuration():
    text = repr(md.ConvTranspose1d(4, 6, 4, stride=2, padding="causal", groups=2, activation="gelu", weight_norm=True))
    for word in ["ConvTranspose1d(4, 6", "kernel_size=4", "stride=2", "padding='causal'", "groups=2",
                 "activation='gelu'", "weight_norm=True"]:
        assert word in text, text


@pytest.mark.parametrize("kwargs,words", [
    (dict(in_channels=5, groups=2), ["groups=2", "C_in=5"]),
    (dict(out_channels=0), ["out_channels", "0"]),
    (dict(padding="full"), ["padding", "'full'"]),
    (dict(activation="swishy"), ["activation", "'swishy'"]),
    (dict(kernel_init="uniformly"), ["kernel_init", "'uniformly'"]),
    (dict(w_mask=np.ones((2, 2, 2))), ["w_mask", "(2, 2, 2)"]),
    (dict(weight_norm=True, weight_norm_dim=3), ["dim", "3"]),
    (dict(data_format="NHWC"), ["data_format", "'NHWC'"]),
    (dict(kernel_init="icnr", kernel_size=3, stride=2), ["icnr", "kernel_size=3"]),
])
def test_layer_argument_errors(kwargs, words):
    args = dict(in_channels=4, out_channels=6, kernel_size=4, stride=2)
    args.update(kwargs)
    with pytest.raises((ValueError, TypeError)) as info:
        md.ConvTranspose1d(**args)
    for word in words:
        assert word in str(info.value), str(info.value)
