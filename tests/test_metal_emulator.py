"""The Metal kernel, executed: MLX's generated source compiled with g++ and run over the whole grid.

See mlx_deconv/metal_emulator.py. Compared with the float64 reference of
tests/reference.py, output buffers poisoned with NaN first.
"""

import mlx.core as mx
import numpy as np
import pytest
from hypothesis import given, settings

import reference as ref
from helpers import forward_atol
from mlx_deconv import backends, metal_emulator
from mlx_deconv.backends import metal
from mlx_deconv.geometry import conv_geometry
from strategies import Case, cases

pytestmark = pytest.mark.skipif(
    metal_emulator.compiler() is None, reason="no C++ compiler: the Metal emulator cannot build the kernel"
)

def emulate(case, dtype=mx.float32):
    x, w, b = case.arrays()
    xa, wa = mx.array(x, dtype), mx.array(w, dtype)
    ba = None if b is None else mx.array(b, dtype)
    geom, _ = conv_geometry(xa.shape, wa.shape, **case.kwargs())
    y = metal_emulator.run(xa, wa, ba, geom)
    assert y.dtype == dtype and y.shape == (case.batch, geom.output_length, case.out_channels)
    # Reference on the inputs as the kernel saw them (rounded to dtype).
    as64 = lambda a: None if a is None else np.array(a.astype(mx.float32), np.float64)
    return np.array(y.astype(mx.float32), np.float64), case.expected(as64(xa), as64(wa), as64(ba))


def check(case, dtype=mx.float32):
    got, expected = emulate(case, dtype)
    assert not np.isnan(got).any(), "the kernel left output elements unwritten"
    np.testing.assert_allclose(got, expected, rtol=0, atol=forward_atol(case, dtype))


EDGES = {
    "L=1": Case(2, 1, 1, 3, 2, 4, 2, 1, 0, None, True, 1),
    "K=1": Case(2, 5, 1, 3, 2, 1, 3, 1, 0, None, True, 2),
    "stride > K": Case(2, 4, 1, 2, 3, 2, 5, 1, 0, 2, True, 4),
    "large dilation": Case(1, 3, 1, 2, 2, 3, 1, 7, 1, None, True, 5),
    "depthwise bigvgan": Case(1, 20, 8, 1, 1, 12, 2, 1, 0, None, False, 6),
    "depthwise multiplier": Case(2, 9, 3, 1, 2, 5, 2, 2, 2, 1, True, 7),
    "C_in=1": Case(2, 6, 1, 1, 4, 3, 2, 1, 1, None, True, 8),
    "no bias same": Case(1, 7, 2, 2, 2, 3, 2, 2, "same", 1, False, 13),
    "causal hifigan": Case(1, 6, 1, 8, 4, 16, 8, 1, "causal", None, True, 15),
    "asymmetric crop": Case(1, 6, 1, 2, 2, 4, 2, 1, (3, 0), 1, True, 10),
    "grouped": Case(2, 16, 4, 4, 4, 4, 2, 1, 1, None, True, 18),
}


@pytest.mark.parametrize("name", list(EDGES))
def test_metal_kernel_edge_cases(name):
    check(EDGES[name])


@pytest.mark.parametrize("dtype", [mx.float16, mx.bfloat16], ids=["float16", "bfloat16"])
@pytest.mark.parametrize("name", ["depthwise bigvgan", "grouped", "causal hifigan"])
def test_metal_kernel_half_precision(dtype, name):
    check(EDGES[name], dtype)


@settings(max_examples=12)
@given(case=cases(max_length=9))
def test_metal_kernel_random_configurations(case):
    check(case)


def test_metal_injected_bug_is_caught(monkeypatch):
    """An off-by-one in the tap position must make the harness report a mismatch."""
    source = metal.kernel_source()
    assert "const int u = t + crop;" in source
    monkeypatch.setattr(metal, "kernel_source", lambda: source.replace("const int u = t + crop;", "const int u = t + crop + 1;"))
    metal.kernel.cache_clear()
    try:
        with pytest.raises(AssertionError):
            check(EDGES["grouped"])
    finally:
        metal.kernel.cache_clear()


