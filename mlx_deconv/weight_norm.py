"""PyTorch's ``weight_norm`` for a transposed-conv weight: ``w = g * v / ||v||``.

PyTorch takes the norm over every axis but ``dim`` *of its own layout*
``(C_in, C_out/groups, K)``; its default ``dim=0`` therefore gives one norm
per input channel, ``g`` of shape ``(C_in, 1, 1)``. ``v`` is kept here in MLX
layout (like the layer's ``weight``) and ``g`` in PyTorch's shape, so
checkpoints (HiFi-GAN, BigVGAN, DAC, EnCodec) load without reshaping.
"""

from __future__ import annotations

from typing import Optional, Tuple

import mlx.core as mx

from .interop import mlx_to_torch_weight, torch_to_mlx_weight


def norm_dim(dim: Optional[int]) -> Optional[int]:
    """Validates PyTorch's ``dim`` (``None`` = one norm for the whole weight; negative counts from the end)."""
    if dim is None:
        return None
    if isinstance(dim, bool) or not isinstance(dim, int) or not -3 <= dim < 3:
        raise ValueError(f"weight_norm dim must be None or an int in [-3, 2], got {dim!r}")
    return dim % 3


def _norm(v_torch: mx.array, dim: Optional[int]) -> mx.array:
    axes = [a for a in range(3) if a != dim] if dim is not None else [0, 1, 2]
    return mx.sqrt(mx.sum(v_torch * v_torch, axis=axes, keepdims=True))


def g_shape(weight_shape_torch, dim: Optional[int]) -> Tuple[int, ...]:
    """Shape of ``g`` for a PyTorch-layout weight shape."""
    if dim is None:
        return ()
    return tuple(n if a == dim else 1 for a, n in enumerate(weight_shape_torch))


def split(weight: mx.array, groups: int = 1, dim: Optional[int] = 0) -> Tuple[mx.array, mx.array]:
    """``(g, v)`` of an MLX-layout weight, as ``torch.nn.utils.weight_norm`` initialises them."""
    dim = norm_dim(dim)
    g = _norm(mlx_to_torch_weight(weight, groups), dim)
    return (g.reshape(()) if dim is None else g), weight


def combine(g: mx.array, v: mx.array, groups: int = 1, dim: Optional[int] = 0) -> mx.array:
    """The MLX-layout weight ``g * v / ||v||`` (norm over all PyTorch axes but ``dim``)."""
    dim = norm_dim(dim)
    v_torch = mlx_to_torch_weight(v, groups)
    return torch_to_mlx_weight(g * v_torch / _norm(v_torch, dim), groups)
