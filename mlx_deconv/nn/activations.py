"""Activations a layer can apply after its convolution, by name or callable."""

from __future__ import annotations

from typing import Callable, Optional, Union

import mlx.core as mx
import mlx.nn as nn

from ..runtime.compiling import per_thread_compile

Activation = Union[None, str, Callable[[mx.array], mx.array]]

# mlx.nn's activations are compiled functions shared by every thread: pool threads calling them
# abort the process at exit (docs/threads-exit.md), so each thread calls its own compiled copy.
relu, gelu, silu, leaky_relu, elu, selu, softplus, mish = (
    per_thread_compile(f, shapeless=True) for f in (nn.relu, nn.gelu, nn.silu, nn.leaky_relu, nn.elu, nn.selu,
                                                    nn.softplus, nn.mish))

_ELEMENTWISE = {
    "linear": lambda x: x,
    "relu": relu,
    "gelu": gelu,
    "silu": silu,
    "swish": silu,
    "tanh": mx.tanh,
    "sigmoid": mx.sigmoid,
    "leaky_relu": leaky_relu,
    "elu": elu,
    "selu": selu,
    "softplus": softplus,
    "mish": mish,
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
