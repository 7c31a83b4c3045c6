"""NaN and Inf in x, the weight or the bias land exactly where the float64 definition puts them.

The expected outputs come from the definition written with elementwise
products and sums only (no BLAS, whose kernels may skip zero factors), so
``Inf * 0 = NaN`` and ``Inf - Inf = NaN`` happen exactly where a product or a
sum of the definition makes them, and nowhere else: an output that no
product of a non-finite value reaches stays finite. Compared: the NaN,
+Inf and -Inf patterns, and the finite values.
"""

import dataclasses

import mlx.core as mx
import numpy as np
import pytest

import mlx_deconv as md
import reference as ref
from helpers import atol, backend_call, tiny_blocks
from mlx_deconv.backends.metal import emulator
from mlx_deconv.backends import builtin
from mlx_deconv.choice import rule
from mlx_deconv.backends.gemm import transposed_paths
from mlx_deconv.geometry.validation import conv1d_geometry, conv_geometry

NAN, INF = float("nan"), float("inf")
pytestmark = pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # NaN made on purpose


def transposed_definition(x, w, bias, stride, left, right, dilation, groups):
    """Scatter form of the transposed op: ``y[l*s + k*d - left] += x[l] * w[k]``, product by product."""
    n, length, _ = x.shape
    c_out, taps, cig = w.shape
    cog = c_out // groups
    full = (length - 1) * stride + dilation * (taps - 1) + 1
    out_len = full - left - right
    y = np.zeros((n, max(full, left + out_len), c_out))
    for g in range(groups):
        xg = x[:, :, None, g * cig:(g + 1) * cig]  # (N, L, 1, cig)
        for k in range(taps):
            products = (xg * w[None, None, g * cog:(g + 1) * cog, k, :]).sum(axis=-1)  # (N, L, cog)
            y[:, k * dilation:k * dilation + (length - 1) * stride + 1:stride, g * cog:(g + 1) * cog] += products
    y = y[:, left:left + out_len]
    return y if bias is None else y + bias


def conv1d_definition(x, w, bias, stride, left, right, dilation, groups):
    """``y[t] = sum_k x[t*s + k*d - left] * w[k]`` with ``x`` zero outside ``[0, L)``, product by product.

    The padding zeros are factors like any other (as in PyTorch, MLX and
    TensorFlow): a non-finite weight tap that reads them makes NaN.
    """
    n, length, _ = x.shape
    c_out, taps, cig = w.shape
    cog = c_out // groups
    padded = np.concatenate([np.zeros((n, left, x.shape[2])), x, np.zeros((n, right, x.shape[2]))], axis=1)
    out_len = (length + left + right - dilation * (taps - 1) - 1) // stride + 1
    y = np.zeros((n, out_len, c_out))
    for t in range(out_len):
        for k in range(taps):
            for g in range(groups):
                xr = padded[:, t * stride + k * dilation, None, g * cig:(g + 1) * cig]  # (N, 1, cig)
                y[:, t, g * cog:(g + 1) * cog] += (xr * w[None, g * cog:(g + 1) * cog, k, :]).sum(axis=-1)
    return y if bias is None else y + bias


