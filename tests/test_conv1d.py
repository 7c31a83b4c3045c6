"""``conv1d`` against the float64 definition: values, gradients, padding forms, PyTorch."""

from __future__ import annotations

from dataclasses import dataclass

import mlx.core as mx
import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import mlx_deconv as md
import reference as ref
from helpers import atol
from mlx_deconv.geometry.records import padding_follows_length
from mlx_deconv.geometry.validation import conv1d_geometry

DTYPES = [mx.float32, mx.float16, mx.bfloat16]


BACKENDS = md.available_backends(op="conv1d")


@dataclass
class Case:
    batch: int
    length: int
    groups: int
    in_per_group: int
    out_per_group: int
    taps: int
    stride: int
    dilation: int
    padding: object
    use_bias: bool
    seed: int

    @property
    def in_channels(self):
        return self.groups * self.in_per_group

    @property
    def out_channels(self):
        return self.groups * self.out_per_group

    def pads(self):
        return ref.conv1d_pads(self.padding, self.length, self.taps, self.stride, self.dilation)

    def arrays(self):
        rng = np.random.default_rng(self.seed)
        x = rng.standard_normal((self.batch, self.length, self.in_channels))
        w = rng.standard_normal((self.out_channels, self.taps, self.in_per_group))
        b = rng.standard_normal(self.out_channels) if self.use_bias else None
        return x, w, b

    def expected(self, x, w, b):
        left, right = self.pads()
        return ref.conv1d(x, w, b, self.stride, left, right, self.dilation, self.groups)

    def kwargs(self):
        return dict(stride=self.stride, padding=self.padding, dilation=self.dilation, groups=self.groups)


@st.composite
def cases(draw, max_length=14):
    groups = draw(st.sampled_from([1, 1, 2, 3, 4]))
    if draw(st.integers(0, 3)) == 0:
        in_per_group = out_per_group = 1  # depthwise
    else:
        in_per_group = draw(st.integers(1, 4))
        out_per_group = draw(st.integers(1, 4))
    form = draw(st.sampled_from(["int", "pair", "valid", "same", "causal"]))
    if form == "int":
        padding = draw(st.integers(0, 4))
    elif form == "pair":
        padding = (draw(st.integers(0, 5)), draw(st.integers(0, 5)))
    else:
        padding = form
    case = Case(
        batch=draw(st.integers(1, 3)),
        length=draw(st.integers(1, max_length)),
        groups=groups,
        in_per_group=in_per_group,
        out_per_group=out_per_group,
        taps=draw(st.integers(1, 7)),
        stride=draw(st.integers(1, 5)),
        dilation=draw(st.integers(1, 4)),
        padding=padding,
        use_bias=draw(st.booleans()),
        seed=draw(st.integers(0, 2**31 - 1)),
    )
    left, right = case.pads()
    assume(ref.conv1d_output_length(case.length, case.taps, case.stride, left, right, case.dilation) >= 1)
    return case


def rounded(a, dtype):
    """The float64 values an array holds once cast to ``dtype``."""
    return None if a is None else np.array(mx.array(a, dtype=mx.float32).astype(dtype).astype(mx.float32), np.float64)


def to_layout(x, w, data_format, weight_format, batched):
    """NLC numpy ``x`` and MLX-layout ``w`` in the layouts asked for."""
    if data_format == "NCL":
        x = x.transpose(0, 2, 1)
    if not batched:
        x = x[0]
    if weight_format == "torch":
        w = ref.torch_conv1d_weight(w)
    return x, w


def from_layout(y, data_format, batched):
    y = np.array(y.astype(mx.float32), np.float64)
    if not batched:
        y = y[None]
    return y.transpose(0, 2, 1) if data_format == "NCL" else y


# -- values ----------------------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
@settings(max_examples=60)
@given(case=cases(), dtype=st.sampled_from(DTYPES), data_format=st.sampled_from(["NLC", "NCL"]),
       weight_format=st.sampled_from(["mlx", "torch"]), unbatched=st.booleans())
