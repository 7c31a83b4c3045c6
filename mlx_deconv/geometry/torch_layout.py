"""PyTorch's weight layouts of a 1-D convolution, as pure reshapes and transposes.

With ``G`` groups: transposed convolution, MLX ``(C_out, K, C_in/G)`` and PyTorch
``(C_in, C_out/G, K)``; direct convolution, MLX ``(C_out, K, C_in/G)`` and PyTorch
``(C_out, C_in/G, K)``. Every function works on ``mx.array`` and ``numpy.ndarray``
alike, so gradients flow through them.
"""

from __future__ import annotations


def torch_to_mlx_weight(weight, groups: int = 1):
    """``(C_in, C_out/G, K)`` -> ``(C_out, K, C_in/G)`` for a transposed convolution.

    Args:
        weight: a PyTorch-layout transposed-conv weight.
        groups (int): the number of groups ``G``. Default: ``1``.

    Returns:
        The same weight in MLX layout, of the input's array type.
    """
    in_channels, out_per_group, taps = weight.shape
    in_per_group = in_channels // groups
    w = weight.reshape(groups, in_per_group, out_per_group, taps).transpose(0, 2, 3, 1)
    return w.reshape(groups * out_per_group, taps, in_per_group)


def mlx_to_torch_weight(weight, groups: int = 1):
    """``(C_out, K, C_in/G)`` -> ``(C_in, C_out/G, K)``; the inverse of :func:`torch_to_mlx_weight`."""
    out_channels, taps, in_per_group = weight.shape
    out_per_group = out_channels // groups
    w = weight.reshape(groups, out_per_group, taps, in_per_group).transpose(0, 3, 1, 2)
    return w.reshape(groups * in_per_group, out_per_group, taps)


def to_torch_layout(weight, groups: int = 1, transposed: bool = True):
    """An MLX-layout weight in PyTorch's layout for the transposed (default) or the direct convolution."""
    return mlx_to_torch_weight(weight, groups) if transposed else weight.transpose(0, 2, 1)


def from_torch_layout(weight, groups: int = 1, transposed: bool = True):
    """A PyTorch-layout weight in MLX's layout; the inverse of :func:`to_torch_layout`."""
    return torch_to_mlx_weight(weight, groups) if transposed else weight.transpose(0, 2, 1)
