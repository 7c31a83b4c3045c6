"""PyTorch's ``weight_norm`` for a 1-D convolution weight: ``w = g * v / ||v||``.

PyTorch takes the norm over every axis but ``dim`` *of its own layout*:
``(C_in, C_out/groups, K)`` for ``ConvTranspose1d``, so its default ``dim=0``
gives one norm per *input* channel (``g`` of shape ``(C_in, 1, 1)``), and
``(C_out, C_in/groups, K)`` for ``Conv1d``, one norm per *output* channel
(``g`` of shape ``(C_out, 1, 1)``). ``v`` is kept here in MLX layout (like the
layer's ``weight``) and ``g`` in PyTorch's shape, so checkpoints (HiFi-GAN,
BigVGAN, DAC, EnCodec) load without reshaping.
"""

from __future__ import annotations

from typing import Optional, Tuple

import mlx.core as mx

from ..geometry.torch_layout import from_torch_layout, to_torch_layout


def norm_dim(dim: Optional[int]) -> Optional[int]:
    """Validates PyTorch's ``dim``: ``None`` and ``-1`` mean one norm for the whole weight (PyTorch stores ``None``
    as ``-1``, and its norm takes ``-1`` so); ``-2`` and ``-3`` count from the end."""
    if dim is None:
        return None
    if isinstance(dim, bool) or not isinstance(dim, int) or not -3 <= dim < 3:
        raise ValueError(f"weight_norm dim must be None or an int in [-3, 2], got {dim!r}")
    return None if dim == -1 else dim % 3


def _norm(v_torch: mx.array, dim: Optional[int]) -> mx.array:
    axes = [a for a in range(3) if a != dim] if dim is not None else [0, 1, 2]
    return mx.sqrt(mx.sum(v_torch * v_torch, axis=axes, keepdims=True))


def g_shape(weight_shape_torch, dim: Optional[int]) -> Tuple[int, ...]:
    """Shape of ``g`` for a PyTorch-layout weight shape."""
    if dim is None:
        return ()
    return tuple(n if a == dim else 1 for a, n in enumerate(weight_shape_torch))


def split(weight: mx.array, groups: int = 1, dim: Optional[int] = 0, transposed: bool = True) -> Tuple[mx.array, mx.array]:
    """``(g, v)`` of an MLX-layout weight, as ``torch.nn.utils.weight_norm`` initialises them.

    Args:
        weight: MLX-layout weight ``(C_out, K, C_in/groups)``.
        groups (int): channel groups. Default: ``1``.
        dim (int, optional): PyTorch's ``dim``. Default: ``0``.
        transposed (bool): the weight of a transposed (default) or a direct convolution.

    Returns:
        ``(g, v)``: ``g`` in PyTorch's shape, ``v`` the weight itself.
    """
    dim = norm_dim(dim)
    g = _norm(to_torch_layout(weight, groups, transposed), dim)
    return (g.reshape(()) if dim is None else g), weight


def combine(g: mx.array, v: mx.array, groups: int = 1, dim: Optional[int] = 0, transposed: bool = True) -> mx.array:
    """The MLX-layout weight ``g * v / ||v||`` (norm over all PyTorch axes but ``dim``)."""
    dim = norm_dim(dim)
    v_torch = to_torch_layout(v, groups, transposed)
    return from_torch_layout(g * v_torch / _norm(v_torch, dim), groups, transposed)
