"""BigVGAN's anti-aliased activation: ``kaiser_sinc_filter``, ``anti_aliased_activation``, ``Activation1d``.

Checked against a float64 reference written here from the definition (edge pad, zero-stuffed
upsampling, crop, Snake/SnakeBeta, edge pad, strided low-pass), its gradients by finite
differences, NVIDIA's own ``Activation1d`` from the installed ``bigvgan`` (float32 outputs,
float64 autograd), and the Metal kernel run in the CPU emulator.
"""

import os
import subprocess
import sys
import textwrap
import threading
import types

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mlx.utils import tree_flatten

import mlx_deconv as md
from mlx_deconv.backends.anti_aliased import polyphase, sine
from mlx_deconv.backends.metal import anti_aliased as metal_aa
from mlx_deconv.choice import choose
from mlx_deconv.geometry.activation import ActivationGeometry
from mlx_deconv.backends.metal import emulator
from mlx_deconv.nn.anti_aliased import default_kernel_size

EPS = 1e-9
HALF_EPS = {mx.float16: 2 ** -11, mx.bfloat16: 2 ** -8}


# ---------------------------------------------------------------------------------------------
# The reference (float64 numpy, NCL like NVIDIA's code), from the definition.


def _edge_pad(v, left, right):
    parts = [np.repeat(v[..., :1], left, axis=-1)] if left else []
    parts.append(v)
    if right:
        parts.append(np.repeat(v[..., -1:], right, axis=-1))
    return np.concatenate(parts, axis=-1)


