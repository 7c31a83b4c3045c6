"""The polyphase form's plan and kernels: which taps make each phase, and the fused kernels that compute them.

Shared by the forward (:mod:`.polyphase`) and the gradient (:mod:`.gradient`), and by the Metal path's VJP.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Dict, List, Optional, Sequence, Tuple

import mlx.core as mx

from ...geometry.activation import SNAKE_EPS, ActivationGeometry
from ...runtime.compiling import per_thread_cache
from .sine import reduce_pi, sin_cos_reduced, sin_squared_reduced


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
    geom = ActivationGeometry(1, 1, 1, ratio, up_taps, down_taps, "snake", False)
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


class Kernels:
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
def kernels(plan, up_taps, down_taps, length, out_dtype, compiled) -> Kernels:
    return Kernels(plan, up_taps, down_taps, length, out_dtype, compiled)


def _taps(filter_: mx.array) -> Optional[Tuple[float, ...]]:
    """The taps as floats, or None inside a transformation (``mx.compile``) that cannot evaluate them."""
    try:
        return tuple(float(v) for v in filter_.tolist())  # no astype: a lazy cast would be evaluated per call
    except (ValueError, RuntimeError):
        return None


def snake_params(alpha: mx.array, beta: Optional[mx.array], logscale: bool, cd) -> Tuple[mx.array, mx.array]:
    """``(a, ib)``: Snake's frequency and the reciprocal of its magnitude (plus the epsilon), per channel."""
    a = alpha.astype(cd)
    b = a if beta is None else beta.astype(cd)
    if logscale:
        a = mx.exp(a)
        b = mx.exp(b) if beta is not None else a
    return a, 1.0 / (b + SNAKE_EPS)


def _rows(x: mx.array, start: int, stop: int) -> mx.array:
    return x[..., start:stop, :]


def zero_padded(x: mx.array, left: int, right: int) -> mx.array:
    """``x`` with zero rows before and after (time axis -2)."""
    if not left and not right:
        return x
    lead, c = x.shape[:-2], x.shape[-1]
    parts = ([mx.zeros((*lead, left, c), dtype=x.dtype)] if left else []) + [x] \
        + ([mx.zeros((*lead, right, c), dtype=x.dtype)] if right else [])
    return mx.concatenate(parts, axis=-2)


def padded(x: mx.array, plan: PhasePlan) -> mx.array:
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


def window(v: mx.array, lo: int, hi: int, first: mx.array, last: mx.array) -> mx.array:
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


def filter_taps(up: mx.array, down: mx.array):
    """``(up_taps, down_taps)`` as floats, or ``(None, None)`` when either cannot be read (inside ``mx.compile``)."""
    up_taps, down_taps = _taps(up), _taps(down)
    return (None, None) if up_taps is None or down_taps is None else (up_taps, down_taps)


def kernels_for(geom: ActivationGeometry, up_taps, down_taps, dtype, compiled: bool) -> Tuple[Kernels, object]:
    """``(kernels, compute dtype)`` of a configuration, its taps constants or (``None``) kernel inputs."""
    plan = phase_plan(geom.ratio, geom.up_taps, geom.down_taps)
    return kernels(plan, up_taps, down_taps, geom.length, dtype, compiled), _compute_dtype(dtype)


def prepare(x, up, down, geom: ActivationGeometry, compiled: bool, taps=None):
    """``(kernels, compute dtype, filters as kernel inputs or ())``; ``taps``: :func:`filter_taps`'s, if already read."""
    kern, cd = kernels_for(geom, *(filter_taps(up, down) if taps is None else taps), x.dtype, compiled)
    filters = () if kern.const else (up.astype(cd), down.astype(cd))
    return kern, cd, filters


def as_rows(x: mx.array, cd) -> mx.array:
    """``x`` in the compute dtype, 2-D when the batch is 1 (MLX's fused kernels take a slower loop for
    slices of a ``(1, L, C)`` array)."""
    x = x.astype(cd)
    return x[0] if x.shape[0] == 1 else x
