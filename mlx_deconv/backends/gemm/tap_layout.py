"""Where each tap lands: slab shifts, slots, and the weight arranged in slots.

Tap ``k`` links input row ``l`` and full-output sample ``l*stride + k*dilation``,
that is output slab row ``l + shift`` and phase ``phase``, where
``k*dilation = shift*stride + phase``. Both the transposed op and ``conv1d``
(its adjoint) arrange their weights by this rule.
"""

from __future__ import annotations

from typing import List, Optional, Tuple

import mlx.core as mx


def slab_shifts(taps: int, stride: int, dilation: int, empty_per_tap: float = 0.25) -> Optional[Tuple[int, ...]]:
    """Row shifts of the slabs when the taps tile ``(shift, phase)`` slots with few empty ones.

    Tap ``k`` lands ``k*dilation = shift*stride + phase`` samples after its
    input row. When the taps fill whole rows of ``stride`` phases (HiFi-GAN,
    BigVGAN, DAC: ``K = 2*stride``; every ``stride = 1`` conv), the matmul can
    emit each shift's phases side by side, a slab ``(L, stride*C)`` that is
    already interleaved (see :mod:`.slabs`). Returns None when more than
    ``empty_per_tap`` empty slots per tap would be multiplied by zero.
    """
    shifts = tuple(sorted({k * dilation // stride for k in range(taps)}))
    empty = len(shifts) * stride - taps
    return shifts if empty <= empty_per_tap * taps else None


def taps_by_channel(weight: mx.array) -> mx.array:
    """A one-input-channel weight ``(C_out, K, 1)`` as ``(K, C_out)``, contiguous: the depthwise paths
    multiply each tap's row into a signal by broadcasting, which reads a transposed view slowly
    (docs/performance.md: 7.8 against 5.1 ms on a K=7 layer of 2.1M outputs)."""
    channels, taps = weight.shape[0], weight.shape[1]
    return mx.contiguous(weight.reshape(channels, taps).T)


def slot_weight(w: mx.array, taps: int, stride: int, dilation: int, shifts) -> mx.array:
    """Reorders taps ``w (…, K, C)`` into slots ``(…, len(shifts)*stride, C)``, empty slots zero."""
    index = {k * dilation: k for k in range(taps)}
    slots = [index.get(q * stride + r, taps) for q in shifts for r in range(stride)]
    if slots[:taps] == list(range(taps)) and set(slots[taps:]) <= {taps}:  # in order, empty slots last
        # (dilation 1): one pad or nothing, where a gather would cost graph nodes on every call
        extra = len(slots) - taps
        return mx.pad(w, [(0, 0)] * (w.ndim - 2) + [(0, extra), (0, 0)]) if extra else w
    if taps in slots:  # an empty slot reads an appended zero tap
        w = mx.concatenate([w, mx.zeros_like(w[..., :1, :])], axis=-2)
    return mx.take(w, mx.array(slots), axis=-2)


def slab_weights(weight: mx.array, stride: int, dilation: int, groups: int, shifts) -> List[mx.array]:
    """Each slab's weight ``(G, C_in/G, stride * C_out/G)``, contiguous, empty slots zero.

    Each is one copy out of a view of the MLX-layout weight, so the
    transform holds no other copy of the whole weight.
    """
    out_channels, taps, in_per_group = weight.shape
    out_per_group = out_channels // groups
    weight = slot_weight(weight, taps, stride, dilation, shifts)  # the weight itself when already in order
    # Split the axes first, a view; slicing first would make reshape copy each slab once more.
    weight = weight.reshape(groups, out_per_group, len(shifts), stride, in_per_group)
    slabs = []
    for j in range(len(shifts)):
        w = mx.contiguous(weight[:, :, j].transpose(0, 3, 2, 1))
        slabs.append(w.reshape(groups, in_per_group, stride * out_per_group))
    return slabs


def squeezed_groups(ws: List[mx.array], groups: int) -> List[mx.array]:
    """2-D weights when ``groups == 1``: a dense block multiplies 3-D rows without reshaping them."""
    return [u.reshape(u.shape[1:]) for u in ws] if groups == 1 else ws
