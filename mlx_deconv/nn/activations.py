"""Activations a layer can apply after its convolution, by name or callable."""

from __future__ import annotations

from typing import Callable, Optional, Union

import mlx.core as mx
import mlx.nn as nn

Activation = Union[None, str, Callable[[mx.array], mx.array]]

_ELEMENTWISE = {
    "linear": lambda x: x,
    "relu": nn.relu,
    "gelu": nn.gelu,
    "silu": nn.silu,
    "swish": nn.silu,
    "tanh": mx.tanh,
    "sigmoid": mx.sigmoid,
    "leaky_relu": nn.leaky_relu,
    "elu": nn.elu,
    "selu": nn.selu,
    "softplus": nn.softplus,
    "mish": nn.mish,
}

NAMES = tuple(_ELEMENTWISE) + ("snake",)


class Snake(nn.Module):
    """``x + sin(alpha * x)**2 / alpha`` with a learnable ``alpha`` per channel (BigVGAN's activation).

    Args:
        channels (int): number of channels.
        channel_axis (int): the channel axis of the input. Default: ``-1``.
        alpha (float): initial value of every ``alpha``. Default: ``1.0``.
    """

    def __init__(self, channels: int, channel_axis: int = -1, alpha: float = 1.0):
        super().__init__()
        self.alpha = mx.full((channels,), alpha)
        self._channel_axis = channel_axis

    def __call__(self, x: mx.array) -> mx.array:
        shape = [1] * x.ndim
        shape[self._channel_axis] = -1
        alpha = self.alpha.reshape(shape).astype(x.dtype)
        # The epsilon keeps a trained alpha that reaches 0 from dividing by zero, as BigVGAN does.
        return x + mx.square(mx.sin(alpha * x)) / (alpha + 1e-9)


def resolve(activation: Activation, channels: int, channel_axis: int = -1) -> Optional[Callable]:
    """A callable for ``activation`` (a :class:`Snake` module for ``"snake"``), or None for none.

    Raises:
        ValueError: for an unknown name.
        TypeError: for anything but None, a string or a callable.
    """
    if activation is None:
        return None
    if isinstance(activation, str):
        name = activation.lower()
        if name == "snake":
            return Snake(channels, channel_axis)
        if name not in _ELEMENTWISE:
            raise ValueError(f"activation must be a callable or one of {NAMES}, got {activation!r}")
        return _ELEMENTWISE[name]
    if callable(activation):
        return activation
    raise TypeError(f"activation must be None, a name or a callable, got {activation!r}")