# (x shape, w shape, stride, padding (left, right) of the definition, dilation, groups): a vocoder
# upsampler (winograd's domain), a K = 3*stride layer, a dense layer with K < stride (empty slots),
# an output extended past the full length, grouped, depthwise and dilated layers, and layers whose
# taps leave (shift, phase) slots of the slab paths empty.
TRANSPOSED = {
    "vocoder": ((1, 12, 4), (3, 4, 4), 2, (1, 1), 1, 1),
    "three rows": ((2, 10, 3), (4, 6, 3), 2, (2, 2), 1, 1),
    "K < stride": ((1, 9, 3), (2, 2, 3), 3, (0, 0), 1, 1),
    "extended": ((1, 8, 2), (2, 4, 2), 3, (1, -2), 1, 1),
    "grouped": ((1, 10, 4), (4, 4, 2), 2, (1, 1), 1, 2),
    "depthwise": ((2, 11, 3), (3, 5, 1), 2, (2, 2), 1, 3),
    "dilated": ((1, 9, 2), (3, 3, 2), 2, (1, 1), 2, 1),
    "one empty slot": ((1, 10, 3), (2, 7, 3), 2, (3, 3), 1, 1),
    "grouped empty slot": ((2, 9, 4), (4, 5, 2), 2, (2, 2), 1, 2),
    "depthwise sparse": ((1, 9, 2), (2, 2, 1), 5, (1, 1), 1, 2),
    "depthwise empty slot": ((1, 10, 2), (2, 3, 1), 2, (1, 1), 1, 2),
    "vocoder, long signal": ((1, 40, 4), (3, 4, 4), 2, (1, 1), 1, 1),
    "vocoder, short signal": ((1, 6, 24), (3, 4, 24), 2, (1, 1), 1, 1),
    "stride 1": ((1, 9, 3), (2, 4, 3), 1, (1, 1), 1, 1),
    "stride 1, one side": ((2, 8, 3), (3, 3, 3), 1, (0, 2), 1, 1),
}
CONV1D = {
    "dense": ((1, 14, 3), (4, 3, 3), 1, (1, 1), 1, 1),
    "strided": ((2, 15, 4), (3, 4, 4), 2, (2, 1), 1, 1),
    "grouped dilated": ((1, 16, 4), (4, 3, 2), 1, (2, 2), 2, 2),
    "strided dilated": ((2, 17, 3), (3, 3, 3), 2, (3, 1), 3, 1),
    "depthwise": ((1, 13, 3), (3, 5, 1), 2, (0, 3), 1, 3),
}


def poisoned(shape_x, shape_w, c_out, where, seed):
    """Random ``x, w, b`` (float32-representable) with non-finite values put as ``where`` says."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape_x).astype(np.float32).astype(np.float64)
    w = rng.standard_normal(shape_w).astype(np.float32).astype(np.float64)
    b = rng.standard_normal(c_out).astype(np.float32).astype(np.float64)
    n, length, c_in = shape_x
    if where == "x nan":
        x[-1, length // 2, c_in - 1] = NAN
    elif where == "x inf":
        x[0, 1, 0] = INF
        x[-1, length - 2, c_in - 1] = -INF
    elif where == "x inf meets -inf":  # neighbouring rows: where their taps meet, Inf - Inf = NaN
        x[0, length // 2, 0] = INF
        x[0, length // 2 + 1, 0] = -INF
    elif where == "x edges":  # first and last rows: outputs reached through the ends of the signal
        x[0, 0, :] = NAN
        x[-1, -1, 0] = INF
    elif where == "w nan":  # first and last taps: they reach the ends of the output
        w[0, 0, 0] = NAN
        w[-1, -1, -1] = NAN
    elif where == "w inf":
        w[-1, 0, -1] = INF
        w[0, -1, 0] = -INF
    elif where == "bias nan":
        b[0] = NAN
    elif where == "bias -inf":
        b[-1] = -INF
    return x, w, b


PLACES = ["x nan", "x inf", "x inf meets -inf", "x edges", "w nan", "w inf", "bias nan", "bias -inf"]


def assert_lands_as_defined(got, expected):
    got = np.asarray(got, np.float64)
    assert got.shape == expected.shape
    for name, test in (("NaN", np.isnan), ("+Inf", np.isposinf), ("-Inf", np.isneginf)):
        wrong = np.argwhere(test(got) != test(expected))
        assert wrong.size == 0, f"{name} pattern differs at (n, t, c) = {wrong[:6].tolist()}"
    finite = np.isfinite(expected)
    assert finite.any() or not expected.size
    np.testing.assert_allclose(got[finite], expected[finite], rtol=1e-5, atol=atol(64))


def test_definitions_agree_with_the_reference_on_finite_values():
    """The product-by-product forms here are the reference's maps (checked on finite inputs)."""
    for shape_x, shape_w, s, (left, right), d, g in TRANSPOSED.values():
        x, w, b = poisoned(shape_x, shape_w, shape_w[0], "none", 0)
        np.testing.assert_allclose(transposed_definition(x, w, b, s, left, right, d, g),
                                   ref.conv_transpose1d(x, w, b, s, left, right, d, g), atol=1e-12)
    for shape_x, shape_w, s, (left, right), d, g in CONV1D.values():
        x, w, b = poisoned(shape_x, shape_w, shape_w[0], "none", 0)
        np.testing.assert_allclose(conv1d_definition(x, w, b, s, left, right, d, g),
                                   ref.conv1d(x, w, b, s, left, right, d, g), atol=1e-12)


