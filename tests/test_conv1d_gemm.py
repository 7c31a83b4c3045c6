"""``conv1d`` on the gemm paths (backends/conv1d_paths.py): values and gradients against the float64 reference.

Calls go straight to the backend with a block policy, so tiny tensors are cut
into many blocks shared by the worker streams, and through ``md.conv1d`` for
the layouts and the prepared-call cache.
"""

import mlx.core as mx
import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

import mlx_deconv as md
import reference as ref
from helpers import atol, peak_above, tiny_blocks
from mlx_deconv import backends
from mlx_deconv.choice import choose, rule
from mlx_deconv.backends.gemm import conv1d_paths, schedule
from mlx_deconv.backends.gemm.schedule import DEFAULT_POLICY, BlockPolicy
from mlx_deconv.geometry.validation import conv1d_geometry

POLICIES = st.sampled_from([DEFAULT_POLICY, tiny_blocks(16), tiny_blocks(64), tiny_blocks(1),
                            tiny_blocks(16, unfold_max_rows=1 << 30),
                            tiny_blocks(16, unfold_vjp_max_elements=1 << 30)])


@st.composite
def direct_cases(draw):
    """``(x, w, b, kwargs)``: float64 arrays and the op's geometry arguments."""
    groups = draw(st.sampled_from([1, 1, 2, 3]))
    if draw(st.integers(0, 3)) == 0:
        in_per_group = 1  # depthwise (out_per_group 1) or a channel multiplier
    else:
        in_per_group = draw(st.integers(2, 4))
    out_per_group = draw(st.integers(1, 3))
    taps = draw(st.integers(1, 6))
    stride = draw(st.integers(1, 4))
    dilation = draw(st.integers(1, 4))
    length = draw(st.integers(1, 25))
    form = draw(st.sampled_from(["int", "pair", "valid", "same", "causal"]))
    padding = {"int": lambda: draw(st.integers(0, 4)),
               "pair": lambda: (draw(st.integers(0, 5)), draw(st.integers(0, 5)))}.get(form, lambda: form)()
    left, right = ref.conv1d_pads(padding, length, taps, stride, dilation)
    assume(dilation * (taps - 1) + 1 <= length + left + right)
    rng = np.random.default_rng(draw(st.integers(0, 2**31 - 1)))
    batch = draw(st.integers(1, 3))
    x = rng.standard_normal((batch, length, groups * in_per_group))
    w = rng.standard_normal((groups * out_per_group, taps, in_per_group))
    b = rng.standard_normal(groups * out_per_group)
    return x, w, b, dict(stride=stride, padding=padding, dilation=dilation, groups=groups)


def expected(x, w, b, kwargs):
    left, right = ref.conv1d_pads(kwargs["padding"], x.shape[1], w.shape[1], kwargs["stride"], kwargs["dilation"])
    return ref.conv1d(x, w, b, kwargs["stride"], left, right, kwargs["dilation"], kwargs["groups"]), (left, right)


def run_gemm(x, w, b, kwargs, policy):
    geom, _ = conv1d_geometry(x.shape, w.shape, **kwargs)
    return backends.BACKENDS["gemm"].conv1d(x, w, b, geom, policy=policy)


@given(case=direct_cases(), policy=POLICIES)
def test_values_match_reference(case, policy):
    x, w, b, kwargs = case
    want, _ = expected(x, w, b, kwargs)
    y = run_gemm(mx.array(x, mx.float32), mx.array(w, mx.float32), mx.array(b, mx.float32), kwargs, policy)
    np.testing.assert_allclose(np.array(y), want, rtol=0, atol=atol(w.shape[1] * w.shape[2]))


@given(case=direct_cases(), policy=POLICIES)
def test_gradients_match_reference(case, policy):
    x, w, b, kwargs = case
    want, (left, right) = expected(x, w, b, kwargs)
    ct = np.random.default_rng(x.size).standard_normal(want.shape)
    primals = [mx.array(a, mx.float32) for a in (x, w, b)]
    _, grads = mx.vjp(lambda xx, ww, bb: run_gemm(xx, ww, bb, kwargs, policy), primals, [mx.array(ct, mx.float32)])
    gx, gw, gb = (np.array(g) for g in grads)
    ex, ew, eb = ref.conv1d_vjp(x, w, ct, kwargs["stride"], left, right, kwargs["dilation"], kwargs["groups"])
    out_per_group = w.shape[0] // kwargs["groups"]
    np.testing.assert_allclose(gx, ex, rtol=0, atol=atol(w.shape[1] * out_per_group))
    # A weight gradient sums N*L_out products and can be large: float32 rounding is relative there.
    np.testing.assert_allclose(gw, ew, rtol=1e-6, atol=atol(ct.shape[0] * ct.shape[1]))
    np.testing.assert_allclose(gb, eb, rtol=0, atol=atol(ct.shape[0] * ct.shape[1]))


