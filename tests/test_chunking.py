"""The gemm backend's length blocks: same values and gradients, bounded memory."""

import os
import sys

import mlx.core as mx
import numpy as np
import pytest
from hypothesis import given

import mlx_deconv as md
import reference as ref
from helpers import atol, backend_call, forward_atol, grad_atols, peak_above, tiny_blocks
from mlx_deconv import bench
from mlx_deconv.backends import gemm
from mlx_deconv.backends.gemm import transposed_paths, schedule, slabs
from mlx_deconv.backends.gemm.schedule import DEFAULT_POLICY, BlockPolicy
from mlx_deconv.geometry.validation import conv_geometry
from strategies import cases


@given(case=cases(max_length=30))
def test_blocks_match_reference(case):
    x, w, b = case.arrays()
    f = backend_call("gemm", tiny_blocks(), **case.kwargs())  # a handful of rows per block: many blocks
    y = f(mx.array(x, mx.float32), mx.array(w, mx.float32), None if b is None else mx.array(b, mx.float32))
    np.testing.assert_allclose(np.array(y), case.expected(x, w, b), rtol=0,
                               atol=forward_atol(case))


@given(case=cases(max_length=30))
def test_blocks_keep_gradients(case):
    x, w, _ = case.arrays()
    left, right = case.crops()
    y_shape = case.expected(x, w, None).shape
    ct = np.random.default_rng(case.seed).standard_normal(y_shape)
    f = backend_call("gemm", tiny_blocks(), **case.kwargs())
    _, (gx, gw) = mx.vjp(f, [mx.array(x, mx.float32), mx.array(w, mx.float32)], [mx.array(ct, mx.float32)])
    ex, ew, _ = ref.conv_transpose1d_vjp(x, w, ct, case.stride, left, right, case.dilation, case.groups)
    atol_x, atol_w, _ = grad_atols(case, ct.shape)
    np.testing.assert_allclose(np.array(gx), ex, rtol=0, atol=atol_x)
    np.testing.assert_allclose(np.array(gw), ew, rtol=1e-6, atol=atol_w)


def test_cpu_work_is_shared_by_every_core():
    workers = gemm.worker_streams(mx.default_stream(mx.cpu))
    assert workers[0] == mx.default_stream(mx.cpu)
    if sys.platform == "linux":
        assert len(workers) == min(os.cpu_count(), DEFAULT_POLICY.max_workers)
        assert len({str(w) for w in workers}) == len(workers)


def test_peak_memory_does_not_grow_with_the_intermediate():
    """Blocks bound the ``cols`` intermediate: peak stays near inputs + 2 x output, not + cols."""
    policy = BlockPolicy(chunk_elements=1 << 16)
    length, c, k = 20000, 32, 16
    x = mx.random.normal((1, length, c), key=mx.random.key(0))
    w = mx.random.normal((c, k, c), key=mx.random.key(1))
    mx.eval(x, w)
    mx.reset_peak_memory()
    y = backend_call("gemm", policy, stride=8, padding=4)(x, w)
    mx.eval(y)
    peak = mx.get_peak_memory()
    io = x.nbytes + w.nbytes + y.nbytes
    cols = length * k * c * 4
    assert cols > 0.8 * y.nbytes  # the unchunked intermediate would be as large as the output
    assert peak <= 2 * io + 16 * 4 * policy.chunk_elements, (peak, io)


@pytest.mark.parametrize("backend", ["gemm", "winograd"])
def test_backward_memory_does_not_grow_with_the_blocks(backend):
    """Each block's input gradient is added into its own rows: differentiated against the whole
    input, every block scattered into a zero array of it (64x the input at 1000 blocks)."""
    f = backend_call(backend, BlockPolicy(chunk_elements=1 << 12), stride=2, padding=1)
    w = mx.random.normal((16, 4, 16), key=mx.random.key(1))
    grad = mx.grad(lambda x, w: f(x, w).sum(), argnums=(0, 1))
    ratios = {}
    for length in (16000, 64000):
        x = mx.random.normal((1, length, 16), key=mx.random.key(0))
        mx.eval(x, w)
        ratios[length] = peak_above(lambda: grad(x, w))[0] / x.nbytes
    assert ratios[64000] < 8 and ratios[64000] < 1.25 * ratios[16000], ratios


