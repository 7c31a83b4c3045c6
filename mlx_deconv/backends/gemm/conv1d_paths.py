"""``conv1d`` on the ``gemm`` machinery: the adjoint of the transposed op's paths.

``y[n, m, co] = sum_{k, ci} x[n, m*s + k*d - left, g*C_in/G + ci] * w[co, k, ci]``.
Tap ``k`` reads padded sample ``m*s + k*d``; with ``k*d = q*s + r`` (the
slot rule of :mod:`.layout`) that is *polyphase row* ``m + q``, phase ``r``,
where polyphase row ``j`` holds padded samples ``[j*s, j*s + s)`` side by
side, a view ``(rows, s*C_in)`` of the contiguous input. So

    ``y[m] = sum_q xr[m + q] @ W_q``,  ``W_q``: ``(s*C_in/G, C_out/G)``,

the adjoint of the transposed op's slabs, with the same shifts. Paths:

====================================  ==========================================================
Kind of layer                         Path
====================================  ==========================================================
``C_in/G == 1`` (depthwise, channel   ``DirectDepthwise``: ``sum_k x[m*s + k*d] * w_k`` over
multiplier, ``C_in == 1``)            strided views, one fused pass, no matmul
dense, short (at most                 ``DirectUnfolded``: the ``K`` taps' rows copied side by
``policy.unfold_max_rows`` output     side (im2col), one matmul of depth ``K*C_in`` with the
rows)                                 weight read in place (a transposed view, no copy)
taps tiling slots (every stride 1,    ``DirectSlabs``: one matmul per shift on row views of
dilated or not; ``K`` a multiple of   ``xr``, summed in place (``mx.addmm``); grouped layers
``stride``), dense or grouped         copy their rows group-major once and batch over groups
other taps (sparse slots)             ``DirectPlanes``: the block's phases copied apart once
                                      (one pass over its input), one matmul per tap on row views
====================================  ==========================================================

A short dense call with no more output rows than output channels reads more weight than columns:
its workers share the output channels (:func:`by_output_channels`), not the rows.

Past the short signals, no im2col: inner blocks read views of ``x`` itself; only
blocks at the signal's ends (zero padding) and grouped/plane rows are copied, once.

Gradients: a dense stride-1 layer whose columns fit ``policy.unfold_vjp_max_elements``
takes them from two computations (:func:`unfolded_vjp`): the input's is the ``conv1d`` of
the cotangent with the taps reversed and the channels swapped, run by this module's
forward (its path and workers), and the weight's one deep matmul of the cotangent by
the input's columns. A depthwise layer takes them the same way (:func:`depthwise_vjp`):
the adjoint's forward, and one reduction per tap. Otherwise ``conv1d``'s
input gradient is the transposed op of the cotangent, and its weight gradient that
op's weight gradient with the roles of signal and cotangent swapped, so one VJP of
the ``gemm`` transposed op (:func:`.transposed.conv_transpose1d`, blocks and all)
gives both.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Tuple

import mlx.core as mx

from ...runtime.compiling import per_thread_cache
from ...geometry.records import Conv1dGeometry, Geometry
from . import schedule, slabs
from .transposed import conv_transpose1d as transposed_run, in_compute_dtype
from .tap_layout import slab_shifts, slot_weight, taps_by_channel
from .schedule import DEFAULT_POLICY, BlockPolicy


def _samples(x: mx.array, geom: Conv1dGeometry, start: int, rows: int) -> mx.array:
    """Padded samples ``[start*s, (start + rows)*s)`` of ``x``, zero outside the signal: a view inside it."""
    return slabs.signal_rows(x, start * geom.stride - geom.pad_left, rows * geom.stride)


@dataclass(frozen=True)
class _DirectPath:
    geom: Conv1dGeometry

    @property
    def per_row(self) -> Optional[int]:
        # Per output row: the block's output and, at most, one copy of its input rows.
        return self.geom.stride * self.geom.in_channels + self.geom.out_channels

    @property
    def channel_axes(self) -> Tuple[int, ...]:
        g = self.geom
        return (g.out_channels,) if g.groups == 1 else (g.groups, g.out_per_group)


@per_thread_cache(maxsize=512)  # compiled functions: made, kept and freed by each thread
def _depthwise_taps(taps: int, stride: int, dilation: int, count: int):
    last = (count - 1) * stride + 1

    def total(x, w):  # a slice, not a gather; a few taps per kernel (slabs.fused_sum)
        return slabs.fused_sum([x[:, k * dilation : k * dilation + last : stride] * w[k : k + 1] for k in range(taps)])

    return mx.compile(total)


@dataclass(frozen=True)
class DirectDepthwise(_DirectPath):
    """One input channel per output channel: a broadcast multiply-add of strided views, fused."""

    name = "depthwise (direct)"

    @property
    def per_row(self) -> Optional[int]:
        return None  # one fused pass writes the block

    @property
    def channel_axes(self) -> Tuple[int, ...]:
        return (self.geom.out_channels,)

    def arrange(self, weight: mx.array) -> List[mx.array]:
        return [taps_by_channel(weight)]

    def block(self, x: mx.array, start: int, stop: int, ws: List[mx.array]) -> mx.array:
        g = self.geom
        count = stop - start
        span = (count - 1) * g.stride + (g.kernel_size - 1) * g.dilation + 1
        xb = slabs.signal_rows(x, start * g.stride - g.pad_left, span)
        if g.groups > 1 and g.out_per_group > 1:  # channel multiplier
            xb = mx.repeat(xb, g.out_per_group, axis=-1)
        return _depthwise_taps(g.kernel_size, g.stride, g.dilation, count)(xb, ws[0])


@dataclass(frozen=True)
class DirectSlabs(_DirectPath):
    """Taps tiling ``(shift, phase)`` slots: one matmul per shift on polyphase row views, summed in place."""

    shifts: Tuple[int, ...] = ()
    name = "slabs (direct)"

    def arrange(self, weight: mx.array) -> List[mx.array]:
        """Each shift's ``W_q``: ``(s*C_in, C_out)`` dense, ``(G, s*C_in/G, C_out/G)`` grouped; empty slots zero."""
        g = self.geom
        w = weight.reshape(g.groups, g.out_per_group, g.kernel_size, g.in_per_group)
        w = slot_weight(w, g.kernel_size, g.stride, g.dilation, self.shifts)  # (G, C_out/G, slots, C_in/G)
        w = w.reshape(g.groups, g.out_per_group, len(self.shifts), g.stride * g.in_per_group)
        ws = [mx.contiguous(w[:, :, j].transpose(0, 2, 1)) for j in range(len(self.shifts))]
        return [u.reshape(u.shape[1:]) for u in ws] if g.groups == 1 else ws

    def block(self, x: mx.array, start: int, stop: int, ws: List[mx.array]) -> mx.array:
        g = self.geom
        count = stop - start
        rows = count + self.shifts[-1]
        xb = _samples(x, g, start, rows)
        if g.groups == 1:
            inner = xb.reshape(g.batch, rows, g.stride * g.in_channels)  # a view: polyphase rows
            if g.batch == 1:  # one signal: 2-D rows, no batch axis for the matmul to walk
                inner = mx.squeeze(inner, axis=0)
        else:  # (G, N, rows, s*C_in/G): one copy, so each shift's rows are a plain view
            inner = xb.reshape(g.batch, rows, g.stride, g.groups, g.in_per_group).transpose(3, 0, 1, 2, 4)
            inner = mx.contiguous(inner).reshape(g.groups, g.batch, rows, -1)
            ws = [w[:, None] for w in ws]  # broadcast over the batch
        total = None
        for q, w in zip(self.shifts, ws):
            part = inner[..., q : q + count, :]
            total = part @ w if total is None else mx.addmm(total, part, w)
        if g.groups == 1:
            return total.reshape(g.batch, count, g.out_channels)
        return total.transpose(1, 2, 0, 3)  # (N, count, G, C_out/G), read in place by the write


