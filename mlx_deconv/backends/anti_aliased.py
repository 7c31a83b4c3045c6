"""BigVGAN's anti-aliased activation (pad, upsample, Snake/SnakeBeta, pad, downsample) as one op.

The map, for a signal ``x`` of ``L`` samples per channel, ratio ``r``, an up filter ``f`` of ``Ku``
taps and a down filter ``g`` of ``Kd`` taps (NVIDIA's ``Activation1d``, ``UpSample1d``,
``DownSample1d``):

1. ``xp``: ``x`` edge-padded by ``p = Ku // r - 1`` samples on each side;
2. ``u = r * conv_transpose1d(xp, f, stride=r)`` cropped by ``(p*r + (Ku-r)//2, p*r + (Ku-r+1)//2)``:
   ``r*L`` samples;
3. ``v = u + sin(a*u)**2 / (b + 1e-9)`` with ``a = alpha``, ``b = beta`` (``b = alpha`` for Snake),
   both ``exp()``-ed first when ``logscale``;
4. ``vp``: ``v`` edge-padded by ``(Kd//2 - (1 if Kd is even else 0), Kd//2)``;
5. ``y = conv1d(vp, g, stride=r)``: ``L`` samples (``(r*L - 1)//r + 1``).

Paths, all computing that map:

* :func:`unfused`: the steps above one by one with the package's depthwise ops (the baseline).
* :func:`polyphase` (CPU streams): sample ``r*q + s`` of ``u`` is a ``Ku/r``-tap filter of ``xp``
  (taps ``k = (s + crop_left) mod r, + r, ...``), so the ``r`` phases of ``u`` come from shifted
  views of ``xp`` with no zero-stuffed, interleaved or cropped intermediate; the snake runs per phase,
  and the down filter reads phase ``b`` with its taps ``j`` where ``(j - pad_left) mod r == b``. The
  edge pad of the interleaved ``v`` extends every phase by ``v[0]`` (phase 0's first sample) on the
  left and ``v[r*L - 1]`` (the last phase's last) on the right; only the first and last few outputs
  read that extension, from small windows. ``sin`` is computed by argument reduction and
  polynomials (MLX's CPU ``sin`` is one scalar call per element), so every step is a short fused,
  vectorised kernel (see "Kernel building" below). Half precision is computed in float32, rounded once.
* :func:`metal_kernel` (Metal GPU streams): ``metal/anti_aliased_activation.metal``, one thread per
  output sample and channel doing pad, upsample, snake and low-pass in one pass; verified on Linux by
  :func:`emulate` (MLX's generated source compiled with g++, every thread run on the CPU).

Both fused paths are ``mx.custom_function`` s with a polyphase VJP (:func:`_backward`): the down taps'
adjoint, the edge extension's, the snake's derivative, the up taps' adjoint and the edge pad's.
Inside ``mx.grad`` MLX does not compile functions given tracers, so their work is handed, evaluated,
to a worker thread that is not tracing (:func:`run_untraced`).
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import mlx.core as mx
import numpy as np

from ..runtime.compiling import per_thread_cache
from . import metal

#: BigVGAN's guard against dividing by a (trained) zero alpha or beta.
SNAKE_EPS = 1e-9
ACTIVATIONS = ("snake", "snakebeta")


@dataclass(frozen=True)
class AAGeometry:
    """Everything but the arrays: lengths, ratio, taps and the pads they imply."""

    batch: int
    length: int
    channels: int
    ratio: int
    up_taps: int
    down_taps: int
    activation: str
    logscale: bool

    @property
    def up_pad(self) -> int:
        """Edge samples added to each side of ``x`` before the upsampling."""
        return self.up_taps // self.ratio - 1

    @property
    def up_crop(self) -> Tuple[int, int]:
        """Samples cropped off the transposed convolution's full output (left, right)."""
        r, k, p = self.ratio, self.up_taps, self.up_pad
        return p * r + (k - r) // 2, p * r + (k - r + 1) // 2

    @property
    def down_pad(self) -> Tuple[int, int]:
        """Edge samples added to the upsampled signal before the low-pass (left, right)."""
        k = self.down_taps
        return k // 2 - (1 if k % 2 == 0 else 0), k // 2

    @property
    def up_length(self) -> int:
        return self.ratio * self.length

    @property
    def output_length(self) -> int:
        r = self.ratio
        left, right = self.down_pad
        return (self.up_length + left + right - self.down_taps) // r + 1


# ---------------------------------------------------------------------------------------------
# The unfused chain (the package's depthwise ops), the baseline every fused path must equal.


def _snake(u: mx.array, a: mx.array, b: mx.array) -> mx.array:
    return u + mx.square(mx.sin(u * a)) * (1.0 / (b + SNAKE_EPS))


def _snake_params(alpha: mx.array, beta: Optional[mx.array], geom: AAGeometry, dtype) -> Tuple[mx.array, mx.array]:
    a = alpha.astype(dtype)
    b = a if beta is None else beta.astype(dtype)
    if geom.logscale:
        a = mx.exp(a)
        b = mx.exp(b) if beta is not None else a
    return a, b