def test_values_match_reference(backend, case, dtype, data_format, weight_format, unbatched):
    x, w, b = case.arrays()
    batched = not (unbatched and case.batch == 1)
    x, w, b = rounded(x, dtype), rounded(w, dtype), rounded(b, dtype)
    expected = case.expected(x, w, b)
    xl, wl = to_layout(x, w, data_format, weight_format, batched)
    y = md.conv1d(
        mx.array(xl, dtype=dtype), mx.array(wl, dtype=dtype), None if b is None else mx.array(b, dtype=dtype),
        **case.kwargs(), data_format=data_format, weight_format=weight_format, backend=backend,
    )
    assert y.dtype == dtype
    assert y.ndim == (3 if batched else 2)
    got = from_layout(y, data_format, batched)
    assert got.shape == expected.shape
    # Rounding of the sum plus, for the narrow dtypes, of the output itself.
    tol = atol(case.taps * case.in_per_group, dtype) + EPS_OUT[dtype] * np.abs(expected)
    assert np.all(np.abs(got - expected) <= tol), np.max(np.abs(got - expected))


EPS_OUT = {mx.float32: 0.0, mx.float16: 1e-3, mx.bfloat16: 8e-3}


@pytest.mark.parametrize("backend", BACKENDS)
def test_output_length_matches_geometry(backend):
    # A long dilated depthwise layer, as in a vocoder's residual block.
    x = mx.random.normal((1, 300, 8))
    w = mx.random.normal((8, 7, 1))
    for padding in [0, (4, 1), "valid", "same", "causal"]:
        y = md.conv1d(x, w, padding=padding, dilation=5, stride=2, groups=8, backend=backend)
        assert y.shape == (1, md.conv1d_output_length(300, 7, 2, padding, 5), 8)


# -- gradients -------------------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
@settings(max_examples=40)
@given(case=cases(max_length=10), data_format=st.sampled_from(["NLC", "NCL"]),
       weight_format=st.sampled_from(["mlx", "torch"]))
def test_gradients_match_definition(backend, case, data_format, weight_format):
    x, w, _ = case.arrays()
    b = np.random.default_rng(case.seed + 1).standard_normal(case.out_channels)
    expected = case.expected(x, w, b)
    ct = np.random.default_rng(case.seed + 2).standard_normal(expected.shape)
    left, right = case.pads()
    gx, gw, gb = ref.conv1d_vjp(x, w, ct, case.stride, left, right, case.dilation, case.groups)

    xl, wl = to_layout(x, w, data_format, weight_format, True)
    ctl = ct.transpose(0, 2, 1) if data_format == "NCL" else ct

    def loss(xa, wa, ba):
        y = md.conv1d(xa, wa, ba, **case.kwargs(), data_format=data_format, weight_format=weight_format,
                      backend=backend)
        return (y * mx.array(ctl, dtype=mx.float32)).sum()

    grads = mx.grad(loss, argnums=(0, 1, 2))(mx.array(xl, mx.float32), mx.array(wl, mx.float32),
                                              mx.array(b, mx.float32))
    got_x, got_w, got_b = (np.array(g, np.float64) for g in grads)
    if data_format == "NCL":
        got_x = got_x.transpose(0, 2, 1)
    if weight_format == "torch":
        gw = ref.torch_conv1d_weight(gw)
    np.testing.assert_allclose(got_x, gx, atol=atol(case.taps * case.out_per_group))
    np.testing.assert_allclose(got_w, gw, rtol=1e-6, atol=atol(case.batch * expected.shape[1]))
    np.testing.assert_allclose(got_b, gb, rtol=1e-6, atol=atol(case.batch * expected.shape[1]))


