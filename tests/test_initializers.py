"""Fresh layers' parameter statistics match the named initialiser, fans counted for grouped transposed weights."""

import math

import mlx.core as mx
import numpy as np
import pytest

import mlx_deconv as md
from mlx_deconv import initializers

# C_in=96, C_out=64, K=5, groups=2: fan_in = (96/2)*5 = 240, fan_out = (64/2)*5 = 160.
FAN_IN, FAN_OUT = 240, 160
TRUNC = 0.87962566103423978
EXPECTED = {
    # name: (distribution, std)
    "glorot_uniform": ("uniform", math.sqrt(2 / (FAN_IN + FAN_OUT))),
    "xavier_uniform": ("uniform", math.sqrt(2 / (FAN_IN + FAN_OUT))),
    "glorot_normal": ("truncated", math.sqrt(2 / (FAN_IN + FAN_OUT))),
    "xavier_normal": ("truncated", math.sqrt(2 / (FAN_IN + FAN_OUT))),
    "he_uniform": ("uniform", math.sqrt(2 / FAN_IN)),
    "he_normal": ("truncated", math.sqrt(2 / FAN_IN)),
    "kaiming_normal": ("truncated", math.sqrt(2 / FAN_IN)),
    "lecun_normal": ("truncated", math.sqrt(1 / FAN_IN)),
    "lecun_uniform": ("uniform", math.sqrt(1 / FAN_IN)),
    "torch": ("uniform", 1 / math.sqrt(3 * FAN_OUT)),  # PyTorch: U(-1/sqrt(fan), 1/sqrt(fan)), fan = (C_out/groups)*K
}


def test_fans_of_grouped_transposed_weight():
    assert initializers.fans((64, 5, 48), groups=2) == (FAN_IN, FAN_OUT)


@pytest.mark.parametrize("name", list(EXPECTED))
def test_weight_statistics(name):
    mx.random.seed(0)
    w = np.array(md.ConvTranspose1d(96, 64, 5, groups=2, kernel_init=name).weight, np.float64)
    distribution, std = EXPECTED[name]
    # 15360 samples: the std estimate is within ~2% at 3 sigma.
    assert abs(w.mean()) < 4 * std / math.sqrt(w.size)
    assert abs(w.std() / std - 1) < 0.03, (name, w.std(), std)
    if distribution == "uniform":
        bound = std * math.sqrt(3)
        assert np.abs(w).max() <= bound and np.abs(w).max() > 0.99 * bound
    else:  # truncated at two standard deviations of the underlying normal
        assert np.abs(w).max() <= 2 * std / TRUNC * 1.0001


def test_constant_and_callable_initialisers():
    layer = md.ConvTranspose1d(4, 6, 3, kernel_init="ones", bias_init=lambda shape, dtype: mx.full(shape, 0.5))
    assert float(layer.weight.min()) == 1.0 and float(layer.bias.min()) == 0.5
    assert float(mx.abs(md.ConvTranspose1d(4, 6, 3, kernel_init="zeros").weight).max()) == 0.0
    with pytest.raises(ValueError, match="returned shape"):
        md.ConvTranspose1d(4, 6, 3, kernel_init=lambda shape, dtype: mx.zeros((1,)))


@pytest.mark.parametrize("taps,stride,dilation", [(16, 8, 1), (4, 2, 1), (6, 3, 1), (4, 1, 1), (3, 1, 2)])
def test_icnr_has_no_checkerboard(taps, stride, dilation):
    layer = md.ConvTranspose1d(3, 5, taps, stride=stride, dilation=dilation, kernel_init="icnr", bias=False)
    x = mx.random.normal((2, 12, 3), key=mx.random.key(1))
    y = np.array(layer(x))  # padding 0: full output
    rows = y.shape[1] // stride
    phases = y[:, : rows * stride].reshape(2, rows, stride, 5)
    # Every output phase is the same signal: no checkerboard.
    np.testing.assert_allclose(phases, np.repeat(phases[:, :, :1], stride, axis=2), atol=1e-6)
    assert float(mx.abs(layer.weight).max()) > 0
