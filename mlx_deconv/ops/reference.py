"""A float64 numpy oracle for ``mlx-deconv check`` and the demo: the transposed convolution and the anti-aliased activation.

Gather form of the definition: output sample ``t`` is full-output sample
``u = t + crop``, which input row ``l`` reaches through tap ``k`` exactly when
``l*stride + k*dilation == u``. For each tap, the rows that reach each output
sample are found by index arithmetic, so memory stays at the output's size.
(The test suite keeps its own, separately written scatter-form references in
``tests/reference.py``, and checks this one against them.)
"""

from __future__ import annotations

import numpy as np

from ..geometry.activation import SNAKE_EPS, ActivationGeometry
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


def anti_aliased_activation(x: np.ndarray, alpha: np.ndarray, beta, up: np.ndarray, down: np.ndarray,
                            geom: ActivationGeometry) -> np.ndarray:
    """Float64 output of the anti-aliased activation on NLC ``x``, step by step from the definition:
    edge pad, zero-stuffed upsampling by ``ratio`` (taps times ``ratio``), crop, Snake/SnakeBeta, edge pad,
    low-pass and keep every ``ratio``-th sample."""
    x = np.asarray(x, dtype=np.float64)
    r, f, g = geom.ratio, np.asarray(up, np.float64) * geom.ratio, np.asarray(down, np.float64)
    p = geom.up_pad
    xp = np.concatenate([np.repeat(x[:, :1], p, 1), x, np.repeat(x[:, -1:], p, 1)], axis=1)
    stuffed = np.zeros((x.shape[0], xp.shape[1] * r, x.shape[2]))
    stuffed[:, ::r] = xp
    full = np.zeros((x.shape[0], stuffed.shape[1] + len(f) - 1, x.shape[2]))
    for k, tap in enumerate(f):
        full[:, k:k + stuffed.shape[1]] += tap * stuffed
    left, right = geom.up_crop
    u = full[:, left:full.shape[1] - right][:, :geom.up_length]
    a = np.asarray(alpha, np.float64)
    b = a if beta is None else np.asarray(beta, np.float64)
    if geom.logscale:
        a, b = np.exp(a), np.exp(b)
    v = u + np.sin(a * u) ** 2 / (b + SNAKE_EPS)
    dl, dr = geom.down_pad
    vp = np.concatenate([np.repeat(v[:, :1], dl, 1), v, np.repeat(v[:, -1:], dr, 1)], axis=1)
    y = np.zeros((x.shape[0], geom.output_length, x.shape[2]))
    for t in range(geom.output_length):
        y[:, t] = np.einsum("k,nkc->nc", g, vp[:, t * r:t * r + len(g)])
    return y