@given(case=direct_cases(), dtype=st.sampled_from([mx.float16, mx.bfloat16]), data_format=st.sampled_from(["NLC", "NCL"]))
def test_half_precision_and_layouts_through_the_op(case, dtype, data_format):
    x, w, b, kwargs = case
    want, _ = expected(x, w, b, kwargs)
    xin = x if data_format == "NLC" else x.transpose(0, 2, 1)
    y = md.conv1d(mx.array(xin, dtype), mx.array(w, dtype), mx.array(b, dtype), **kwargs,
                  data_format=data_format, backend="gemm")
    assert y.dtype == dtype
    y = np.array(y.astype(mx.float32), dtype=np.float64)
    if data_format == "NCL":
        y = y.transpose(0, 2, 1)
    # Inputs are rounded to the half type, then summed in float32: the rounding of the inputs dominates.
    np.testing.assert_allclose(y, want, rtol=0, atol=atol(w.shape[1] * w.shape[2], dtype))


@pytest.mark.parametrize("w_shape, kwargs, path", [
    ((8, 3, 8), dict(dilation=5), conv1d_paths.DirectSlabs),  # dense, stride 1, dilated: K matmuls on row views
    ((8, 8, 8), dict(stride=4), conv1d_paths.DirectSlabs),  # strided, K a multiple of the stride
    ((8, 3, 8), dict(stride=4), conv1d_paths.DirectPlanes),  # strided, sparse slots
    ((8, 5, 4), dict(groups=2, dilation=3), conv1d_paths.DirectSlabs),  # grouped
    ((8, 5, 1), dict(groups=8, dilation=3), conv1d_paths.DirectDepthwise),  # depthwise
    ((16, 5, 1), dict(groups=8, stride=2), conv1d_paths.DirectDepthwise),  # channel multiplier
])
def test_each_kind_of_layer_takes_its_path(w_shape, kwargs, path):
    geom, _ = conv1d_geometry((2, 1200, 8), w_shape, **kwargs)  # past unfold_max_rows
    assert type(conv1d_paths.path_for(geom)) is path


@pytest.mark.parametrize("w_shape, kwargs", [((8, 3, 8), dict(dilation=5)), ((8, 3, 8), dict(stride=4)),
                                             ((8, 8, 8), dict(stride=4))])
def test_short_dense_signals_unfold_and_long_ones_do_not(w_shape, kwargs):
    short, _ = conv1d_geometry((2, 40, 8), w_shape, **kwargs)
    assert type(conv1d_paths.path_for(short)) is conv1d_paths.DirectUnfolded
    assert type(conv1d_paths.path_for(short, tiny_blocks(unfold_max_rows=short.batch * short.output_length - 1))) is not conv1d_paths.DirectUnfolded
    grouped, _ = conv1d_geometry((2, 40, 8), (8, 3, 4), groups=2, **kwargs)
    assert type(conv1d_paths.path_for(grouped)) is not conv1d_paths.DirectUnfolded


def test_dense_stride1_layers_take_the_unfolded_gradient_while_their_columns_fit():
    """Dense stride-1 layers take the two-computation gradient (the input's as a forward conv1d, the weight's as
    one matmul) while their column matrix fits the policy; strided, grouped, one-tap and longer ones the
    transposed op's blocks."""
    fits = conv1d_paths.unfolded_vjp_fits
    assert fits(conv1d_geometry((2, 1024, 8), (8, 11, 8), padding=25, dilation=5)[0])
    assert fits(conv1d_geometry((2, 64, 64), (64, 3, 64), padding=1)[0])
    assert fits(conv1d_geometry((1, 688, 256), (256, 11, 256), padding=25, dilation=5)[0])  # 1 GFLOP, 1.9 M columns
    assert not fits(conv1d_geometry((2, 64, 8), (8, 4, 8), stride=2)[0])
    assert not fits(conv1d_geometry((2, 64, 8), (8, 3, 4), groups=2)[0])
    assert not fits(conv1d_geometry((2, 64, 8), (8, 1, 8))[0])  # one tap: a plain matmul already
    wide, _ = conv1d_geometry((4, 8192, 32), (32, 11, 32), padding=25, dilation=5)  # 11.5 M column elements
    assert not fits(wide)
    assert fits(wide, BlockPolicy(unfold_vjp_max_elements=1 << 40))


