"""Backend ``"polyphase"``: the anti-aliased activation fused, on a CPU stream (the map: :mod:`mlx_deconv.backends.anti_aliased`)."""

from __future__ import annotations

from typing import Optional

import mlx.core as mx

from ...geometry.activation import ActivationGeometry
from . import banded
from .gradient import differentiable, traced
from ...runtime.compiling import per_thread_cache
from .phases import as_rows, Kernels, filter_taps, kernels_for, padded, snake_params, prepare, window


def polyphase_forward(kern: Kernels, xc, a, ib, filters, cut=lambda y: y):
    """The map in polyphase form; ``cut`` is applied to every kernel's output (:func:`_whole_forward`'s
    ``mx.contiguous``, which keeps an enclosing ``mx.compile`` from fusing the kernels into one)."""
    plan = kern.plan
    fw, gw = filters[:1], filters[1:]
    L = kern.length
    e_left, e_right = plan.ext
    xz = padded(xc, plan)
    vs = []
    for up_s in kern.up:
        u = cut(up_s(xz, *fw))
        vs.append(cut(kern.snake(cut(kern.reduce(u, a)), u, ib)))
    first, last = vs[0][..., :1, :], vs[-1][..., L - 1:, :]
    pieces = []
    for t0, t1 in ((0, kern.t_a), (kern.t_a, kern.t_b), (kern.t_b, L)):
        if t1 <= t0:
            continue
        interior = t0 == kern.t_a and t1 == kern.t_b
        y = None
        for b, down_b in kern.down(t1 - t0):
            w_b = vs[b] if interior else window(vs[b], t0 - e_left, t1 + e_right, first, last)
            y = cut(down_b(w_b, *gw) if y is None else down_b(w_b, y, *gw))
        pieces.append(y)
    return mx.concatenate(pieces, axis=-2) if len(pieces) > 1 else pieces[0]


def run(x: mx.array, alpha: mx.array, beta: Optional[mx.array], up: mx.array, down: mx.array,
              geom: ActivationGeometry, *, compiled: bool = True) -> mx.array:
    """The map in polyphase form, on NLC ``x`` ``(N, L, C)``; filters ``(Ku,)``, ``(Kd,)``.

    Differentiable with respect to ``x``, ``alpha`` and ``beta`` through a polyphase VJP (the down
    taps' adjoint, the edge extension's, the snake's derivative, the up taps' adjoint, the edge pad's).
    The filters are constants to it: they get a zero cotangent (NVIDIA's are buffers, not parameters);
    the ``"unfused"`` path differentiates them. Higher derivatives are not supported.

    A traced call (inside ``mx.grad``, ``mx.vjp`` or a caller's ``mx.compile``, where the fused kernels would
    run op by op) is :func:`.banded.run` instead up to :data:`.banded.OFF_TRACE_MAX_ELEMENTS` elements, or up to
    :data:`.banded.MAX_ELEMENTS` when its filters' taps cannot be read (a caller's ``mx.compile`` holding them).
    Larger traced calls keep this form, its graphs built off the trace (:func:`.gradient.run_off_trace`).
    An untraced call, which nothing can differentiate, is the compiled forward alone (:func:`_whole_forward`).
    """
    taps = filter_taps(up, down)  # read once: the forward below is given these same filters
    has_beta = beta is not None
    n = x.shape[0]
    if taps[0] is None:  # the filters are a caller's mx.compile's inputs: it is tracing
        is_traced = True
    else:
        # The filters are constants to every form (their taps are read), so only x, alpha and beta are probed.
        is_traced = x.size > 0 and traced(x, alpha, beta)
        if not is_traced and compiled:  # nothing can differentiate this call: the compiled forward as it is
            return _whole_forward(geom, has_beta, n, *taps, x.dtype)(x, alpha, beta if has_beta else alpha)
    if 0 < x.size <= banded.MAX_ELEMENTS and is_traced:
        if x.size <= banded.OFF_TRACE_MAX_ELEMENTS or taps[0] is None:
            return banded.run(x, alpha, beta, up, down, geom, taps)

    def forward(xv, al, be, up_, down_):
        if compiled and taps[0] is not None:
            return _whole_forward(geom, has_beta, n, *taps, xv.dtype)(xv, al, be)
        kern, cd, filters = prepare(xv, up_, down_, geom, compiled, taps)
        a, ib = snake_params(al, be if has_beta else None, geom.logscale, cd)
        y = polyphase_forward(kern, as_rows(xv, cd), a, ib, filters)
        return y[None] if n == 1 else y

    fn = differentiable(geom, has_beta, n, compiled, forward)
    return fn(x, alpha, beta if has_beta else alpha, up, down)


@per_thread_cache(maxsize=64)  # compiled functions: made, kept and freed by each thread
def _whole_forward(geom: ActivationGeometry, has_beta: bool, n: int, up_taps, down_taps, dtype):
    """The forward of one configuration (its taps constants) as one compiled function of ``(x, alpha, beta)``.

    One call instead of a dozen compiled kernels' calls: a layer's call took 270 µs of Python instead of 340.
    Every kernel's output passes through ``mx.contiguous`` (no copy), so that this compile keeps the kernels
    apart: fused into one, they ran 1.3-1.5x slower (docs/performance-history.md).
    """
    kern, cd = kernels_for(geom, up_taps, down_taps, dtype, True)

    def forward(xv, al, be):
        a, ib = snake_params(al, be if has_beta else None, geom.logscale, cd)
        y = polyphase_forward(kern, as_rows(xv, cd), a, ib, (), cut=mx.contiguous)
        return y[None] if n == 1 else y
    return mx.compile(forward)
