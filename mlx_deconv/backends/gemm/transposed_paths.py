"""The compute paths of the ``gemm`` backend (the table of which layer takes which is in :mod:`.gemm`).

One module for all of them (about 420 lines): they are one concept, variations of one overlap-add
that share their arrangement and block interface, and reading them side by side is the point.

A path is one way to compute the transposed convolution's output block by
block. Each holds the call's geometry and has:

* ``arrange(weight) -> list of arrays``: the weight laid out for it, once per call;
* ``block(x, lo, hi, ws, crop, length)``: output samples ``[crop, crop + length)``
  of the full output of input rows ``x[:, lo:hi]`` (slab paths may read rows
  of ``x`` around them, where the signal has them);
* ``per_row``: elements of intermediate per input row, which sizes blocks
  (None: no intermediate, the product is fused into the pass that writes);
* ``channel_axes``: the trailing axes of a block;
* ``backward``: the path whose blocks the VJP differentiates, and
  ``own_vjp``: whether even a one-block call needs the block VJPs.

Scheduling (blocks, streams, writes, VJPs) is in :mod:`.schedule`.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import List, Optional, Tuple

import mlx.core as mx
import numpy as np

from ...geometry.records import Geometry
from . import slabs
from .minimal_filtering import samples as minimal_filtering_samples, tile_rows, transform_weight
from .tap_layout import slab_shifts, slab_weights, slot_weight, squeezed_groups, taps_by_channel
from .planes import phase_overlap_add


def _slab_rows(stride: int, crop: int, length: int) -> Tuple[int, int, int]:
    """``(first, count, offset)``: slab rows ``[first, first + count)`` hold samples ``[crop, crop + length)``,
    which start ``offset`` samples into row ``first``."""
    first = crop // stride
    return first, -(-(crop + length) // stride) - first, crop - first * stride


def _spread(x: mx.array, geom: Geometry) -> mx.array:
    """Each input channel repeated for its group's output channels (depthwise multiplier)."""
    return mx.repeat(x, geom.out_per_group, axis=-1) if geom.groups > 1 and geom.out_per_group > 1 else x


@dataclass(frozen=True)
class _Path:
    geom: Geometry

    name = "path"
    own_vjp = False

    @property
    def per_row(self) -> Optional[int]:
        # Every tap's product, ``K * C_out`` per input row, the bound the blocks were tuned for.
        return self.geom.kernel_size * self.geom.out_channels

    @property
    def channel_axes(self) -> Tuple[int, ...]:
        return (self.geom.out_channels,)

    @property
    def backward(self) -> "_Path":
        return self


@dataclass(frozen=True)
class DepthwiseSlabs(_Path):
    """One input channel per output channel, taps tiling slabs: ``x * w`` fused into the slab sum (:mod:`.slabs`)."""

    shifts: Tuple[int, ...] = ()
    name = "depthwise slabs"

    @property
    def per_row(self) -> Optional[int]:
        return None  # multiplied inside the pass that writes the output

    @property
    def empty_slots(self) -> Tuple[Tuple[bool, ...], ...]:
        """``[j][r]``: True where slab ``j`` has no tap at phase ``r``."""
        g = self.geom
        reached = {k * g.dilation for k in range(g.kernel_size)}
        return tuple(tuple(q * g.stride + r not in reached for r in range(g.stride)) for q in self.shifts)

    def arrange(self, weight: mx.array) -> List[mx.array]:
        g = self.geom
        w = slot_weight(taps_by_channel(weight), g.kernel_size, g.stride, g.dilation, self.shifts)
        # Contiguous: as a broadcast operand of the fused pass a strided view cost 15% (BigVGAN's filter).
        return [mx.contiguous(w.reshape(len(self.shifts), g.stride, g.out_channels))]

    def block(self, x, lo, hi, ws, crop, length):
        g = self.geom
        first, count, offset = _slab_rows(g.stride, crop, length)
        pad = self.shifts[-1]
        x = slabs.zero_extended(_spread(x[:, lo:hi], g), 1, pad, pad)
        y = slabs.depthwise_slab_sum(x, ws[0], self.shifts, first, first + count, self.empty_slots)
        return y.reshape(g.batch, count * g.stride, g.out_channels)[:, offset : offset + length]