def test_input_gradient_geometry_is_the_adjoint():
    """<conv1d(x, w), ct> == <x, conv1d(ct, w reversed and transposed)> with the adjoint's padding, padding past the
    span (a negative adjoint pad) included."""
    rng = np.random.default_rng(3)
    for x_shape, w_shape, kwargs in (((2, 17, 3), (5, 4, 3), dict(padding=(2, 5), dilation=2)),
                                     ((1, 9, 3), (6, 5, 3), dict(padding=(13, 1), dilation=3))):
        geom, _ = conv1d_geometry(x_shape, w_shape, **kwargs)
        adj = conv1d_paths.input_gradient_geometry(geom)
        x, w = rng.standard_normal(x_shape), rng.standard_normal(w_shape)
        ct = rng.standard_normal((geom.batch, geom.output_length, geom.out_channels))
        y = ref.conv1d(x, w, None, 1, geom.pad_left, geom.pad_right, geom.dilation, 1)
        dx = ref.conv1d(ct, w[:, ::-1, :].transpose(2, 1, 0), None, 1, adj.pad_left, adj.pad_right, adj.dilation, 1) \
            if adj.pad_left >= 0 else ref.conv1d(ct[:, -adj.pad_left:], w[:, ::-1, :].transpose(2, 1, 0), None, 1, 0,
                                                 adj.pad_right, adj.dilation, 1)
        assert dx.shape == x.shape
        np.testing.assert_allclose(np.sum(y * ct), np.sum(x * dx), rtol=1e-10)


@pytest.mark.parametrize("dtype", [mx.float32, mx.float16])
@pytest.mark.parametrize("x_shape, w_shape, kwargs", [
    ((2, 300, 8), (8, 11, 8), dict(padding=25, dilation=5)),  # BigVGAN's late stages
    ((3, 17, 5), (7, 4, 5), dict(padding=(0, 6), dilation=3)),  # asymmetric, C_in != C_out
    ((1, 9, 3), (6, 5, 3), dict(padding=(13, 1), dilation=3)),  # padding past the span: cotangent rows cropped
    ((2, 6, 3), (4, 3, 3), dict(padding=(0, 9), dilation=2)),  # ... on the right
    ((2, 33, 6), (4, 7, 6), dict(padding="causal", dilation=2)),
])
@pytest.mark.parametrize("shared", [False, True])
def test_unfolded_gradient_matches_reference(x_shape, w_shape, kwargs, dtype, shared, monkeypatch):
    """Both gradients of the unfolded form against the float64 definition; ``shared``: the weight's split by output
    channel between two workers, and the input's conv1d on its forward path's workers."""
    policy = DEFAULT_POLICY
    if shared:
        monkeypatch.setattr(schedule, "worker_streams", lambda stream, most: [stream, mx.new_stream(mx.cpu)])
        policy = BlockPolicy(parallel_min_flops=0)
    kwargs = dict(dict(stride=1, dilation=1, groups=1), **kwargs)
    rng = np.random.default_rng(sum(x_shape))
    x, w, b = rng.standard_normal(x_shape), rng.standard_normal(w_shape), rng.standard_normal(w_shape[0])
    geom, _ = conv1d_geometry(x_shape, w_shape, **kwargs)
    assert conv1d_paths.unfolded_vjp_fits(geom)
    want, (left, right) = expected(x, w, b, kwargs)
    ct = rng.standard_normal(want.shape)
    cast = [mx.array(a).astype(dtype) for a in (x, w, b, ct)]
    _, grads = mx.vjp(lambda xx, ww, bb: run_gemm(xx, ww, bb, kwargs, policy), cast[:3], [cast[3]])
    # The reference takes the rounded inputs, so only the computation's own rounding remains.
    xr, wr, ctr = (np.array(a.astype(mx.float32)).astype(np.float64) for a in (cast[0], cast[1], cast[3]))
    ex, ew, eb = ref.conv1d_vjp(xr, wr, ctr, 1, left, right, kwargs["dilation"], 1)
    gx, gw, gb = (np.array(g.astype(mx.float32)) for g in grads)
    np.testing.assert_allclose(gx, ex, rtol=0, atol=atol(w_shape[1] * w_shape[0], dtype))
    np.testing.assert_allclose(gw, ew, rtol=0, atol=atol(ct.shape[0] * ct.shape[1], dtype))
    np.testing.assert_allclose(gb, eb, rtol=0, atol=atol(ct.shape[0] * ct.shape[1], dtype))


