"""Keras' spelling: ``Conv1DTranspose`` with regularizers and constraints made explicit.

MLX has no implicit losses and no hooks after an optimizer step, so a Keras
regularizer becomes ``layer.regularization_loss()`` (add it to your loss) and
a constraint becomes ``layer.apply_constraints()`` (call it after
``optimizer.update``). Regularizers and constraints see the kernel in Keras'
layout ``(K, C_out, C_in)``, so Keras-style callables behave as in Keras.
"""

from __future__ import annotations

from typing import Callable, List, Optional, Sequence

import mlx.core as mx
import numpy as np

from . import initializers
from .activations import Activation
from .interop import keras_to_mlx_weight, mlx_to_keras_weight, to_numpy
from .config import ConvConfig
from .layers import ConvLayer

_EPSILON = 1e-7  # Keras' backend epsilon


class L1L2:
    """``l1 * sum(|w|) + l2 * sum(w**2)`` (Keras' ``L1L2``)."""

    def __init__(self, l1: float = 0.0, l2: float = 0.0):
        self.l1, self.l2 = float(l1), float(l2)

    def __call__(self, w: mx.array) -> mx.array:
        loss = mx.array(0.0)
        if self.l1:
            loss = loss + self.l1 * mx.sum(mx.abs(w))
        if self.l2:
            loss = loss + self.l2 * mx.sum(mx.square(w))
        return loss

    def __repr__(self) -> str:
        return f"L1L2(l1={self.l1}, l2={self.l2})"


class NonNeg:
    """Zeroes negative weights."""

    def __call__(self, w: mx.array) -> mx.array:
        return w * (w >= 0).astype(w.dtype)


class UnitNorm:
    """Rescales to unit L2 norm along ``axis`` (of the Keras kernel)."""

    def __init__(self, axis: int = 0):
        self.axis = axis

    def __call__(self, w: mx.array) -> mx.array:
        return w / (_EPSILON + mx.sqrt(mx.sum(mx.square(w), axis=self.axis, keepdims=True)))


class MaxNorm:
    """Caps the L2 norm along ``axis`` (of the Keras kernel) at ``max_value``."""

    def __init__(self, max_value: float = 2.0, axis: int = 0):
        self.max_value, self.axis = float(max_value), axis

    def __call__(self, w: mx.array) -> mx.array:
        norms = mx.sqrt(mx.sum(mx.square(w), axis=self.axis, keepdims=True))
        return w * (mx.clip(norms, 0, self.max_value) / (_EPSILON + norms))


REGULARIZERS = {"l1": lambda: L1L2(l1=0.01), "l2": lambda: L1L2(l2=0.01), "l1_l2": lambda: L1L2(0.01, 0.01)}
CONSTRAINTS = {"non_neg": NonNeg, "unit_norm": UnitNorm, "max_norm": MaxNorm}


def _resolve(kind: str, value, table) -> Optional[Callable]:
    if value is None:
        return None
    if isinstance(value, str):
        if value not in table:
            raise ValueError(f"{kind} must be a callable or one of {tuple(table)}, got {value!r}")
        return table[value]()
    if callable(value):
        return value
    raise TypeError(f"{kind} must be None, a name or a callable, got {value!r}")


