"""Weight and bias initialisers for transposed-conv weights, by name or callable.

Fans of an MLX-layout weight ``(C_out, K, C_in/groups)``: each output sample
sums ``fan_in = (C_in/groups) * K`` products, and each input sample feeds
``fan_out = (C_out/groups) * K`` of them. (Keras reads the fans off its own
kernel axes, which for a transposed kernel swaps the two; the variance-only
``glorot_*`` schemes are the same either way.)
"""

from __future__ import annotations

import math
from typing import Callable, Optional, Sequence, Tuple, Union

import mlx.core as mx

Initializer = Union[str, Callable[..., mx.array]]

# Keras' truncated-normal schemes divide by the std of a unit normal cut at +-2.
_TRUNCATED_STD = 0.87962566103423978

NAMES = (
    "torch", "glorot_uniform", "glorot_normal", "xavier_uniform", "xavier_normal",
    "he_uniform", "he_normal", "kaiming_uniform", "kaiming_normal", "lecun_normal",
    "lecun_uniform", "zeros", "ones", "icnr",
)


def fans(shape: Sequence[int], groups: int = 1) -> Tuple[int, int]:
    """``(fan_in, fan_out)`` of an MLX-layout transposed-conv weight."""
    out_channels, taps, in_per_group = shape
    return in_per_group * taps, (out_channels // groups) * taps


def _uniform(limit, shape, dtype, key):
    return mx.random.uniform(-limit, limit, shape, dtype=dtype, key=key)


def _truncated(std, shape, dtype, key):
    return mx.random.truncated_normal(-2.0, 2.0, shape, dtype=dtype, key=key) * (std / _TRUNCATED_STD)


def _variance_scaled(name: str, shape, fan_in: int, fan_out: int, dtype, key) -> mx.array:
    family, distribution = name.rsplit("_", 1)
    fan = {"glorot": (fan_in + fan_out) / 2, "xavier": (fan_in + fan_out) / 2,
           "he": fan_in, "kaiming": fan_in, "lecun": fan_in}[family]
    scale = 2.0 if family in ("he", "kaiming") else 1.0
    variance = scale / max(1.0, fan)
    if distribution == "uniform":
        return _uniform(math.sqrt(3 * variance), shape, dtype, key)
    return _truncated(math.sqrt(variance), shape, dtype, key)


def _icnr(shape, groups, stride, dilation, dtype, key) -> mx.array:
    """He-normal taps repeated over phases, so every output phase starts with the same kernel.

    Tap ``k`` lands on phase ``(k*dilation) % stride`` at row shift
    ``(k*dilation) // stride``; giving every tap of one shift the same value
    makes a fresh layer a nearest-neighbour upsampler followed by a conv,
    which has no checkerboard pattern.
    """
    out_channels, taps, in_per_group = shape
    slots = [divmod(k * dilation, stride) for k in range(taps)]
    shifts = sorted({q for q, _ in slots})
    if len(slots) != len(shifts) * stride:
        raise ValueError(
            f"kernel_init='icnr' needs every output phase to get the same number of taps: "
            f"kernel_size={taps}, stride={stride}, dilation={dilation} give phases of unequal length"
            + (" (use kernel_size a multiple of stride)" if taps % stride else
               " (with a dilation, the taps must still fill each phase's slots once: use dilation=1)")
        )
    fan_in, _ = fans(shape, groups)
    base = _truncated(math.sqrt(2.0 * stride / fan_in), (out_channels, len(shifts), in_per_group), dtype, key)
    return mx.take(base, mx.array([shifts.index(q) for q, _ in slots]), axis=1)


def initialize(
    init: Initializer,
    shape: Sequence[int],
    *,
    groups: int = 1,
    stride: int = 1,
    dilation: int = 1,
    dtype=mx.float32,
    key: Optional[mx.array] = None,
    bias_of: Optional[Sequence[int]] = None,
    name: str = "kernel_init",
) -> mx.array:
    """Draws an array of ``shape`` with initialiser ``init``.

    Args:
        init: one of :data:`NAMES` or a callable ``f(shape, dtype) -> array``.
        shape: the array's shape (an MLX-layout weight, or ``(C_out,)`` for a bias).
        groups, stride, dilation: the layer's, for the fans and ``"icnr"``.
        bias_of: for a bias, the shape of its layer's weight (fans come from it).
        name: the argument name used in error messages.

    Returns:
        array: of ``shape`` and ``dtype``.
    """
    shape = tuple(shape)
    if callable(init):
        value = mx.array(init(shape, dtype))
        if value.shape != shape:
            raise ValueError(f"{name} callable returned shape {value.shape}, expected {shape}")
        return value.astype(dtype)
    if not isinstance(init, str) or init not in NAMES:
        raise ValueError(f"{name} must be a callable or one of {NAMES}, got {init!r}")
    if init == "zeros":
        return mx.zeros(shape, dtype=dtype)
    if init == "ones":
        return mx.ones(shape, dtype=dtype)
    fan_in, fan_out = fans(bias_of or shape, groups)
    if init == "torch":
        # PyTorch reads fan_in off its (C_in, C_out/groups, K) weight: (C_out/groups) * K,
        # and kaiming_uniform(a=sqrt(5)) gives the bound 1/sqrt(fan_in); the bias uses the same bound.
        return _uniform(1.0 / math.sqrt(fan_out), shape, dtype, key)
    if init == "icnr":
        if bias_of is not None:
            raise ValueError(f"{name}='icnr' is for weights, not biases")
        return _icnr(shape, groups, stride, dilation, dtype, key)
    return _variance_scaled(init, shape, fan_in, fan_out, dtype, key)
