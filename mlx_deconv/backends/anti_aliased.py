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

* :func:`unfused`: the steps above one by one with the package's depthwise ops (the baseline,
  and what the tests' reference mirrors);
* :func:`polyphase` (CPU streams): sample ``r*q + s`` of ``u`` is a ``Ku/r``-tap filter of ``xp``
  (the taps ``k = (s + crop_left) mod r, + r, ...``), so the ``r`` phases of ``u`` are computed from
  shifted views of ``xp`` with no zero-stuffed, interleaved or cropped intermediate; the snake runs per
  phase, and the down filter reads phase ``b`` with its taps ``j`` where ``(j - pad_left) mod r == b``.
  The edge padding of the interleaved ``v`` becomes: every phase is extended, on the left, by ``v[0]``
  (phase 0's first sample) and, on the right, by ``v[r*L - 1]`` (the last phase's last sample).
  Accumulation is in float32 for half-precision inputs.
* :func:`metal_kernel` (Metal GPU streams): ``metal/anti_aliased_activation.metal``, one thread
  per output sample and channel; its VJP is the polyphase form's.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import mlx.core as mx

from ..runtime.compiling import per_thread_cache

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
    of ``v`` extended by ``v[0]`` on the left and ``v[r*L - 1]`` on the right, ``ext`` samples each side.
    ``zeros``: the zeros ``xp`` needs on each side so that the extended phases (``L + ext[0] + ext[1]``
    samples) are each one slice per tap.
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
    zeros = (max(0, ext[0] - min(ds)), max(0, ext[1] + max(ds) - 2 * p))
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


def _tree_sum(terms: List[mx.array]) -> mx.array:
    """Pairwise sum: depth log2(n), so a fused kernel stays within MLX's fusion depth."""
    while len(terms) > 1:
        terms = [terms[i] + terms[i + 1] if i + 1 < len(terms) else terms[i] for i in range(0, len(terms), 2)]
    return terms[0]


@dataclass(frozen=True)
class _Stages:
    up: Tuple[object, ...]      # per phase: xz -> u_s
    reduce: object              # (u_s, a) -> reduced argument of sin
    snake: object               # (r_s, u_s, ib) -> v_s; without the fast sine: (u_s, a, ib) -> v_s
    down: Tuple[object, ...]    # per phase b: (V_b[, partial sum]) -> partial sum; the last casts


def _make_stages(plan: PhasePlan, up_taps: Tuple[float, ...], down_taps: Tuple[float, ...], length: int,
                 out_dtype, fast_sin: bool, compiled: bool) -> _Stages:
    """The polyphase form as small fused kernels, cut by hand.

    Two limits of MLX's CPU fusion shape the cuts. It fuses at most 11 levels of elementwise ops and
    splits deeper chains at arbitrary points; a split that leaves a broadcast scalar as a kernel input
    makes that kernel take a scalar, strided loop. And the generated loop is vectorised only when the
    compiler can check its pointers for overlap, which it gives up on for many inputs times outputs. So
    every kernel here is shallow, has one output and at most seven inputs, and takes the filter taps
    as constants (not arrays); its inputs are whole arrays, time slices and per-channel vectors.
    """
    r = plan.ratio
    e_left = plan.ext[0]
    start = plan.zeros[0] - e_left  # xz's row of extended-phase row 0, before the tap's shift
    width = length + plan.ext[0] + plan.ext[1]
    scale = float(r)
    wrap = mx.compile if compiled else (lambda f: f)

    def up_phase(taps):
        def up(xz):
            return _tree_sum([xz[..., start + d: start + d + width, :] * (up_taps[k] * scale) for k, d in taps])
        return wrap(up)

    def reduce(u, a):
        return reduce_pi(u * a)

    def snake(rr, u, ib):
        return u + sin_squared_reduced(rr) * ib

    def snake_exact(u, a, ib):
        return u + mx.square(mx.sin(u * a)) * ib

    def down_phase(b, first, last):
        taps = plan.down[b]

        def down(v, *partial):
            terms = [v[..., e_left + shift: e_left + shift + length, :] * down_taps[j] for j, shift in taps]
            y = _tree_sum(terms + list(partial)) if terms else partial[0]
            return y.astype(out_dtype) if last else y
        return wrap(down)

    phases = [b for b in range(r) if plan.down[b]]
    downs = tuple(down_phase(b, i == 0, i == len(phases) - 1) for i, b in enumerate(phases))
    return _Stages(tuple(up_phase(t) for t in plan.up), wrap(reduce) if fast_sin else None,
                   wrap(snake if fast_sin else snake_exact), tuple(zip(phases, downs)))