def reference(x, alpha, beta, up, down, ratio=2, activation="snakebeta", logscale=True):
    """``x`` (N, C, L) -> (N, C, L), all float64."""
    r, ku, kd = ratio, len(up), len(down)
    with np.errstate(all="ignore"):
        pad = ku // r - 1
        xp = _edge_pad(x, pad, pad)
        lp = xp.shape[-1]
        # Upsampling: zeros between the samples, then a full convolution with the up filter.
        stuffed = np.zeros(x.shape[:-1] + ((lp - 1) * r + 1,))
        stuffed[..., ::r] = xp
        zp = np.concatenate([np.zeros(x.shape[:-1] + (ku - 1,)), stuffed, np.zeros(x.shape[:-1] + (ku - 1,))], -1)
        full_len = stuffed.shape[-1] + ku - 1
        full = np.zeros(x.shape[:-1] + (full_len,))
        for k in range(ku):
            full += up[k] * zp[..., ku - 1 - k: ku - 1 - k + full_len]
        crop_left = pad * r + (ku - r) // 2
        crop_right = pad * r + (ku - r + 1) // 2
        u = r * full[..., crop_left: full_len - crop_right]
        a = np.exp(alpha) if logscale else alpha
        b = a if activation == "snake" else (np.exp(beta) if logscale else beta)
        a, b = a[:, None], b[:, None]
        v = u + (1.0 / (b + EPS)) * np.sin(u * a) ** 2
        # Downsampling: edge pad, then a strided cross-correlation with the low-pass filter.
        vp = _edge_pad(v, kd // 2 - (1 if kd % 2 == 0 else 0), kd // 2)
        out_len = (vp.shape[-1] - kd) // r + 1
        y = np.zeros(x.shape[:-1] + (out_len,))
        for j in range(kd):
            y += down[j] * vp[..., j: j + r * (out_len - 1) + 1: r]
    return y


def kaiser_reference(cutoff, half_width, taps):
    half = taps // 2
    att = 2.285 * (half - 1) * np.pi * 4 * half_width + 7.95
    beta = 0.1102 * (att - 8.7) if att > 50 else (0.5842 * (att - 21) ** 0.4 + 0.07886 * (att - 21) if att >= 21 else 0.0)
    t = np.arange(-half, half) + 0.5 if taps % 2 == 0 else np.arange(taps) - half
    h = 2 * cutoff * np.kaiser(taps, beta) * np.sinc(2 * cutoff * t)
    return h / h.sum()


# ---------------------------------------------------------------------------------------------
# NVIDIA's code, loaded by the package without its __init__ (which imports librosa).


def _nvidia():
    try:
        return types.SimpleNamespace(
            act=md.bigvgan.nvidia_module("alias_free_activation.torch.act"),
            filter=md.bigvgan.nvidia_module("alias_free_activation.torch.filter"),
            activations=md.bigvgan.nvidia_module("activations"),
        )
    except ImportError:
        return None


NVIDIA = _nvidia()
needs_nvidia = pytest.mark.skipif(NVIDIA is None, reason="torch or NVIDIA's bigvgan is not installed")
needs_compiler = pytest.mark.skipif(emulator.compiler() is None, reason="no C++ compiler for the Metal emulator")


def nvidia_module(channels, activation, logscale, ratio, up_taps, down_taps, alpha, beta, dtype=None):
    import torch

    cls = NVIDIA.activations.SnakeBeta if activation == "snakebeta" else NVIDIA.activations.Snake
    act = cls(channels, alpha_logscale=logscale)
    module = NVIDIA.act.Activation1d(act, ratio, ratio, up_taps, down_taps)
    with torch.no_grad():
        act.alpha.copy_(torch.from_numpy(np.asarray(alpha, np.float32)))
        if activation == "snakebeta":
            act.beta.copy_(torch.from_numpy(np.asarray(beta, np.float32)))
    return module.to(dtype) if dtype is not None else module


# ---------------------------------------------------------------------------------------------
# Helpers.


def params(rng, channels, activation, logscale):
    """alpha, beta (float64 numpy) away from BigVGAN's singular beta = 0."""
    draw = (lambda: rng.uniform(-1.0, 1.0, channels)) if logscale else (lambda: rng.uniform(0.5, 2.0, channels))
    alpha = draw()
    return alpha, (draw() if activation == "snakebeta" else None)


def call(x_ncl, alpha, beta, up, down, ratio=2, activation="snakebeta", logscale=True, dtype=mx.float32,
         backend="auto", data_format="NLC"):
    """``anti_aliased_activation`` on numpy NCL input; returns float64 NCL."""
    x = x_ncl if data_format == "NCL" else np.swapaxes(x_ncl, 1, 2)
    y = md.anti_aliased_activation(
        mx.array(x.astype(np.float32)).astype(dtype), mx.array(alpha.astype(np.float32)),
        None if beta is None else mx.array(beta.astype(np.float32)),
        up_filter=mx.array(np.asarray(up, np.float32)), down_filter=mx.array(np.asarray(down, np.float32)),
        ratio=ratio, activation=activation, logscale=logscale, backend=backend, data_format=data_format)
    assert y.dtype == dtype
    y = np.array(y.astype(mx.float32), np.float64)
    return y if data_format == "NCL" else np.swapaxes(y, 1, 2)


def rounded(a, dtype):
    return np.array(mx.array(np.asarray(a, np.float32)).astype(dtype).astype(mx.float32), np.float64)


def tol(y, dtype=mx.float32, terms=24):
    """Absolute tolerance: rounding of a ``terms``-term sum of values as large as the output."""
    scale = 1.0 + np.nanmax(np.abs(y[np.isfinite(y)])) if np.isfinite(y).any() else 1.0
    eps = 2e-7 if dtype == mx.float32 else 2 * HALF_EPS[dtype]
    return eps * scale * (4 + terms)


def kaiser(ratio, taps):
    return np.array(md.kaiser_sinc_filter(0.5 / ratio, 0.6 / ratio, taps), np.float64)


# ---------------------------------------------------------------------------------------------
# The filter.


@pytest.mark.parametrize("ratio,taps", [(2, 12), (1, 6), (2, 13), (3, 18), (4, 24), (2, 5), (2, 1), (2, 2), (8, 48)])
def test_kaiser_sinc_filter_matches_its_definition(ratio, taps):
    got = md.kaiser_sinc_filter(0.5 / ratio, 0.6 / ratio, taps)
    assert got.shape == (taps,) and got.dtype == mx.float32
    np.testing.assert_allclose(np.array(got), kaiser_reference(0.5 / ratio, 0.6 / ratio, taps), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(np.array(got).sum(), 1.0, rtol=1e-6)
    np.testing.assert_allclose(np.array(got), np.array(got)[::-1], rtol=1e-6, atol=1e-8)  # linear phase


@needs_nvidia
@pytest.mark.parametrize("cutoff,half_width,taps", [(0.25, 0.3, 12), (0.5, 0.6, 6), (1 / 6, 0.2, 18), (0.125, 0.15, 24),
                                                    (0.25, 0.3, 13), (0.1, 0.05, 9), (0.4, 0.45, 3), (0.25, 0.3, 1)])
def test_kaiser_sinc_filter_equals_nvidia(cutoff, half_width, taps):
    theirs = NVIDIA.filter.kaiser_sinc_filter1d(cutoff, half_width, taps).numpy().reshape(-1)
    np.testing.assert_allclose(np.array(md.kaiser_sinc_filter(cutoff, half_width, taps)), theirs, rtol=2e-6, atol=3e-8)


def test_kaiser_sinc_filter_zero_cutoff_and_errors():
    assert not np.array(md.kaiser_sinc_filter(0.0, 0.3, 8)).any()
    for args, word in [((0.6, 0.3, 12), "cutoff"), ((-0.1, 0.3, 12), "cutoff"), ((0.25, 0.3, 0), "kernel_size"),
                       ((0.25, 0.3, 2.0), "kernel_size"), ((float("nan"), 0.3, 12), "cutoff"),
                       ((0.25, float("inf"), 12), "half_width"), (("0.25", 0.3, 12), "cutoff")]:
        with pytest.raises(ValueError, match=word):
            md.kaiser_sinc_filter(*args)


# ---------------------------------------------------------------------------------------------
# Values.

BACKENDS = ["polyphase", "unfused"]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("activation,logscale", [("snakebeta", True), ("snakebeta", False), ("snake", True), ("snake", False)])
@pytest.mark.parametrize("shape", [(1, 3, 40), (2, 5, 17), (1, 1, 1), (2, 2, 2), (1, 4, 6), (3, 2, 300)])
def test_matches_reference(backend, activation, logscale, shape):
    rng = np.random.default_rng(sum(shape) + len(activation) + logscale)
    x = rng.standard_normal(shape)
    alpha, beta = params(rng, shape[1], activation, logscale)
    up, down = kaiser(2, 12), kaiser(2, 12)
    expected = reference(x, alpha, beta, up, down, 2, activation, logscale)
    got = call(x, alpha, beta, up, down, 2, activation, logscale, backend=backend)
    assert got.shape == x.shape
    np.testing.assert_allclose(got, expected, rtol=0, atol=tol(expected))


@pytest.mark.parametrize("data_format", ["NLC", "NCL"])
def test_layouts_and_unbatched(data_format):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((1, 3, 20))
    alpha, beta = params(rng, 3, "snakebeta", True)
    up = kaiser(2, 12)
    expected = reference(x, alpha, beta, up, up)[0]
    unbatched = x[0] if data_format == "NCL" else x[0].T
    y = md.anti_aliased_activation(mx.array(unbatched, mx.float32), mx.array(alpha, mx.float32), mx.array(beta, mx.float32),
                                   up_filter=mx.array(up, mx.float32), down_filter=mx.array(up, mx.float32),
                                   data_format=data_format)
    assert y.shape == unbatched.shape
    got = np.array(y, np.float64) if data_format == "NCL" else np.array(y, np.float64).T
    np.testing.assert_allclose(got, expected, rtol=0, atol=tol(expected))


@given(
    ratio=st.integers(1, 4),
    up_extra=st.integers(1, 14),
    down_taps=st.integers(1, 16),
    batch=st.integers(1, 2),
    length=st.integers(1, 12),
    channels=st.integers(1, 4),
    activation=st.sampled_from(["snake", "snakebeta"]),
    logscale=st.booleans(),
    kaiser_filters=st.booleans(),
    data_format=st.sampled_from(["NLC", "NCL"]),
    seed=st.integers(0, 2 ** 31 - 1),
)
@settings(max_examples=30)
def test_random_configurations(ratio, up_extra, down_taps, batch, length, channels, activation, logscale,
                               kaiser_filters, data_format, seed):
    rng = np.random.default_rng(seed)
    up_taps = ratio + up_extra  # NVIDIA's UpSample1d needs more taps than the ratio
    if kaiser_filters:
        up, down = kaiser(ratio, up_taps), kaiser(ratio, down_taps)
    else:  # loaded filters need not be symmetric
        up, down = rng.standard_normal(up_taps) / up_taps, rng.standard_normal(down_taps) / down_taps
    x = rng.standard_normal((batch, channels, length)) * rng.choice([0.1, 1.0, 5.0])
    alpha, beta = params(rng, channels, activation, logscale)
    expected = reference(x, alpha, beta, up, down, ratio, activation, logscale)
    for backend in BACKENDS:
        got = call(x, alpha, beta, up, down, ratio, activation, logscale, backend=backend, data_format=data_format)
        np.testing.assert_allclose(got, expected, rtol=0, atol=tol(expected, terms=up_taps + down_taps), err_msg=backend)


@needs_nvidia
@pytest.mark.parametrize("ratio,up_taps,down_taps", [(2, 12, 12), (2, None, None), (3, None, None), (1, 6, 6),
                                                      (2, 7, 9), (4, 12, 5), (2, 13, 13)])
@pytest.mark.parametrize("activation,logscale", [("snakebeta", True), ("snakebeta", False), ("snake", True), ("snake", False)])
def test_matches_nvidia(ratio, up_taps, down_taps, activation, logscale):
    import torch

    up_taps = up_taps or default_kernel_size(ratio)
    down_taps = down_taps or default_kernel_size(ratio)
    rng = np.random.default_rng(ratio * 100 + up_taps + down_taps)
    channels = 4
    alpha, beta = params(rng, channels, activation, logscale)
    module = nvidia_module(channels, activation, logscale, ratio, up_taps, down_taps, alpha, beta)
    x = rng.standard_normal((2, channels, 33)).astype(np.float32)
    with torch.no_grad():
        theirs = module(torch.from_numpy(x)).numpy().astype(np.float64)
    up = module.upsample.filter.numpy().reshape(-1)
    down = module.downsample.lowpass.filter.numpy().reshape(-1)
    np.testing.assert_allclose(up, np.array(md.kaiser_sinc_filter(0.5 / ratio, 0.6 / ratio, up_taps)), rtol=2e-6, atol=3e-8)
    for backend in BACKENDS:
        got = call(x.astype(np.float64), alpha, beta, up, down, ratio, activation, logscale, backend=backend,
                   data_format="NCL")
        np.testing.assert_allclose(got, theirs, rtol=0, atol=tol(theirs), err_msg=backend)


@pytest.mark.parametrize("dtype", [mx.float16, mx.bfloat16])
@pytest.mark.parametrize("backend", BACKENDS)
def test_half_precision(dtype, backend):
    rng = np.random.default_rng(7)
    x = rounded(rng.standard_normal((2, 3, 50)), dtype)
    alpha, beta = params(rng, 3, "snakebeta", True)
    alpha, beta = rounded(alpha, mx.float32), rounded(beta, mx.float32)
    up = rounded(kaiser(2, 12), mx.float32)
    expected = reference(x, alpha, beta, up, up)
    got = call(x, alpha, beta, up, up, dtype=dtype, backend=backend)
    # The polyphase form accumulates in float32 and rounds once; the unfused chain rounds every step.
    terms = 2 if backend == "polyphase" else 40
    np.testing.assert_allclose(got, expected, rtol=0, atol=tol(expected, dtype, terms))


def test_half_precision_parameters_and_filters():
    rng = np.random.default_rng(8)
    x = rng.standard_normal((1, 2, 16))
    alpha, beta = params(rng, 2, "snakebeta", True)
    up = kaiser(2, 12)
    y = md.anti_aliased_activation(mx.array(x.transpose(0, 2, 1), mx.bfloat16), mx.array(alpha, mx.float16),
                                   mx.array(beta, mx.bfloat16), up_filter=mx.array(up, mx.float16),
                                   down_filter=mx.array(up, mx.bfloat16))
    assert y.dtype == mx.bfloat16
    expected = reference(rounded(x, mx.bfloat16), rounded(alpha, mx.float16), rounded(beta, mx.bfloat16),
                         rounded(up, mx.float16), rounded(up, mx.bfloat16))
    np.testing.assert_allclose(np.array(y.astype(mx.float32), np.float64).transpose(0, 2, 1), expected, rtol=0,
                               atol=tol(expected, mx.bfloat16, 2))


def test_large_arguments_of_the_sine():
    """The polyphase form reduces sin's argument itself; it must hold for large alpha * u."""
    rng = np.random.default_rng(9)
    x = rng.standard_normal((1, 3, 64)) * 300.0
    alpha = np.log(np.array([3.0, 10.0, 30.0]))  # |alpha * u| up to about 1e4
    beta = np.zeros(3)
    up = kaiser(2, 12)
    expected = reference(x, alpha, beta, up, up)
    got = call(x, alpha, beta, up, up)
    # float32 rounds the argument itself to ~1e-3 at 1e4: the sine term is then known to that much.
    np.testing.assert_allclose(got, expected, rtol=2e-6, atol=5e-3)


def test_fast_sine_squared_and_its_derivative():
    """The polyphase form's sin**2 (argument reduction + polynomials) on exact float32 arguments."""
    t = np.concatenate([np.linspace(-12.0, 12.0, 20001), np.linspace(-1e4, 1e4, 200001),
                        [0.0, 1e-30, -1e-20, np.pi / 2, 12867.0]]).astype(np.float32)
    got = np.array(sine.sin_squared(mx.array(t)), np.float64)
    np.testing.assert_allclose(got, np.sin(t.astype(np.float64)) ** 2, rtol=0, atol=1e-6)
    grad = np.array(mx.grad(lambda v: sine.sin_squared(v).sum())(mx.array(t[:20001])), np.float64)
    np.testing.assert_allclose(grad, np.sin(2 * t[:20001].astype(np.float64)), rtol=0, atol=2e-6)
    r = sine.reduce_pi(mx.array(t))
    np.testing.assert_allclose(2 * np.array(sine.sin_cos_reduced(r), np.float64), np.sin(2 * t.astype(np.float64)),
                               rtol=0, atol=2e-6)
    special = np.array(sine.sin_squared(mx.array([np.nan, np.inf, -np.inf, 1e30, -3e9], mx.float32)))
    assert np.isnan(special[:3]).all() and (0 <= special[3:]).all() and (special[3:] <= 1.001).all()


def test_epsilon_of_a_zero_magnitude():
    """beta = 0 (linear scale): the snake term is divided by BigVGAN's 1e-9 exactly."""
    rng = np.random.default_rng(21)
    x = rng.standard_normal((1, 2, 24)) * 1e-3
    alpha, beta = np.array([1.0, 0.5]), np.array([0.0, 0.0])
    up = kaiser(2, 12)
    expected = reference(x, alpha, beta, up, up, logscale=False)
    assert np.abs(expected).max() > 100  # the term dominates
    for backend in BACKENDS:
        got = call(x, alpha, beta, up, up, logscale=False, backend=backend)
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-3 * np.abs(expected).max() * 1e-3, err_msg=backend)


def test_nonfinite_values_propagate_as_in_the_definition():
    rng = np.random.default_rng(10)
    x = rng.standard_normal((2, 3, 40))
    x[0, 0, 5] = np.nan
    x[0, 1, 20] = np.inf
    x[1, 2, 0] = -np.inf
    x[1, 0, 39] = np.inf
    x[1, 1, 17] = 1e30  # finite but huge: the snake term stays bounded
    alpha, beta = params(rng, 3, "snakebeta", True)
    up = kaiser(2, 12)
    expected = reference(x, alpha, beta, up, up)
    for backend in BACKENDS:
        got = call(x, alpha, beta, up, up, backend=backend)
        np.testing.assert_array_equal(np.isnan(got), np.isnan(expected), err_msg=backend)
        np.testing.assert_array_equal(np.isposinf(got), np.isposinf(expected), err_msg=backend)
        np.testing.assert_array_equal(np.isneginf(got), np.isneginf(expected), err_msg=backend)
        finite = np.isfinite(expected)
        np.testing.assert_allclose(got[finite], expected[finite], rtol=1e-5, atol=1e-4, err_msg=backend)
    # A NaN alpha poisons its channel only.
    alpha2 = alpha.copy()
    alpha2[1] = np.nan
    got = call(rng.standard_normal((1, 3, 10)), alpha2, beta, up, up)
    assert np.isnan(got[:, 1]).all() and np.isfinite(got[:, [0, 2]]).all()


# ---------------------------------------------------------------------------------------------
# Gradients.


def _grads(backend, x_ncl, alpha, beta, up, down, ratio, activation, logscale, cotangent, dtype=mx.float32):
    has_beta = beta is not None

    def loss(x, al, be):
        y = md.anti_aliased_activation(x, al, be if has_beta else None, up_filter=mx.array(up, mx.float32),
                                       down_filter=mx.array(down, mx.float32), ratio=ratio, activation=activation,
                                       logscale=logscale, backend=backend)
        return (y.astype(mx.float32) * mx.array(np.swapaxes(cotangent, 1, 2), mx.float32)).sum()

    args = (mx.array(np.swapaxes(x_ncl, 1, 2), dtype), mx.array(alpha, mx.float32),
            mx.array(beta if has_beta else alpha, mx.float32))
    g = mx.grad(loss, argnums=(0, 1, 2))(*args)
    return (np.swapaxes(np.array(g[0].astype(mx.float32), np.float64), 1, 2), np.array(g[1], np.float64),
            np.array(g[2], np.float64) if has_beta else None)


def _directional(f, point, direction, step=1e-6):
    return (f(point + step * direction) - f(point - step * direction)) / (2 * step)


@pytest.mark.parametrize("ratio,up_taps,down_taps", [(2, 12, 12), (3, 18, 18), (2, 7, 5), (1, 4, 3)])
@pytest.mark.parametrize("activation,logscale", [("snakebeta", True), ("snake", False), ("snakebeta", False)])
@pytest.mark.parametrize("length", [1, 3, 25])
def test_gradients_match_finite_differences(ratio, up_taps, down_taps, activation, logscale, length):
    rng = np.random.default_rng(ratio + up_taps + length)
    channels = 2
    x = rng.standard_normal((2, channels, length))
    alpha, beta = params(rng, channels, activation, logscale)
    up, down = rng.standard_normal(up_taps) / up_taps + kaiser(ratio, up_taps), kaiser(ratio, down_taps)
    ct = rng.standard_normal(x.shape)

    def scalar(xv, al, be):
        return float((reference(xv, al, be, up, down, ratio, activation, logscale) * ct).sum())

    for backend in BACKENDS:
        gx, ga, gb = _grads(backend, x, alpha, beta, up, down, ratio, activation, logscale, ct)
        for _ in range(2):
            d = rng.standard_normal(x.shape)
            fd = _directional(lambda v: scalar(v, alpha, beta), x, d)
            np.testing.assert_allclose((gx * d).sum(), fd, rtol=2e-4, atol=2e-4, err_msg=f"{backend} x")
            d = rng.standard_normal(channels)
            fd = _directional(lambda v: scalar(x, v, beta), alpha, d)
            np.testing.assert_allclose((ga * d).sum(), fd, rtol=2e-4, atol=2e-4, err_msg=f"{backend} alpha")
            if beta is not None:
                fd = _directional(lambda v: scalar(x, alpha, v), beta, d)
                np.testing.assert_allclose((gb * d).sum(), fd, rtol=2e-4, atol=2e-4, err_msg=f"{backend} beta")


@pytest.mark.parametrize("banded_form", [True, False])
def test_traced_calls_are_built_off_the_trace_and_evaluate_nothing(monkeypatch, banded_form):
    """Under ``mx.grad`` on a CPU stream, nothing is evaluated or copied to the host: the worker builds the
    compiled forward and backward (two jobs), whose fused nodes join the caller's graph. Up to the banded form's
    bound they are the banded ops and MLX's VJP of them; past it, the fused kernels and the polyphase VJP."""
    import io

    from mlx_deconv.backends.anti_aliased import banded, gradient

    def refuse(arrays):
        raise AssertionError("evaluated inside the gradient")

    monkeypatch.setattr(gradient, "_to_host", refuse)
    if not banded_form:
        monkeypatch.setattr(banded, "MAX_ELEMENTS", 0)
    jobs = []
    worker = gradient._worker()
    monkeypatch.setattr(gradient, "_worker", lambda: jobs.append(1) or worker)
    rng = np.random.default_rng(4)
    x = mx.array(rng.standard_normal((2, 16, 3)), mx.float32)
    al, be = mx.array(rng.uniform(-1, 1, 3), mx.float32), mx.array(rng.uniform(-1, 1, 3), mx.float32)
    up = md.kaiser_sinc_filter(0.25, 0.3, 12)
    act = lambda x: md.anti_aliased_activation(x, al, be, up_filter=up, down_filter=up, backend="polyphase")  # noqa: E731
    g = mx.grad(lambda x: act(x).sum())(x)
    assert len(jobs) == 2
    dot = io.StringIO()
    mx.export_to_dot(dot, g)
    assert "Compiled" in dot.getvalue()  # elementwise work fused, though the caller was tracing
    geom = ActivationGeometry(2, 16, 3, 2, 12, 12, "snakebeta", True)
    in_graph = mx.grad(lambda x: banded.in_graph(x, al, be, up, up, geom).sum())(x)
    np.testing.assert_allclose(np.array(g), np.array(in_graph), rtol=1e-5, atol=1e-6)


def test_between_the_bounds_readable_taps_take_the_fused_form(monkeypatch):
    """Past the off-trace bound, a traced call whose taps can be read takes the fused kernels (built off the
    trace); under a caller's compile holding the filters, it still joins the caller's graph as banded ops."""
    from mlx_deconv.backends.anti_aliased import banded

    rng = np.random.default_rng(11)
    x = mx.array(rng.standard_normal((2, 16, 3)), mx.float32)
    al, be = mx.array(rng.uniform(-1, 1, 3), mx.float32), mx.array(rng.uniform(-1, 1, 3), mx.float32)
    up = md.kaiser_sinc_filter(0.25, 0.3, 12)
    monkeypatch.setattr(banded, "OFF_TRACE_MAX_ELEMENTS", x.size - 1)
    forms = []
    for name in ("_off_trace", "in_graph"):
        original = getattr(banded, name)
        monkeypatch.setattr(banded, name, lambda *a, _o=original, _n=name, **k: forms.append(_n) or _o(*a, **k))

    def loss(x, up_):
        return md.anti_aliased_activation(x, al, be, up_filter=up_, down_filter=up_, backend="polyphase").sum()

    fused = mx.grad(loss)(x, up)
    assert forms == []
    compiled = mx.compile(mx.grad(loss))(x, up)
    assert forms == ["in_graph"]
    np.testing.assert_allclose(np.array(compiled), np.array(fused), rtol=1e-5, atol=1e-6)


def test_under_a_compile_holding_the_filters_the_ops_join_the_callers_graph(monkeypatch):
    """A step compiled with the filters among its inputs cannot read their taps: the banded ops are traced into
    the caller's graph (MLX fuses them there), and no job goes to the worker."""
    from mlx_deconv.backends.anti_aliased import gradient

    jobs = []
    worker = gradient._worker()
    monkeypatch.setattr(gradient, "_worker", lambda: jobs.append(1) or worker)
    rng = np.random.default_rng(9)
    x = mx.array(rng.standard_normal((2, 16, 3)), mx.float32)
    al, be = mx.array(rng.uniform(-1, 1, 3), mx.float32), mx.array(rng.uniform(-1, 1, 3), mx.float32)
    up = md.kaiser_sinc_filter(0.25, 0.3, 12)

    def loss(x, up_):
        return md.anti_aliased_activation(x, al, be, up_filter=up_, down_filter=up_, backend="polyphase").sum()

    compiled = mx.compile(mx.grad(loss))(x, up)
    assert not jobs
    plain = mx.grad(loss)(x, up)
    assert len(jobs) == 2
    np.testing.assert_allclose(np.array(compiled), np.array(plain), rtol=1e-5, atol=1e-6)


def test_traced_calls_from_threads_at_once():
    """Several threads' gradients share the one worker that builds the compiled sides: each gets its own values."""
    from concurrent.futures import ThreadPoolExecutor

    up = md.kaiser_sinc_filter(0.25, 0.3, 12)
    rng = np.random.default_rng(10)
    cases = [(rng.standard_normal((2, 3, 24 + k)), *params(rng, 3, "snakebeta", True)) for k in range(4)]
    ct = [rng.standard_normal(c[0].shape) for c in cases]

    def grads(k):
        x, alpha, beta = cases[k]
        return _grads("polyphase", x, alpha, beta, up, up, 2, "snakebeta", True, ct[k])

    alone = [grads(k) for k in range(4)]
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(grads, [0, 1, 2, 3] * 3))
    for k, got in enumerate(together):
        for a, b in zip(got, alone[k % 4]):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("banded_form", [True, False])
