"""The anti-aliased activation as a few large MLX ops: what ``"polyphase"`` runs when its call is traced.

Inside ``mx.grad``, ``mx.vjp`` or a caller's ``mx.compile`` MLX compiles nothing given tracers, so the
fused kernels would run op by op. Here each filtering is one matmul instead: the signal, one row per
channel, is cut into blocks, each block is read with the few samples its taps reach past it (a
window), and a banded matrix maps every window to its output block at once. The snake in between is
elementwise (:mod:`.sine`).

Where the filters' taps can be read (``mx.grad``, ``mx.vjp``), the map and its VJP (MLX's, of these
ops) are compiled functions, built on the worker thread, which is not tracing, so MLX compiles them:
the call is one custom function whose two sides each hand a few fused nodes to the caller's graph,
evaluated with it (nothing is evaluated or copied when they are built). Inside a caller's
``mx.compile`` whose inputs include the filters (a training step compiled with ``inputs=model.state``),
the ops go into the caller's graph as they are, and MLX fuses them there.

The matrices hold zeros off their bands, so a non-finite sample of ``x`` reaches every output whose
block's window holds it (``Inf * 0`` is NaN): up to about four blocks of 16 samples, where the fused
kernels put it only where the definition does. The filters are constants here too.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import lru_cache
from typing import Optional, Tuple

import mlx.core as mx
import numpy as np

from ...geometry.activation import ActivationGeometry
from ...runtime.compiling import per_thread_cache
from .gradient import build_untraced
from .phases import filter_taps, snake_params
from .sine import reduce_pi, sin_cos_reduced, sin_squared, sin_squared_reduced

#: Up to this many elements of ``x`` a traced call takes this form inside a caller's ``mx.compile`` that holds the
#: filters, whose graph it joins (measured: docs/performance-history.md).
MAX_ELEMENTS = 1 << 16

#: Up to this many elements, a traced call whose taps can be read takes this form built off the trace; past it the
#: fused kernels, built the same way, were faster (a BigVGAN-128 step on 64 frames: 1.35-1.47x PyTorch's time
#: against 1.54-1.69x; docs/performance-history.md).
OFF_TRACE_MAX_ELEMENTS = 1 << 14

#: Input samples per block of the upsampling (output samples per block of the low-pass). A block
#: costs ``2 * ratio * (BLOCK + taps / ratio)`` flops a sample: small blocks waste less on the band's
#: zeros, large ones make fewer, longer matmul rows.
BLOCK = 16


@dataclass(frozen=True, eq=False)  # one per geometry (bands() is cached): hashed by identity
class Band:
    """One filtering as blocks: window ``j`` reads the signal's samples ``j*step + lo ..`` (``width`` of them,
    zero outside the signal) and gives ``rows`` outputs; ``taps[o, w]`` is the tap at output ``o``,
    window sample ``w`` (-1: none)."""

    lo: int
    step: int
    width: int
    rows: int
    blocks: int
    taps: np.ndarray


def bands(geom: ActivationGeometry) -> Tuple[Band, Band]:
    """The upsampling's and the low-pass's bands for an activation geometry (``up_pad``, crops and pads
    as :class:`~mlx_deconv.geometry.activation.ActivationGeometry` gives them); the same objects for every
    batch and channel count."""
    return _bands(dataclasses.replace(geom, batch=1, channels=1, activation="snake", logscale=False))


@lru_cache(maxsize=256)
def _bands(geom: ActivationGeometry) -> Tuple[Band, Band]:
    r, L, ku, kd = geom.ratio, geom.length, geom.up_taps, geom.down_taps
    # Upsampling: u[j] = sum_m xp[m] f[j + crop - r*m] for j < r*L, xp being x edge-padded (L + 2p samples).
    b = min(BLOCK, L)
    crop = geom.up_crop[0]
    lo = -((ku - 1 - crop) // r)  # the first xp sample a block's first output reads, relative to the block
    hi = (r * b - 1 + crop) // r
    width = hi - lo + 1
    o = np.arange(r * b)[:, None]
    k = o + crop - r * (np.arange(width)[None, :] + lo)
    up = Band(lo, b, width, r * b, -(-L // b), np.where((k >= 0) & (k < ku), k, -1))
    # Low-pass: y[t] = sum_j g[j] vp[r*t + j] for t < T, vp being v edge-padded.
    t_len = geom.output_length
    b = min(BLOCK, t_len)
    width = r * (b - 1) + kd
    k = np.arange(width)[None, :] - r * np.arange(b)[:, None]
    down = Band(0, r * b, width, b, -(-t_len // b), np.where((k >= 0) & (k < kd), k, -1))
    return up, down


@lru_cache(maxsize=64)
def _constant(band: Band, taps: Tuple[float, ...], scale: float, dtype) -> mx.array:
    values = np.append(np.asarray(taps, np.float64) * scale, 0.0)[band.taps]
    m = mx.array(values.T.astype(np.float32)).astype(dtype)  # (width, rows): windows @ m
    mx.eval(m)
    return m


def _matrix(band: Band, filter_: mx.array, scale: float, dtype) -> mx.array:
    """``(width, rows)``: constants when the taps can be read, else gathered from ``filter_`` in the graph."""
    try:
        taps = tuple(float(v) for v in filter_.tolist())
    except (ValueError, RuntimeError):  # inside a caller's mx.compile: the taps are a tracer
        # Constants, as where the taps are read: a filter's gradient must not depend on compiling.
        padded = mx.concatenate([mx.stop_gradient(filter_).astype(dtype) * scale, mx.zeros((1,), dtype)])
        return padded[mx.array(band.taps.T)]
    return _constant(band, taps, scale, dtype)


def _filtered(pieces, origin: int, band: Band, matrix: mx.array) -> mx.array:
    """``(R, blocks * rows)``: the band applied to the signal ``concatenate(pieces)[:, origin:]`` (zero outside)."""
    rows_, dtype = pieces[0].shape[0], pieces[0].dtype
    length = sum(p.shape[1] for p in pieces)
    extra = -(-(band.width - band.step) // band.step) if band.width > band.step else 0
    total = (band.blocks + extra) * band.step
    start = origin + band.lo
    left, right = max(0, -start), max(0, start + total - length)
    parts = ([mx.zeros((rows_, left), dtype)] if left else []) + list(pieces) \
        + ([mx.zeros((rows_, right), dtype)] if right else [])
    s = mx.concatenate(parts, axis=1) if len(parts) > 1 else parts[0]
    start += left
    if start or s.shape[1] != total:
        s = s[:, start: start + total]
    s = s.reshape(rows_, band.blocks + extra, band.step)
    if extra:
        s = mx.concatenate([s[:, i: i + band.blocks] for i in range(extra + 1)], axis=2)
    windows = s[:, : band.blocks, : band.width] if s.shape[1:] != (band.blocks, band.width) else s
    return (windows.reshape(-1, band.width) @ matrix).reshape(rows_, -1)


@mx.custom_function
def _snake(u: mx.array, a: mx.array, ib: mx.array) -> mx.array:
    """``u + sin(a*u)**2 * ib``, rows ``u`` ``(R, M)``, ``a`` and ``ib`` ``(R, 1)``."""
    return u + sin_squared(u * a) * ib


@_snake.vjp
def _snake_vjp(primals, cotangent, output):
    # Written out: MLX's own VJP of the polynomial takes about twice the ops.
    u, a, ib = primals
    r = reduce_pi(u * a)
    t = cotangent * sin_cos_reduced(r)  # sin*cos: half the derivative of sin**2
    return (cotangent + t * (2.0 * a * ib), (t * u).sum(axis=1, keepdims=True) * (2.0 * ib),
            (cotangent * sin_squared_reduced(r)).sum(axis=1, keepdims=True))


def run(x: mx.array, alpha: mx.array, beta: Optional[mx.array], up: mx.array, down: mx.array,
        geom: ActivationGeometry, taps=None) -> mx.array:
    """The map on NLC ``x`` ``(N, L, C)`` (filters ``(Ku,)``, ``(Kd,)``), differentiable in ``x``, ``alpha`` and
    ``beta`` (the filters are constants); half precision is computed in float32, rounded once.

    Compiled off the trace when the taps can be read (:func:`_off_trace`), else MLX ops in the caller's graph
    (:func:`in_graph`). ``taps``: :func:`~.phases.filter_taps`'s, if already read."""
    taps = filter_taps(up, down) if taps is None else taps
    if taps[0] is None:
        return in_graph(x, alpha, beta, up, down, geom)
    return _off_trace(geom, beta is not None, *taps)(x, alpha, alpha if beta is None else beta)