def unfused(x: mx.array, alpha: mx.array, beta: Optional[mx.array], up: mx.array, down: mx.array,
            geom: AAGeometry) -> mx.array:
    """The five steps one by one, on NLC ``x`` ``(N, L, C)``; filters ``(Ku,)``, ``(Kd,)``."""
    from ..ops.functional import conv1d, conv_transpose1d

    c, r = geom.channels, geom.ratio
    p = geom.up_pad
    xp = mx.pad(x, [(0, 0), (p, p), (0, 0)], mode="edge") if p > 0 else x
    w_up = mx.broadcast_to((up * r).astype(x.dtype).reshape(1, -1, 1), (c, geom.up_taps, 1))
    u = conv_transpose1d(xp, w_up, stride=r, padding=geom.up_crop, groups=c)
    a, b = _snake_params(alpha, beta, geom, x.dtype)
    v = _snake(u, a, b)
    vp = mx.pad(v, [(0, 0), geom.down_pad, (0, 0)], mode="edge")
    w_down = mx.broadcast_to(down.astype(x.dtype).reshape(1, -1, 1), (c, geom.down_taps, 1))
    return conv1d(vp, w_down, stride=r, groups=c)


# ---------------------------------------------------------------------------------------------
# The polyphase form (CPU streams).


@dataclass(frozen=True)
class PhasePlan:
    """Which taps and shifts make each phase, for a ratio and the two filters' lengths.

    ``up[s]``: ``(k, d)`` pairs: phase ``s`` of ``u`` at ``q`` (sample ``r*q + s``) is
    ``r * sum f[k] * xp[q + d]``, ``xp`` being zero outside its ``L + 2*up_pad`` samples (a transposed
    convolution has no signal there).
    ``down[b]``: ``(j, a)`` pairs: ``y[t] = sum_b sum g[j] * V_b[t + a]``, ``V_b`` being phase ``b``
    of ``v`` extended by ``v[0]`` on the left and ``v[r*L - 1]`` on the right (the interleaved signal's
    edge pad), ``ext`` samples each side: outputs ``ext[0] <= t < L - ext[1]`` read no extension.
    ``zeros``: the zeros ``xp`` needs on each side so that each tap of a phase is one slice.
    """

    ratio: int
    up_pad: int
    up: Tuple[Tuple[Tuple[int, int], ...], ...]
    down: Tuple[Tuple[Tuple[int, int], ...], ...]
    ext: Tuple[int, int]
    zeros: Tuple[int, int]