def test_traced_calls_keep_the_filters_constant_compiled_or_not(monkeypatch, banded_form):
    """An unfrozen layer's filters get a zero gradient whether the step is compiled (the band's matrices are
    gathered from the traced filters; past the bound, the kernels take them as inputs) or not (their taps are
    read), and both steps give the same gradients."""
    from mlx_deconv.backends.anti_aliased import banded

    if not banded_form:
        monkeypatch.setattr(banded, "MAX_ELEMENTS", 0)
    mx.random.seed(0)
    layer = md.nn.anti_aliased.Activation1d(4)
    layer.unfreeze()
    x, t = mx.random.normal((2, 512, 4)), mx.random.normal((2, 512, 4))
    step = nn.value_and_grad(layer, lambda m, x, t: ((m(x) - t) ** 2).mean())
    grads = [step(layer, x, t)[1],
             mx.compile(lambda x, t: step(layer, x, t), inputs=[layer.state], outputs=[layer.state])(x, t)[1]]
    for g in grads:
        flat = dict(tree_flatten(g))
        assert float(mx.abs(flat["upsample.filter"]).max()) == 0.0
        assert float(mx.abs(flat["downsample.lowpass.filter"]).max()) == 0.0
        assert float(mx.abs(flat["alpha"]).max()) > 0.0
    for (name, a), (_, b) in zip(tree_flatten(grads[0]), tree_flatten(grads[1])):
        np.testing.assert_allclose(np.array(a), np.array(b), rtol=1e-4, atol=1e-6, err_msg=name)