@settings(max_examples=40)
@given(case=cases(max_length=10))
def test_reference_input_gradient_is_the_transposed_conv(case):
    """The float64 references agree with each other: conv1d's input gradient is
    conv_transpose1d of the cotangent, cropped by the left padding, extended to ``L``."""
    x, w, _ = case.arrays()
    left, right = case.pads()
    out_len = ref.conv1d_output_length(case.length, case.taps, case.stride, left, right, case.dilation)
    ct = np.random.default_rng(case.seed).standard_normal((case.batch, out_len, case.out_channels))
    gx, _, _ = ref.conv1d_vjp(x, w, ct, case.stride, left, right, case.dilation, case.groups)
    # conv_transpose1d maps C_out -> C_in: its MLX weight is (C_in, K, C_out/G), per group transposed.
    cig, cog = case.in_per_group, case.out_per_group
    wt = np.zeros((case.in_channels, case.taps, cog))
    for g in range(case.groups):
        wt[g * cig : (g + 1) * cig] = w[g * cog : (g + 1) * cog].transpose(2, 1, 0)
    full = (out_len - 1) * case.stride + case.dilation * (case.taps - 1) + 1
    adjoint = ref.conv_transpose1d(ct, wt, None, case.stride, left, full - left - case.length, case.dilation,
                                   case.groups)
    np.testing.assert_allclose(gx, adjoint, atol=1e-10)
    # And the adjoint identity <conv1d(x), ct> == <x, gx>.
    y = ref.conv1d(x, w, None, case.stride, left, right, case.dilation, case.groups)
    assert np.isclose((y * ct).sum(), (x * gx).sum(), atol=1e-9)


# -- padding forms ---------------------------------------------------------------

