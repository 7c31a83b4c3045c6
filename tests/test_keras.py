"""Conv1DTranspose (Keras spelling): lazy build, Keras lengths and values, regularizers, constraints."""

import mlx.core as mx
import numpy as np
import pytest

import mlx_deconv as md
import reference as ref


GEOMETRIES = [(3, 2, 1), (4, 2, 1), (5, 3, 1), (2, 4, 1), (3, 1, 2), (4, 1, 3), (3, 2, 2)]
KERAS_CASES = [
    (padding, taps, strides, dilation, op)
    for padding in ("valid", "same", "SAME")
    for taps, strides, dilation in GEOMETRIES
    for op in (None, 0, 1)
    if op is None or op < max(strides, dilation)  # the op refuses larger output padding
]


@pytest.mark.parametrize("padding,taps,strides,dilation,output_padding", KERAS_CASES)
def test_keras_lengths_and_values(padding, taps, strides, dilation, output_padding):
    layer = md.Conv1DTranspose(5, taps, strides, padding=padding, output_padding=output_padding, dilation_rate=dilation)
    x = np.random.default_rng(taps * 10 + strides).standard_normal((2, 7, 3))
    y = layer(mx.array(x, mx.float32))
    kernel = np.array(layer.kernel)  # Keras layout (K, C_out, C_in)
    assert kernel.shape == (taps, 5, 3)
    pads = ref.keras_pads(padding.lower(), taps, strides, dilation, output_padding)
    expected = ref.conv_transpose1d_stuffed(x, kernel.transpose(1, 0, 2), np.array(layer.bias), strides, *pads, dilation)
    assert y.shape[1] == ref.keras_output_length(7, taps, padding.lower(), output_padding, strides, dilation)
    np.testing.assert_allclose(np.array(y), expected, atol=1e-5)


def test_keras_doc_example_and_channels_first():
    y = md.Conv1DTranspose(32, 3, 2, activation="relu")(mx.random.uniform(shape=(4, 10, 128)))
    assert y.shape == (4, 21, 32)
    assert float(y.min()) >= 0
    cf = md.Conv1DTranspose(8, 3, 2, data_format="channels_first")
    assert cf(mx.ones((4, 16, 10))).shape == (4, 8, 21)


def test_same_numbers_as_the_main_layer_and_keras_weights_roundtrip():
    keras_layer = md.Conv1DTranspose(6, 4, 2, padding="same")
    keras_layer.build((10, 3))
    main = md.ConvTranspose1d(3, 6, 4, stride=2, padding="same")
    main.update(keras_layer.parameters())
    x = mx.random.normal((2, 10, 3), key=mx.random.key(0))
    assert mx.array_equal(keras_layer(x), main(x))
    kernel, bias = keras_layer.get_keras_weights()
    fresh = md.Conv1DTranspose(6, 4, 2, padding="same")
    fresh.set_keras_weights([kernel, bias + 1])
    assert mx.allclose(fresh(x), main(x) + 1, atol=1e-5)


def test_regularization_loss():
    layer = md.Conv1DTranspose(4, 3, 2, kernel_regularizer="l2", bias_regularizer=md.keras.L1L2(l1=0.5),
                               activity_regularizer="l1", bias_initializer="ones")
    y = layer(mx.ones((1, 5, 2)))
    w = np.array(layer.weight, np.float64)
    expected = 0.01 * (w ** 2).sum() + 0.5 * 4 + 0.01 * np.abs(np.array(y)).sum()
    assert abs(float(layer.regularization_loss()) - expected) < 1e-4 * expected