def test_each_place_reaches_some_outputs_and_spares_others():
    """The cases can fail: every poisoning makes some outputs non-finite and leaves some finite."""
    for shape_x, shape_w, s, (left, right), d, g in TRANSPOSED.values():
        for where in PLACES:
            x, w, b = poisoned(shape_x, shape_w, shape_w[0], where, 1)
            y = transposed_definition(x, w, b, s, left, right, d, g)
            assert (~np.isfinite(y)).any() and np.isfinite(y).any(), where


# Winograd's transforms add and subtract neighbouring input rows and weight taps before multiplying,
# so one Inf or NaN would reach outputs of its whole tile (Inf - Inf = NaN, Inf * 0 = NaN): the backend
# looks at the values and takes the gemm path when one is not finite. Inside mx.compile it cannot look,
# and the spread below is what it guarantees there. The bias is added after the transforms.
SPREAD_BY_TRANSFORMS = {"x nan", "x inf", "x inf meets -inf", "x edges", "w nan", "w inf"}


def _path_of(backend, name):
    shape_x, shape_w, s, (left, right), d, g = TRANSPOSED[name]
    geom, _ = conv_geometry(shape_x, shape_w, stride=s, padding=(left, max(right, 0)),
                            output_padding=max(-right, 0) or None, dilation=d, groups=g)
    return transposed_paths.path_for(geom, minimal_filtering=backend == "winograd")


def _geometry(name):
    shape_x, shape_w, s, (left, right), d, g = TRANSPOSED[name]
    geom, _ = conv_geometry(shape_x, shape_w, stride=s, padding=(left, max(right, 0)),
                            output_padding=max(-right, 0) or None, dilation=d, groups=g)
    return geom


def _transposed_params():
    for backend in ("auto", "builtin", "gemm", "winograd"):
        for name in TRANSPOSED:
            runs_on = rule.auto(_geometry(name), mx.default_stream(mx.cpu)) if backend == "auto" else backend
            if runs_on == "builtin" and builtin.multiplies_its_padding(_geometry(name)):
                continue  # MLX's op multiplies its own padding there: the documented exception, tested below
            for where in PLACES:
                yield pytest.param(backend, name, where, id=f"{backend}-{name}-{where}")


def _nan_count(op, x, w, backend, kwargs) -> int:
    """NaN outputs of ``op`` on float32 ``x`` and ``w`` (no bias) on ``backend``."""
    y = op(mx.array(x, mx.float32), mx.array(w, mx.float32), None, backend=backend, **kwargs)
    return int(np.isnan(np.array(y, np.float64)).sum())


@pytest.mark.parametrize("name", ["stride 1", "stride 1, one side"])
def test_mlx_s_transposed_op_multiplies_its_own_padding_as_the_guarantees_say(name):
    """docs/guarantees.md's one exception: MLX's op, on a stride-1 dense undilated call whose crop is below ``K - 1``,
    gives NaN at an edge an infinite weight tap reaches only through its own padding; ``gemm`` keeps the definition's
    finite value there, and ``auto`` takes MLX's op for such calls only while they are short."""
    geom = _geometry(name)
    shape_x, shape_w, s, (left, right), d, g = TRANSPOSED[name]
    x, w, b = poisoned(shape_x, shape_w, shape_w[0], "w inf", 2)
    kwargs = dict(stride=s, padding=(left, right), dilation=d, groups=g)
    expected = transposed_definition(x, w, None, s, left, right, d, g)
    count = lambda backend: _nan_count(md.conv_transpose1d, x, w, backend, kwargs)  # noqa: E731

    assert builtin.multiplies_its_padding(geom)
    assert count("builtin") > np.isnan(expected).sum() == count("gemm")
    long = dataclasses.replace(geom, batch=1, length=2048, in_channels=96, out_channels=96,
                               output_length=geom.output_length - geom.length + 2048)
    assert rule.auto(long, mx.default_stream(mx.cpu)) != "builtin"


