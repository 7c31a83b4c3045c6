"""Output lengths and crops against PyTorch's and Keras' published formulas."""

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

import mlx_deconv as md
import reference as ref
from mlx_deconv.geometry.records import output_padding_for_size
from mlx_deconv.geometry.validation import conv_geometry

small = st.integers(1, 9)


@given(length=small, taps=small, stride=small, dilation=small, padding=st.integers(0, 6), data=st.data())
def test_int_padding_is_pytorch(length, taps, stride, dilation, padding, data):
    op = data.draw(st.integers(0, max(stride, dilation) - 1))
    expected = ref.torch_output_length(length, taps, stride, padding, op, dilation)
    assert md.output_length(length, taps, stride, padding, op, dilation) == expected


@given(length=small, taps=small, stride=small, dilation=small, form=st.sampled_from(["valid", "same"]), data=st.data())
def test_string_padding_is_keras(length, taps, stride, dilation, form, data):
    op = data.draw(st.one_of(st.none(), st.integers(0, stride - 1)))
    expected = ref.keras_output_length(length, taps, form, op, stride, dilation)
    assert md.output_length(length, taps, stride, form.upper(), op, dilation) == expected


@given(length=small, taps=small, stride=small, dilation=small)
def test_causal_and_same_give_length_times_stride(length, taps, stride, dilation):
    assert md.output_length(length, taps, stride, "causal", None, dilation) == length * stride
    assert md.output_length(length, taps, stride, "same", None, dilation) == length * stride
    assert md.resolve_padding("causal", taps, stride, dilation)[0] == 0


@given(length=small, taps=small, stride=small, dilation=small, left=st.integers(0, 5), right=st.integers(0, 5))
def test_pair_padding_crops_each_side(length, taps, stride, dilation, left, right):
    full = (length - 1) * stride + dilation * (taps - 1) + 1
    assert md.output_length(length, taps, stride, (left, right), 0, dilation) == full - left - right
    assert md.resolve_padding((left, right), taps, stride, dilation, 0) == (left, right)


@given(length=small, taps=small, stride=small, dilation=small, data=st.data())
def test_output_size_inverts_output_length(length, taps, stride, dilation, data):
    padding = data.draw(st.one_of(st.integers(0, 3), st.sampled_from(["valid", "same", "causal"])))
    op = data.draw(st.integers(0, max(stride, dilation) - 1))
    size = md.output_length(length, taps, stride, padding, op, dilation)
    assume(size >= 1)
    found = output_padding_for_size(size, length, taps, stride, padding, dilation)
    assert md.output_length(length, taps, stride, padding, found, dilation) == size


@given(length=small, taps=small, stride=small, dilation=small, form=st.sampled_from(["valid", "same", "causal"]))
def test_output_size_reaches_the_length_a_padding_form_gives_by_itself(length, taps, stride, dilation, form):
    """``"same"`` gives ``L*stride`` without an output padding, a length no explicit one reaches when the dilated
    span is even: asked for by ``output_size``, that length comes with the form's own alignment."""
    size = md.output_length(length, taps, stride, form, None, dilation)
    assume(size >= 1)
    found = output_padding_for_size(size, length, taps, stride, form, dilation)
    assert md.resolve_padding(form, taps, stride, dilation, found) == md.resolve_padding(form, taps, stride, dilation)


@given(length=small, taps=small, stride=small, dilation=small, padding=st.integers(0, 4), data=st.data())
def test_input_span_holds_every_reaching_row(length, taps, stride, dilation, padding, data):
    try:
        geom, _ = conv_geometry((1, length, 1), (1, taps, 1), stride=stride, padding=padding, dilation=dilation)
    except ValueError:
        assume(False)  # no output left for this geometry: not a case of this property
    start = data.draw(st.integers(0, geom.output_length - 1))
    stop = data.draw(st.integers(start + 1, geom.output_length))
    reaching = sorted(
        {l for l in range(length) for k in range(taps) if start <= l * stride + k * dilation - geom.crop < stop}
    )
    lo, hi = geom.input_span(start, stop)
    assert all(lo <= l < hi for l in reaching)
    if dilation == 1 or taps == 1:  # no holes in the kernel: the span is tight
        assert (lo, hi) == ((reaching[0], reaching[-1] + 1) if reaching else (lo, lo))


def test_keras_example_from_its_docs():
    # keras.layers.Conv1DTranspose(32, 3, 2) on length 10 gives 21 ("valid", inferred output padding).
    assert md.output_length(10, 3, 2, "valid") == 21


@pytest.mark.parametrize("bad", [0, -3, 2.5, "7"])
def test_output_length_validates(bad):
    with pytest.raises((TypeError, ValueError), match="length"):
        md.output_length(bad, 3)