def test_constraints_project_after_a_step():
    layer = md.Conv1DTranspose(4, 3, 2, kernel_constraint="max_norm", bias_constraint="non_neg",
                               kernel_initializer=lambda shape, dtype: mx.full(shape, 3.0), bias_initializer=lambda s, d: -mx.ones(s))
    layer.build((5, 2))
    layer.apply_constraints()
    norms = np.sqrt((np.array(layer.kernel) ** 2).sum(axis=0))  # Keras' axis 0: over taps
    np.testing.assert_allclose(norms, 2.0, rtol=1e-5)
    assert float(layer.bias.min()) == 0.0
    unit = md.Conv1DTranspose(4, 3, 2, kernel_constraint="unit_norm")
    unit.build((5, 2))
    unit.apply_constraints()
    np.testing.assert_allclose(np.sqrt((np.array(unit.kernel) ** 2).sum(axis=0)), 1.0, rtol=1e-4)


def test_keras_argument_errors():
    with pytest.raises(ValueError, match="kernel_regularizer"):
        md.Conv1DTranspose(4, 3, kernel_regularizer="l3")
    with pytest.raises(ValueError, match="kernel_constraint"):
        md.Conv1DTranspose(4, 3, kernel_constraint="positive")
    with pytest.raises(ValueError, match="padding"):
        md.Conv1DTranspose(4, 3, padding="full")
    with pytest.raises(ValueError, match="data_format"):
        md.Conv1DTranspose(4, 3, data_format="channels_middle")


def test_keras_layer_shares_the_config_and_streams():
    layer = md.Conv1DTranspose(6, 4, 2, padding="same", activation="tanh")
    assert not layer.built and layer.config.in_channels is None
    x = mx.random.normal((2, 9, 3), key=mx.random.key(1))
    y = layer(x)
    assert layer.built and layer.config == md.ConvTranspose1d(3, 6, 4, 2, "same", activation="tanh").config
    stream = layer.streaming()
    pieces = [stream.step(x[:, :4]), stream.step(x[:, 4:]), stream.flush()]
    np.testing.assert_allclose(np.array(mx.concatenate(pieces, axis=1)), np.array(y), atol=1e-5)


def test_keras_weights_that_do_not_fit_are_refused_and_leave_the_layer_as_it_was():
    kernel = np.ones((5, 4, 3), np.float32)
    plain = md.Conv1DTranspose(4, 5, use_bias=False)
    for weights, match in (([kernel, np.ones(4, np.float32)], r"\[kernel\] \(use_bias=False\), got a list of 2"),
                           ([np.ones((5, 4), np.float32)], "kernel of shape")):
        with pytest.raises(ValueError, match=match):
            plain.set_keras_weights(weights)
        assert not plain.built and "bias" not in plain
    biased = md.Conv1DTranspose(4, 5)
    for weights, match in (([kernel], r"\[kernel, bias\], got a list of 1"),
                           ([kernel, np.ones(7, np.float32)], r"bias of shape \(7,\) does not fit this layer's \(4,\)"),
                           ([np.ones((5, 6, 3), np.float32), np.ones(4, np.float32)], "kernel of shape")):
        with pytest.raises(ValueError, match=match):
            biased.set_keras_weights(weights)
        assert not biased.built
    biased.build((1, 3))
    before = np.array(biased.weight)
    with pytest.raises(ValueError, match="kernel of shape"):
        biased.set_keras_weights([np.ones((5, 4, 2), np.float32), np.ones(4, np.float32)])
    np.testing.assert_array_equal(np.array(biased.weight), before)
    plain.set_keras_weights([kernel])
    assert "bias" not in plain and plain(mx.ones((1, 2, 3))).shape == (1, 6, 4)


def test_a_stream_made_before_the_layer_is_built_works_once_it_is():
    layer = md.Conv1DTranspose(6, 4, 2, padding="same")
    stream = layer.streaming()
    with pytest.raises(ValueError, match="not built yet"):
        layer.regularization_loss()
    with pytest.raises(ValueError, match="not built yet"):
        layer.apply_constraints()
    x = mx.random.normal((1, 9, 3), key=mx.random.key(2))
    y = layer(x)
    pieces = [stream.step(x[:, :5]), stream.step(x[:, 5:]), stream.flush()]
    np.testing.assert_allclose(np.array(mx.concatenate(pieces, axis=1)), np.array(y), atol=1e-5)
