"""Gradients w.r.t. x, weight and bias on every backend, against the reference VJP."""

import mlx.core as mx
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import mlx_deconv as md
import reference as ref
from helpers import grad_atols, grads
from strategies import cases

BACKENDS = ["builtin", "gemm", "winograd"]


@pytest.mark.parametrize("backend", BACKENDS)
@given(case=cases(max_length=10), data_format=st.sampled_from(["NLC", "NCL"]), weight_format=st.sampled_from(["mlx", "torch"]))
def test_vjp_matches_reference(backend, case, data_format, weight_format):
    case.use_bias = True
    x, w, b = case.arrays()
    out_shape = case.expected(x, w, b).shape
    ct = np.random.default_rng(case.seed + 1).standard_normal(out_shape)
    left, right = case.crops()
    ex, ew, eb = ref.conv_transpose1d_vjp(x, w, ct, case.stride, left, right, case.dilation, case.groups)
    gx, gw, gb = grads(case, x, w, b, ct, backend, data_format, weight_format)
    atol_x, atol_w, atol_b = grad_atols(case, ct.shape)
    np.testing.assert_allclose(gx, ex, rtol=0, atol=atol_x)
    np.testing.assert_allclose(gw, ew, rtol=1e-6, atol=atol_w)
    np.testing.assert_allclose(gb, eb, rtol=0, atol=atol_b)


@given(case=cases())
def test_reference_vjp_is_the_adjoint(case):
    """<T(x), c> == <x, T*(c)> for the reference itself (T is linear in x and in w)."""
    x, w, _ = case.arrays()
    left, right = case.crops()
    y = ref.conv_transpose1d(x, w, None, case.stride, left, right, case.dilation, case.groups)
    ct = np.random.default_rng(case.seed + 2).standard_normal(y.shape)
    gx, gw, _ = ref.conv_transpose1d_vjp(x, w, ct, case.stride, left, right, case.dilation, case.groups)
    assert np.isclose((y * ct).sum(), (x * gx).sum(), atol=1e-9 * (1 + np.abs(y * ct).sum()))
    assert np.isclose((y * ct).sum(), (w * gw).sum(), atol=1e-9 * (1 + np.abs(y * ct).sum()))


@pytest.mark.parametrize("backend", BACKENDS)
@given(case=cases())
def test_adjoint_identity_with_mlx_conv1d(backend, case):
    """<conv_transpose1d(x, w), y> == <x, conv1d(y', w')>: MLX's forward conv as an independent adjoint.

    ``y'`` is ``y`` placed back on full-output coordinates; ``w'`` is the
    weight with input and output channels swapped within each group.
    """
    case.use_bias = False
    x, w, _ = case.arrays()
    y_shape = case.expected(x, w, None).shape
    y = np.random.default_rng(case.seed + 3).standard_normal(y_shape)
    out = md.conv_transpose1d(mx.array(x, mx.float32), mx.array(w, mx.float32), **case.kwargs(), backend=backend)
    lhs = float((np.array(out, np.float64) * y).sum())

    left, _ = case.crops()
    full = (case.length - 1) * case.stride + case.dilation * (case.taps - 1) + 1
    placed = np.zeros((case.batch, max(full, left + y.shape[1]), case.out_channels))
    placed[:, left : left + y.shape[1]] = y
    placed = placed[:, :full]
    g, cig, cog = case.groups, case.in_per_group, case.out_per_group
    swapped = w.reshape(g, cog, case.taps, cig).transpose(0, 3, 2, 1).reshape(g * cig, case.taps, cog)
    back = mx.conv1d(mx.array(placed, mx.float32), mx.array(swapped, mx.float32),
                     stride=case.stride, dilation=case.dilation, groups=g)
    rhs = float((np.array(back, np.float64) * x).sum())
    scale = np.abs(y).sum() * np.sqrt(case.taps * cig) + 1
    assert abs(lhs - rhs) <= 1e-5 * scale


@pytest.mark.parametrize("backend", BACKENDS)
def test_compile_and_grad_compose(backend):
    x = mx.random.normal((2, 7, 6), key=mx.random.key(0))
    w = mx.random.normal((4, 5, 3), key=mx.random.key(1))

    def loss(x, w):
        y = md.conv_transpose1d(x, w, stride=3, padding="same", dilation=2, groups=2, backend=backend)
        return (y * y).sum()

    eager = mx.value_and_grad(loss, argnums=(0, 1))(x, w)
    compiled = mx.compile(mx.value_and_grad(loss, argnums=(0, 1)))(x, w)
    for a, b in zip([eager[0], *eager[1]], [compiled[0], *compiled[1]]):
        np.testing.assert_allclose(np.array(a), np.array(b), rtol=1e-5, atol=1e-4)
    # Second order: the op is linear in x, so d/dx of <grad_x, v> is T*(T(v)) — must run and be finite.
    hv = mx.grad(lambda x: (mx.grad(loss)(x, w) * x).sum())(x)
    assert bool(mx.all(mx.isfinite(hv)))