@pytest.mark.parametrize("backend, name, where", list(_transposed_params()))
def test_transposed_nonfinite_lands_as_defined(backend, name, where):
    shape_x, shape_w, s, (left, right), d, g = TRANSPOSED[name]
    x, w, b = poisoned(shape_x, shape_w, shape_w[0], where, 2)
    y = md.conv_transpose1d(mx.array(x, mx.float32), mx.array(w, mx.float32), mx.array(b, mx.float32),
                            stride=s, padding=(left, max(right, 0)), output_padding=max(-right, 0) or None,
                            dilation=d, groups=g, backend=backend)
    assert_lands_as_defined(np.array(y, np.float64), transposed_definition(x, w, b, s, left, right, d, g))


def _conv1d_geometry(name):
    shape_x, shape_w, s, (left, right), d, g = CONV1D[name]
    return conv1d_geometry(shape_x, shape_w, stride=s, padding=(left, right), dilation=d, groups=g)[0]


def _conv1d_params():
    for backend in md.available_backends(op="conv1d"):
        for name in CONV1D:
            for where in PLACES:
                if (backend == "builtin" and where.startswith("w ")
                        and builtin.skips_padding_products(_conv1d_geometry(name))):
                    continue  # MLX's loop leaves out its padding's products: the exception, tested below
                yield pytest.param(backend, name, where, id=f"{backend}-{name}-{where}")


@pytest.mark.parametrize("name", ["grouped dilated", "strided dilated"])
def test_mlx_s_dilated_conv1d_leaves_out_its_padding_as_the_guarantees_say(name):
    """docs/guarantees.md's second exception: MLX's dilated ``conv1d`` loop visits real input rows only, so an
    infinite weight tap that reads only padding leaves an edge output finite where the definition has NaN
    (0 * Inf); ``gemm`` keeps the definition's NaN there. A grouped call padded unevenly is padded first."""
    shape_x, shape_w, s, (left, right), d, g = CONV1D[name]
    x, w, b = poisoned(shape_x, shape_w, shape_w[0], "w inf", 3)
    kwargs = dict(stride=s, padding=(left, right), dilation=d, groups=g)
    expected = conv1d_definition(x, w, None, s, left, right, d, g)
    count = lambda backend: _nan_count(md.conv1d, x, w, backend, kwargs)  # noqa: E731

    assert builtin.skips_padding_products(_conv1d_geometry(name))
    assert count("builtin") < np.isnan(expected).sum() == count("gemm")
    uneven, _ = conv1d_geometry((1, 16, 4), (4, 3, 2), padding=(3, 1), dilation=2, groups=2)
    assert builtin.pads_input(uneven) and not builtin.skips_padding_products(uneven)


@pytest.mark.parametrize("backend,name,where", list(_conv1d_params()))
def test_conv1d_nonfinite_lands_as_defined(backend, name, where):
    shape_x, shape_w, s, (left, right), d, g = CONV1D[name]
    x, w, b = poisoned(shape_x, shape_w, shape_w[0], where, 3)
    y = md.conv1d(mx.array(x, mx.float32), mx.array(w, mx.float32), mx.array(b, mx.float32),
                  stride=s, padding=(left, right), dilation=d, groups=g, backend=backend)
    assert_lands_as_defined(np.array(y, np.float64), conv1d_definition(x, w, b, s, left, right, d, g))


@pytest.mark.skipif(emulator.compiler() is None, reason="no C++ compiler for the Metal emulator")
@pytest.mark.parametrize("where", ["x inf meets -inf", "x edges", "w nan", "w inf", "bias nan"])
@pytest.mark.parametrize("name", ["vocoder", "extended", "depthwise"])
def test_metal_kernel_nonfinite_lands_as_defined(name, where):
    """The Metal kernel (emulated on the CPU) gathers only the products that exist."""
    shape_x, shape_w, s, (left, right), d, g = TRANSPOSED[name]
    x, w, b = poisoned(shape_x, shape_w, shape_w[0], where, 4)
    geom, _ = conv_geometry(shape_x, shape_w, stride=s, padding=(left, max(right, 0)),
                            output_padding=max(-right, 0) or None, dilation=d, groups=g)
    y = emulator.run(mx.array(x, mx.float32), mx.array(w, mx.float32), mx.array(b, mx.float32), geom)
    assert_lands_as_defined(np.array(y, np.float64), transposed_definition(x, w, b, s, left, right, d, g))