@lru_cache(maxsize=64)
def _off_trace(geom: ActivationGeometry, has_beta: bool, up_taps: Tuple[float, ...], down_taps: Tuple[float, ...]):
    """``fn(x, alpha, beta)``: a custom function whose forward and VJP are :func:`_compiled`'s, built by
    :func:`.gradient.build_untraced` (``beta`` is a stand-in for Snake, its cotangent zero)."""
    @mx.custom_function
    def fn(xv, al, be):
        return build_untraced(lambda *a: _compiled(geom, has_beta, up_taps, down_taps)[0](*a), [xv, al, be])

    @fn.vjp
    def fn_vjp(primals, cotangent, output):
        return tuple(build_untraced(lambda *a: _compiled(geom, has_beta, up_taps, down_taps)[1](*a),
                                    [*primals, cotangent]))
    return fn


@per_thread_cache(maxsize=64)
def _compiled(geom: ActivationGeometry, has_beta: bool, up_taps: Tuple[float, ...], down_taps: Tuple[float, ...]):
    """``(forward, backward)``: :func:`in_graph` with the taps as constants, and MLX's VJP of it, each compiled."""
    up, down = mx.array(up_taps, mx.float32), mx.array(down_taps, mx.float32)

    def forward(xv, al, be):
        return in_graph(xv, al, be if has_beta else None, up, down, geom)

    def backward(xv, al, be, ybar):
        return tuple(mx.vjp(forward, [xv, al, be], [ybar])[1])
    return mx.compile(forward), mx.compile(backward)