@dataclass(frozen=True)
class ChannelPlanes(_Path):
    """One input channel per output channel, any taps: per-tap products by broadcasting, phase planes."""

    name = "per-channel phase planes"

    def arrange(self, weight: mx.array) -> List[mx.array]:
        return [taps_by_channel(weight)]

    def block(self, x, lo, hi, ws, crop, length):
        g = self.geom
        return phase_overlap_add(_spread(x[:, lo:hi], g)[:, :, None, :] * ws[0], g.stride, g.dilation, crop, length)


@dataclass(frozen=True)
class PhasePlanes(_Path):
    """The general matmul path: one matmul gives every tap's product, summed on phase planes."""

    name = "phase planes"

    def arrange(self, weight: mx.array) -> List[mx.array]:
        g = self.geom
        if g.groups == 1:
            return [weight.transpose(2, 1, 0).reshape(g.in_channels, -1)]  # (C_in, K * C_out)
        w = weight.reshape(g.groups, g.out_per_group, g.kernel_size, g.in_per_group).transpose(0, 3, 2, 1)
        return [w.reshape(g.groups, g.in_per_group, -1)]  # (G, C_in/G, K * C_out/G)

    def block(self, x, lo, hi, ws, crop, length):
        g = self.geom
        x = x[:, lo:hi]
        batch, rows_in, _ = x.shape
        if g.groups == 1:
            cols = (x.reshape(batch * rows_in, g.in_channels) @ ws[0]).reshape(batch, rows_in, -1, g.out_channels)
            return phase_overlap_add(cols, g.stride, g.dilation, crop, length)
        xg = x.reshape(batch * rows_in, g.groups, g.in_per_group).transpose(1, 0, 2)
        cols = (xg @ ws[0]).reshape(g.groups, batch, rows_in, -1, g.out_per_group)
        y = phase_overlap_add(cols, g.stride, g.dilation, crop, length)
        return y.transpose(1, 2, 0, 3).reshape(batch, length, g.out_channels)


@dataclass(frozen=True)
class WideSlabs(_Path):
    """Taps tiling slabs: one wide matmul per block, then the fused overlap-add of :mod:`.slabs`.

    The backward form of the slab paths: differentiated, it costs two
    matmuls in all, where summing slabs in place costs two per slab."""

    shifts: Tuple[int, ...] = ()
    name = "wide slabs"

    def arrange(self, weight: mx.array) -> List[mx.array]:
        g = self.geom
        if g.groups == 1:
            w = slot_weight(weight.transpose(2, 1, 0), g.kernel_size, g.stride, g.dilation, self.shifts)
            return [w.reshape(g.in_channels, -1)]  # (C_in, slots * C_out)
        w = weight.reshape(g.groups, g.out_per_group, g.kernel_size, g.in_per_group).transpose(0, 3, 2, 1)
        w = slot_weight(w, g.kernel_size, g.stride, g.dilation, self.shifts)
        return [w.reshape(g.groups, g.in_per_group, -1)]  # (G, C_in/G, slots * C_out/G)

    def block(self, x, lo, hi, ws, crop, length):
        g = self.geom
        first, count, offset = _slab_rows(g.stride, crop, length)
        last, slab_count = first + count, len(self.shifts)
        # Pad the input by the largest shift on both sides, so each output row is a
        # sum of views (slabs.py); the padding costs a few matmul rows.
        pad = self.shifts[-1]
        x = slabs.zero_extended(x[:, lo:hi], 1, pad, pad)
        batch, rows, _ = x.shape
        if g.groups == 1:
            cols = (x.reshape(batch * rows, g.in_channels) @ ws[0]).reshape(batch, rows, slab_count, -1)
            y = slabs.slab_sum(cols, self.shifts, first, last)
        else:
            # One batched matmul over groups; the overlap-add reads it group-major and
            # writes channels-last, so the transpose costs no pass.
            xg = x.reshape(batch * rows, g.groups, g.in_per_group).transpose(1, 0, 2)
            cols = (xg @ ws[0]).reshape(g.groups, batch, rows, slab_count, g.stride, g.out_per_group)
            y = slabs.slab_sum(cols.transpose(1, 2, 3, 4, 0, 5), self.shifts, first, last, axis=1)
        return y.reshape(batch, count * g.stride, g.out_channels)[:, offset : offset + length]