@dataclass(frozen=True)
class DirectPlanes(_DirectPath):
    """Sparse slots: the block's phases copied apart once, then one matmul per tap on row views."""

    name = "phase planes (direct)"

    def arrange(self, weight: mx.array) -> List[mx.array]:
        """Each tap's ``(C_in, C_out)`` (``(G, C_in/G, C_out/G)`` grouped), contiguous."""
        g = self.geom
        w = weight.reshape(g.groups, g.out_per_group, g.kernel_size, g.in_per_group)
        ws = [mx.contiguous(w[:, :, k].transpose(0, 2, 1)) for k in range(g.kernel_size)]
        return [u.reshape(u.shape[1:]) for u in ws] if g.groups == 1 else ws

    def block(self, x: mx.array, start: int, stop: int, ws: List[mx.array]) -> mx.array:
        g = self.geom
        count = stop - start
        rows = count + (g.kernel_size - 1) * g.dilation // g.stride
        xb = _samples(x, g, start, rows)
        if g.groups == 1:  # (s, N, rows, C_in)
            planes = mx.contiguous(xb.reshape(g.batch, rows, g.stride, g.in_channels).transpose(2, 0, 1, 3))
        else:  # (s, G, N, rows, C_in/G)
            planes = xb.reshape(g.batch, rows, g.stride, g.groups, g.in_per_group).transpose(2, 3, 0, 1, 4)
            planes = mx.contiguous(planes)
            ws = [w[:, None] for w in ws]
        total = None
        for k, w in enumerate(ws):
            q, r = divmod(k * g.dilation, g.stride)
            part = planes[r][..., q : q + count, :]
            total = part @ w if total is None else mx.addmm(total, part, w)
        if g.groups == 1:
            return total
        return total.transpose(1, 2, 0, 3)