def test_with_compiling_disabled_values_stay_where_the_definition_puts_them():
    """Under ``mx.disable_compile()`` the trace probe cannot tell a tracer, so a plain call keeps the fused path:
    a non-finite sample reaches only the outputs the definition says (the banded form would spread it)."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((1, 2, 256))
    x[0, 0, 100] = np.inf
    alpha, beta = params(rng, 2, "snakebeta", True)
    up = kaiser(2, 12)
    expected = reference(x, alpha, beta, up, up)
    mx.disable_compile()
    try:
        got = call(x, alpha, beta, up, up, backend="polyphase")
    finally:
        mx.enable_compile()
    np.testing.assert_array_equal(np.isfinite(got), np.isfinite(expected))


def test_an_empty_batch_under_grad():
    up = md.kaiser_sinc_filter(0.25, 0.3, 12)
    act = lambda x: md.anti_aliased_activation(x, mx.zeros((3,)), mx.zeros((3,)), up_filter=up, down_filter=up,  # noqa: E731
                                               backend="polyphase")
    x = mx.zeros((0, 20, 3))
    assert mx.grad(lambda x: act(x).sum())(x).shape == (0, 20, 3)


@settings(max_examples=40, deadline=None)
@given(ratio=st.integers(1, 4), up_extra=st.integers(0, 9), down_taps=st.integers(1, 14), batch=st.integers(1, 3),
       length=st.integers(1, 40), channels=st.integers(1, 5), activation=st.sampled_from(["snake", "snakebeta"]),
       logscale=st.booleans(), seed=st.integers(0, 2 ** 16))
def test_banded_form_equals_the_definition(ratio, up_extra, down_taps, batch, length, channels, activation, logscale,
                                           seed):
    """The banded form called directly, on any geometry (blocks shorter than the signal, one block, a block
    longer than the signal), against the float64 reference."""
    from mlx_deconv.backends.anti_aliased import banded

    rng = np.random.default_rng(seed)
    up_taps = ratio + up_extra
    x = rng.standard_normal((batch, channels, length))
    alpha, beta = params(rng, channels, activation, logscale)
    up, down = rng.standard_normal(up_taps), rng.standard_normal(down_taps)
    geom = ActivationGeometry(batch, length, channels, ratio, up_taps, down_taps, activation, logscale)
    got = banded.run(mx.array(np.swapaxes(x, 1, 2), mx.float32), mx.array(alpha, mx.float32),
                     None if beta is None else mx.array(beta, mx.float32), mx.array(up, mx.float32),
                     mx.array(down, mx.float32), geom)
    expected = reference(x, alpha, beta, up, down, ratio, activation, logscale)
    got = np.swapaxes(np.array(got, np.float64), 1, 2)
    terms = (up_taps + down_taps) * (1 + np.abs(up).sum()) * (1 + np.abs(down).sum())
    np.testing.assert_allclose(got, expected, rtol=0, atol=tol(expected, terms=terms))


def test_banded_form_under_compile_reads_traced_filters():
    """Inside a caller's ``mx.compile`` whose inputs include the filters, their taps cannot be read: the band's
    matrices are gathered from them in the graph. Values and gradients equal the float64 definition's."""
    rng = np.random.default_rng(8)
    x = rng.standard_normal((2, 3, 37))
    alpha, beta = params(rng, 3, "snakebeta", True)
    up, down = kaiser(2, 12), kaiser(2, 11)
    ct = rng.standard_normal(x.shape)
    args = [mx.array(np.swapaxes(v, 1, 2) if v.ndim == 3 else v, mx.float32) for v in (x, alpha, beta, up, down)]

    def loss(x, al, be, up_, down_):
        y = md.anti_aliased_activation(x, al, be, up_filter=up_, down_filter=down_, backend="polyphase")
        return (y * mx.array(np.swapaxes(ct, 1, 2), mx.float32)).sum()

    value, grads = mx.compile(mx.value_and_grad(loss, argnums=(0, 1, 2)))(*args)
    expected = reference(x, alpha, beta, up, down)
    np.testing.assert_allclose(float(value), (expected * ct).sum(), rtol=1e-5)
    scalar = lambda xv, al, be: float((reference(xv, al, be, up, down) * ct).sum())  # noqa: E731
    for g, base, which in ((np.swapaxes(np.array(grads[0]), 1, 2), x, 0), (np.array(grads[1]), alpha, 1),
                           (np.array(grads[2]), beta, 2)):
        d = rng.standard_normal(base.shape)
        h = 1e-6
        plus = [x, alpha, beta]
        minus = [x, alpha, beta]
        plus[which], minus[which] = base + h * d, base - h * d
        fd = (scalar(*plus) - scalar(*minus)) / (2 * h)
        np.testing.assert_allclose((g * d).sum(), fd, rtol=2e-4, atol=2e-4)