def test_cases_cover_both_dense_slab_paths():
    """The two vocoder cases take the two dense slab paths, so both are poisoned above."""
    assert isinstance(_path_of("gemm", "vocoder, long signal"), transposed_paths.DenseSlabs)
    assert isinstance(_path_of("gemm", "vocoder, short signal"), transposed_paths.WeightOrderSlabs)


@pytest.mark.parametrize("where", ["x nan", "x inf meets -inf", "w nan", "w inf"])
@pytest.mark.parametrize("name", ["vocoder", "vocoder, long signal", "vocoder, short signal", "three rows", "one empty slot", "grouped empty slot", "depthwise",
                                  "depthwise empty slot", "K < stride"])
@pytest.mark.parametrize("backend", ["gemm", "winograd"])
def test_nonfinite_across_block_edges(backend, name, where):
    """Tiny blocks on every worker stream: each block's own edges and padding rows, not only the signal's."""
    shape_x, shape_w, s, (left, right), d, g = TRANSPOSED[name]
    shape_x = (shape_x[0], 3 * shape_x[1], shape_x[2])
    x, w, b = poisoned(shape_x, shape_w, shape_w[0], where, 5)
    x[0, shape_x[1] // 3, 0] = NAN if where == "x nan" else x[0, shape_x[1] // 3, 0]
    call = backend_call(backend, tiny_blocks(16), stride=s, padding=(left, max(right, 0)),
                        output_padding=max(-right, 0) or None, dilation=d, groups=g)
    y = call(mx.array(x, mx.float32), mx.array(w, mx.float32), mx.array(b, mx.float32))
    assert_lands_as_defined(np.array(y, np.float64), transposed_definition(x, w, b, s, left, right, d, g))


@pytest.mark.parametrize("where", sorted(SPREAD_BY_TRANSFORMS))
@pytest.mark.parametrize("name", [n for n in TRANSPOSED if isinstance(_path_of("winograd", n), transposed_paths.WinogradSlabs)])
def test_winograd_spread_stays_within_a_tile_inside_compile(name, where):
    """What winograd guarantees where it cannot look at the values (inside mx.compile): every output the
    definition makes non-finite is non-finite (an Inf may come out NaN); the extra non-finite outputs
    lie within one tile of such an output; every other output is the definition's finite value."""
    shape_x, shape_w, s, (left, right), d, g = TRANSPOSED[name]
    shape_x = (shape_x[0], 40, shape_x[2])
    path = _path_of("winograd", name)
    span = (path.tile + len(path.shifts)) * s  # output samples one tile's input rows reach
    x, w, b = poisoned(shape_x, shape_w, shape_w[0], where, 6)
    op = mx.compile(lambda x, w, b: md.conv_transpose1d(
        x, w, b, stride=s, padding=(left, max(right, 0)), output_padding=max(-right, 0) or None,
        dilation=d, groups=g, backend="winograd"))
    y = np.array(op(mx.array(x, mx.float32), mx.array(w, mx.float32), mx.array(b, mx.float32)), np.float64)
    expected = transposed_definition(x, w, b, s, left, right, d, g)
    defined, got = ~np.isfinite(expected), ~np.isfinite(y)
    assert not (defined & ~got).any(), "a non-finite output of the definition came out finite"
    for n, t, _ in np.argwhere(got & ~defined):
        nearest = np.abs(np.flatnonzero(defined[n].any(axis=-1)) - t).min()
        assert nearest <= span, f"a non-finite value reached {nearest} samples away (a tile spans {span})"
    both = np.isinf(expected) & np.isinf(y)
    assert (np.sign(y[both]) == np.sign(expected[both])).all()
    finite = ~defined & ~got
    np.testing.assert_allclose(y[finite], expected[finite], rtol=1e-5, atol=atol(64))
