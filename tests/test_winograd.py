"""The ``winograd`` backend (minimal filtering): exact transforms, values and gradients against the reference."""

from fractions import Fraction

import mlx.core as mx
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import mlx_deconv as md
import reference as ref
from helpers import atol, backend_call, forward_atol, grad_atols, grads, run, tiny_blocks
from mlx_deconv.backends import BACKENDS, winograd
from mlx_deconv.choice import choose, rule
from mlx_deconv.backends.gemm import transposed_paths, minimal_filtering
from mlx_deconv.geometry.validation import conv_geometry
from strategies import cases

ROW_SHIFTS = st.sampled_from([2, 3])


@pytest.mark.parametrize("tile, taps", [(3, 2), (2, 3), (2, 2), (1, 2), (1, 4)])
def test_transforms_compute_the_correlation_exactly(tile, taps):
    a_t, g, b_t = minimal_filtering.transforms(tile, taps)
    size = tile + taps - 1
    for i in range(tile):
        for k in range(taps):
            for l in range(size):
                coefficient = sum(a_t[i][j] * g[j][k] * b_t[j][l] for j in range(size))
                assert coefficient == Fraction(int(l == i + k)), (i, k, l)
    # The input and output transforms only add and subtract; fractions live on the weight side.
    assert all(c in (-1, 0, 1) for row in a_t + b_t for c in row)


def test_transforms_refuse_inexact_points():
    with pytest.raises(ValueError, match="finite points"):
        minimal_filtering.transforms(4, 2)


@pytest.mark.parametrize("shifts, in_per_group, tile", [
    ((0, 1), 4, 3), ((0, 1, 2), 4, 2), ((0, 1), 1, None), ((0, 2), 4, None), ((0,), 4, None),
    ((0, 1, 2, 3), 4, None), (None, 4, None),
])
def test_tile_rows(shifts, in_per_group, tile):
    assert minimal_filtering.tile_rows(shifts, in_per_group) == tile


@pytest.mark.parametrize("shape, kwargs, chosen", [
    (((1, 200, 512), (256, 16, 512)), dict(stride=8, padding=4), "winograd"),  # HiFi-GAN
    (((1, 1000, 128), (16, 5, 64)), dict(stride=2, groups=2), "winograd"),  # three row shifts, grouped
    (((1, 200, 64), (16, 5, 32)), dict(stride=2, groups=2), "gemm"),  # depth 160: lost to gemm
    (((1, 64, 32), (16, 4, 32)), dict(stride=2, padding=1), "gemm"),  # short: 0.53x of gemm at depth 128
    (((1, 64, 64), (32, 4, 64)), dict(stride=2, padding=1), "gemm"),  # depth 256, 1e6 FLOPs: 0.85x
    (((1, 256, 64), (32, 4, 64)), dict(stride=2, padding=1), "winograd"),  # 4.2e6 FLOPs: 1.2x
    (((1, 2000, 8), (8, 4, 4)), dict(stride=2, groups=2), "gemm"),  # too shallow to pay: 4 x 4 products
    (((1, 2000, 16), (16, 12, 1)), dict(stride=2, groups=16), "gemm"),  # depthwise
    (((1, 2000, 16), (16, 7, 16)), dict(stride=1, dilation=3), "gemm"),  # dilated
])
def test_auto_picks_winograd_where_it_applies(shape, kwargs, chosen, monkeypatch):
    geom, _ = conv_geometry(*shape, **kwargs)
    monkeypatch.setattr(rule, "cpu_blas", lambda stream: "reference")  # MLX's bundled BLAS
    assert choose(geom, mx.default_stream(mx.cpu), "auto").name == chosen
    monkeypatch.setattr(rule, "cpu_blas", lambda stream: "optimized")  # gemm measured as fast or faster there
    assert choose(geom, mx.default_stream(mx.cpu), "auto").name == "gemm"


def test_no_winograd_on_a_short_input(monkeypatch):
    """Its transforms' fixed cost outweighs the FLOPs saved below WINOGRAD_MIN_INPUT_ROWS input samples."""
    geom, _ = conv_geometry((1, 16, 512), (256, 4, 512), stride=2, padding=1)
    monkeypatch.setattr(rule, "cpu_blas", lambda stream: "reference")
    assert choose(geom, mx.default_stream(mx.cpu), "auto").name == "gemm"