@dataclass(frozen=True)
class DirectUnfolded(_DirectPath):
    """Short dense signals: the block's taps copied side by side (im2col), then one deep matmul.

    ``K`` matmuls of few rows each run far below the BLAS's rate; one matmul of depth ``K*C_in``
    does not, and the copy it needs is small where the signal is short.
    """

    name = "unfolded (direct)"

    @property
    def per_row(self) -> Optional[int]:
        return self.geom.kernel_size * self.geom.in_channels + self.geom.out_channels

    def arrange(self, weight: mx.array) -> List[mx.array]:
        g = self.geom
        # (K*C_in, C_out) as a transposed view: the BLAS reads it in place, no copy of the weight per call
        return [weight.reshape(g.out_channels, g.kernel_size * g.in_channels).T]

    def block(self, x: mx.array, start: int, stop: int, ws: List[mx.array]) -> mx.array:
        g = self.geom
        count = stop - start
        cols = columns(x, start * g.stride - g.pad_left, count, g.kernel_size, g.dilation, g.stride)
        return (cols.reshape(g.batch * count, -1) @ ws[0]).reshape(g.batch, count, g.out_channels)


def columns(x: mx.array, first: int, count: int, taps: int, dilation: int, stride: int = 1) -> mx.array:
    """im2col: ``(N, count, taps*C)`` whose row ``m`` holds rows ``first + m*stride + k*dilation`` of
    ``x (N, L, C)`` for ``k = 0..taps-1`` side by side, zero outside ``[0, L)``."""
    rows = (count - 1) * stride + 1 + (taps - 1) * dilation
    xb = slabs.signal_rows(x, first, rows)
    n, c = xb.shape[0], xb.shape[-1]
    # One strided view and one copy: as many ops whatever the number of taps.
    return mx.as_strided(xb, (n, count, taps, c), (rows * c, stride * c, dilation * c, 1)).reshape(n, count, taps * c)