@pytest.mark.parametrize("whole", [True, False])
@pytest.mark.parametrize("activation,logscale,length,batch", [("snakebeta", True, 25, 2), ("snake", False, 9, 1)])
def test_both_forms_of_the_backward_match_finite_differences(monkeypatch, whole, activation, logscale, length, batch):
    """A small signal's backward runs as one compiled function, a large one as separate kernels: each against the
    float64 definition, and each taken where the bound says."""
    from mlx_deconv.backends.anti_aliased import banded, gradient

    monkeypatch.setattr(banded, "MAX_ELEMENTS", 0)
    taken = []
    original = gradient._whole_backward
    monkeypatch.setattr(gradient, "_whole_backward", lambda *a: taken.append(a) or original(*a))
    if not whole:
        monkeypatch.setattr(gradient, "WHOLE_BACKWARD_MAX_ELEMENTS", 0)
    rng = np.random.default_rng(length)
    x = rng.standard_normal((batch, 3, length))
    alpha, beta = params(rng, 3, activation, logscale)
    up, down = kaiser(2, 12), kaiser(2, 12)
    ct = rng.standard_normal(x.shape)
    gx, ga, gb = _grads("polyphase", x, alpha, beta, up, down, 2, activation, logscale, ct)
    assert bool(taken) == whole
    scalar = lambda xv, al, be: float((reference(xv, al, be, up, down, 2, activation, logscale) * ct).sum())  # noqa: E731
    for _ in range(2):
        d = rng.standard_normal(x.shape)
        np.testing.assert_allclose((gx * d).sum(), _directional(lambda v: scalar(v, alpha, beta), x, d), rtol=2e-4, atol=2e-4)
        d = rng.standard_normal(3)
        np.testing.assert_allclose((ga * d).sum(), _directional(lambda v: scalar(x, v, beta), alpha, d), rtol=2e-4, atol=2e-4)
        if beta is not None:
            np.testing.assert_allclose((gb * d).sum(), _directional(lambda v: scalar(x, alpha, v), beta, d),
                                       rtol=2e-4, atol=2e-4)


@given(
    ratio=st.integers(1, 3),
    up_extra=st.integers(1, 10),
    down_taps=st.integers(1, 12),
    length=st.integers(1, 9),
    activation=st.sampled_from(["snake", "snakebeta"]),
    logscale=st.booleans(),
    seed=st.integers(0, 2 ** 31 - 1),
)
@settings(max_examples=16)
def test_random_gradients_equal_the_unfused_chain(ratio, up_extra, down_taps, length, activation, logscale, seed):
    """The polyphase VJP against MLX's autodiff through the unfused chain (itself checked above)."""
    rng = np.random.default_rng(seed)
    up_taps = ratio + up_extra
    x = rng.standard_normal((2, 3, length))
    alpha, beta = params(rng, 3, activation, logscale)
    up, down = rng.standard_normal(up_taps) / up_taps, rng.standard_normal(down_taps) / down_taps
    ct = rng.standard_normal(x.shape)
    ours = _grads("polyphase", x, alpha, beta, up, down, ratio, activation, logscale, ct)
    theirs = _grads("unfused", x, alpha, beta, up, down, ratio, activation, logscale, ct)
    for name, a, b in zip(("x", "alpha", "beta"), ours, theirs):
        if b is not None:
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * (1 + np.abs(b).max()), err_msg=name)


