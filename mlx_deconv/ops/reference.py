"""A float64 numpy oracle for ``python -m mlx_deconv check`` and the demo.

Gather form of the definition: output sample ``t`` is full-output sample
``u = t + crop``, which input row ``l`` reaches through tap ``k`` exactly when
``l*stride + k*dilation == u``. For each tap, the rows that reach each output
sample are found by index arithmetic, so memory stays at the output's size.
(The test suite keeps its own, separately written scatter-form references in
``tests/reference.py``, and checks this one against them.)
"""

from __future__ import annotations

import numpy as np

from ..geometry.records import Geometry


def conv_transpose1d(x: np.ndarray, weight: np.ndarray, bias, geom: Geometry) -> np.ndarray:
    """Float64 output ``(N, L_out, C_out)`` of NLC ``x`` and an MLX-layout ``weight``."""
    x = np.asarray(x, dtype=np.float64)
    weight = np.asarray(weight, dtype=np.float64)
    cig, cog = geom.in_per_group, geom.out_per_group
    y = np.zeros((geom.batch, geom.output_length, geom.out_channels))
    u = np.arange(geom.output_length) + geom.crop
    for k in range(geom.kernel_size):
        v = u - k * geom.dilation
        reached = (v >= 0) & (v % geom.stride == 0) & (v // geom.stride < geom.length)
        rows = v[reached] // geom.stride
        for g in range(geom.groups):
            taps = weight[g * cog : (g + 1) * cog, k, :]  # (cog, cig)
            y[:, reached, g * cog : (g + 1) * cog] += x[:, rows, g * cig : (g + 1) * cig] @ taps.T
    if bias is not None:
        y = y + np.asarray(bias, dtype=np.float64)
    return y
