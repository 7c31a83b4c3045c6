"""A float64 numpy oracle for ``python -m mlx_deconv check`` and the demo.

The transposed convolution is a linear map, so it is written here as an
explicit matrix built entry by entry from the definition
``y[l*stride + k*dilation - crop] += x[l] @ w[k].T``; its transpose gives the
input gradient. Memory grows with ``(L * C_in) * (L_out * C_out)``: meant for
the small problems a check runs, not for production. (The test suite keeps
its own, separately written references in ``tests/reference.py``.)
"""

from __future__ import annotations

import numpy as np

from .geometry import Geometry


def conv_matrix(weight: np.ndarray, geom: Geometry) -> np.ndarray:
    """``M`` with ``y.reshape(L_out*C_out) = M @ x.reshape(L*C_in)`` for one batch item.

    Args:
        weight: MLX-layout ``(C_out, K, C_in/groups)``.
        geom: the validated geometry.
    """
    weight = np.asarray(weight, dtype=np.float64)
    cig, cog = geom.in_per_group, geom.out_per_group
    m = np.zeros((geom.output_length, geom.out_channels, geom.length, geom.in_channels))
    for l in range(geom.length):
        for k in range(geom.kernel_size):
            t = l * geom.stride + k * geom.dilation - geom.crop
            if not 0 <= t < geom.output_length:
                continue
            for g in range(geom.groups):
                m[t, g * cog : (g + 1) * cog, l, g * cig : (g + 1) * cig] += weight[g * cog : (g + 1) * cog, k, :]
    return m.reshape(geom.output_length * geom.out_channels, geom.length * geom.in_channels)


def conv_transpose1d(x: np.ndarray, weight: np.ndarray, bias, geom: Geometry) -> np.ndarray:
    """Float64 output ``(N, L_out, C_out)`` of NLC ``x``."""
    m = conv_matrix(weight, geom)
    x = np.asarray(x, dtype=np.float64).reshape(geom.batch, -1)
    y = (x @ m.T).reshape(geom.batch, geom.output_length, geom.out_channels)
    if bias is not None:
        y = y + np.asarray(bias, dtype=np.float64)
    return y