def unfolded_vjp_fits(geom: Conv1dGeometry, policy: BlockPolicy = DEFAULT_POLICY) -> bool:
    """True where :func:`unfolded_vjp` computes the gradient: dense, stride 1, ``K > 1``, its column matrix
    within the policy's bound (past it, the transposed op's blocks, which copy no columns)."""
    rows = geom.batch * max(geom.length, geom.output_length)
    return (geom.groups == 1 and geom.stride == 1 and geom.kernel_size > 1
            and rows * geom.kernel_size * max(geom.in_channels, geom.out_channels) <= policy.unfold_vjp_max_elements)


def input_gradient_geometry(geom: Conv1dGeometry) -> Conv1dGeometry:
    """A stride-1 ``conv1d``'s input gradient as a ``conv1d`` of the cotangent: the taps reversed, the channels
    swapped, and padding ``span - pad`` on each side (negative: rows of the cotangent that reach no input)."""
    span = (geom.kernel_size - 1) * geom.dilation
    return Conv1dGeometry(batch=geom.batch, length=geom.output_length, in_channels=geom.out_channels,
                          out_channels=geom.in_channels, kernel_size=geom.kernel_size, stride=1,
                          dilation=geom.dilation, groups=geom.groups, pad_left=span - geom.pad_left,
                          pad_right=span - geom.pad_right, output_length=geom.length)


def unfolded_vjp(x: mx.array, weight: mx.array, cotangent: mx.array, geom: Conv1dGeometry,
                 policy: BlockPolicy = DEFAULT_POLICY):
    """``(dx, dw)`` of a dense stride-1 ``conv1d``, each one forward computation, no blocks and no nested trace.

    ``dx`` is the ``conv1d`` of the cotangent with the taps reversed and the channels swapped
    (:func:`input_gradient_geometry`), computed as the forward is: its path, its workers.
    ``dw = ct^T @ cols(x)``: one deep matmul over every output row, its output channels shared by the workers.
    A training step's layers are bound by the number of ops they issue, and these are few.
    """
    g = geom
    n, taps = g.batch, g.kernel_size
    reversed_taps = mx.contiguous(weight[:, ::-1, :].transpose(2, 1, 0))  # (C_in, K, C_out)
    dx = _forward(cotangent, reversed_taps, input_gradient_geometry(g), policy)
    ct = cotangent.reshape(n * g.output_length, g.out_channels)
    cols = columns(x, -g.pad_left, g.output_length, taps, g.dilation).reshape(n * g.output_length, -1)
    workers = schedule.worker_streams(mx.default_stream(mx.default_device()), policy.max_workers)
    if g.flops < policy.parallel_min_flops:
        workers = workers[:1]
    dw = _by_channel(g.out_channels, workers, lambda lo, hi: ct[:, lo:hi].T @ cols, axis=0)
    return dx, dw.reshape(g.out_channels, taps, g.in_channels)


def depthwise_vjp_fits(geom: Conv1dGeometry, policy: BlockPolicy = DEFAULT_POLICY) -> bool:
    """True where :func:`depthwise_vjp` computes the gradient: one input and one output channel per group, and
    an output within the policy's bound (each tap's product is one array of the output's size; past the bound,
    the transposed op's blocks, which bound their intermediates)."""
    return (geom.in_per_group == 1 and geom.out_per_group == 1
            and geom.batch * geom.output_length * geom.out_channels <= policy.unfold_vjp_max_elements)


