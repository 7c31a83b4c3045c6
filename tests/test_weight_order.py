"""WeightOrderSlabs: the gemm path that multiplies by the weight as stored (short signals, wide inputs).

Each case is one the path rule sends there (asserted), checked forward and
backward against the float64 definition, as one block and in tiny blocks on
every worker stream.
"""

import mlx.core as mx
import numpy as np
import pytest

import reference as ref
from helpers import EPS, atol, backend_call, tiny_blocks
from mlx_deconv.backends.gemm import transposed_paths
from mlx_deconv.backends.gemm.schedule import DEFAULT_POLICY
from mlx_deconv.geometry.validation import conv_geometry

# name: (N, L, C_in, C_out, K, stride, (left, right) crop, output_padding)
CASES = {
    "vocoder first layer": (1, 5, 24, 6, 8, 4, (2, 2), None),
    "batch of three": (3, 4, 40, 5, 4, 2, (1, 1), None),
    "K == stride": (2, 6, 32, 3, 3, 3, (0, 0), None),
    "stride 1": (1, 7, 30, 4, 3, 1, (1, 1), None),
    "K = 1": (2, 3, 12, 5, 1, 1, (0, 0), None),
    "uneven crop, extended": (1, 6, 28, 4, 6, 2, (3, 0), 1),
    "one sample": (1, 1, 8, 3, 4, 2, (0, 0), None),
}


def _geometry(n, length, c_in, c_out, taps, stride, crop, output_padding):
    return conv_geometry((n, length, c_in), (c_out, taps, c_in), stride=stride, padding=crop,
                         output_padding=output_padding)[0]


def _kwargs(stride, crop, output_padding):
    return dict(stride=stride, padding=crop, output_padding=output_padding)


def _reference_crop(geom):
    """``(left, right)`` of the reference: right < 0 extends the full output with zeros."""
    full = (geom.length - 1) * geom.stride + geom.dilation * (geom.kernel_size - 1) + 1
    return geom.crop, full - geom.crop - geom.output_length


@pytest.mark.parametrize("name", list(CASES))
def test_the_rule_takes_it(name):
    assert isinstance(transposed_paths.path_for(_geometry(*CASES[name])), transposed_paths.WeightOrderSlabs)


def test_longer_signals_and_other_layers_do_not():
    n, length, c_in, c_out, taps, stride, crop, extra = CASES["vocoder first layer"]
    assert isinstance(transposed_paths.path_for(_geometry(n, 4 * c_in + 1, c_in, c_out, taps, stride, crop, extra)),
                      transposed_paths.DenseSlabs)
    dilated = conv_geometry((1, 4, 24), (6, 4, 24), stride=2, dilation=2)[0]
    assert not isinstance(transposed_paths.path_for(dilated), transposed_paths.WeightOrderSlabs)
    uneven = conv_geometry((1, 4, 24), (6, 5, 24), stride=2)[0]  # K not a multiple of the stride
    assert not isinstance(transposed_paths.path_for(uneven), transposed_paths.WeightOrderSlabs)


@pytest.mark.parametrize("policy", [DEFAULT_POLICY, tiny_blocks(16)], ids=["one block", "tiny blocks"])
@pytest.mark.parametrize("name", list(CASES))
def test_forward_and_gradients_match_the_definition(name, policy):
    n, length, c_in, c_out, taps, stride, crop, extra = CASES[name]
    geom = _geometry(*CASES[name])
    rng = np.random.default_rng(len(name))
    x = rng.standard_normal((n, length, c_in)).astype(np.float32)
    w = rng.standard_normal((c_out, taps, c_in)).astype(np.float32)
    ct = rng.standard_normal((n, geom.output_length, c_out)).astype(np.float32)
    left, right = _reference_crop(geom)
    op = backend_call("gemm", policy, **_kwargs(stride, crop, extra))

    (y,), (gx, gw) = mx.vjp(lambda x, w: op(x, w), [mx.array(x), mx.array(w)], [mx.array(ct)])
    np.testing.assert_allclose(np.array(y), ref.conv_transpose1d(x, w, None, stride, left, right),
                               atol=atol(taps * c_in))
    rx, rw, _ = ref.conv_transpose1d_vjp(x, w, ct, stride, left, right)
    np.testing.assert_allclose(np.array(gx), rx, atol=atol(taps * c_out))
    np.testing.assert_allclose(np.array(gw), rw, atol=atol(n * length), rtol=1e-6)


@pytest.mark.parametrize("dtype", [mx.float16, mx.bfloat16])
def test_half_precision(dtype):
    n, length, c_in, c_out, taps, stride, crop, extra = CASES["batch of three"]
    rng = np.random.default_rng(7)
    x = rng.standard_normal((n, length, c_in)).astype(np.float32)
    w = rng.standard_normal((c_out, taps, c_in)).astype(np.float32)
    x16, w16 = mx.array(x).astype(dtype), mx.array(w).astype(dtype)
    y = backend_call("gemm", DEFAULT_POLICY, **_kwargs(stride, crop, extra))(x16, w16)
    assert y.dtype == dtype
    left, right = _reference_crop(_geometry(*CASES["batch of three"]))
    expected = ref.conv_transpose1d(np.array(x16.astype(mx.float32)), np.array(w16.astype(mx.float32)), None,
                                    stride, left, right)
    # Computed in float32, rounded once to the half type at the end.
    np.testing.assert_allclose(np.array(y.astype(mx.float32)), expected, atol=EPS[dtype] * np.abs(expected).max() + 1e-3)


def test_an_empty_batch_called_on_the_backend_directly():
    geom = _geometry(0, 5, 24, 6, 8, 4, (2, 2), None)
    assert isinstance(transposed_paths.path_for(geom), transposed_paths.WeightOrderSlabs)
    y = backend_call("gemm", DEFAULT_POLICY, stride=4, padding=(2, 2))(mx.zeros((0, 5, 24)), mx.ones((6, 8, 24)))
    assert y.shape == (0, geom.output_length, 6)