@pytest.mark.parametrize("w_shape, kwargs", [((4, 7, 4), dict(dilation=3)), ((4, 6, 1), dict(stride=2, groups=4))])
def test_forced_elsewhere_runs_as_gemm(w_shape, kwargs):
    x, w = mx.random.normal((2, 9, 4)), mx.random.normal(w_shape)
    geom, _ = conv_geometry(x.shape, w.shape, **kwargs)
    assert not BACKENDS["winograd"].applies(geom)
    assert choose(geom, mx.default_stream(mx.cpu), "winograd").name == "winograd"
    same = md.conv_transpose1d(x, w, **kwargs, backend="winograd") == md.conv_transpose1d(x, w, **kwargs, backend="gemm")
    assert same.all().item()


@given(data=st.data(), row_shifts=ROW_SHIFTS, data_format=st.sampled_from(["NLC", "NCL"]),
       weight_format=st.sampled_from(["mlx", "torch"]))
def test_matches_reference(data, row_shifts, data_format, weight_format):
    case = data.draw(cases(row_shifts=row_shifts))
    x, w, b = case.arrays()
    got = run(case, x, w, b, "winograd", data_format, weight_format)
    np.testing.assert_allclose(got, case.expected(x, w, b), rtol=0, atol=forward_atol(case))


@given(data=st.data(), row_shifts=ROW_SHIFTS, dtype=st.sampled_from([mx.float16, mx.bfloat16]))
def test_half_precision(data, row_shifts, dtype):
    case = data.draw(cases(row_shifts=row_shifts))
    x, w, b = case.arrays()
    got = run(case, x, w, b, "winograd", dtype=dtype)
    np.testing.assert_allclose(got, case.expected(x, w, b), rtol=0, atol=forward_atol(case, dtype))


@given(data=st.data(), row_shifts=ROW_SHIFTS, data_format=st.sampled_from(["NLC", "NCL"]))
def test_vjp_matches_reference(data, row_shifts, data_format):
    case = data.draw(cases(row_shifts=row_shifts))
    case.use_bias = True
    x, w, b = case.arrays()
    left, right = case.crops()
    ct = np.random.default_rng(case.seed).standard_normal(case.expected(x, w, b).shape)
    gx, gw, gb = grads(case, x, w, b, ct, "winograd", data_format)
    ex, ew, eb = ref.conv_transpose1d_vjp(x, w, ct, case.stride, left, right, case.dilation, case.groups)
    atol_x, atol_w, atol_b = grad_atols(case, ct.shape)
    # Input gradients pass through the transforms too: like weight gradients they can be large
    # (one of 9.7 came out 2 ulp off, 2e-6), so they get the same few-ulp relative term.
    np.testing.assert_allclose(gx, ex, rtol=1e-6, atol=atol_x)
    np.testing.assert_allclose(gw, ew, rtol=1e-6, atol=atol_w)
    np.testing.assert_allclose(gb, eb, rtol=0, atol=atol_b)


@given(data=st.data(), row_shifts=ROW_SHIFTS)
def test_blocks_match_reference(data, row_shifts):
    """Many tiny blocks: every tile boundary and block edge lands somewhere new."""
    case = data.draw(cases(max_length=30, row_shifts=row_shifts))
    case.use_bias = True
    x, w, b = case.arrays()
    left, right = case.crops()
    ct = np.random.default_rng(case.seed).standard_normal(case.expected(x, w, b).shape)
    f = backend_call("winograd", tiny_blocks(), **case.kwargs())
    primals = [mx.array(a, mx.float32) for a in (x, w, b)]
    (y,), (gx, gw, _) = mx.vjp(f, primals, [mx.array(ct, mx.float32)])
    y, gx, gw = (np.array(a, dtype=np.float64) for a in (y, gx, gw))
    np.testing.assert_allclose(y, case.expected(x, w, b), rtol=0, atol=forward_atol(case))
    ex, ew, _ = ref.conv_transpose1d_vjp(x, w, ct, case.stride, left, right, case.dilation, case.groups)
    atol_x, atol_w, _ = grad_atols(case, ct.shape)
    # Input gradients pass through the transforms too: like weight gradients they can be large
    # (one of 9.7 came out 2 ulp off, 2e-6), so they get the same few-ulp relative term.
    np.testing.assert_allclose(gx, ex, rtol=1e-6, atol=atol_x)
    np.testing.assert_allclose(gw, ew, rtol=1e-6, atol=atol_w)