@dataclass(frozen=True)
class WeightOrderSlabs(_Path):
    """Dense, dilation 1, ``K`` a multiple of the stride: one wide matmul against the weight as it is stored.

    Tap ``k = q*stride + r`` is slab ``q``, phase ``r``, so the weight's own
    ``(C_out, K, C_in)`` order already holds every slab: ``x @ weight.reshape(C_out*K, C_in).T``
    is a transposed operand, no copy, and the overlap-add reads its columns
    in ``(C_out, slab, phase)`` order through a transposed view. For weights
    larger than the signal (a decoder's first layer on a short mel), where
    laying the weight out per call costs more than the matmul.
    """

    shifts: Tuple[int, ...] = ()
    name = "weight-order slabs"

    def arrange(self, weight: mx.array) -> List[mx.array]:
        g = self.geom
        return [weight.reshape(g.out_channels * g.kernel_size, g.in_channels)]  # a view

    def block(self, x, lo, hi, ws, crop, length):
        g = self.geom
        first, count, offset = _slab_rows(g.stride, crop, length)
        pad = self.shifts[-1]
        x = slabs.zero_extended(x[:, lo:hi], 1, pad, pad)
        batch, rows, _ = x.shape
        cols = (x.reshape(batch * rows, g.in_channels) @ ws[0].T).reshape(batch, rows, g.out_channels, g.kernel_size)
        if pad:  # padding rows have no product: zero, even where a weight is NaN or Inf
            cols = slabs.zero_ends(cols, 1, pad)
        cols = cols.reshape(batch, rows, g.out_channels, len(self.shifts), g.stride).transpose(0, 1, 3, 4, 2)
        y = slabs.slab_sum(cols, self.shifts, first, first + count, axis=1)
        return y.reshape(batch, count * g.stride, g.out_channels)[:, offset : offset + length]


Runs = Tuple[Optional[Tuple[Tuple[int, int], ...]], ...]


@lru_cache(maxsize=256)  # once per call signature, not per block
def _filled_runs(geom: Geometry, shifts: Tuple[int, ...]) -> Runs:
    """For each slab, None when a tap fills every phase, else the column ranges of its filled phases
    (columns are phase-major, ``C_out/groups`` per phase)."""
    reached = {k * geom.dilation for k in range(geom.kernel_size)}
    runs = []
    for q in shifts:
        filled = [q * geom.stride + r in reached for r in range(geom.stride)]
        if all(filled):
            runs.append(None)
            continue
        edges = [r for r in range(geom.stride + 1) if (r < geom.stride and filled[r]) != (r > 0 and filled[r - 1])]
        runs.append(tuple((a * geom.out_per_group, b * geom.out_per_group) for a, b in zip(edges[::2], edges[1::2])))
    return tuple(runs)


def _summed(terms) -> Optional[mx.array]:
    """``sum rows @ w`` over ``terms = [(rows, w, runs)]``, each matmul added onto the sum in place (``mx.addmm``).

    A slab with empty slots (``runs`` not None) multiplies only its filled
    columns: its zero columns times an Inf or NaN input row would make NaN
    where the definition has no product. Full slabs go first and make the sum.
    """
    total = None
    for rows, w, runs in sorted(terms, key=lambda term: term[2] is not None):
        if runs is None:
            total = rows @ w if total is None else mx.addmm(total, rows, w)
            continue
        if total is None:
            shape = (*np.broadcast_shapes(rows.shape[:-2], w.shape[:-2]), rows.shape[-2], w.shape[-1])
            total = mx.zeros(shape, rows.dtype)
        for a, b in runs:
            total[..., a:b] = mx.addmm(total[..., a:b], rows, w[..., a:b])
    return total


def _accumulate(inner: mx.array, ws: List[mx.array], shifts: Tuple[int, ...], count: int, runs: Runs) -> mx.array:
    """``sum_j inner[P - q_j : P - q_j + count] @ W_j`` (see :func:`_summed`)."""
    pad = shifts[-1]
    return _summed([(inner[..., pad - q : pad - q + count, :], w, r) for q, w, r in zip(shifts, ws, runs)])


