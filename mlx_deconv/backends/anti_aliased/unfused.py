"""Backend ``"unfused"``: the anti-aliased activation's five steps one by one, the baseline every fused form must equal.

The two filterings are the ``gemm`` backend's depthwise transposed convolution and convolution, run on
geometries validated here: the backend below the ops, not the public ops. Differentiable in every
array, the filters included.
"""

from __future__ import annotations

from typing import Optional, Tuple

import mlx.core as mx

from ...geometry.activation import SNAKE_EPS, ActivationGeometry
from ...geometry.validation import conv1d_geometry, conv_geometry
from .. import gemm


def _snake(u: mx.array, a: mx.array, b: mx.array) -> mx.array:
    return u + mx.square(mx.sin(u * a)) * (1.0 / (b + SNAKE_EPS))


def _snake_params(alpha: mx.array, beta: Optional[mx.array], geom: ActivationGeometry, dtype) -> Tuple[mx.array, mx.array]:
    a = alpha.astype(dtype)
    b = a if beta is None else beta.astype(dtype)
    if geom.logscale:
        a = mx.exp(a)
        b = mx.exp(b) if beta is not None else a
    return a, b


def run(x: mx.array, alpha: mx.array, beta: Optional[mx.array], up: mx.array, down: mx.array,
        geom: ActivationGeometry) -> mx.array:
    """The five steps one by one, on NLC ``x`` ``(N, L, C)``; filters ``(Ku,)``, ``(Kd,)``."""
    c, r = geom.channels, geom.ratio
    p = geom.up_pad
    xp = mx.pad(x, [(0, 0), (p, p), (0, 0)], mode="edge") if p > 0 else x
    w_up = mx.broadcast_to((up * r).astype(x.dtype).reshape(1, -1, 1), (c, geom.up_taps, 1))
    up_geom, _ = conv_geometry(xp.shape, w_up.shape, stride=r, padding=geom.up_crop, groups=c)
    u = gemm.conv_transpose1d(xp, w_up, None, up_geom)
    a, b = _snake_params(alpha, beta, geom, x.dtype)
    v = _snake(u, a, b)
    vp = mx.pad(v, [(0, 0), geom.down_pad, (0, 0)], mode="edge")
    w_down = mx.broadcast_to(down.astype(x.dtype).reshape(1, -1, 1), (c, geom.down_taps, 1))
    down_geom, _ = conv1d_geometry(vp.shape, w_down.shape, stride=r, groups=c)
    return gemm.conv1d(vp, w_down, None, down_geom)