def in_graph(x: mx.array, alpha: mx.array, beta: Optional[mx.array], up: mx.array, down: mx.array,
             geom: ActivationGeometry) -> mx.array:
    """The map on NLC ``x`` ``(N, L, C)`` (filters ``(Ku,)``, ``(Kd,)``) as MLX ops, differentiable by MLX
    in every array; half precision is computed in float32, rounded once."""
    n, L, c = x.shape
    cd = mx.float32 if x.dtype in (mx.float16, mx.bfloat16) else x.dtype
    r, p = geom.ratio, geom.up_pad
    band_up, band_down = bands(geom)
    rows = x.astype(cd).transpose(0, 2, 1).reshape(n * c, L)
    edges = [mx.broadcast_to(rows[:, :1], (n * c, p)), rows, mx.broadcast_to(rows[:, -1:], (n * c, p))] if p else [rows]
    u = _filtered(edges, 0, band_up, _matrix(band_up, up, float(r), cd))
    if u.shape[1] != r * L:
        u = u[:, : r * L]
    a, ib = snake_params(alpha, beta, geom.logscale, cd)
    a = mx.broadcast_to(a[:, None], (n, c, 1)).reshape(n * c, 1) if n > 1 else a[:, None]
    ib = mx.broadcast_to(ib[:, None], (n, c, 1)).reshape(n * c, 1) if n > 1 else ib[:, None]
    v = _snake(u, a, ib)
    left, right = geom.down_pad
    pieces = ([mx.broadcast_to(v[:, :1], (n * c, left))] if left else []) + [v] \
        + ([mx.broadcast_to(v[:, -1:], (n * c, right))] if right else [])
    t_len = geom.output_length
    y = _filtered(pieces, 0, band_down, _matrix(band_down, down, 1.0, cd))
    if y.shape[1] != t_len:
        y = y[:, :t_len]
    return y.reshape(n, c, t_len).transpose(0, 2, 1).astype(x.dtype)