@pytest.mark.parametrize("backend", ["gemm", "auto"])
@pytest.mark.parametrize("shape", bench.SHAPES, ids=lambda shape: shape.name)
def test_short_signal_peak_within_the_bound(shape, backend):
    """The benchmark's shapes, peak memory inputs included: within 2 x (input + output + weight)
    plus one chunk on the gemm path. ``auto`` may add one weight: winograd's transformed
    weights are twice the weight (HiFi-GAN's first layer, an 8 MB weight, exceeds the bound)."""
    x = mx.random.normal((shape.batch, shape.length, shape.in_channels), key=mx.random.key(0))
    w = mx.random.normal((shape.out_channels, shape.kernel_size, shape.in_channels // shape.groups),
                         key=mx.random.key(1))
    mx.eval(x, w)
    mx.eval(md.conv_transpose1d(x, w, **shape.kwargs(), backend=backend))  # prepared and compiled
    above, y = peak_above(lambda: md.conv_transpose1d(x, w, **shape.kwargs(), backend=backend))
    peak = above + x.nbytes + w.nbytes
    bound = 2 * (x.nbytes + y.nbytes + w.nbytes) + 4 * DEFAULT_POLICY.chunk_elements
    if backend == "auto":
        bound += w.nbytes
    assert peak <= bound, (peak, bound)


@pytest.mark.parametrize("backend", ["gemm", "winograd"])
def test_long_outputs_are_written_in_place(backend):
    """Hundreds of blocks: the output costs itself plus a few blocks in flight, whatever the length;
    a concatenation would cost 2x the output."""
    policy = BlockPolicy(chunk_elements=1 << 12)
    f = backend_call(backend, policy, stride=2, padding=1)
    w = mx.random.normal((16, 4, 16), key=mx.random.key(1))
    workers = gemm.worker_streams(mx.default_stream(mx.cpu))

    def extra_bytes(f):
        """Peak memory above what was allocated before, minus the output itself."""
        above, y = peak_above(f)
        return above - y.nbytes, y.nbytes

    extras = {}
    for length in (16000, 64000):
        x = mx.random.normal((1, length, 16), key=mx.random.key(0))
        mx.eval(x, w)
        geom, _ = conv_geometry(x.shape, w.shape, stride=2, padding=1)
        path = transposed_paths.path_for(geom, minimal_filtering=backend == "winograd")
        assert schedule.block_count(geom, path.per_row, len(workers), policy=policy) > 200
        extras[length] = extra_bytes(lambda: f(x, w))
    (short, _), (long, out) = extras[16000], extras[64000]
    assert long < 0.3 * out, (long, out)
    assert long - short < 0.05 * out, (short, long, out)  # nothing grows with the length but the output

    bounds = [geom.output_length * i // 256 for i in range(257)]
    concatenated, _ = extra_bytes(lambda: schedule.concatenated(x, path, path.arrange(w), geom, bounds, workers))
    assert concatenated > 0.9 * out  # what writing in place saves


def test_compiled_blocks_on_worker_streams_match_reference():
    case_x = np.random.default_rng(5).standard_normal((2, 23, 6))
    case_w = np.random.default_rng(6).standard_normal((4, 6, 3))
    ct = np.random.default_rng(7).standard_normal((2, 23 * 3, 4))

    f = backend_call("gemm", tiny_blocks(), stride=3, padding="same", groups=2)
    y, (gx, gw) = mx.compile(lambda x, w, c: mx.vjp(f, [x, w], [c]))(
        mx.array(case_x, mx.float32), mx.array(case_w, mx.float32), mx.array(ct, mx.float32))
    left, right = md.resolve_padding("same", 6, 3)
    np.testing.assert_allclose(np.array(y[0]), ref.conv_transpose1d(case_x, case_w, None, 3, left, right, 1, 2), atol=1e-4)
    ex, ew, _ = ref.conv_transpose1d_vjp(case_x, case_w, ct, 3, left, right, 1, 2)
    np.testing.assert_allclose(np.array(gx), ex, atol=1e-4)
    np.testing.assert_allclose(np.array(gw), ew, atol=1e-4)


def test_depthwise_forward_in_one_block_backward_shared():
    """A fused depthwise call runs forward as one block while its VJP is cut between the workers."""
    policy = BlockPolicy(parallel_min_flops=0, depthwise_parallel_min_output=1 << 40)
    rng = np.random.default_rng(3)
    x, w = rng.standard_normal((2, 37, 6)), rng.standard_normal((6, 12, 1))
    geom, _ = conv_geometry(x.shape, w.shape, stride=2, padding=5, groups=6)
    workers = len(gemm.worker_streams(mx.default_stream(mx.cpu)))
    path = transposed_paths.path_for(geom)
    assert isinstance(path, transposed_paths.DepthwiseSlabs) and path.per_row is None
    assert schedule.block_count(geom, path.per_row, workers, policy=policy) == 1
    assert schedule.block_count(geom, path.per_row, workers, backward=True, policy=policy) == min(workers, geom.output_length)
    ct = rng.standard_normal((2, geom.output_length, 6))
    f = backend_call("gemm", policy, stride=2, padding=5, groups=6)
    (y,), (gx, gw) = mx.vjp(f, [mx.array(x, mx.float32), mx.array(w, mx.float32)], [mx.array(ct, mx.float32)])
    np.testing.assert_allclose(np.array(y), ref.conv_transpose1d(x, w, None, 2, 5, 5, 1, 6), atol=1e-5)
    ex, ew, _ = ref.conv_transpose1d_vjp(x, w, ct, 2, 5, 5, 1, 6)
    np.testing.assert_allclose(np.array(gx), ex, atol=1e-5)
    np.testing.assert_allclose(np.array(gw), ew, atol=1e-4)


def test_term_chunks_cut_a_sum_into_the_fewest_even_runs():
    most = slabs.MAX_FUSED_TERMS
    for count in range(1, 40):
        runs = slabs.term_chunks(count)
        assert [i for run in runs for i in run] == list(range(count))  # every term once, in order
        assert len(runs) == -(-count // most)
        sizes = [len(run) for run in runs]
        assert max(sizes) <= most and max(sizes) - min(sizes) <= 1
        assert sizes == sorted(sizes, reverse=True)  # later runs also read the sum so far: the shorter ones


@pytest.mark.parametrize("count", [1, 5, 6, 7, 12, 13])
@pytest.mark.parametrize("compiled", [False, True])
def test_fused_sum_adds_in_order(count, compiled):
    # Terms of 1e8 and a few units: float32 sums them to other values when grouped otherwise.
    rng = np.random.default_rng(count)
    terms = [rng.choice([1e8, -1e8, 1.0, 3.0], size=(4, 33)).astype(np.float32) for _ in range(count)]
    expected = terms[0].copy()
    for t in terms[1:]:
        expected = (expected + t).astype(np.float32)
    fn = lambda *a: slabs.fused_sum(list(a))  # noqa: E731
    got = (mx.compile(fn) if compiled else fn)(*[mx.array(t) for t in terms])
    assert np.array_equal(np.array(got), expected)


def _check_depthwise(op, x, w, stride, left, right, dilation):
    """Values and gradients of a depthwise call on ``gemm`` against the float64 definition."""
    n, length, c = x.shape
    taps = w.shape[1]
    rng = np.random.default_rng(taps * 10 + stride)
    if op == "conv1d":
        fn = lambda a, b: md.conv1d(a, b, stride=stride, padding=(left, right), dilation=dilation,  # noqa: E731
                                    groups=c, backend="gemm")
        expected = ref.conv1d(x, w, stride=stride, left=left, right=right, dilation=dilation, groups=c)
        ct = rng.standard_normal(expected.shape)
        ex, ew, _ = ref.conv1d_vjp(x, w, ct, stride, left, right, dilation, c)
    else:
        fn = lambda a, b: md.conv_transpose1d(a, b, stride=stride, padding=left, dilation=dilation,  # noqa: E731
                                              groups=c, backend="gemm")
        expected = ref.conv_transpose1d(x, w, stride=stride, left=left, right=right, dilation=dilation, groups=c)
        ct = rng.standard_normal(expected.shape)
        ex, ew, _ = ref.conv_transpose1d_vjp(x, w, ct, stride, left, right, dilation, c)
    y, (gx, gw) = mx.vjp(fn, [mx.array(x), mx.array(w)], [mx.array(ct, mx.float32)])
    np.testing.assert_allclose(np.array(y[0]), expected, rtol=0, atol=atol(taps))
    np.testing.assert_allclose(np.array(gx), ex, rtol=0, atol=atol(taps * 4))
    np.testing.assert_allclose(np.array(gw), ew, rtol=0, atol=atol(n * length * 4))


@pytest.mark.parametrize("taps, stride, dilation, left, right", [
    (6, 1, 1, 2, 3), (7, 1, 2, 6, 6), (11, 2, 1, 5, 5), (13, 3, 1, 6, 6), (12, 2, 1, 5, 6), (24, 4, 1, 11, 12),
    (7, 1, 1, 6, 0),  # causal
    (3, 1, 1, 5, 4),  # more padding than the span: the input gradient's own padding is negative
    (1, 1, 1, 3, 0), (9, 2, 3, 0, 0)])
def test_long_depthwise_conv1d_matches_reference(taps, stride, dilation, left, right):
    """Depthwise ``conv1d`` with more taps than one fused kernel takes, and its gradients, on every padding form."""
    rng = np.random.default_rng(taps * 10 + stride + left)
    x = rng.standard_normal((2, 41, 6)).astype(np.float32)
    w = rng.standard_normal((6, taps, 1)).astype(np.float32)
    _check_depthwise("conv1d", x, w, stride, left, right, dilation)


@pytest.mark.parametrize("taps, stride, crop", [(6, 1, 2), (11, 2, 5), (16, 3, 6), (12, 2, 0), (24, 4, 10), (7, 1, 3)])
def test_long_depthwise_conv_transpose1d_matches_reference(taps, stride, crop):
    """Depthwise transposed calls of six slabs and more (several fused runs), values and gradients."""
    rng = np.random.default_rng(taps * 10 + stride)
    x = rng.standard_normal((2, 41, 6)).astype(np.float32)
    w = rng.standard_normal((6, taps, 1)).astype(np.float32)
    _check_depthwise("conv_transpose1d", x, w, stride, crop, crop, 1)