def _exact_ends(total: mx.array, inner: mx.array, ws: List[mx.array], shifts: Tuple[int, ...], first: int,
                length: int, runs: Runs) -> mx.array:
    """``total`` with the rows that read zero rows past the signal's ends recomputed from the slabs that exist.

    Zero rows times a NaN or Inf weight make NaN where the definition has no
    product at all. Only the at most ``max(shifts)`` rows at each end of the
    signal are redone (cut where the set of slabs that reach them changes) and
    written over ``total`` in place; an inner block has none.

    Args:
        total: ``(…, count, W)`` slab rows ``[first, first + count)``.
        inner: ``(…, max(shifts) + count, C)`` input rows from ``first - max(shifts)`` (zero outside the signal).
        length: input rows of the signal.
        runs: each slab's filled columns (:func:`_filled_runs`).
    """
    pad, count = shifts[-1], total.shape[-2]
    for a, b in ((0, min(count, pad - first)), (max(0, length - first), count)):
        if a >= b:
            continue
        cuts = sorted({a, b} | {c for q in shifts for c in (q - first, length + q - first) if a < c < b})
        pieces = []
        for u, v in zip(cuts, cuts[1:]):
            # The slabs every row of whose reads exist.
            piece = _summed([(inner[..., pad - q + u : pad - q + v, :], w, r) for q, w, r in zip(shifts, ws, runs)
                             if first + u - q >= 0 and first + v - 1 - q < length])
            pieces.append(mx.zeros((*total.shape[:-2], v - u, total.shape[-1]), total.dtype) if piece is None else piece)
        total[..., a:b, :] = pieces[0] if len(pieces) == 1 else mx.concatenate(pieces, axis=-2)
    return total


@dataclass(frozen=True)
class DenseSlabs(_Path):
    """Dense layers whose taps tile slabs: one matmul per slab, summed in place.

    No per-tap intermediate and no overlap-add pass: the block's memory is
    the size of its output. Rows are read from ``x`` itself, past the block's
    own input where the signal has them (zero outside it), so an inner block
    copies no input. Blocks are ``(N, length, 1, C_out)``.
    """

    shifts: Tuple[int, ...] = ()
    name = "dense slabs"
    own_vjp = True  # differentiating the in-place sums costs two matmuls and a scatter per slab

    @property
    def channel_axes(self) -> Tuple[int, ...]:
        return (1, self.geom.out_channels)

    @property
    def backward(self) -> _Path:
        return WideSlabs(self.geom, self.shifts)

    def arrange(self, weight: mx.array) -> List[mx.array]:
        g = self.geom
        return squeezed_groups(slab_weights(weight, g.stride, g.dilation, g.groups, self.shifts), g.groups)

    def block(self, x, lo, hi, ws, crop, length):
        g = self.geom
        first, count, offset = _slab_rows(g.stride, crop, length)
        pad = self.shifts[-1]
        inner = slabs.signal_rows(x, lo + first - pad, count + pad)
        if g.batch == 1:  # one signal: 2-D rows, no batch axis for the matmul to walk
            inner = mx.squeeze(inner, axis=0)  # a view; inner[0] would gather a copy
        runs = _filled_runs(g, self.shifts)
        total = _exact_ends(_accumulate(inner, ws, self.shifts, count, runs), inner, ws, self.shifts, lo + first,
                            g.length, runs)
        return total.reshape(g.batch, count * g.stride, 1, -1)[:, offset : offset + length]