@per_thread_cache(maxsize=64)
def _stages(plan, up_taps, down_taps, length, out_dtype, fast_sin, compiled) -> _Stages:
    return _make_stages(plan, up_taps, down_taps, length, out_dtype, fast_sin, compiled)


#: The polyphase form computes ``sin**2`` with :func:`sin_squared` (False: MLX's ``sin``, slow on CPUs).
FAST_SIN = True


def _taps(filter_: mx.array) -> Tuple[float, ...]:
    return tuple(float(v) for v in filter_.astype(mx.float32).tolist())


def polyphase(x: mx.array, alpha: mx.array, beta: Optional[mx.array], up: mx.array, down: mx.array,
              geom: AAGeometry, *, compiled: bool = True) -> mx.array:
    """The map in polyphase form, on NLC ``x`` ``(N, L, C)``; filters ``(Ku,)``, ``(Kd,)``.

    The filters' values become constants of the fused kernels (one compilation per distinct filter;
    BigVGAN has one), so this form is not differentiable with respect to them; it is with respect to
    ``x``, ``alpha`` and ``beta``.
    """
    plan = phase_plan(geom.ratio, geom.up_taps, geom.down_taps)
    out_dtype = x.dtype
    cd = _compute_dtype(out_dtype)
    n, length, c = x.shape
    stages = _stages(plan, _taps(up), _taps(down), length, out_dtype, FAST_SIN, compiled)
    x = x.astype(cd)
    if n == 1:
        x = x[0]  # 2-D: MLX's fused kernels take a slower loop for slices of a (1, L, C) array
    a = alpha.astype(cd)
    b = a if beta is None else beta.astype(cd)
    if geom.logscale:
        a = mx.exp(a)
        b = mx.exp(b) if beta is not None else a
    ib = 1.0 / (b + SNAKE_EPS)
    # xz: zeros, x edge-padded by the up pad, zeros (along the time axis, -2).
    lead = x.shape[:-2]
    p = plan.up_pad
    z_left, z_right = plan.zeros
    parts = []
    if z_left:
        parts.append(mx.zeros((*lead, z_left, c), dtype=cd))
    if p:
        parts.append(mx.broadcast_to(x[..., :1, :], (*lead, p, c)))
    parts.append(x)
    if p:
        parts.append(mx.broadcast_to(x[..., -1:, :], (*lead, p, c)))
    if z_right:
        parts.append(mx.zeros((*lead, z_right, c), dtype=cd))
    xz = mx.concatenate(parts, axis=-2) if len(parts) > 1 else x
    vs = []
    for up_s in stages.up:
        u = up_s(xz)
        vs.append(stages.snake(stages.reduce(u, a), u, ib) if stages.reduce is not None else stages.snake(u, a, ib))
    # The phases were computed over [-e_left, L + e_right); the interleaved signal's edge pad puts
    # v[0] (phase 0's first sample) in the rows before 0 and v[r*L - 1] (the last phase's last) after L - 1.
    e_left, e_right = plan.ext
    if e_left or e_right:
        first = mx.contiguous(vs[0][..., e_left: e_left + 1, :] + 0.0)
        last = mx.contiguous(vs[-1][..., e_left + length - 1: e_left + length, :] + 0.0)
        for i in range(len(vs)):
            v = vs[i]
            if e_left:
                v[..., :e_left, :] = first
            if e_right:
                v[..., e_left + length:, :] = last
            vs[i] = v
    y = None
    for bph, down_b in stages.down:
        y = down_b(vs[bph]) if y is None else down_b(vs[bph], y)
    return y[None] if n == 1 else y


def metal_kernel(x, alpha, beta, up, down, geom: AAGeometry) -> mx.array:
    """Placeholder until the kernel lands: the polyphase form."""
    return polyphase(x, alpha, beta, up, down, geom)