@needs_nvidia
@pytest.mark.parametrize("activation,logscale", [("snakebeta", True), ("snakebeta", False), ("snake", True)])
def test_gradients_match_nvidia_float64(activation, logscale):
    import torch

    rng = np.random.default_rng(11)
    channels = 3
    alpha, beta = params(rng, channels, activation, logscale)
    module = nvidia_module(channels, activation, logscale, 2, 12, 12, alpha, beta, dtype=torch.float64)
    x = rng.standard_normal((2, channels, 30))
    ct = rng.standard_normal(x.shape)
    xt = torch.tensor(x, requires_grad=True)
    (module(xt) * torch.from_numpy(ct)).sum().backward()
    up = module.upsample.filter.detach().numpy().reshape(-1)
    gx, ga, gb = _grads("polyphase", x, alpha, beta, up, up, 2, activation, logscale, ct)
    np.testing.assert_allclose(gx, xt.grad.numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(ga, module.act.alpha.grad.numpy(), rtol=1e-4, atol=1e-4)
    if activation == "snakebeta":
        np.testing.assert_allclose(gb, module.act.beta.grad.numpy(), rtol=1e-4, atol=1e-4)


def test_gradients_with_an_output_dependent_cotangent_and_under_compile():
    """``(y**2).sum()``: the cotangent is built from the output; also inside the caller's ``mx.compile``."""
    rng = np.random.default_rng(12)
    x = mx.array(rng.standard_normal((2, 20, 4)), mx.float32)
    al, be = mx.array(rng.uniform(-1, 1, 4), mx.float32), mx.array(rng.uniform(-1, 1, 4), mx.float32)
    up = md.kaiser_sinc_filter(0.25, 0.3, 12)

    def loss(backend):
        return lambda x, al, be, up: (md.anti_aliased_activation(x, al, be, up_filter=up, down_filter=up,
                                                                  backend=backend) ** 2).sum()

    expected = mx.grad(loss("unfused"), argnums=(0, 1, 2))(x, al, be, up)
    for got in (mx.grad(loss("polyphase"), argnums=(0, 1, 2))(x, al, be, up),
                mx.compile(mx.grad(loss("polyphase"), argnums=(0, 1, 2)))(x, al, be, up)):
        for a, b in zip(got, expected):
            np.testing.assert_allclose(np.array(a), np.array(b), rtol=1e-4, atol=1e-4 * (1 + float(mx.abs(b).max())))
    y = mx.compile(lambda x, al, be, up: md.anti_aliased_activation(x, al, be, up_filter=up, down_filter=up))(x, al, be, up)
    np.testing.assert_allclose(np.array(y), np.array(md.anti_aliased_activation(x, al, be, up_filter=up, down_filter=up)),
                               rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("dtype", [mx.float16, mx.bfloat16])
def test_half_precision_gradients(dtype):
    rng = np.random.default_rng(13)
    x = rounded(rng.standard_normal((1, 2, 20)), dtype)
    alpha, beta = params(rng, 2, "snakebeta", True)
    up = kaiser(2, 12)
    ct = rng.standard_normal(x.shape)
    gx, ga, gb = _grads("polyphase", x, alpha, beta, up, up, 2, "snakebeta", True, ct, dtype)
    rx, ra, rb = _grads("polyphase", x, alpha, beta, up, up, 2, "snakebeta", True, ct, mx.float32)
    np.testing.assert_allclose(gx, rx, rtol=0, atol=4 * HALF_EPS[dtype] * (1 + np.abs(rx).max()))
    # The cotangent reaches the VJP rounded to the output's dtype: parameter sums move by that much.
    np.testing.assert_allclose(ga, ra, rtol=4 * HALF_EPS[dtype], atol=1e-5)
    np.testing.assert_allclose(gb, rb, rtol=4 * HALF_EPS[dtype], atol=1e-5)


# ---------------------------------------------------------------------------------------------
# The Metal kernel, in the emulator.


def emulated(x_ncl, alpha, beta, up, down, ratio, activation, logscale, dtype=mx.float32):
    x = mx.array(np.swapaxes(x_ncl, 1, 2).astype(np.float32)).astype(dtype)
    geom = ActivationGeometry(x.shape[0], x.shape[1], x.shape[2], ratio, len(up), len(down), activation, logscale)
    y = metal_aa.emulate(x, mx.array(alpha, mx.float32), None if beta is None else mx.array(beta, mx.float32),
                   mx.array(up, mx.float32), mx.array(down, mx.float32), geom)
    assert y.dtype == dtype and y.shape == x.shape
    return np.swapaxes(np.array(y.astype(mx.float32), np.float64), 1, 2)


@needs_compiler
@pytest.mark.parametrize("ratio,up_taps,down_taps", [(2, 12, 12), (3, 18, 18), (2, 7, 5), (1, 4, 3), (4, 12, 1)])
@pytest.mark.parametrize("shape", [(1, 1, 1), (2, 3, 9), (1, 70, 5)])
@pytest.mark.parametrize("activation,logscale", [("snakebeta", True), ("snake", False)])
def test_metal_kernel_in_the_emulator(ratio, up_taps, down_taps, shape, activation, logscale):
    rng = np.random.default_rng(ratio + up_taps + down_taps + sum(shape))
    x = rng.standard_normal(shape)
    alpha, beta = params(rng, shape[1], activation, logscale)
    up, down = kaiser(ratio, up_taps), rng.standard_normal(down_taps) / down_taps
    expected = reference(x, alpha, beta, up, down, ratio, activation, logscale)
    got = emulated(x, alpha, beta, up, down, ratio, activation, logscale)
    assert not np.isnan(got).any(), "the kernel left output elements unwritten"
    np.testing.assert_allclose(got, expected, rtol=0, atol=tol(expected, terms=up_taps + down_taps))


@needs_compiler
@pytest.mark.parametrize("dtype", [mx.float16, mx.bfloat16])
def test_metal_kernel_half_precision_in_the_emulator(dtype):
    rng = np.random.default_rng(14)
    x = rounded(rng.standard_normal((2, 3, 11)), dtype)
    alpha, beta = params(rng, 3, "snakebeta", True)
    up = kaiser(2, 12)
    expected = reference(x, rounded(alpha, mx.float32), rounded(beta, mx.float32), rounded(up, mx.float32),
                         rounded(up, mx.float32))
    got = emulated(x, alpha, beta, up, up, 2, "snakebeta", True, dtype)
    np.testing.assert_allclose(got, expected, rtol=0, atol=tol(expected, dtype, 2))


@needs_compiler
def test_metal_kernel_nonfinite_in_the_emulator():
    rng = np.random.default_rng(15)
    x = rng.standard_normal((1, 2, 12))
    x[0, 0, 3], x[0, 1, 11] = np.nan, np.inf
    alpha, beta = params(rng, 2, "snakebeta", True)
    up = kaiser(2, 12)
    expected = reference(x, alpha, beta, up, up)
    got = emulated(x, alpha, beta, up, up, 2, "snakebeta", True)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
    finite = np.isfinite(expected)
    np.testing.assert_allclose(got[finite], expected[finite], rtol=0, atol=tol(expected[finite]))


@needs_compiler
def test_metal_path_gradients_with_the_emulated_kernel():
    """The Metal path's forward is the kernel and its VJP the polyphase one: grads equal the polyphase path's."""
    rng = np.random.default_rng(16)
    x = mx.array(rng.standard_normal((2, 7, 3)), mx.float32)
    al, be = mx.array(rng.uniform(-1, 1, 3), mx.float32), mx.array(rng.uniform(-1, 1, 3), mx.float32)
    up = md.kaiser_sinc_filter(0.25, 0.3, 12)
    ct = mx.array(rng.standard_normal((2, 7, 3)), mx.float32)
    geom = ActivationGeometry(2, 7, 3, 2, 12, 12, "snakebeta", True)

    def via(path):
        def f(x, al, be):
            if path == "metal":
                y = metal_aa.run(x, al, be, up, up, geom, launch=metal_aa.emulated_launch)
            else:
                y = polyphase.run(x, al, be, up, up, geom)
            return (y * ct).sum()
        return mx.value_and_grad(f, argnums=(0, 1, 2))(x, al, be)

    (v1, g1), (v2, g2) = via("metal"), via("polyphase")
    np.testing.assert_allclose(float(v1), float(v2), rtol=1e-5)
    for a, b in zip(g1, g2):
        np.testing.assert_allclose(np.array(a), np.array(b), rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# The layer.


@pytest.mark.parametrize("activation,logscale", [("snakebeta", True), ("snakebeta", False), ("snake", True), ("snake", False)])
def test_layer_parameters_and_state_dict_names(activation, logscale):
    layer = md.Activation1d(6, activation=activation, logscale=logscale)
    names = dict(tree_flatten(layer.parameters()))
    expected = {"alpha", "upsample.filter", "downsample.lowpass.filter"} | ({"beta"} if activation == "snakebeta" else set())
    assert set(names) == expected
    assert set(dict(tree_flatten(layer.trainable_parameters()))) == expected - {"upsample.filter", "downsample.lowpass.filter"}
    init = 0.0 if logscale else 1.0
    assert np.array_equal(np.array(layer.alpha), np.full(6, init))
    assert names["upsample.filter"].shape == (1, 1, 12) and names["downsample.lowpass.filter"].shape == (1, 1, 12)
    np.testing.assert_allclose(np.array(names["upsample.filter"]).reshape(-1), kaiser(2, 12), rtol=1e-6)
    assert "Activation1d(6" in repr(layer) and f"activation={activation!r}" in repr(layer)


@needs_nvidia
@pytest.mark.parametrize("activation", ["snakebeta", "snake"])
def test_layer_loads_an_nvidia_state_dict(activation):
    import torch

    rng = np.random.default_rng(17)
    alpha, beta = params(rng, 5, activation, True)
    module = nvidia_module(5, activation, True, 2, 12, 12, alpha, beta)
    with torch.no_grad():  # a checkpoint's filters are what the layer must use, not its own
        module.upsample.filter.mul_(1.1)
        module.downsample.lowpass.filter.copy_(torch.flip(module.downsample.lowpass.filter, [-1]) * 0.9)
    weights = [(k[len("act."):] if k.startswith("act.") else k, mx.array(v.numpy()))
               for k, v in module.state_dict().items()]
    layer = md.Activation1d(5, activation=activation, logscale=True, data_format="NCL")
    layer.load_weights(weights, strict=True)
    x = rng.standard_normal((2, 5, 21)).astype(np.float32)
    with torch.no_grad():
        theirs = module(torch.from_numpy(x)).numpy()
    got = np.array(layer(mx.array(x)))
    np.testing.assert_allclose(got, theirs, rtol=0, atol=tol(theirs.astype(np.float64)))


def test_layer_data_formats_and_ratio():
    rng = np.random.default_rng(18)
    x = rng.standard_normal((2, 3, 15))
    for ratio in (2, 3):
        a = md.Activation1d(3, ratio=ratio, data_format="NCL")
        b = md.Activation1d(3, ratio=ratio)
        y1 = np.array(a(mx.array(x, mx.float32)))
        y2 = np.array(b(mx.array(x.transpose(0, 2, 1), mx.float32))).transpose(0, 2, 1)
        np.testing.assert_allclose(y1, y2, rtol=1e-6, atol=1e-6)
        k = default_kernel_size(ratio)
        expected = reference(x, np.zeros(3), np.zeros(3), kaiser(ratio, k), kaiser(ratio, k), ratio)
        np.testing.assert_allclose(y1, expected, rtol=0, atol=tol(expected))


def test_layer_trains():
    rng = np.random.default_rng(19)
    layer = md.Activation1d(4)
    x = mx.array(rng.standard_normal((2, 30, 4)), mx.float32)
    target = mx.array(rng.standard_normal((2, 30, 4)), mx.float32)
    loss_and_grad = nn.value_and_grad(layer, lambda m, x: ((m(x) - target) ** 2).mean())
    loss, grads = loss_and_grad(layer, x)
    assert set(dict(tree_flatten(grads))) == {"alpha", "beta"}
    assert float(mx.abs(grads["alpha"]).max()) > 0 and float(mx.abs(grads["beta"]).max()) > 0
    layer.update({"alpha": layer.alpha - 0.1 * grads["alpha"], "beta": layer.beta - 0.1 * grads["beta"]})
    assert float(loss_and_grad(layer, x)[0]) < float(loss)


def test_from_several_threads():
    rng = np.random.default_rng(20)
    x = rng.standard_normal((1, 3, 40))
    alpha, beta = params(rng, 3, "snakebeta", True)
    up = kaiser(2, 12)
    expected = reference(x, alpha, beta, up, up)
    errors = []

    def work():
        try:
            for _ in range(3):
                got = call(x, alpha, beta, up, up)
                np.testing.assert_allclose(got, expected, rtol=0, atol=tol(expected))
                _grads("polyphase", x, alpha, beta, up, up, 2, "snakebeta", True, x)
        except Exception as err:  # noqa: BLE001 (reported below)
            errors.append(err)

    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors


def test_process_exits_cleanly_after_gradients():
    """The worker thread and the per-thread compiled kernels must not abort the interpreter's exit."""
    code = textwrap.dedent("""
        import threading
        import mlx_deconv as md, mlx.core as mx
        layer = md.Activation1d(3)
        x = mx.random.normal((1, 20, 3))
        def run():
            g = mx.grad(lambda x: (layer(x) ** 2).sum())(x)
            mx.eval(g, layer(x))
        run()
        t = threading.Thread(target=run); t.start(); t.join()
        print("ok")
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                            env=dict(os.environ, PYTHONWARNINGS="ignore"))
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().endswith("ok") and "terminate" not in result.stderr


# ---------------------------------------------------------------------------------------------
# Argument errors.


def _good():
    return dict(x=mx.zeros((1, 8, 3)), alpha=mx.zeros((3,)), beta=mx.zeros((3,)),
                up_filter=md.kaiser_sinc_filter(0.25, 0.3, 12), down_filter=md.kaiser_sinc_filter(0.25, 0.3, 12))


@pytest.mark.parametrize("change,error,words", [
    (dict(x=np.zeros((1, 8, 3))), TypeError, "x must be an mx.array"),
    (dict(x=mx.zeros((1, 8, 3), mx.int32)), TypeError, "x must be float32"),
    (dict(x=mx.zeros((8,))), ValueError, "x must be 3-D"),
    (dict(x=mx.zeros((1, 0, 3))), ValueError, "at least one sample"),
    (dict(alpha=mx.zeros((4,))), ValueError, r"alpha must have shape \(3,\).*got \(4,\)"),
    (dict(beta=mx.zeros((3, 1))), ValueError, r"beta must have shape \(3,\)"),
    (dict(beta=None), ValueError, "beta is required"),
    (dict(activation="snake"), ValueError, "beta must be None for activation='snake'"),
    (dict(activation="relu"), ValueError, "activation must be one of"),
    (dict(logscale=1), TypeError, "logscale must be a bool"),
    (dict(ratio=0), ValueError, "ratio must be an int >= 1, got 0"),
    (dict(ratio=2.0), ValueError, "ratio must be an int"),
    (dict(up_filter=mx.zeros((2, 12))), ValueError, r"up_filter must have shape \(K,\) or \(1, 1, K\)"),
    (dict(down_filter=mx.zeros((0,))), ValueError, "down_filter must have shape"),
    (dict(up_filter=mx.zeros((1,))), ValueError, "up_filter must have at least ratio=2 taps, got 1"),
    (dict(up_filter=mx.zeros((12,), mx.int32)), TypeError, "up_filter must be float32"),
    (dict(data_format="LNC"), ValueError, "data_format must be one of"),
    (dict(backend="fast"), ValueError, "backend must be 'auto' or one of \\['metal', 'polyphase', 'unfused'\\], got 'fast'"),
    (dict(backend="metal", stream=mx.cpu), ValueError, "backend='metal' is not available for anti_aliased_activation on .*; available: \\['polyphase', 'unfused'\\]"),
    (dict(stream="tpu"), ValueError, "stream must be"),
])
def test_argument_errors(change, error, words):
    kwargs = dict(_good(), **change)
    x, alpha, beta = kwargs.pop("x"), kwargs.pop("alpha"), kwargs.pop("beta")
    with pytest.raises(error, match=words):
        md.anti_aliased_activation(x, alpha, beta, **kwargs)


@pytest.mark.parametrize("kwargs,words", [
    (dict(channels=0), "channels must be an int >= 1"),
    (dict(channels=3, activation="tanh"), "activation must be one of"),
    (dict(channels=3, ratio=0), "ratio must be an int >= 1"),
    (dict(channels=3, ratio=2, kernel_size=1), "kernel_size must be an int >= ratio=2, got 1"),
    (dict(channels=3, data_format="CL"), "data_format must be one of"),
])
def test_layer_argument_errors(kwargs, words):
    with pytest.raises(ValueError, match=words):
        md.Activation1d(**kwargs)


def test_layer_channel_mismatch_names_the_layout():
    layer = md.Activation1d(3)
    with pytest.raises(ValueError, match=r"alpha must have shape \(8,\).*x has shape \(1, 3, 8\) and data_format='NLC'"):
        layer(mx.zeros((1, 3, 8)))  # NCL data given to an NLC layer: 8 channels


def test_exports():
    for name in ("Activation1d", "anti_aliased_activation", "kaiser_sinc_filter"):
        assert name in md.__all__ and hasattr(md, name)


@pytest.mark.parametrize("shape, backend", [((1, 16, 8), "unfused"), ((1, 32, 63), "unfused"),
                                            ((1, 32, 64), "polyphase"), ((2, 64, 16), "polyphase")])
def test_auto_takes_the_unfused_ops_only_for_the_tiniest_calls(shape, backend):
    geom = ActivationGeometry(*shape, 2, 12, 12, "snakebeta", True)
    assert choose(geom, mx.default_stream(mx.cpu)).name == backend
    assert choose(geom, mx.default_stream(mx.cpu), backend).name == backend


def test_auto_keeps_the_filters_constant_at_every_size():
    """Whichever form ``auto`` takes, the filters get no gradient (as in NVIDIA's buffers)."""
    rng = np.random.default_rng(3)
    up = mx.array(rng.normal(size=12).astype(np.float32))
    down = mx.array(rng.normal(size=12).astype(np.float32))
    for length in (4, 400):
        x = mx.array(rng.normal(size=(1, length, 8)).astype(np.float32))
        alpha, beta = mx.zeros((8,)), mx.zeros((8,))

        def loss(u, d):
            return md.anti_aliased_activation(x, alpha, beta, up_filter=u, down_filter=d).sum()

        gu, gd = mx.grad(loss, argnums=(0, 1))(up, down)
        assert not np.any(np.array(gu)) and not np.any(np.array(gd)), length


@pytest.mark.parametrize("backend, length", [("auto", 20), ("unfused", 400)])
def test_under_vmap_and_jvp_the_plain_form_equals_the_loop(backend, length):
    """``mx.vmap`` and ``mx.jvp`` work where the call is plain MLX ops: ``"unfused"``, which ``"auto"`` takes below
    2,048 elements (the fused forms' compiled kernels cannot be batched or pushed forward by MLX). Values and
    gradients over a mapped axis equal the calls one by one; a JVP equals the VJP's inner product."""
    rng = np.random.default_rng(12)
    xs = mx.array(rng.standard_normal((3, 2, length, 4)), mx.float32)
    al, be = mx.array(rng.uniform(-1, 1, 4), mx.float32), mx.array(rng.uniform(-1, 1, 4), mx.float32)
    up = md.kaiser_sinc_filter(0.25, 0.3, 12)
    act = lambda x: md.anti_aliased_activation(x, al, be, up_filter=up, down_filter=up, backend=backend)  # noqa: E731
    grad = mx.grad(lambda x: (act(x) ** 2).sum())
    for mapped, each in ((mx.vmap(act)(xs), [act(xs[i]) for i in range(3)]),
                         (mx.vmap(grad)(xs), [grad(xs[i]) for i in range(3)])):
        np.testing.assert_allclose(np.array(mapped), np.array(mx.stack(each)), rtol=1e-5, atol=1e-6)
    t, w = xs[1], xs[2]  # <J t, w> = <t, J^T w>
    pushed = mx.jvp(act, [xs[0]], [t])[1][0]
    pulled = mx.vjp(act, [xs[0]], [w])[1][0]
    np.testing.assert_allclose(float((pushed * w).sum()), float((t * pulled).sum()), rtol=1e-4)


@pytest.mark.parametrize("shape", ["flat", "nvidia"])
def test_unfused_differentiates_the_filters_in_either_shape(shape):
    """``backend="unfused"`` differentiates the filters, given as ``(K,)`` or as NVIDIA's ``(1, 1, K)`` buffers:
    the gradient against central differences of the loss in float64 directions."""
    rng = np.random.default_rng(7)
    x = mx.array(rng.standard_normal((1, 9, 2)).astype(np.float32))
    alpha = mx.array(rng.standard_normal(2).astype(np.float32) * 0.3)
    beta = mx.array(rng.standard_normal(2).astype(np.float32) * 0.3)
    up = rng.standard_normal(6).astype(np.float32) * 0.3
    down = rng.standard_normal(6).astype(np.float32) * 0.3
    ct = mx.array(rng.standard_normal((1, 9, 2)).astype(np.float32))
    shaped = (lambda f: f.reshape(1, 1, -1)) if shape == "nvidia" else (lambda f: f)

    def loss(u, d):
        y = md.anti_aliased_activation(x, alpha, beta, up_filter=shaped(u), down_filter=shaped(d), ratio=2,
                                       backend="unfused")
        return (y * ct).sum()

    gu, gd = mx.grad(loss, argnums=(0, 1))(mx.array(up), mx.array(down))
    for grad, which in ((gu, 0), (gd, 1)):
        assert float(mx.abs(grad).max()) > 0.01
        direction = rng.standard_normal(6).astype(np.float32)
        step = 1e-2
        args_plus = [mx.array(up), mx.array(down)]
        args_minus = [mx.array(up), mx.array(down)]
        args_plus[which] = args_plus[which] + step * mx.array(direction)
        args_minus[which] = args_minus[which] - step * mx.array(direction)
        numeric = (loss(*args_plus).item() - loss(*args_minus).item()) / (2 * step)
        analytic = float((grad * mx.array(direction)).sum())
        assert abs(numeric - analytic) <= 1e-3 * max(1.0, abs(numeric)), (which, numeric, analytic)
