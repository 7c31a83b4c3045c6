"""Weight layouts of other frameworks.

Layouts of a transposed-conv weight with ``G`` groups:
    * ``"mlx"``:   ``(C_out, K, C_in/G)`` — what ``mx.conv_transpose1d`` takes.
    * ``"torch"``: ``(C_in, C_out/G, K)`` — PyTorch's and Lucid's ``ConvTranspose1d``.

The functions work on ``mx.array`` and ``numpy.ndarray`` alike (only
``reshape`` and ``transpose`` are used), so gradients flow through them.
"""

from __future__ import annotations


def torch_to_mlx_weight(weight, groups: int = 1):
    """``(C_in, C_out/G, K)`` -> ``(C_out, K, C_in/G)``.

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