@dataclass(frozen=True)
class GroupedSlabs(DenseSlabs):
    """Grouped layers whose taps tile slabs: one batched matmul per slab over the groups, summed in place.

    The rows are moved group-major once (one copy of the block's input);
    the block is a transposed view ``(N, length, G, C_out/G)``, which the
    write into the output reads in place: no pass of its own.
    """

    name = "grouped slabs"

    @property
    def channel_axes(self) -> Tuple[int, ...]:
        return (self.geom.groups, self.geom.out_per_group)

    def block(self, x, lo, hi, ws, crop, length):
        g = self.geom
        first, count, offset = _slab_rows(g.stride, crop, length)
        pad = self.shifts[-1]
        inner = slabs.signal_rows(x, lo + first - pad, count + pad)
        # (G, N, rows, C/G), so each slab's rows are a plain view
        inner = mx.contiguous(mx.moveaxis(inner.reshape(g.batch, -1, g.groups, g.in_per_group), 2, 0))
        ws = [w[:, None] for w in ws]  # weights broadcast over N
        runs = _filled_runs(g, self.shifts)
        total = _exact_ends(_accumulate(inner, ws, self.shifts, count, runs), inner, ws, self.shifts, lo + first,
                            g.length, runs)
        total = total.reshape(g.groups, g.batch, count, g.stride, -1).transpose(1, 2, 3, 0, 4)
        return total.reshape(g.batch, count * g.stride, g.groups, -1)[:, offset : offset + length]


@dataclass(frozen=True)
class WinogradSlabs(_Path):
    """Slabs on 2 or 3 consecutive row shifts: minimal filtering (:mod:`.winograd`), fewer matmul FLOPs."""

    shifts: Tuple[int, ...] = ()
    tile: int = 0
    name = "winograd slabs"

    @property
    def per_row(self) -> Optional[int]:
        # Transformed input rows and products per input row, then the output rows.
        g = self.geom
        size = self.tile + len(self.shifts) - 1
        return -(-size * (g.in_channels + g.stride * g.out_channels) // self.tile) + g.stride * g.out_channels

    def arrange(self, weight: mx.array) -> List[mx.array]:
        g = self.geom
        u = transform_weight(slab_weights(weight, g.stride, g.dilation, g.groups, self.shifts), self.tile)
        return squeezed_groups(u, g.groups)

    def block(self, x, lo, hi, ws, crop, length):
        # Reads past [lo, hi) where x has rows: fewer graph nodes than padding.
        g = self.geom
        first = crop // g.stride
        return minimal_filtering_samples(x, ws, self.tile, len(self.shifts), g.stride, lo + first,
                                crop - first * g.stride, length)


#: :class:`WeightOrderSlabs` is taken up to this many signal rows (``N * L``) per input channel: up to
#: there, laying the weight out per call costs more than reading the product through a transposed view.
WEIGHT_ORDER_MAX_ROWS_PER_CHANNEL = 4


def weight_order_applies(geom: Geometry) -> bool:
    """True where the weight's own order holds every slab: dense, dilation 1, ``K`` a multiple of the stride."""
    return geom.groups == 1 and geom.dilation == 1 and geom.kernel_size % geom.stride == 0


def winograd_tile(geom: Geometry) -> Optional[int]:
    """Rows per tile of :class:`WinogradSlabs` for ``geom``, or None where minimal filtering does not apply."""
    return tile_rows(slab_shifts(geom.kernel_size, geom.stride, geom.dilation), geom.in_per_group)


def path_for(geom: Geometry, minimal_filtering: bool = False) -> _Path:
    """The path ``geom`` takes (``minimal_filtering``: the ``winograd`` backend, where it applies)."""
    if geom.in_per_group == 1:
        # Depthwise is bandwidth-bound: multiplying a few empty slots by zero costs less than phase planes.
        shifts = slab_shifts(geom.kernel_size, geom.stride, geom.dilation, 1.0)
        return ChannelPlanes(geom) if shifts is None else DepthwiseSlabs(geom, shifts)
    shifts = slab_shifts(geom.kernel_size, geom.stride, geom.dilation)
    if shifts is None:
        return PhasePlanes(geom)
    tile = tile_rows(shifts, geom.in_per_group) if minimal_filtering else None
    if tile is not None:
        return WinogradSlabs(geom, shifts, tile)
    if geom.groups > 1:
        return GroupedSlabs(geom, shifts)
    if weight_order_applies(geom) and geom.batch * geom.length <= WEIGHT_ORDER_MAX_ROWS_PER_CHANNEL * geom.in_channels:
        return WeightOrderSlabs(geom, shifts)
    return DenseSlabs(geom, shifts)
