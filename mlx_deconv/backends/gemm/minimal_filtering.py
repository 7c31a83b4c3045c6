"""Minimal filtering (Winograd/Toom-Cook) for the ``gemm`` slabs: fewer matmul FLOPs.

When every tap of a dense or grouped layer lands on one of ``S`` consecutive
input rows (row shifts ``0..S-1``; see :func:`.layout.slab_shifts`), slab row
``m`` of the output is a correlation over input rows with matrix taps,

    ``out[m] = sum_q x[m - q] @ W_q``  (``W_q``: ``(C_in, stride*C_out)``),

which ``gemm`` computes with ``S`` matmuls per input row. Toom-Cook's minimal
algorithm ``F(t, S)`` computes ``t`` consecutive rows from ``a = t + S - 1``
input rows with ``a`` matmuls instead of ``t*S``: transform the input rows
(``B^T``, additions only), multiply by transformed weights (``G``, once per
call), transform back (``A^T``, additions only). The interpolation points
are ``0, 1, -1`` and infinity, whose transforms hold only ``0, ±1, ±1/2``:
exact in binary floating point, so the result rounds like a plain matmul.
That gives ``F(3, 2)`` (4 matmuls
instead of 6, the vocoder case ``K = 2*stride``) and ``F(2, 3)`` (4 instead
of 6). Wider points (``±2``, ``1/2``) would save more and grow the error with
powers of 2; they are not used.
"""

from __future__ import annotations

import math
from fractions import Fraction
from functools import lru_cache
from typing import List, Optional, Sequence, Tuple

import mlx.core as mx

from ...runtime.compiling import per_thread_cache
from . import slabs

#: Output rows per tile for each count of consecutive row shifts; the points
#: ``0, 1, -1, inf`` allow ``tile + shifts - 1 <= 4``.
TILES = {2: 3, 3: 2}
_POINTS = (0, 1, -1)

Matrix = Tuple[Tuple[Fraction, ...], ...]


def tile_rows(shifts: Optional[Sequence[int]], in_per_group: int) -> Optional[int]:
    """Output rows per tile when minimal filtering applies to these slab shifts, else None.

    It applies to matmul layers (``in_per_group > 1``) whose slab shifts are
    ``0, 1`` or ``0, 1, 2``. Depthwise layers have no matmul to shrink.
    """
    if shifts is None or in_per_group < 2 or tuple(shifts) != tuple(range(len(shifts))):
        return None
    return TILES.get(len(shifts))


def _inverse(rows: List[List[Fraction]]) -> List[List[Fraction]]:
    """Exact Gauss-Jordan inverse of a small square matrix."""
    n = len(rows)
    aug = [list(r) + [Fraction(int(i == j)) for j in range(n)] for i, r in enumerate(rows)]
    for col in range(n):
        pivot = next(r for r in range(col, n) if aug[r][col] != 0)
        aug[col], aug[pivot] = aug[pivot], aug[col]
        lead = aug[col][col]
        aug[col] = [v / lead for v in aug[col]]
        for r in range(n):
            if r != col and aug[r][col] != 0:
                factor = aug[r][col]
                aug[r] = [v - factor * p for v, p in zip(aug[r], aug[col])]
    return [r[n:] for r in aug]


@lru_cache(maxsize=None)
def transforms(tile: int, taps: int) -> Tuple[Matrix, Matrix, Matrix]:
    """``(A^T, G, B^T)`` of ``F(tile, taps)``: ``y = A^T [(G g) * (B^T d)]`` computes
    ``y_i = sum_k d_{i+k} g_k`` for ``i < tile``.

    The correlation is the transpose of the polynomial product of a
    ``tile``-term and a ``taps``-term polynomial: ``A`` and ``G`` evaluate
    each factor at the points, ``B^T`` is the transposed interpolation (the
    inverse Vandermonde matrix of ``tile + taps - 1`` points, infinity last).

    Returns:
        Exact fractions, shapes ``(tile, a)``, ``(a, taps)``, ``(a, a)`` with ``a = tile + taps - 1``.
    """
    size = tile + taps - 1
    points = [Fraction(p) for p in _POINTS[: size - 1]]
    if len(points) != size - 1:
        raise ValueError(f"F({tile}, {taps}) needs {size - 1} finite points; only {len(_POINTS)} are exact")

    def evaluate(terms: int) -> List[List[Fraction]]:  # row j: the powers of point j; infinity: the top term
        return [[p**i for i in range(terms)] for p in points] + [[Fraction(int(i == terms - 1)) for i in range(terms)]]

    a_mat = evaluate(tile)
    vandermonde_inverse = _inverse(evaluate(size))
    a_t = tuple(tuple(a_mat[j][i] for j in range(size)) for i in range(tile))
    g, b_t = [], []
    for j, weight_row in enumerate(evaluate(taps)):
        input_row = [vandermonde_inverse[i][j] for i in range(size)]
        # Move the denominators to the weight side, transformed once per call.
        scale = math.lcm(*(c.denominator for c in input_row))
        b_t.append(tuple(c * scale for c in input_row))
        g.append(tuple(c / scale for c in weight_row))
    return a_t, tuple(g), tuple(b_t)


def _combine(coefficients: Sequence[Fraction], arrays: Sequence[mx.array]) -> mx.array:
    """``sum_i c_i * arrays[i]``, skipping zeros; ``±1`` cost no multiply, and
    a positive term comes first so ``-1`` is a subtraction (one op, not two)."""
    terms = sorted(((c, a) for c, a in zip(coefficients, arrays) if c != 0), key=lambda t: t[0] < 0)
    total = None
    for c, a in terms:
        if total is None:
            total = a if c == 1 else a * float(c)
        elif abs(c) == 1:
            total = total + a if c > 0 else total - a
        else:
            total = total + a * float(c)
    return total