@st.composite
def weight_heavy_cases(draw):
    """Dense calls with at most as many output rows as output channels, as a streaming step's first stages
    (``K > 1``: the unfolded path's)."""
    c_out = draw(st.integers(2, 12))
    taps, stride, dilation = draw(st.integers(2, 5)), draw(st.integers(1, 3)), draw(st.integers(1, 3))
    batch = draw(st.integers(1, 2))
    padding = draw(st.sampled_from([0, 2, (3, 0), "same", "causal"]))
    if padding == "same":
        stride = 1
    length = draw(st.integers(1, 12))
    left, right = ref.conv1d_pads(padding, length, taps, stride, dilation)
    assume(dilation * (taps - 1) + 1 <= length + left + right)
    assume(batch * ((length + left + right - dilation * (taps - 1) - 1) // stride + 1) <= c_out)
    rng = np.random.default_rng(draw(st.integers(0, 2**31 - 1)))
    x = rng.standard_normal((batch, length, draw(st.integers(1, 6))))
    w = rng.standard_normal((c_out, taps, x.shape[2]))
    return x, w, dict(stride=stride, padding=padding, dilation=dilation, groups=1)


@given(case=weight_heavy_cases(), workers=st.integers(2, 3))
def test_short_weight_heavy_calls_shared_by_output_channel_match_reference(case, workers):
    x, w, kwargs = case
    want, _ = expected(x, w, np.zeros(w.shape[0]), kwargs)
    geom, _ = conv1d_geometry(x.shape, w.shape, **kwargs)
    streams = [mx.default_stream(mx.cpu)] + [mx.new_stream(mx.cpu) for _ in range(workers - 1)]
    y = conv1d_paths.by_output_channels(mx.array(x, mx.float32), mx.array(w, mx.float32), geom, streams)
    np.testing.assert_allclose(np.array(y), want, rtol=0, atol=atol(w.shape[1] * w.shape[2]))


def test_short_weight_heavy_calls_are_shared_by_output_channel(monkeypatch):
    """Where the weight outweighs the columns (rows <= C_out), the workers share the output channels, not the rows;
    longer calls keep their row blocks."""
    shared = []
    real = conv1d_paths.by_output_channels
    monkeypatch.setattr(conv1d_paths, "by_output_channels", lambda *a: shared.append(a[2]) or real(*a))
    monkeypatch.setattr(schedule, "worker_streams", lambda stream, most: [stream, mx.new_stream(mx.cpu)])
    policy = BlockPolicy(parallel_min_flops=0)
    rng = np.random.default_rng(5)
    for length, c_out, taken in ((16, 24, True), (40, 24, False)):
        x, w = rng.standard_normal((1, length, 8)), rng.standard_normal((c_out, 3, 8))
        kwargs = dict(stride=1, padding=1, dilation=1, groups=1)
        y = run_gemm(mx.array(x, mx.float32), mx.array(w, mx.float32), None, kwargs, policy)
        np.testing.assert_allclose(np.array(y), expected(x, w, np.zeros(c_out), kwargs)[0], rtol=0, atol=atol(24))
        assert bool(shared) == taken
        shared.clear()


def test_tiny_policy_cuts_many_blocks():
    geom, _ = conv1d_geometry((2, 40, 8), (8, 3, 8), dilation=2)
    path = conv1d_paths.path_for(geom, tiny_blocks(16))
    assert schedule.direct_block_count(geom, path.per_row, 2, tiny_blocks(16)) == geom.output_length
    assert schedule.direct_block_count(geom, path.per_row, 2, DEFAULT_POLICY) == 1


def test_auto_picks_gemm_on_the_cpu():
    """MLX's CPU op loops naively for a dilation > 1: from a few hundred kFLOP on, the matmul path wins."""
    geom, _ = conv1d_geometry((1, 1000, 32), (32, 3, 32), dilation=3)
    assert choose(geom, mx.default_stream(mx.cpu), "auto").name == "gemm"
    assert "winograd" not in backends.available_backends(mx.default_stream(mx.cpu), "conv1d")
    with pytest.raises(ValueError, match="winograd"):
        choose(geom, mx.default_stream(mx.cpu), "winograd").name


@pytest.mark.parametrize("x_shape, w_shape, kwargs", [
    ((1, 100, 8), (8, 3, 8), dict(dilation=3)),          # a tiny dilated call: MLX's loop is cheaper
    ((1, 16, 512), (512, 7, 512), dict(padding=3)),     # MLX's op is one matmul on a short signal
    ((1, 1, 1), (1, 1, 1), {}),
])
def test_auto_keeps_mlx_op_where_it_is_faster(x_shape, w_shape, kwargs):
    geom, _ = conv1d_geometry(x_shape, w_shape, **kwargs)
    assert choose(geom, mx.default_stream(mx.cpu), "auto").name == "builtin"


@pytest.mark.parametrize("x_shape, channels, taps, blas, gemm", [
    ((1, 2048, 16), 16, 3, "optimized", True),      # long: the workers share the rows
    ((1, 1024, 8), 8, 7, "optimized", False),       # ... but not on fewer than 16 channels
    ((1, 512, 128), 128, 3, "optimized", True),     # wide from 512 rows
    ((1, 512, 64), 64, 11, "optimized", False),     # ... not below 128 channels
    ((1, 64, 512), 512, 3, "optimized", True),      # very wide and worth splitting
    ((1, 64, 256), 256, 3, "optimized", False),     # very wide, too little work
    ((1, 16, 512), 512, 11, "optimized", False),    # too few rows
    ((1, 64, 128), 128, 11, "reference", True),     # behind the reference BLAS: from 2e7 FLOPs
    ((1, 64, 128), 128, 7, "reference", False),
])
def test_dense_undilated_conv1d_goes_to_gemm_where_it_measured_faster(x_shape, channels, taps, blas, gemm):
    geom, _ = conv1d_geometry(x_shape, (channels, taps, x_shape[-1]), padding="same")
    assert rule.dense_conv1d_gemm_pays(geom, blas) is gemm
    assert rule.builtin_is_faster(geom, blas) is not gemm
    grouped, _ = conv1d_geometry(x_shape, (channels, taps, x_shape[-1] // 2), padding="same", groups=2)
    assert rule.builtin_is_faster(grouped, blas) == (grouped.batch * grouped.output_length < 512
                                                         or grouped.in_per_group < 64)  # grouped: the older rule


@pytest.mark.parametrize("groups", [1, 4])
def test_no_im2col_copy(groups):
    """A long dilated conv1d: peak memory stays near input + output, far below the K-fold
    copy an im2col would make."""
    length, channels, taps = 20000, 32, 11
    x = mx.random.normal((1, length, channels), key=mx.random.key(0))
    w = mx.random.normal((channels, taps, channels // groups), key=mx.random.key(1))
    mx.eval(x, w)
    policy = BlockPolicy(chunk_elements=1 << 16)
    above, y = peak_above(lambda: run_gemm(x, w, None, dict(dilation=5, padding="same", groups=groups), policy))
    im2col = taps * x.nbytes
    assert above < 2 * (x.nbytes + y.nbytes) + 16 * 4 * policy.chunk_elements < 0.6 * im2col, (above, im2col)


def test_edge_shapes():
    """One output sample; a kernel as long as the padded input; a single input row."""
    rng = np.random.default_rng(1)
    for length, taps, kwargs in [(5, 5, dict()), (1, 3, dict(padding=1)), (7, 2, dict(stride=9, padding=(0, 2))),
                                 (4, 3, dict(dilation=3, padding="causal"))]:
        x, w = rng.standard_normal((2, length, 4)), rng.standard_normal((3, taps, 4))
        kwargs = {**dict(stride=1, padding=0, dilation=1, groups=1), **kwargs}
        want, _ = expected(x, w, None, kwargs)
        y = run_gemm(mx.array(x, mx.float32), mx.array(w, mx.float32), None, kwargs, tiny_blocks(8))
        np.testing.assert_allclose(np.array(y), want, rtol=0, atol=atol(taps * 4))


def test_a_short_dilated_padded_layer_is_not_taken_for_mlx_s_padding_free_loop():
    """On a few input rows MLX's loop skips padding, so thin limits apply; but not to a padded dilated
    ``conv1d``, whose loop is slow all the same: 4 rows x 128 channels, K=3, dilation 3 took 0.28 ms on
    ``builtin`` and 0.11 ms on ``gemm`` (AMD EPYC)."""
    from mlx_deconv.backends import builtin

    geom, _ = conv1d_geometry((1, 4, 128), (128, 3, 128), padding=3, dilation=3)
    assert builtin.skips_padding_products(geom) and not builtin.pads_input(geom)
    assert not rule.builtin_is_faster(geom, "optimized")
    assert choose(geom, mx.default_stream(mx.cpu)).name == "gemm"
    unpadded, _ = conv1d_geometry((1, 4, 128), (128, 3, 128), padding=3, dilation=1)
    assert not builtin.skips_padding_products(unpadded)