@per_thread_cache(maxsize=512)  # compiled functions: made, kept and freed by each thread
def _depthwise_weight_grad(geom: Conv1dGeometry):
    """``dw(cotangent, x)``, ``(C, K, 1)``: per tap, the cotangent times the input rows it read, summed over the batch
    and the outputs; outputs whose row falls outside ``[0, L)`` (padding) are skipped."""
    g = geom

    def grad(ct, x):
        taps = []
        for k in range(g.kernel_size):
            offset = k * g.dilation - g.pad_left  # output t reads row t*stride + offset
            t0 = max(0, -(offset // g.stride))  # the first output whose row t*stride + offset is >= 0
            t1 = min(g.output_length, -(-(g.length - offset) // g.stride))
            if t1 <= t0:
                taps.append(mx.zeros((g.in_channels,), ct.dtype))
                continue
            rows = x[:, t0 * g.stride + offset : (t1 - 1) * g.stride + offset + 1 : g.stride]
            taps.append(mx.sum(ct[:, t0:t1] * rows, axis=(0, 1)))
        return mx.stack(taps, axis=1)[..., None]
    return mx.compile(grad)


def depthwise_vjp(x: mx.array, weight: mx.array, cotangent: mx.array, geom: Conv1dGeometry,
                  policy: BlockPolicy = DEFAULT_POLICY):
    """``(dx, dw)`` of a depthwise ``conv1d``, each a forward computation: no nested trace of the transposed op.

    ``dx`` is the adjoint transposed op's forward on the cotangent (stride 1: the depthwise ``conv1d`` of the
    cotangent with the taps reversed, on the fused path), ``dw`` one reduction per tap (:func:`_depthwise_weight_grad`).
    """
    g = geom
    if g.stride == 1:
        dx = _forward(cotangent, weight[:, ::-1, :], input_gradient_geometry(g), policy)
    else:
        dx = transposed_run(cotangent, adjoint_weight(weight, g.groups), None, adjoint_geometry(g), policy)
    return dx, _depthwise_weight_grad(g)(cotangent, x)


def path_for(geom: Conv1dGeometry, policy: BlockPolicy = DEFAULT_POLICY) -> _DirectPath:
    """The path a ``conv1d`` call takes (table in the module docstring)."""
    if geom.in_per_group == 1:
        return DirectDepthwise(geom)
    # Up to unfold_max_rows the copy of K input rows per output row is small beside the matmul.
    if geom.groups == 1 and geom.kernel_size > 1 and geom.batch * geom.output_length <= policy.unfold_max_rows:
        return DirectUnfolded(geom)
    shifts = slab_shifts(geom.kernel_size, geom.stride, geom.dilation)
    return DirectPlanes(geom) if shifts is None else DirectSlabs(geom, shifts)


def adjoint_geometry(geom: Conv1dGeometry) -> Geometry:
    """The transposed op that is ``conv1d``'s input gradient: from the output's length back to the input's."""
    return Geometry(batch=geom.batch, length=geom.output_length, in_channels=geom.out_channels,
                    out_channels=geom.in_channels, kernel_size=geom.kernel_size, stride=geom.stride,
                    dilation=geom.dilation, groups=geom.groups, crop=geom.pad_left, output_length=geom.length)


def adjoint_weight(weight: mx.array, groups: int) -> mx.array:
    """``(C_out, K, C_in/G)`` -> the adjoint transposed op's MLX-layout ``(C_in, K, C_out/G)`` (and back,
    with the roles of the channel counts swapped)."""
    out_channels, taps, in_per_group = weight.shape
    w = weight.reshape(groups, out_channels // groups, taps, in_per_group).transpose(0, 3, 2, 1)
    return w.reshape(groups * in_per_group, taps, out_channels // groups)


def by_output_channels(x: mx.array, weight: mx.array, geom: Conv1dGeometry, workers: List[mx.Stream]) -> mx.array:
    """A short dense call (``K > 1``) with at most as many output rows as output channels, shared by output channel.

    Its matmul reads more weight than columns: shared by rows, every worker would pack the whole
    weight again; shared by output channel, each packs its own share, and the columns are copied once.
    """
    g = geom
    rows = g.batch * g.output_length
    cols = columns(x, -g.pad_left, g.output_length, g.kernel_size, g.dilation, g.stride).reshape(rows, -1)
    # Each share's rows of the weight: a transposed view, read in place.
    y = _by_channel(g.out_channels, workers, lambda lo, hi: cols @ weight[lo:hi].reshape(hi - lo, -1).T, axis=1)
    return y.reshape(g.batch, g.output_length, g.out_channels)


def _by_channel(channels: int, workers: List[mx.Stream], share, axis: int) -> mx.array:
    """``share(lo, hi)`` of output channels ``[lo, hi)`` on each worker (every share at least one channel),
    joined along ``axis``."""
    workers = workers[:channels]
    cuts = schedule.bounds(channels, len(workers))
    parts = []
    for stream, lo, hi in zip(workers, cuts, cuts[1:]):
        with mx.stream(stream):
            parts.append(share(lo, hi))
    return parts[0] if len(parts) == 1 else mx.concatenate(parts, axis=axis)


def _forward(x: mx.array, weight: mx.array, geom: Conv1dGeometry, policy: BlockPolicy) -> mx.array:
    path = path_for(geom, policy)
    workers = schedule.worker_streams(mx.default_stream(mx.default_device()), policy.max_workers)
    if (isinstance(path, DirectUnfolded) and len(workers) > 1 and geom.flops >= policy.parallel_min_flops
            and geom.batch * geom.output_length <= geom.out_channels):
        return by_output_channels(x, weight, geom, workers)
    ws = path.arrange(weight)
    count = schedule.direct_block_count(geom, path.per_row, len(workers), policy)
    cuts = schedule.bounds(geom.output_length, count)
    if count == 1:
        return path.block(x, 0, geom.output_length, ws).reshape(geom.batch, geom.output_length, -1)

    def parts():
        for i, (start, stop) in enumerate(zip(cuts, cuts[1:])):
            with mx.stream(workers[i % len(workers)]):
                yield start, stop, path.block(x, start, stop, ws)

    y = schedule.write_in_place(parts(), (geom.batch, geom.output_length, *path.channel_axes), x.dtype,
                                schedule.writer_stream(workers))
    return y.reshape(geom.batch, geom.output_length, -1)


def conv1d(x: mx.array, weight: mx.array, bias: Optional[mx.array], geom: Conv1dGeometry,
           policy: BlockPolicy = DEFAULT_POLICY) -> mx.array:
    """Backend ``"gemm"`` for ``conv1d``: direct conv of NLC ``x`` with an MLX-layout ``weight``.

    Args:
        x: ``(N, L, C_in)``.
        weight: ``(C_out, K, C_in/groups)``.
        bias: ``(C_out,)`` or None.
        geom: the validated call.
        policy: how to cut the call into blocks (tests pass tiny ones).

    Returns:
        array: ``(N, L_out, C_out)`` in the dtype of ``x``.
    """
    adjoint = adjoint_geometry(geom)

    @mx.custom_function
    def direct(x, weight):
        return _forward(x, weight, geom, policy)

    @direct.vjp
    def direct_vjp(primals, cotangent, output):
        x, weight = primals
        if unfolded_vjp_fits(geom, policy):
            return unfolded_vjp(x, weight, cotangent, geom, policy)
        if depthwise_vjp_fits(geom, policy):
            return depthwise_vjp(x, weight, cotangent, geom, policy)
        # <ct, conv1d(x, w)> = <T(ct, w'), x>: T(ct, w') is dx, and its VJP w.r.t. w' at x is dw'.
        (dx,), (dw_adjoint,) = mx.vjp(lambda w: transposed_run(cotangent, w, None, adjoint, policy),
                                      [adjoint_weight(weight, geom.groups)], [x])
        return dx, adjoint_weight(dw_adjoint, geom.groups)

    return in_compute_dtype(direct, x, weight, bias)