@given(length=st.integers(1, 40), taps=st.integers(1, 9), stride=st.integers(1, 6), dilation=st.integers(1, 5))
def test_same_is_tensorflow(length, taps, stride, dilation):
    assert md.conv1d_output_length(length, taps, stride, "same", dilation) == -(-length // stride)
    geom, _ = conv1d_geometry((1, length, 1), (1, taps, 1), stride=stride, padding="same", dilation=dilation)
    assert (geom.pad_left, geom.pad_right) == ref.tf_same_pads(length, taps, stride, dilation)
    assert geom.output_length == -(-length // stride)


@given(length=st.integers(1, 40), taps=st.integers(1, 9), stride=st.integers(1, 6), dilation=st.integers(1, 5),
       padding=st.one_of(st.integers(0, 6), st.tuples(st.integers(0, 6), st.integers(0, 6)),
                         st.sampled_from(["valid", "causal"])))
def test_output_length_counts_windows(length, taps, stride, dilation, padding):
    left, right = ref.conv1d_pads(padding, length, taps, stride, dilation)
    expected = ref.conv1d_output_length(length, taps, stride, left, right, dilation)
    assert md.conv1d_output_length(length, taps, stride, padding, dilation) == expected


@pytest.mark.parametrize("taps", [1, 2, 3, 4, 5, 8])
@pytest.mark.parametrize("stride", [1, 2, 3])
@pytest.mark.parametrize("dilation", [1, 2, 3])
def test_same_alignment_odd_and_even_kernels(taps, stride, dilation):
    """With a one-hot kernel, "same" shows where each output reads: the extra pad
    of an even span goes to the right (TensorFlow), so output 0 reads row
    ``k*d - total//2``."""
    length = 11
    x = np.arange(1, length + 1, dtype=np.float64)[None, :, None]
    span = dilation * (taps - 1) + 1
    total = max((-(-length // stride) - 1) * stride + span - length, 0)
    for tap in range(taps):
        w = np.zeros((1, taps, 1))
        w[0, tap, 0] = 1
        y = np.array(md.conv1d(mx.array(x, mx.float32), mx.array(w, mx.float32), stride=stride, padding="same",
                               dilation=dilation))[0, :, 0]
        rows = np.arange(len(y)) * stride + tap * dilation - total // 2
        expected = np.where((rows >= 0) & (rows < length), rows + 1, 0)
        np.testing.assert_array_equal(y, expected)


@pytest.mark.parametrize("backend", BACKENDS)
def test_causal_reads_no_future(backend):
    x = mx.random.normal((1, 20, 3))
    w = mx.random.normal((4, 5, 3))
    y = md.conv1d(x, w, padding="causal", dilation=2, backend=backend)
    changed = mx.concatenate([x[:, :12], x[:, 12:] + 100.0], axis=1)
    y2 = md.conv1d(changed, w, padding="causal", dilation=2, backend=backend)
    assert y.shape == (1, 20, 4)
    np.testing.assert_array_equal(np.array(y[:, :12]), np.array(y2[:, :12]))
    assert not np.allclose(np.array(y[:, 12:]), np.array(y2[:, 12:]))


# -- geometry record -------------------------------------------------------------

@given(case=cases(), data=st.data())
def test_input_span_holds_every_row_read(case, data):
    left, right = case.pads()
    geom, batched = conv1d_geometry((case.batch, case.length, case.in_channels),
                                    (case.out_channels, case.taps, case.in_per_group), **case.kwargs())
    assert batched
    assert (geom.pad_left, geom.pad_right) == (left, right)
    assert geom.flops == 2 * case.batch * geom.output_length * case.in_per_group * case.out_channels * case.taps
    assert geom.depthwise == (case.in_per_group == case.out_per_group == 1)
    start = data.draw(st.integers(0, geom.output_length - 1))
    stop = data.draw(st.integers(start + 1, geom.output_length))
    lo, hi = geom.input_span(start, stop)
    read = {t * case.stride + k * case.dilation - left for t in range(start, stop) for k in range(case.taps)}
    read = {r for r in read if 0 <= r < case.length}
    assert 0 <= lo <= hi <= case.length
    assert all(lo <= r < hi for r in read)
    # Tight: a bound inside the signal is a row the block reads (the first and last window's ends).
    if 0 < lo < hi:
        assert lo in read
    if lo < hi < case.length:
        assert hi - 1 in read


# -- PyTorch ---------------------------------------------------------------------

@settings(max_examples=60)
@given(case=cases(), data_format=st.sampled_from(["NLC", "NCL"]))
def test_torch_parity(case, data_format):
    torch = pytest.importorskip("torch")
    x, w, b = case.arrays()
    left, right = case.pads()
    xt = torch.nn.functional.pad(torch.tensor(x.transpose(0, 2, 1)), (left, right))
    expected = torch.nn.functional.conv1d(
        xt, torch.tensor(ref.torch_conv1d_weight(w)), None if b is None else torch.tensor(b),
        stride=case.stride, dilation=case.dilation, groups=case.groups,
    ).numpy()
    xl = x.transpose(0, 2, 1) if data_format == "NCL" else x
    y = md.conv1d(mx.array(xl, mx.float32), mx.array(ref.torch_conv1d_weight(w), mx.float32),
                  None if b is None else mx.array(b, mx.float32), **case.kwargs(), data_format="NCL"
                  if data_format == "NCL" else "NLC", weight_format="torch")
    got = np.array(y, np.float64)
    if data_format == "NLC":
        got = got.transpose(0, 2, 1)
    np.testing.assert_allclose(got, expected, atol=atol(case.taps * case.in_per_group))


@pytest.mark.parametrize("taps", [1, 2, 3, 4, 7, 8])
@pytest.mark.parametrize("dilation", [1, 2, 3])
def test_same_matches_torch_at_stride_1(taps, dilation):
    """PyTorch's ``padding="same"`` (stride 1 only) puts the odd pad on the right, as TensorFlow does."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(taps * 10 + dilation)
    x = rng.standard_normal((2, 3, 13))
    w = rng.standard_normal((4, 3, taps))
    expected = torch.nn.functional.conv1d(torch.tensor(x), torch.tensor(w), padding="same", dilation=dilation)
    y = md.conv1d(mx.array(x, mx.float32), mx.array(w, mx.float32), padding="same", dilation=dilation,
                  data_format="NCL", weight_format="torch")
    np.testing.assert_allclose(np.array(y), expected.numpy(), atol=atol(3 * taps))


@pytest.mark.parametrize("backend", md.available_backends(op="conv1d"))
def test_grouped_asymmetric_padding_weight_gradient(backend):
    """Found by hypothesis: MLX's own grouped conv with (left, right) padding, left != right, returned a weight
    gradient of the wrong shape; builtin now pads with zeros first."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((1, 1, 2))
    w = rng.standard_normal((2, 1, 1))
    ct = rng.standard_normal((1, 1, 2))

    def loss(xa, wa):
        return (md.conv1d(xa, wa, stride=3, padding=(2, 0), groups=2, backend=backend) * mx.array(ct, mx.float32)).sum()

    got_x, got_w = mx.grad(loss, argnums=(0, 1))(mx.array(x, mx.float32), mx.array(w, mx.float32))
    ex, ew, _ = ref.conv1d_vjp(x, w, ct, 3, 2, 0, 1, 2)
    assert got_w.shape == w.shape
    np.testing.assert_allclose(np.array(got_x), ex, atol=1e-6)
    np.testing.assert_allclose(np.array(got_w), ew, atol=1e-6)


# -- traced once, called at other lengths -----------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
def test_shapeless_compile_refuses_padding_that_follows_length(backend):
    """"same" with a stride pads by the length's remainder, which a shapeless trace would keep for every other
    length (wrong values, silently): such a call raises under ``shapeless=True``, while the plain transformations
    still match the definition at each length."""
    rng = np.random.default_rng(5)
    w = rng.standard_normal((3, 4, 2))
    kw = dict(stride=2, padding="same", dilation=1, backend=backend)
    shapeless = mx.compile(lambda a: md.conv1d(a, mx.array(w, mx.float32), **kw), shapeless=True)
    with pytest.raises(ValueError, match="cannot infer output shapes"):
        shapeless(mx.zeros((1, 16, 2)))
    traced = mx.compile(lambda a: md.conv1d(a, mx.array(w, mx.float32), **kw))
    for length in (16, 17, 21):
        x = rng.standard_normal((1, length, 2))
        left, right = ref.tf_same_pads(length, 4, 2, 1)
        expected = ref.conv1d(x, w, None, 2, left, right, 1)
        np.testing.assert_allclose(np.array(traced(mx.array(x, mx.float32))), expected, atol=atol(8))
        ct = rng.standard_normal(expected.shape)
        got = mx.grad(lambda a: (md.conv1d(a, mx.array(w, mx.float32), **kw) * mx.array(ct, mx.float32)).sum())(
            mx.array(x, mx.float32))
        np.testing.assert_allclose(np.array(got), ref.conv1d_vjp(x, w, ct, 2, left, right, 1, 1)[0], atol=atol(8))


def test_shapeless_compile_keeps_padding_that_does_not_follow_length():
    """Padding fixed by the arguments alone (ints, "causal", "same" at stride 1) is right at every length, so a
    shapeless trace of a call on MLX's op stays allowed."""
    rng = np.random.default_rng(6)
    w = rng.standard_normal((3, 3, 2))
    for padding, stride in ((1, 2), ("causal", 2), ("same", 1)):
        kw = dict(stride=stride, padding=padding, backend="builtin")
        shapeless = mx.compile(lambda a: md.conv1d(a, mx.array(w, mx.float32), **kw), shapeless=True)
        for length in (16, 17, 21):
            x = rng.standard_normal((1, length, 2))
            left, right = ref.conv1d_pads(padding, length, 3, stride, 1)
            expected = ref.conv1d(x, w, None, stride, left, right, 1)
            np.testing.assert_allclose(np.array(shapeless(mx.array(x, mx.float32))), expected, atol=atol(6))


@given(taps=st.integers(1, 9), stride=st.integers(1, 6), dilation=st.integers(1, 5),
       padding=st.one_of(st.integers(0, 6), st.sampled_from(["valid", "causal", "same", "SAME"])))
def test_padding_follows_length_when_lengths_disagree(taps, stride, dilation, padding):
    form = padding.lower() if isinstance(padding, str) else padding  # the op takes the forms in any case
    pads = {ref.conv1d_pads(form, length, taps, stride, dilation) for length in range(1, 3 * stride + 2)}
    assert padding_follows_length(padding, taps, stride, dilation) == (len(pads) > 1)