class Conv1DTranspose(ConvLayer):
    """Keras' ``Conv1DTranspose``: the input channel count is taken from the first call.

    Its :class:`~mlx_deconv.nn.config.ConvConfig` is complete but for ``in_channels``,
    validated at construction as Keras does; :meth:`build` sets the channels and
    draws the parameters exactly as :class:`~mlx_deconv.ConvTranspose1d` does.

    Args:
        filters (int): output channels.
        kernel_size (int): taps.
        strides (int): Default: ``1``.
        padding (str): ``"valid"`` or ``"same"`` (case-insensitive; the other forms of
            :func:`mlx_deconv.conv_transpose1d` work too). Default: ``"valid"``.
        output_padding (int, optional): ``None`` infers it as Keras does. Default: ``None``.
        data_format (str): ``"channels_last"`` or ``"channels_first"``. Default: ``"channels_last"``.
        dilation_rate (int): Default: ``1``. Unlike Keras, strides > 1 with dilation > 1 works.
        activation: None, a name or a callable.
        use_bias (bool): Default: ``True``.
        kernel_initializer, bias_initializer: names or callables ``f(shape, dtype)``;
            callables get the MLX-layout shape. Default: ``"glorot_uniform"``, ``"zeros"``.
        kernel_regularizer, bias_regularizer, activity_regularizer: ``"l1"``, ``"l2"``,
            ``"l1_l2"`` (factor 0.01, as Keras) or callables; see :meth:`regularization_loss`.
        kernel_constraint, bias_constraint: ``"non_neg"``, ``"unit_norm"``, ``"max_norm"``
            or callables; see :meth:`apply_constraints`.
    """

    def __init__(
        self,
        filters: int,
        kernel_size: int,
        strides: int = 1,
        padding: str = "valid",
        output_padding: Optional[int] = None,
        data_format: str = "channels_last",
        dilation_rate: int = 1,
        activation: Activation = None,
        use_bias: bool = True,
        kernel_initializer: initializers.Initializer = "glorot_uniform",
        bias_initializer: initializers.Initializer = "zeros",
        kernel_regularizer=None,
        bias_regularizer=None,
        activity_regularizer=None,
        kernel_constraint=None,
        bias_constraint=None,
    ):
        config = ConvConfig(
            transposed=True, in_channels=None, out_channels=filters, kernel_size=kernel_size, stride=strides,
            padding=padding, output_padding=output_padding, dilation=dilation_rate, bias=use_bias,
            data_format=data_format, activation=activation,
        )
        super().__init__(config, kernel_init=kernel_initializer, bias_init=bias_initializer)
        self._regularizers = [
            _resolve("kernel_regularizer", kernel_regularizer, REGULARIZERS),
            _resolve("bias_regularizer", bias_regularizer, REGULARIZERS),
            _resolve("activity_regularizer", activity_regularizer, REGULARIZERS),
        ]
        self._constraints = [
            _resolve("kernel_constraint", kernel_constraint, CONSTRAINTS),
            _resolve("bias_constraint", bias_constraint, CONSTRAINTS),
        ]
        self._activity_loss = None

    @property
    def built(self) -> bool:
        return self.config.in_channels is not None

    def build(self, input_shape: Sequence[int]) -> None:
        """Creates the parameters for inputs of ``input_shape`` (batched or not)."""
        if len(input_shape) not in (2, 3):
            raise ValueError(f"Conv1DTranspose input must be 2-D or 3-D, got shape {tuple(input_shape)}")
        channel_axis = -1 if self.config.data_format == "NLC" else (-2 if len(input_shape) == 3 else 0)
        self.config = self.config.with_in_channels(input_shape[channel_axis])
        self._create_parameters()

    def __call__(self, x: mx.array) -> mx.array:
        if not self.built:
            self.build(x.shape)
        y = super().__call__(x)
        if self._regularizers[2] is not None:
            self._activity_loss = self._regularizers[2](y)
        return y

    @property
    def kernel(self) -> mx.array:
        """The kernel in Keras' layout ``(K, C_out, C_in)``."""
        return mlx_to_keras_weight(self.weight)

    def get_keras_weights(self) -> List[np.ndarray]:
        """``[kernel, bias]`` as Keras' ``layer.get_weights()`` returns them."""
        out = [np.array(self.kernel)]
        if "bias" in self:
            out.append(np.array(self.bias))
        return out

    def set_keras_weights(self, weights: Sequence) -> None:
        """Loads ``[kernel, bias]`` from Keras' ``layer.get_weights()`` (builds the layer if needed).

        Raises:
            ValueError: for a list of another length than the layer's weights (``[kernel, bias]``, or
                ``[kernel]`` with ``use_bias=False``), or arrays of other shapes; the layer is then unchanged.
        """
        c = self.config
        wanted = 2 if c.bias else 1
        if len(weights) != wanted:
            raise ValueError(f"weights must be {'[kernel, bias]' if c.bias else '[kernel] (use_bias=False)'}, "
                             f"got a list of {len(weights)}")
        kernel = to_numpy(weights[0])
        if kernel.ndim != 3 or kernel.shape[1] != c.out_channels or kernel.shape[0] != c.kernel_size:
            raise ValueError(f"Keras kernel of shape {kernel.shape} does not fit this layer's "
                             f"(kernel_size={c.kernel_size}, filters={c.out_channels}, C_in)")
        if c.in_channels is not None and kernel.shape[2] != c.in_channels // c.groups:
            raise ValueError(f"Keras kernel of shape {kernel.shape} does not fit this layer's {tuple(self.kernel.shape)}")
        bias = to_numpy(weights[1]) if c.bias else None
        if bias is not None and bias.shape != (c.out_channels,):
            raise ValueError(f"Keras bias of shape {bias.shape} does not fit this layer's ({c.out_channels},)")
        if not self.built:
            shape = (1, kernel.shape[2]) if c.data_format == "NLC" else (kernel.shape[2], 1)
            self.build(shape)
        self.weight = keras_to_mlx_weight(mx.array(kernel))
        if bias is not None:
            self.bias = mx.array(bias)

    def regularization_loss(self) -> mx.array:
        """The sum of the kernel, bias and (last call's) activity regularizers: add it to your loss.

        Raises:
            ValueError: before the layer is built (it has no kernel yet).
        """
        if not self.built:
            raise ValueError("the layer is not built yet: call it on an input, or build(input_shape), first")
        loss = mx.array(0.0)
        kernel_reg, bias_reg, _ = self._regularizers
        if kernel_reg is not None:
            loss = loss + kernel_reg(self.kernel)
        if bias_reg is not None and "bias" in self:
            loss = loss + bias_reg(self.bias)
        if self._activity_loss is not None:
            loss = loss + self._activity_loss
        return loss

    def apply_constraints(self) -> None:
        """Projects the kernel and bias onto their constraints; call after each optimizer step.

        Raises:
            ValueError: before the layer is built (it has no kernel yet).
        """
        if not self.built:
            raise ValueError("the layer is not built yet: call it on an input, or build(input_shape), first")
        kernel_con, bias_con = self._constraints
        if kernel_con is not None:
            self.weight = keras_to_mlx_weight(kernel_con(self.kernel))
        if bias_con is not None and "bias" in self:
            self.bias = bias_con(self.bias)