@lru_cache(maxsize=None)
def phase_plan(ratio: int, up_taps: int, down_taps: int) -> PhasePlan:
    geom = AAGeometry(1, 1, 1, ratio, up_taps, down_taps, "snake", False)
    r, p = ratio, geom.up_pad
    crop = geom.up_crop[0]
    # u[r*q + s] = r * u_full[r*q + s + crop], u_full[i] = sum_m xp[m] f[i - r*m]: the taps
    # k = s + crop - r*m, i.e. k = (s + crop) mod r, + r, ..., each at m = q + (s + crop - k) / r.
    up = tuple(tuple((k, (s + crop - k) // r) for k in range(up_taps) if (s + crop - k) % r == 0) for s in range(r))
    left = geom.down_pad[0]
    down: List[List[Tuple[int, int]]] = [[] for _ in range(r)]
    for j in range(down_taps):
        a, b = divmod(j - left, r)  # padded sample r*t + j is v[r*(t + a) + b]
        down[b].append((j, a))
    shifts = [a for taps in down for _, a in taps]
    ext = (max(0, -min(shifts)), max(0, max(shifts)))
    ds = [d for taps in up for _, d in taps]
    zeros = (max(0, -min(ds)), max(0, max(ds) - 2 * p))
    return PhasePlan(r, p, up, tuple(tuple(t) for t in down), ext, zeros)


def _compute_dtype(dtype):
    return mx.float32 if dtype in (mx.float16, mx.bfloat16) else dtype


# sin(r) = r * (1 + c1 r^2 + ... + c4 r^8) on |r| <= pi/2 + 0.02 (coefficients fitted here to the
# relative error, in float64; sin^2 from them is within 3.5e-7 of the true value in float32) after the
# argument is reduced by a multiple of pi (sin^2 has period pi) in two parts, the first exact in float32
# for |k| < 4096 (|alpha * u| below about 12800); beyond that the reduction loses bits gradually, and
# past 2^22 * pi the rounding trick no longer gives an integer: the reduced argument is then clamped, so
# the term stays bounded (float32 has no fraction left in such an argument anyway).
_SIN_POLY = (-0.16666659712791443, 0.008333069272339344, -0.0001980957604246214, 2.6052709927171236e-06)
_PI_HI, _PI_LO = 3.140625, 9.675025939941406e-04 + 1.5099580252808664e-07
_INV_PI = 0.3183098861837907
_ROUNDER = 12582912.0  # 1.5 * 2^23: (y + it) - it rounds y to an integer in float32 (no rint call)


def reduce_pi(t: mx.array) -> mx.array:
    """``t`` minus the nearest multiple of pi (in [-pi/2, pi/2]); NaN for NaN or infinite ``t``.

    Where the rounding trick fails (``|t| > 2^22 * pi``) the result is set to 0, so ``sin**2`` stays
    bounded. (A select, not a clamp: MLX's minimum/maximum test for NaN per element and stop the
    compiler from vectorising the loop.)
    """
    k = mx.stop_gradient((t * _INV_PI + _ROUNDER) - _ROUNDER)
    r = (t - k * _PI_HI) - k * _PI_LO
    return mx.where(mx.abs(r) > 2.0, 0.0, r)  # |NaN| > 2 is false: NaN stays


def sin_squared_reduced(r: mx.array) -> mx.array:
    """``sin(r)**2`` for ``|r| <= pi/2`` from the odd polynomial above, evaluated with little depth."""
    c1, c2, c3, c4 = _SIN_POLY
    z = r * r
    z2 = z * z
    q = (1.0 + c1 * z) + z2 * ((c2 + c3 * z) + c4 * z2)
    s = r * q
    return s * s


def sin_squared(t: mx.array) -> mx.array:
    """``sin(t)**2`` in elementwise arithmetic only (MLX's CPU ``sin`` is a scalar call per element;
    this fuses and vectorises under ``mx.compile``)."""
    return sin_squared_reduced(reduce_pi(t))


# cos(r) = 1 + d1 r^2 + ... + d4 r^8 on the same interval (fitted the same way; within 1.8e-7 in float32).
_COS_POLY = (-0.4999992549419403, 0.04166378080844879, -0.001385425333864987, 2.315449273737613e-05)


def sin_cos_reduced(r: mx.array) -> mx.array:
    """``sin(r) * cos(r)`` (half of ``sin(2r)``, the derivative of ``sin(r)**2``) for ``|r| <= pi/2``."""
    c1, c2, c3, c4 = _SIN_POLY
    d1, d2, d3, d4 = _COS_POLY
    z = r * r
    z2 = z * z
    s = r * ((1.0 + c1 * z) + z2 * ((c2 + c3 * z) + c4 * z2))
    c = (1.0 + d1 * z) + z2 * ((d2 + d3 * z) + d4 * z2)
    return s * c


def _tree_sum(terms: List[mx.array]) -> mx.array:
    """Pairwise sum: depth log2(n), so a fused kernel stays within MLX's fusion depth."""
    while len(terms) > 1:
        terms = [terms[i] + terms[i + 1] if i + 1 < len(terms) else terms[i] for i in range(0, len(terms), 2)]
    return terms[0]


# Kernel building. Two limits of MLX's CPU fusion (mx.compile) shape the cuts below. It fuses at most
# 11 levels of elementwise ops into one kernel and splits deeper chains at arbitrary points; a split
# that leaves a broadcast scalar as a kernel input makes that kernel take a scalar, strided loop. And
# the generated loop is vectorised only when the compiler can check its pointers for overlap, which it
# gives up on for many inputs times outputs. So every kernel here is shallow, has one output and at
# most seven inputs, and takes the filter taps as constants where it can; its inputs are whole arrays,
# time slices and per-channel vectors.


class _Taps:
    """A filter's taps inside a kernel: Python floats (constants of the kernel) or, when the values
    cannot be read (inside a caller's ``mx.compile``), the filter array, passed as the kernel's last input."""

    def __init__(self, values: Optional[Tuple[float, ...]], scale: float = 1.0):
        self.values = values
        self.scale = scale

    def get(self, k: int, array: Optional[mx.array]):
        if self.values is not None:
            return self.values[k] * self.scale
        return array[k] * self.scale if self.scale != 1.0 else array[k]

    def total(self, ks: Sequence[int], array: Optional[mx.array]):
        """The sum of taps ``ks`` (a float, or a 0-d array)."""
        if self.values is not None:
            return sum(self.values[k] for k in ks) * self.scale
        return mx.sum(array[mx.array(list(ks))]) * self.scale


def _split(rest: tuple, const: bool):
    """``(arrays, filter)`` of a kernel's trailing arguments: the filter array comes last when the taps are not constants."""
    if const:
        return list(rest), None
    return list(rest[:-1]), rest[-1]


class _Kernels:
    """The fused kernels of one configuration (plan, taps, length, dtype), forward and backward.

    Shapes, all along the time axis (-2): ``xz`` has ``zeros[0] + L + 2p + zeros[1]`` rows; each
    phase ``u_s``, ``v_s`` has ``L`` (``q = 0 .. L-1``). Outputs ``[t_a, t_b)`` (the interior) read the
    phases directly; the ``t_a`` rows before and the ``L - t_b`` after read small windows of them with
    the edge extension.
    """

    def __init__(self, plan: PhasePlan, up_taps, down_taps, length: int, out_dtype, compiled: bool):
        self.plan = plan
        self.length = L = length
        self.const = const = up_taps is not None
        r = plan.ratio
        e_left, e_right = plan.ext
        self.t_a = t_a = min(e_left, L)
        self.t_b = max(t_a, L - e_right)
        z_left = plan.zeros[0]
        self.f = f = _Taps(up_taps, float(r))
        self.g = g = _Taps(down_taps)
        k = (lambda fn: mx.compile(fn)) if compiled else (lambda fn: fn)

        # Forward.
        def up_phase(taps):
            def up(xz, *w):
                _, w = _split(w, const)
                return _tree_sum([xz[..., z_left + d: z_left + d + L, :] * f.get(kk, w) for kk, d in taps])
            return k(up)

        self.up = tuple(up_phase(t) for t in plan.up)
        self.reduce = k(lambda u, a: reduce_pi(u * a))
        self.snake = k(lambda rr, u, ib: u + sin_squared_reduced(rr) * ib)
        self.phases = [b for b in range(r) if plan.down[b]]
        self._down: Dict[int, Tuple] = {}
        self._k = k
        self._out_dtype = out_dtype

        # Backward. The phases' cotangents: the down taps' adjoint on ybar zero-padded by ybar_pad.
        shifts = [sh for taps in plan.down for _, sh in taps]
        self.ybar_pad = ybar_pad = (max(0, max(shifts)), max(0, -min(shifts)))

        def vbar_phase(taps):
            def vbar(yz, *w):
                _, w = _split(w, const)
                o = ybar_pad[0]
                return _tree_sum([yz[..., o - sh: o - sh + L, :] * g.get(j, w) for j, sh in taps])
            return k(vbar)

        self.vbar = tuple((b, vbar_phase(plan.down[b])) for b in self.phases)
        # The edge extension's adjoint: y[t] reads v[0] through the taps with t + a < 0, and
        # v[r*L - 1] through those with t + a >= L; the weight of ybar[t] in each is a sum of taps.
        self.edge_left = [(t, [j for taps in plan.down for j, sh in taps if t + sh < 0]) for t in range(t_a)]
        self.edge_right = [(t, [j for taps in plan.down for j, sh in taps if t + sh >= L]) for t in range(max(0, L - e_right), L)]
        # The snake's adjoint (cab2 = 2 * a * ib): ubar = vbar * (1 + a * ib * sin(2 a u)); and the
        # per-element terms whose sums are the cotangents of a (times 2 * ib) and of ib.
        self.ubar = k(lambda vb, rr, cab2: vb + (vb * cab2) * sin_cos_reduced(rr))
        self.abar_terms = k(lambda vb, rr, u: (vb * u) * sin_cos_reduced(rr))
        self.ibbar_terms = k(lambda vb, rr: vb * sin_squared_reduced(rr))
        # xp's cotangent (rows [0, L + 2p)): the up taps' adjoint on each phase's ubar zero-padded by ubar_pad.
        ds = [d for taps in plan.up for _, d in taps]
        p = plan.up_pad
        self.ubar_pad = ubar_pad = (max(0, max(ds)), max(0, 2 * p - min(ds)))
        xp_len = L + 2 * p

        def xbar_phase(taps):
            def xbar(uz, *rest):
                partial, w = _split(rest, const)
                o = ubar_pad[0]
                return _tree_sum([uz[..., o - d: o - d + xp_len, :] * f.get(kk, w) for kk, d in taps] + partial)
            return k(xbar)

        self.xbar = tuple(xbar_phase(t) for t in plan.up)

    def down(self, rows: int):
        """Per phase ``b`` (in order): a kernel ``(W_b[, partial][, filter]) -> partial`` computing ``rows`` outputs
        from a window ``W_b`` whose row 0 is ``q = t0 - ext[0]``; the last one casts to the output dtype."""
        if rows not in self._down:
            plan, e_left = self.plan, self.plan.ext[0]
            g, const, last, out_dtype = self.g, self.const, self.phases[-1], self._out_dtype

            def down_phase(b):
                taps = plan.down[b]

                def down(w_b, *rest):
                    partial, w = _split(rest, const)
                    terms = [w_b[..., e_left + sh: e_left + sh + rows, :] * g.get(j, w) for j, sh in taps]
                    y = _tree_sum(terms + partial)
                    return y.astype(out_dtype) if b == last else y
                return self._k(down)

            self._down[rows] = tuple((b, down_phase(b)) for b in self.phases)
        return self._down[rows]


@per_thread_cache(maxsize=64)
def _kernels(plan, up_taps, down_taps, length, out_dtype, compiled) -> _Kernels:
    return _Kernels(plan, up_taps, down_taps, length, out_dtype, compiled)


def _taps(filter_: mx.array) -> Optional[Tuple[float, ...]]:
    """The taps as floats, or None inside a transformation (``mx.compile``) that cannot evaluate them."""
    try:
        return tuple(float(v) for v in filter_.tolist())  # no astype: a lazy cast would be evaluated per call
    except (ValueError, RuntimeError):
        return None


def _params(alpha: mx.array, beta: Optional[mx.array], logscale: bool, cd) -> Tuple[mx.array, mx.array]:
    """``(a, ib)``: Snake's frequency and the reciprocal of its magnitude (plus the epsilon), per channel."""
    a = alpha.astype(cd)
    b = a if beta is None else beta.astype(cd)
    if logscale:
        a = mx.exp(a)
        b = mx.exp(b) if beta is not None else a
    return a, 1.0 / (b + SNAKE_EPS)


def _rows(x: mx.array, start: int, stop: int) -> mx.array:
    return x[..., start:stop, :]


def _zero_padded(x: mx.array, left: int, right: int) -> mx.array:
    """``x`` with zero rows before and after (time axis -2)."""
    if not left and not right:
        return x
    lead, c = x.shape[:-2], x.shape[-1]
    parts = ([mx.zeros((*lead, left, c), dtype=x.dtype)] if left else []) + [x] \
        + ([mx.zeros((*lead, right, c), dtype=x.dtype)] if right else [])
    return mx.concatenate(parts, axis=-2)


def _padded(x: mx.array, plan: PhasePlan) -> mx.array:
    """xz: zeros, ``x`` edge-padded by the up pad, zeros, along the time axis (-2)."""
    lead, c = x.shape[:-2], x.shape[-1]
    p = plan.up_pad
    z_left, z_right = plan.zeros
    parts = []
    if z_left:
        parts.append(mx.zeros((*lead, z_left, c), dtype=x.dtype))
    if p:
        parts.append(mx.broadcast_to(x[..., :1, :], (*lead, p, c)))
    parts.append(x)
    if p:
        parts.append(mx.broadcast_to(x[..., -1:, :], (*lead, p, c)))
    if z_right:
        parts.append(mx.zeros((*lead, z_right, c), dtype=x.dtype))
    return mx.concatenate(parts, axis=-2) if len(parts) > 1 else x


def _window(v: mx.array, lo: int, hi: int, first: mx.array, last: mx.array) -> mx.array:
    """Rows ``q = lo .. hi-1`` of a phase ``v`` (``L`` rows) extended by ``first`` before 0 and ``last`` after ``L-1``."""
    L = v.shape[-2]
    lead, c = v.shape[:-2], v.shape[-1]
    parts = []
    if lo < 0:
        parts.append(mx.broadcast_to(first, (*lead, min(hi, 0) - lo, c)))
    if max(lo, 0) < min(hi, L):
        parts.append(v[..., max(lo, 0): min(hi, L), :])
    if hi > L:
        parts.append(mx.broadcast_to(last, (*lead, hi - max(lo, L), c)))
    return mx.concatenate(parts, axis=-2) if len(parts) > 1 else parts[0]


def _forward(kern: _Kernels, xc, a, ib, filters):
    plan = kern.plan
    fw, gw = filters[:1], filters[1:]
    L = kern.length
    e_left, e_right = plan.ext
    xz = _padded(xc, plan)
    vs = []
    for up_s in kern.up:
        u = up_s(xz, *fw)
        vs.append(kern.snake(kern.reduce(u, a), u, ib))
    first, last = vs[0][..., :1, :], vs[-1][..., L - 1:, :]
    pieces = []
    for t0, t1 in ((0, kern.t_a), (kern.t_a, kern.t_b), (kern.t_b, L)):
        if t1 <= t0:
            continue
        interior = t0 == kern.t_a and t1 == kern.t_b
        y = None
        for b, down_b in kern.down(t1 - t0):
            w_b = vs[b] if interior else _window(vs[b], t0 - e_left, t1 + e_right, first, last)
            y = down_b(w_b, *gw) if y is None else down_b(w_b, y, *gw)
        pieces.append(y)
    return mx.concatenate(pieces, axis=-2) if len(pieces) > 1 else pieces[0]


def _edge_sum(kern: _Kernels, ybar: mx.array, terms, gw):
    """``sum_t weight_t * ybar[t]`` over the edge rows ``terms`` (``(t, taps)`` pairs), or None."""
    out = None
    for t, js in terms:
        if not js:
            continue
        term = ybar[..., t: t + 1, :] * kern.g.total(js, gw[0] if gw else None)
        out = term if out is None else out + term
    return out


def _backward(kern: _Kernels, xc, a, ib, filters, ybar):
    """Cotangents of ``xc`` (compute dtype, its shape), ``a`` and ``ib`` (per channel) for ``ybar``."""
    plan = kern.plan
    fw, gw = filters[:1], filters[1:]
    L = kern.length
    r = plan.ratio
    sum_axes = tuple(range(xc.ndim - 1))
    # Recompute u and its reduced argument.
    xz = _padded(xc, plan)
    us = [up_s(xz, *fw) for up_s in kern.up]
    rs = [kern.reduce(u, a) for u in us]
    # The phases' cotangents, and the edge extension's: onto v[0] (phase 0, row 0) and v[r*L - 1].
    yz = _zero_padded(ybar, *kern.ybar_pad)
    vbars = [None] * r
    for b, vbar_b in kern.vbar:
        vbars[b] = vbar_b(yz, *gw)
    edge_left = _edge_sum(kern, ybar, kern.edge_left, gw)
    edge_right = _edge_sum(kern, ybar, kern.edge_right, gw)
    # Through the snake. The edge cotangents land on one row each; their share is added on that row only.
    cab2 = 2.0 * a * ib
    abar = ibbar = None
    uzs = []
    for s in range(r):
        rr, u, vb = rs[s], us[s], vbars[s]
        if vb is None:  # no down tap reads this phase (down filter shorter than the ratio)
            vb = mx.zeros_like(u)
        ub = kern.ubar(vb, rr, cab2)
        ta = kern.abar_terms(vb, rr, u).sum(axis=sum_axes)
        tb = kern.ibbar_terms(vb, rr).sum(axis=sum_axes)
        extra = {}
        if s == 0 and edge_left is not None:
            extra[0] = edge_left
        if s == r - 1 and edge_right is not None:
            extra[L - 1] = edge_right + extra.get(L - 1, 0.0) if L - 1 in extra else edge_right
        rows = {}
        for row, e in extra.items():
            rr1, u1 = rr[..., row: row + 1, :], u[..., row: row + 1, :]
            sc = sin_cos_reduced(rr1)
            rows[row] = e * (1.0 + cab2 * sc)
            ta = ta + (e * u1 * sc).sum(axis=sum_axes)
            tb = tb + (e * sin_squared_reduced(rr1)).sum(axis=sum_axes)
        abar = ta if abar is None else abar + ta
        ibbar = tb if ibbar is None else ibbar + tb
        # ubar zero-padded for the up taps' adjoint, with the edge rows' shares added on the way.
        ql, qr = kern.ubar_pad
        lead, c = ub.shape[:-2], ub.shape[-1]
        parts = [mx.zeros((*lead, ql, c), dtype=ub.dtype)] if ql else []
        if rows:
            if L == 1:
                parts.append(ub + sum(rows.values()))
            else:
                parts.append(ub[..., :1, :] + rows[0] if 0 in rows else ub[..., :1, :])
                if L > 2:
                    parts.append(ub[..., 1: L - 1, :])
                parts.append(ub[..., L - 1:, :] + rows[L - 1] if L - 1 in rows else ub[..., L - 1:, :])
        else:
            parts.append(ub)
        if qr:
            parts.append(mx.zeros((*lead, qr, c), dtype=ub.dtype))
        uzs.append(mx.concatenate(parts, axis=-2) if len(parts) > 1 else parts[0])
    abar = abar * (2.0 * ib)
    # Through the upsampling: xp's cotangent, then the edge pad's adjoint.
    xbar_p = None
    for s, xbar_s in enumerate(kern.xbar):
        xbar_p = xbar_s(uzs[s], *fw) if xbar_p is None else xbar_s(uzs[s], xbar_p, *fw)
    p = plan.up_pad
    if not p:
        return xbar_p, abar, ibbar
    head = xbar_p[..., : p + 1, :].sum(axis=-2, keepdims=True)
    tail = xbar_p[..., p + L - 1:, :].sum(axis=-2, keepdims=True)
    if L == 1:
        return head + tail - xbar_p[..., p: p + 1, :], abar, ibbar
    parts = [head] + ([xbar_p[..., p + 1: p + L - 1, :]] if L > 2 else []) + [tail]
    return mx.concatenate(parts, axis=-2), abar, ibbar


def _prepare(x, up, down, geom: AAGeometry, compiled: bool):
    plan = phase_plan(geom.ratio, geom.up_taps, geom.down_taps)
    up_taps, down_taps = _taps(up), _taps(down)
    if up_taps is None or down_taps is None:
        up_taps = down_taps = None
    kern = _kernels(plan, up_taps, down_taps, geom.length, x.dtype, compiled)
    cd = _compute_dtype(x.dtype)
    filters = () if kern.const else (up.astype(cd), down.astype(cd))
    return kern, cd, filters


def _as_rows(x: mx.array, cd) -> mx.array:
    """``x`` in the compute dtype, 2-D when the batch is 1 (MLX's fused kernels take a slower loop for
    slices of a ``(1, L, C)`` array)."""
    x = x.astype(cd)
    return x[0] if x.shape[0] == 1 else x


class _TraceProbe(threading.local):
    """Tells whether arrays are tracers (inside ``mx.grad``/``mx.vjp``/``mx.compile``).

    A compiled function given tracers does not compile: MLX runs its body as plain ops, so every
    kernel here would run unfused (several times slower). This probe is a compiled identity whose
    Python body counts its runs: for ordinary arrays it runs once per dtype (the first trace), for
    tracers on every call.
    """

    def __init__(self):
        runs = self.runs = [0]  # no reference from the body to self: freed with the thread, no cycle

        def body(a):
            runs[0] += 1
            return a

        self.fn = mx.compile(body)

    def is_tracer(self, x: mx.array) -> bool:
        probe = x.reshape(-1)[:1]
        for _ in range(2):  # a first call per dtype traces once whatever the input
            before = self.runs[0]
            self.fn(probe)
            if self.runs[0] == before:
                return False
        return True


_PROBE = _TraceProbe()


_WORKER_LOCK = threading.Lock()
_WORKER: Optional[ThreadPoolExecutor] = None


def _worker() -> ThreadPoolExecutor:
    global _WORKER
    with _WORKER_LOCK:
        if _WORKER is None:
            _WORKER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mlx_deconv_anti_aliased")
        return _WORKER


def _to_host(arrays: Sequence[mx.array]) -> Optional[List[Tuple[np.ndarray, object]]]:
    """Host copies ``(data, dtype)`` of ``arrays`` (half types as their bits), or None where nothing can be
    evaluated (inside a caller's ``mx.compile``)."""
    try:
        mx.eval(*arrays)
    except (ValueError, RuntimeError):
        return None
    return [(np.array(a.view(mx.uint16)) if a.dtype in (mx.float16, mx.bfloat16) else np.array(a), a.dtype)
            for a in arrays]


def _from_host(copies) -> List[mx.array]:
    """Arrays of the calling thread from :func:`_to_host`'s copies: plain data, no graph, no shared buffer."""
    return [mx.array(data).view(dtype) if dtype in (mx.float16, mx.bfloat16) else mx.array(data)
            for data, dtype in copies]


def run_untraced(fn: Callable, arrays: Sequence[mx.array]):
    """``fn(*arrays)``, evaluated, computed where its fused kernels compile.

    Inside ``mx.grad``/``mx.vjp`` every array is a tracer to MLX's compile (the state is per thread),
    so compiled functions run their bodies as plain ops, several times slower here. The inputs are then
    evaluated and ``fn`` runs on a worker thread, which is not tracing; its evaluated outputs come back
    as constants, which suits the inside of a ``custom_function`` (whose VJP is given, not traced).
    Inside a caller's ``mx.compile`` nothing can be evaluated: ``fn`` is traced into the caller's graph.
    """
    if not _PROBE.is_tracer(arrays[0]):
        return fn(*arrays)
    copies = _to_host(arrays)
    if copies is None:
        return fn(*arrays)
    if threading.current_thread().name.startswith("mlx_deconv_anti_aliased"):
        return fn(*_from_host(copies))  # never wait on the worker from the worker

    device = mx.default_device()  # the caller's (mx.stream(...) sets it); the worker's own stream of it

    def job():
        with mx.stream(device):
            out = fn(*_from_host(copies))
            mx.eval(out)
        return out

    return _worker().submit(job).result()


def _differentiable(geom: AAGeometry, has_beta: bool, n: int, compiled: bool, forward: Callable) -> Callable:
    """``forward(x, alpha, beta, up, down)`` as an ``mx.custom_function`` whose VJP is the polyphase one."""

    def params(al, be, cd):
        return _params(al, be if has_beta else None, geom.logscale, cd)

    def backward(xv, al, be, up_, down_, ybar):
        kern, cd, filters = _prepare(xv, up_, down_, geom, compiled)
        a, ib = params(al, be, cd)
        xbar, abar, ibbar = _backward(kern, _as_rows(xv, cd), a, ib, filters, _as_rows(ybar, cd))
        if n == 1:
            xbar = xbar[None]
        _, (al_bar, be_bar) = mx.vjp(lambda p, q: params(p, q, cd), [al, be], [abar, ibbar])
        return (xbar.astype(xv.dtype), al_bar.astype(al.dtype),
                (be_bar if has_beta else mx.zeros_like(be)).astype(be.dtype),
                mx.zeros_like(up_), mx.zeros_like(down_))

    @mx.custom_function
    def fn(xv, al, be, up_, down_):
        return run_untraced(forward, [xv, al, be, up_, down_])

    @fn.vjp
    def fn_vjp(primals, cotangent, output):
        return tuple(run_untraced(backward, [*primals, cotangent]))

    return fn


#: On a CPU stream, below this many input elements (``N * L * C``) the fused form's dozen small
#: kernels cost more than the unfused ops' few (measured: 0.46 ms against 0.54 at 32 x 32, 0.53
#: against 0.64 at 64 x 64; docs/performance.md).
FUSED_MIN_ELEMENTS = 2048


def auto_backend(geom: AAGeometry, metal: bool) -> str:
    """``backend="auto"``: the Metal kernel on a Metal stream; on a CPU the polyphase form, or the
    unfused ops for the tiniest calls (:data:`FUSED_MIN_ELEMENTS`)."""
    if metal:
        return "metal"
    return "polyphase" if geom.batch * geom.length * geom.channels >= FUSED_MIN_ELEMENTS else "unfused"


def polyphase(x: mx.array, alpha: mx.array, beta: Optional[mx.array], up: mx.array, down: mx.array,
              geom: AAGeometry, *, compiled: bool = True) -> mx.array:
    """The map in polyphase form, on NLC ``x`` ``(N, L, C)``; filters ``(Ku,)``, ``(Kd,)``.

    Differentiable with respect to ``x``, ``alpha`` and ``beta`` through a polyphase VJP (the down
    taps' adjoint, the edge extension's, the snake's derivative, the up taps' adjoint, the edge pad's).
    The filters are constants to it: they get a zero cotangent (NVIDIA's are buffers, not parameters);
    the ``"unfused"`` path differentiates them. Higher derivatives are not supported.
    """
    has_beta = beta is not None
    n = x.shape[0]

    def forward(xv, al, be, up_, down_):
        kern, cd, filters = _prepare(xv, up_, down_, geom, compiled)
        a, ib = _params(al, be if has_beta else None, geom.logscale, cd)
        y = _forward(kern, _as_rows(xv, cd), a, ib, filters)
        return y[None] if n == 1 else y

    fn = _differentiable(geom, has_beta, n, compiled, forward)
    return fn(x, alpha, beta if has_beta else alpha, up, down)


# ---------------------------------------------------------------------------------------------
# The Metal kernel (GPU streams): metal/anti_aliased_activation.metal.

KERNEL_FILE = "anti_aliased_activation.metal"


def kernel_source() -> str:
    """The kernel body (``metal/anti_aliased_activation.metal``)."""
    return metal.kernel_source(KERNEL_FILE)


_KERNEL_LOCK = threading.Lock()


@lru_cache(maxsize=None)
def _build_kernel():
    return mx.fast.metal_kernel(
        name="mlx_deconv_anti_aliased_activation",
        input_names=["x", "a", "ib", "f", "g", "dims"],
        output_names=["y"],
        source=kernel_source(),
    )


def kernel():
    """The ``mx.fast.metal_kernel`` object (built once, under a lock)."""
    with _KERNEL_LOCK:
        return _build_kernel()


kernel.cache_clear = _build_kernel.cache_clear  # tests swap the kernel source


def kernel_arguments(x: mx.array, a: mx.array, ib: mx.array, up: mx.array, down: mx.array, geom: AAGeometry) -> Dict:
    """Everything the kernel call takes (NLC ``x``, float32 ``a``/``ib``/filters), so the emulator can
    launch exactly what the backend launches."""
    n, length, c = x.shape
    tx = min(c, 64)
    ty = max(1, min(length, 256 // tx))
    return dict(
        inputs=[x, a.astype(mx.float32), ib.astype(mx.float32), up.astype(mx.float32), down.astype(mx.float32),
                mx.array([length, c], dtype=mx.int32)],
        template=[
            ("T", x.dtype),
            ("RATIO", geom.ratio),
            ("UP_TAPS", geom.up_taps),
            ("DOWN_TAPS", geom.down_taps),
            ("UP_PAD", geom.up_pad),
            ("UP_CROP", geom.up_crop[0]),
            ("DOWN_LEFT", geom.down_pad[0]),
        ],
        grid=(c, length, n),
        threadgroup=(tx, ty, 1),
        output_shapes=[(n, length, c)],
        output_dtypes=[x.dtype],
    )


def run_kernel(x, alpha, beta, up, down, geom: AAGeometry, launch: Optional[Callable] = None) -> mx.array:
    """The kernel launch alone (``launch(**arguments)`` instead of the Metal kernel, for the emulator)."""
    a, ib = _params(alpha, beta, geom.logscale, mx.float32)
    call = kernel_arguments(x, a, ib, up, down, geom)
    return (launch or kernel())(**call)[0]


def metal_kernel(x: mx.array, alpha: mx.array, beta: Optional[mx.array], up: mx.array, down: mx.array,
                 geom: AAGeometry, *, launch: Optional[Callable] = None) -> mx.array:
    """The map by the Metal kernel, on NLC ``x``; its VJP is the polyphase form's."""
    has_beta = beta is not None

    def forward(xv, al, be, up_, down_):
        return run_kernel(xv, al, be if has_beta else None, up_, down_, geom, launch)

    fn = _differentiable(geom, has_beta, x.shape[0], True, forward)
    return fn(x, alpha, beta if has_beta else alpha, up, down)


def emulate(x: mx.array, alpha: mx.array, beta: Optional[mx.array], up: mx.array, down: mx.array,
            geom: AAGeometry) -> mx.array:
    """The Metal kernel's output computed on the CPU: the exact source MLX generates for the launch,
    compiled with the system C++ compiler and run thread by thread (see :mod:`.metal_emulator`)."""
    return run_kernel(x, alpha, beta, up, down, geom, launch=emulated_launch)


def emulated_launch(**call) -> List[mx.array]:
    """A stand-in for the kernel object: takes :func:`kernel_arguments`' dict, returns the outputs
    computed by the emulator (for :func:`metal_kernel`'s ``launch`` in tests)."""
    from .metal import emulator as metal_emulator

    return [metal_emulator.run_call(kernel(), call)]