@per_thread_cache(maxsize=None)  # compiled functions: made, kept and freed by each thread
def _fused_combination(coefficients: Tuple[Fraction, ...]):
    # The common denominator is applied once, after the sum: ``(a + b) / 2`` and
    # ``(a - b) / 2`` share no ``a / 2`` that MLX's compile would merge and keep
    # as a buffer of its own. Halving is exact, so the rounding is the same.
    scale = math.lcm(*(c.denominator for c in coefficients))
    numerators = [c * scale for c in coefficients]

    def combination(*arrays):
        total = _combine(numerators, arrays)
        return total if scale == 1 else total * (1.0 / scale)

    return mx.compile(combination)


def transform_weight(slabs: Sequence[mx.array], tile: int) -> List[mx.array]:
    """``G`` applied to the slab weights ``W_0 … W_{S-1}``: the ``a`` weights of the products.

    The correlation reads the taps in reverse: its tap ``k`` is slab ``S-1-k``.
    Kept as a list, not stacked: rows of ``G`` with a single 1 are the slab
    itself, no copy. The others are one fused pass each, with no scaled
    copies of the slabs on the way (less peak memory for large weights).
    """
    _, g, _ = transforms(tile, len(slabs))
    return [_fused_combination(row)(*slabs[::-1]) for row in g]


def _input_transform(x_ext: mx.array, tile: int, taps: int) -> List[mx.array]:
    """``B^T`` over each tile's input rows: ``(…, tile*T + a - 1, C)`` -> ``a`` x ``(…, T, C)``."""
    _, _, b_t = transforms(tile, taps)
    size = tile + taps - 1
    count = (x_ext.shape[-2] - size + 1) // tile
    views = [x_ext[..., l : l + tile * (count - 1) + 1 : tile, :] for l in range(size)]
    return [_combine(row, views) for row in b_t]


@per_thread_cache(maxsize=None)
def _output_transform(tile: int, taps: int, dtype: mx.Dtype):
    a_t, _, _ = transforms(tile, taps)
    # Column j of A^T shaped to broadcast over (N, T, tile, stride, G, D); made once, so
    # no block spends graph nodes on it.
    columns = [mx.array([[[[float(row[j])]]] for row in a_t], dtype=dtype) for j in range(tile + taps - 1)]

    def apply(shape: Tuple[int, ...], *products: mx.array) -> mx.array:  # a x (…) -> (N, T, tile, …)
        # Each product, reshaped to ``shape`` (N, T, 1, …), times its column of
        # A^T broadcast over the tile's rows: one fused pass writes the rows
        # interleaved, with no stacking copy.
        total = None
        for column, m in zip(columns, products):
            term = m.reshape(shape) * column
            total = term if total is None else total + term
        return total

    return mx.compile(apply)


def samples(
    x: mx.array, u: Sequence[mx.array], tile: int, taps: int, stride: int, first: int, offset: int, length: int
) -> mx.array:
    """Samples ``[offset, offset + length)`` from slab row ``first`` on, of
    ``out[m] = sum_q x[m - q] @ W_q``, by ``F(tile, taps)``.

    Every graph node is scheduled on its own, and MLX orders them
    breadth-first within a bounded width, so a block with many nodes gets
    computed far ahead of its write into the output. Hence few nodes (22,
    against ``gemm``'s 15): strided views instead of reshapes, no padding
    away from the signal's ends, 2-D matmuls for one signal, constants made
    once.

    Args:
        x: ``(N, L, G*C)``, the whole input (zero outside ``[0, L)``).
        u: ``a`` weights from :func:`transform_weight`: ``(C, stride*D)``
            when ``G == 1``, else ``(G, C, stride*D)``; columns ordered
            (phase, output channel of the group).
        tile, taps: the algorithm ``F(tile, taps)``; ``taps`` is the number of slabs ``S``.
        stride: phases per slab row.
        first: the first slab row computed (any integer).
        offset, length: the samples wanted, counted from slab row ``first``.

    Returns:
        ``(N, length, G*D)``: the samples, channels last.
    """
    batch, _, channels = x.shape
    groups = 1 if u[0].ndim == 2 else u[0].shape[0]
    width = u[0].shape[-1]
    size = len(u)
    count = -(-(offset + length) // (tile * stride))
    # x_ext[j] = x[first - (taps - 1) + j]: the correlation's input d. One signal (the
    # long-signal case) is multiplied as 2-D rows: no batch axis to fold.
    x_ext = slabs.signal_rows(x, first - (taps - 1), tile * count + size - 1)
    if batch == 1:
        x_ext = mx.squeeze(x_ext, axis=0)
    if groups > 1:  # group-major rows (one copy of the block's input), so each V is matmul-ready
        x_ext = x_ext.reshape(*x_ext.shape[:-1], groups, channels // groups)
        x_ext = mx.moveaxis(x_ext, -2, 0)  # (G, [N,] rows, C/G)
    shape = (batch, count, 1, stride, groups, width // stride)
    products = []
    for v, w in zip(_input_transform(x_ext, tile, taps), u):
        if groups == 1:
            m = v @ w
        else:  # written channels-last by the output transform
            v = v.reshape(groups, batch * count, channels // groups)
            m = (v @ w).reshape(groups, batch, count, 1, stride, width // stride).transpose(1, 2, 3, 4, 0, 5)
        products.append(m)
    y = _output_transform(tile, taps, products[0].dtype)(shape, *products)  # (N, T, tile, stride, G, D)
    return y.reshape(batch, count * tile * stride, -1)[:, offset : offset + length]
