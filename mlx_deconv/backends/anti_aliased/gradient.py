"""The fused forms' gradient: the polyphase VJP, and where it runs.

:func:`differentiable` wraps a fused forward (polyphase or the Metal kernel) in an ``mx.custom_function``
whose VJP is :func:`backward`: the down taps' adjoint, the edge extension's, the snake's derivative, the
up taps' adjoint and the edge pad's. Inside ``mx.grad`` MLX does not compile functions given tracers, so
both directions run through :func:`run_off_trace`: their graphs built on a worker thread, which is not
tracing, on a CPU stream; evaluated there and copied back on another.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, List, Optional, Sequence, Tuple

import mlx.core as mx
import numpy as np

from ...geometry.activation import ActivationGeometry
from ...runtime.compiling import per_thread_cache
from .phases import Kernels, as_rows, filter_taps, kernels_for, padded, prepare, snake_params, zero_padded
from .sine import sin_cos_reduced, sin_squared_reduced


def edge_sum(kern: Kernels, ybar: mx.array, terms, gw):
    """``sum_t weight_t * ybar[t]`` over the edge rows ``terms`` (``(t, taps)`` pairs), or None."""
    out = None
    for t, js in terms:
        if not js:
            continue
        term = ybar[..., t: t + 1, :] * kern.g.total(js, gw[0] if gw else None)
        out = term if out is None else out + term
    return out


def polyphase_backward(kern: Kernels, xc, a, ib, filters, ybar):
    """Cotangents of ``xc`` (compute dtype, its shape), ``a`` and ``ib`` (per channel) for ``ybar``."""
    plan = kern.plan
    fw, gw = filters[:1], filters[1:]
    L = kern.length
    r = plan.ratio
    sum_axes = tuple(range(xc.ndim - 1))
    # Recompute u and its reduced argument.
    xz = padded(xc, plan)
    us = [up_s(xz, *fw) for up_s in kern.up]
    rs = [kern.reduce(u, a) for u in us]
    # The phases' cotangents, and the edge extension's: onto v[0] (phase 0, row 0) and v[r*L - 1].
    yz = zero_padded(ybar, *kern.ybar_pad)
    vbars = [None] * r
    for b, vbar_b in kern.vbar:
        vbars[b] = vbar_b(yz, *gw)
    edge_left = edge_sum(kern, ybar, kern.edge_left, gw)
    edge_right = edge_sum(kern, ybar, kern.edge_right, gw)
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


def traced(*arrays: Optional[mx.array]) -> bool:
    """Whether any of ``arrays`` (None skipped) is a tracer: one probe of a sample of each.

    False when a new constant probes as a tracer too: compiling is disabled (``mx.disable_compile()``,
    ``MLX_DISABLE_COMPILE``), so the probe cannot tell, and the call keeps the untraced path's semantics.
    """
    samples = [a.reshape(-1)[:1].astype(mx.float32) for a in arrays if a is not None]
    if not _PROBE.is_tracer(mx.concatenate(samples) if len(samples) > 1 else samples[0]):
        return False
    return not _PROBE.is_tracer(mx.zeros((1,), mx.float32))


def untraced(x: mx.array) -> bool:
    """Whether ``x`` is surely not a tracer: False inside ``mx.compile``, ``mx.grad`` or ``mx.vjp``, and False too
    where compiling is disabled, since the probe then cannot tell (:func:`traced` says False there instead)."""
    return not _PROBE.is_tracer(x.reshape(-1)[:1].astype(mx.float32))


#: The worker thread's name: every job sees it, so a call made by a job never waits on the worker.
WORKER_PREFIX = "mlx_deconv_anti_aliased"
_WORKER_LOCK = threading.Lock()
_WORKER: Optional[ThreadPoolExecutor] = None


def _worker() -> ThreadPoolExecutor:
    global _WORKER
    with _WORKER_LOCK:
        if _WORKER is None:
            _WORKER = ThreadPoolExecutor(max_workers=1, thread_name_prefix=WORKER_PREFIX)
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


def run_untraced(fn: Callable, arrays: Sequence[mx.array], *, forward: bool = False):
    """``fn(*arrays)``, computed where its fused kernels compile.

    Inside ``mx.grad``/``mx.vjp`` the arrays are tracers to MLX's compile, so compiled functions run
    their bodies as plain ops, several times slower here. The inputs are then evaluated and copied:
    a ``forward`` runs on fresh arrays on this thread (arrays made from data are not tracers while the
    forward is traced); a backward, where MLX retains the graph and every array on this thread counts
    as a tracer (the state is per thread), runs on a worker thread and its evaluated outputs come back
    as constants. Either suits the inside of a ``custom_function``, whose VJP is given, not traced.
    Inside a caller's ``mx.compile`` nothing can be evaluated: ``fn`` is traced into the caller's graph.
    """
    if not _PROBE.is_tracer(arrays[0]):
        return fn(*arrays)
    copies = _to_host(arrays)
    if copies is None:
        return fn(*arrays)
    if forward:
        fresh = _from_host(copies)
        if not _PROBE.is_tracer(fresh[0]):
            return fn(*fresh)
    if threading.current_thread().name.startswith(WORKER_PREFIX):
        return fn(*_from_host(copies))  # never wait on the worker from the worker

    device = mx.default_device()  # the caller's (mx.stream(...) sets it); the worker's own stream of it

    def job():
        with mx.stream(device):
            out = fn(*_from_host(copies))
            mx.eval(out)
        return out

    return _worker().submit(job).result()


def build_untraced(fn: Callable, arrays: Sequence[mx.array]):
    """``fn(*arrays)``, its graph built on the worker thread, where MLX compiles: nothing is evaluated.

    MLX's tracing state is per thread, so the worker, which is not tracing, compiles a compiled ``fn`` given the
    caller's tracers and returns its fused nodes, lazily, on the caller's stream; they are evaluated with the
    caller's graph. For the inside of a ``custom_function``, whose VJP is given, not traced; on the worker itself
    (a job's own call), or on a GPU stream, ``fn`` runs where it is, its compiled functions as plain ops.
    """
    device = mx.default_device()  # the caller's (mx.stream(...) sets it)
    if device.type != mx.cpu or threading.current_thread().name.startswith(WORKER_PREFIX):
        return fn(*arrays)  # a GPU stream is not handed to another thread
    stream = mx.default_stream(device)

    def job():
        with mx.stream(stream):
            return fn(*arrays)

    return _worker().submit(job).result()


def run_off_trace(fn: Callable, arrays: Sequence[mx.array], *, forward: bool = False):
    """``fn(*arrays)`` for a fused path's custom function: as it is when nothing is traced; else built on the
    worker (:func:`build_untraced`) on a CPU stream, and evaluated there (:func:`run_untraced`) on another."""
    if not _PROBE.is_tracer(arrays[0]):
        return fn(*arrays)
    if mx.default_device().type == mx.cpu:
        return build_untraced(fn, arrays)
    return run_untraced(fn, arrays, forward=forward)


#: Up to this many elements of ``x`` the backward is one compiled function, its taps constants of it: a small
#: signal's backward is bound by its kernels' calls, and MLX fuses the whole. Past it the separate kernels
#: were faster (figures: docs/performance-history.md).
WHOLE_BACKWARD_MAX_ELEMENTS = 1 << 17


def _cotangents(geom: ActivationGeometry, has_beta: bool, n: int, kern: Kernels, cd, filters, xv, al, be, ybar):
    """``(xbar, alpha_bar, beta_bar)`` in the inputs' dtypes (``beta_bar`` zero for Snake, whose ``beta`` is a stand-in)."""
    def params(p, q):
        return snake_params(p, q if has_beta else None, geom.logscale, cd)

    a, ib = params(al, be)
    xbar, abar, ibbar = polyphase_backward(kern, as_rows(xv, cd), a, ib, filters, as_rows(ybar, cd))
    if n == 1:
        xbar = xbar[None]
    _, (al_bar, be_bar) = mx.vjp(params, [al, be], [abar, ibbar])
    return (xbar.astype(xv.dtype), al_bar.astype(al.dtype),
            (be_bar if has_beta else mx.zeros_like(be)).astype(be.dtype))


@per_thread_cache(maxsize=64)
def _whole_backward(geom: ActivationGeometry, has_beta: bool, n: int, up_taps, down_taps, dtype) -> Callable:
    """The backward of one configuration as one compiled function of ``(x, alpha, beta, ybar)``."""
    kern, cd = kernels_for(geom, up_taps, down_taps, dtype, False)

    def whole(xv, al, be, ybar):
        return _cotangents(geom, has_beta, n, kern, cd, (), xv, al, be, ybar)
    return mx.compile(whole)


def differentiable(geom: ActivationGeometry, has_beta: bool, n: int, compiled: bool, forward: Callable, *,
                   forward_builds: bool = True) -> Callable:
    """``forward(x, alpha, beta, up, down)`` as an ``mx.custom_function`` whose VJP is the polyphase one.

    ``forward_builds=False`` for a forward that may evaluate (a kernel launched by the emulator): built on the
    worker it would evaluate on the caller's stream, which MLX refuses off its thread, so it runs as
    :func:`run_untraced` says."""

    def backward(xv, al, be, up_, down_, ybar):
        taps = filter_taps(up_, down_)
        if compiled and taps[0] is not None and xv.size <= WHOLE_BACKWARD_MAX_ELEMENTS:
            cotangents = _whole_backward(geom, has_beta, n, *taps, xv.dtype)(xv, al, be, ybar)
        else:
            kern, cd, filters = prepare(xv, up_, down_, geom, compiled, taps)
            cotangents = _cotangents(geom, has_beta, n, kern, cd, filters, xv, al, be, ybar)
        return (*cotangents, mx.zeros_like(up_), mx.zeros_like(down_))

    @mx.custom_function
    def fn(xv, al, be, up_, down_):
        arrays = [xv, al, be, up_, down_]
        if forward_builds:
            return run_off_trace(forward, arrays, forward=True)
        return run_untraced(forward, arrays, forward=True)

    @fn.vjp
    def fn_vjp(primals, cotangent, output):
        return tuple(run_off_trace(backward, [*primals, cotangent]))

    return fn
