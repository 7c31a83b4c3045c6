"""Weight layouts of other frameworks.

Layouts of a transposed-conv weight with ``G`` groups:
    * ``"mlx"``:   ``(C_out, K, C_in/G)`` — what ``mx.conv_transpose1d`` takes.
    * ``"torch"``: ``(C_in, C_out/G, K)`` — PyTorch's and Lucid's ``ConvTranspose1d``.
    * Keras ``Conv1DTranspose``: ``(K, C_out, C_in)`` (no groups).

It also reads PyTorch state dicts (numpy arrays or tensors, torch not needed).

The functions work on ``mx.array`` and ``numpy.ndarray`` alike (only
``reshape`` and ``transpose`` are used), so gradients flow through them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import numpy as np


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


def keras_to_mlx_weight(kernel):
    """Keras ``Conv1DTranspose`` kernel ``(K, C_out, C_in)`` -> MLX ``(C_out, K, C_in)``."""
    return kernel.transpose(1, 0, 2)


def mlx_to_keras_weight(weight):
    """MLX ``(C_out, K, C_in)`` -> Keras ``(K, C_out, C_in)``."""
    return weight.transpose(1, 0, 2)


def to_numpy(value) -> np.ndarray:
    """A numpy array from a numpy array, a torch tensor (any device, bfloat16 too) or anything with ``__array__``."""
    if hasattr(value, "detach"):  # torch.Tensor, without importing torch
        value = value.detach().cpu()
        if str(value.dtype) == "torch.bfloat16":
            value = value.float()
        return value.numpy()
    if hasattr(value, "numpy") and not isinstance(value, np.ndarray):
        return np.asarray(value.numpy())
    return np.asarray(value)


@dataclass
class TorchWeights:
    """One PyTorch ``ConvTranspose1d``'s tensors, weight norm recognised."""

    weight: Optional[np.ndarray]  # plain weight, PyTorch layout
    g: Optional[np.ndarray]  # weight norm magnitude
    v: Optional[np.ndarray]  # weight norm direction, PyTorch layout
    dim: Optional[int]  # weight norm dim, read off g's shape
    bias: Optional[np.ndarray]

    @property
    def weight_shape(self) -> Tuple[int, ...]:
        return tuple((self.v if self.g is not None else self.weight).shape)


_WEIGHT_NORM_KEYS = (("weight_g", "weight_v"), ("parametrizations.weight.original0", "parametrizations.weight.original1"))


def read_torch_state_dict(state_dict: Dict[str, object], prefix: str = "") -> TorchWeights:
    """Finds a transposed conv's tensors under ``prefix``: ``weight``, legacy or parametrized weight norm, ``bias``.

    Raises:
        ValueError: naming the keys found when no weight is there, or a weight that is not 3-D.
    """
    keys = {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}
    bias = to_numpy(keys["bias"]) if "bias" in keys else None
    for g_key, v_key in _WEIGHT_NORM_KEYS:
        if g_key in keys and v_key in keys:
            g, v = to_numpy(keys[g_key]), to_numpy(keys[v_key])
            if v.ndim != 3:
                raise ValueError(f"{prefix}{v_key} must be 3-D (C_in, C_out/groups, K), got shape {v.shape}")
            if g.ndim == 0 or g.size == 1 and v.size > 1 and g.ndim != 3:
                dim = None
            else:
                sized = [a for a in range(g.ndim) if g.shape[a] != 1]
                dim = sized[0] if sized else 0
            return TorchWeights(None, g, v, dim, bias)
    if "weight" not in keys:
        raise ValueError(
            f"no transposed-conv weight under prefix {prefix!r}: expected 'weight', 'weight_g'/'weight_v' or "
            f"'parametrizations.weight.original0/1', found {sorted(keys)}"
        )
    weight = to_numpy(keys["weight"])
    if weight.ndim != 3:
        raise ValueError(f"{prefix}weight must be 3-D (C_in, C_out/groups, K), got shape {weight.shape}")
    return TorchWeights(weight, None, None, None, bias)