def test_metal_unwritten_outputs_are_caught(monkeypatch):
    """A kernel that skips some outputs leaves the NaN poison there, and the check sees it."""
    source = metal.kernel_source()
    monkeypatch.setattr(metal, "kernel_source", lambda: source.replace(
        "if (co >= out_channels || t >= out_length) {", "if (co >= out_channels || t >= out_length || t == 1) {"))
    metal.kernel.cache_clear()
    try:
        got, _ = emulate(EDGES["grouped"])
        assert np.isnan(got[:, 1]).all() and not np.isnan(got[:, 0]).any()
    finally:
        metal.kernel.cache_clear()


def test_metal_generated_signature_is_what_the_driver_binds():
    case = EDGES["L=1"]
    x, w, b = (mx.array(a, mx.float32) for a in case.arrays())
    geom, _ = conv_geometry(x.shape, w.shape, **case.kwargs())
    kernel = metal_emulator.capture(x, w, b, geom)
    names = [p.name for p in kernel.parameters]
    assert names == ["x", "w", "bias", "dims", "y", "thread_position_in_grid"]
    assert "<float, 2, 1, 4, 3, 2, 1>" in kernel.instance  # T, STRIDE, DILATION, TAPS, CIG, COG, HAS_BIAS


def test_metal_backend_gradients_come_from_gemm(monkeypatch):
    """The custom_function's VJP (gemm's derivative) against the reference, forward run by the emulator."""
    monkeypatch.setattr(metal, "run_kernel", lambda x, w, b, g: metal_emulator.run(x, w, b, g))
    case = EDGES["depthwise multiplier"]
    x, w, b = case.arrays()
    geom, _ = conv_geometry(x.shape, w.shape, **case.kwargs())
    ct = np.random.default_rng(0).standard_normal((case.batch, geom.output_length, case.out_channels))
    y, (gx, gw, gb) = mx.vjp(lambda x, w, b: metal.conv_transpose1d(x, w, b, geom),
                             [mx.array(x, mx.float32), mx.array(w, mx.float32), mx.array(b, mx.float32)],
                             [mx.array(ct, mx.float32)])
    left, right = case.crops()
    np.testing.assert_allclose(np.array(y[0]), case.expected(x, w, b), atol=1e-5)
    ex, ew, eb = ref.conv_transpose1d_vjp(x, w, ct, case.stride, left, right, case.dilation, case.groups)
    for got, want in ((gx, ex), (gw, ew), (gb, eb)):
        np.testing.assert_allclose(np.array(got), want, atol=1e-4)


def test_metal_auto_rule_and_availability(monkeypatch):
    cpu = mx.default_stream(mx.cpu)
    depthwise, _ = conv_geometry((1, 100, 64), (64, 12, 1), stride=2, groups=64)
    dense, _ = conv_geometry((1, 100, 512), (256, 16, 512), stride=8)
    assert backends.resolve_backend("auto", depthwise, cpu) == "gemm"
    with pytest.raises(ValueError, match="'metal' is not available"):
        backends.resolve_backend("metal", depthwise, cpu)
    monkeypatch.setattr(backends, "is_metal", lambda stream: True)  # as on a Mac's GPU stream
    assert backends.resolve_backend("auto", depthwise, cpu) == "metal"
    assert backends.resolve_backend("auto", dense, cpu) == "winograd"
    dilated, _ = conv_geometry((1, 100, 256), (256, 7, 256), dilation=3)
    assert backends.resolve_backend("auto", dilated, cpu) == "gemm"
    assert "metal" in backends.available_backends(cpu)


def test_metal_kernel_source_is_found():
    assert "thread_position_in_grid" in metal.kernel_source()
    assert metal_emulator.shim_path().is_file()