@pytest.mark.parametrize("length, stride, taps, padding", [
    (1, 1, 2, 0), (1, 4, 8, 0), (2, 1, 3, 1), (1, 2, 5, (0, 4)), (3, 8, 16, 4),
])
def test_edge_cases(length, stride, taps, padding):
    rng = np.random.default_rng(length * 100 + taps)
    x = rng.standard_normal((2, length, 3))
    w = rng.standard_normal((2, taps, 3))
    left, right = (padding, padding) if isinstance(padding, int) else padding
    y = md.conv_transpose1d(mx.array(x, mx.float32), mx.array(w, mx.float32), stride=stride, padding=padding,
                            backend="winograd")
    expected = ref.conv_transpose1d(x, w, None, stride, left, right, 1, 1)
    np.testing.assert_allclose(np.array(y), expected, rtol=0, atol=atol(taps * 3))


def test_fewer_matmul_flops_than_gemm():
    """F(3, 2) multiplies 4 transformed rows per 3 output rows where gemm multiplies 6."""
    geom, _ = conv_geometry((1, 300, 8), (8, 16, 8), stride=8)
    path = transposed_paths.path_for(geom, minimal_filtering=True)
    assert isinstance(path, transposed_paths.WinogradSlabs) and path.tile == 3
    ws = path.arrange(mx.zeros((8, 16, 8)))
    assert len(ws) == 4 and all(u.shape == (8, 64) for u in ws)  # 2-D when groups == 1


@pytest.mark.parametrize("poison", [None, "x", "weight"])
def test_minimal_filtering_runs_on_finite_values_only(poison, monkeypatch):
    """The look at the values must not silently turn the backend into gemm: a finite call computes
    WinogradSlabs' blocks, a call with a NaN in x or the weight does not (and lands as the definition)."""
    calls = []
    block = transposed_paths.WinogradSlabs.block
    monkeypatch.setattr(transposed_paths.WinogradSlabs, "block", lambda self, *a: calls.append(1) or block(self, *a))
    rng = np.random.default_rng(7)
    length = 37 + 2 * (poison is not None) + (poison == "weight")  # a signature of its own: nothing cached
    x = rng.standard_normal((1, length, 8)).astype(np.float32)
    w = rng.standard_normal((4, 4, 8)).astype(np.float32)
    if poison == "x":
        x[0, 5, 0] = np.nan
    elif poison == "weight":
        w[0, 0, 0] = np.nan
    y = np.array(md.conv_transpose1d(mx.array(x), mx.array(w), stride=2, padding=1, backend="winograd"))
    assert bool(calls) == (poison is None)
    expected = ref.conv_transpose1d(x.astype(np.float64), w.astype(np.float64), None, 2, 1, 1, 1, 1)
    np.testing.assert_array_equal(np.isnan(y), np.isnan(expected))


def test_values_finite_says_true_false_or_cannot_tell():
    from mlx_deconv.backends import gemm
    finite, poisoned = mx.ones((3, 4)), mx.array([1.0, float("inf")])
    assert winograd.values_finite(finite, finite) is True
    assert winograd.values_finite(finite, poisoned) is False
    assert winograd.values_finite(mx.array([float("nan")], mx.float16)) is False
    assert winograd.values_finite(mx.full((4,), 60000.0, mx.float16)) is True  # a half-precision sum does not overflow
    seen = []
    mx.compile(lambda a: seen.append(winograd.values_finite(a)) or a)(finite)
    assert seen == [None]  # inside mx.compile the values cannot be looked at
