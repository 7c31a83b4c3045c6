"""Float64 numpy references for both convolutions, written from the definitions.

Nothing here imports mlx_deconv or calls an MLX convolution. Two independent
formulations are kept, and the tests check that they agree:

* the *scatter* form of docs/design.md, ``y[l*s + k*d - left] += x[l] @ w[k].T``,
  with crops ``(left, right)`` of the full output (negative ``right`` extends
  it with zeros);
* the *zero-stuffed* form used by Keras/JAX: insert ``s - 1`` zeros between
  input samples, pad by ``(pad_left, pad_right)`` and correlate with the
  flipped kernel.

Layouts: ``x (N, L, C_in)``, ``w (C_out, K, C_in/groups)`` (MLX).
"""

from __future__ import annotations

import numpy as np


def _full_length(length, taps, stride, dilation):
    return (length - 1) * stride + dilation * (taps - 1) + 1


def conv_transpose1d(x, w, bias=None, stride=1, left=0, right=0, dilation=1, groups=1):
    """Scatter form: every input sample adds ``K`` weighted taps into the output."""
    x = np.asarray(x, np.float64)
    w = np.asarray(w, np.float64)
    n, length, c_in = x.shape
    c_out, taps, cig = w.shape
    cog = c_out // groups
    full = _full_length(length, taps, stride, dilation)
    out_len = full - left - right
    y = np.zeros((n, max(full, left + out_len), c_out))
    last = (length - 1) * stride + 1
    for g in range(groups):
        xg = x[:, :, g * cig : (g + 1) * cig]
        for k in range(taps):
            wk = w[g * cog : (g + 1) * cog, k, :]  # (cog, cig)
            y[:, k * dilation : k * dilation + last : stride, g * cog : (g + 1) * cog] += xg @ wk.T
    y = y[:, left : left + out_len]
    if bias is not None:
        y = y + np.asarray(bias, np.float64)
    return y


def conv_transpose1d_vjp(x, w, cotangent, stride=1, left=0, right=0, dilation=1, groups=1):
    """Gradients of ``sum(conv_transpose1d(x, w, b) * cotangent)`` w.r.t. x, w and b.

    Gather form of the same definition: each input sample reads back the
    output samples its taps wrote to.
    """
    x = np.asarray(x, np.float64)
    w = np.asarray(w, np.float64)
    ct = np.asarray(cotangent, np.float64)
    n, length, c_in = x.shape
    c_out, taps, cig = w.shape
    cog = c_out // groups
    full = _full_length(length, taps, stride, dilation)
    # Cotangent on full-output coordinates (zero where the output was cropped).
    padded = np.zeros((n, max(full, left + ct.shape[1]), c_out))
    padded[:, left : left + ct.shape[1]] = ct
    gx = np.zeros_like(x)
    gw = np.zeros_like(w)
    last = (length - 1) * stride + 1
    for g in range(groups):
        for k in range(taps):
            ctk = padded[:, k * dilation : k * dilation + last : stride, g * cog : (g + 1) * cog]
            gx[:, :, g * cig : (g + 1) * cig] += ctk @ w[g * cog : (g + 1) * cog, k, :]
            gw[g * cog : (g + 1) * cog, k, :] += np.einsum("nlo,nli->oi", ctk, x[:, :, g * cig : (g + 1) * cig])
    gb = ct.sum(axis=(0, 1))
    return gx, gw, gb


def conv_transpose1d_stuffed(x, w, bias=None, stride=1, pad_left=0, pad_right=0, dilation=1, groups=1):
    """Zero-stuffed form: dilate the input by ``stride``, pad, correlate with the flipped kernel.

    Negative pads crop. This is how Keras and JAX define the op.
    """
    x = np.asarray(x, np.float64)
    w = np.asarray(w, np.float64)
    n, length, c_in = x.shape
    c_out, taps, cig = w.shape
    cog = c_out // groups
    stuffed = np.zeros((n, (length - 1) * stride + 1, c_in))
    stuffed[:, ::stride] = x
    lo, hi = max(pad_left, 0), max(pad_right, 0)
    stuffed = np.pad(stuffed, [(0, 0), (lo, hi), (0, 0)])
    stuffed = stuffed[:, lo - pad_left : stuffed.shape[1] - (hi - pad_right)]
    span = dilation * (taps - 1) + 1
    out_len = stuffed.shape[1] - span + 1
    flipped = w[:, ::-1, :]
    y = np.zeros((n, out_len, c_out))
    for g in range(groups):
        for k in range(taps):
            window = stuffed[:, k * dilation : k * dilation + out_len, g * cig : (g + 1) * cig]
            y[:, :, g * cog : (g + 1) * cog] += window @ flipped[g * cog : (g + 1) * cog, k, :].T
    if bias is not None:
        y = y + np.asarray(bias, np.float64)
    return y


def keras_pads(padding, taps, stride, dilation, output_padding=None):
    """Keras 3's padding of the zero-stuffed input for ``Conv1DTranspose``."""
    span = (taps - 1) * dilation + 1
    if padding == "valid":
        op = max(span, stride) - span if output_padding is None else output_padding
        return span - 1, span - 1 + op
    if output_padding is None:
        total = stride + span - 2
    else:
        total = span + span % 2 - 2 + output_padding
    left = min(total // 2 + total % 2, span - 1)
    return left, total - left


def keras_output_length(length, taps, padding, output_padding, stride, dilation):
    """Keras' ``deconv_output_length``."""
    span = taps + (taps - 1) * (dilation - 1)
    if output_padding is None:
        if padding == "valid":
            return length * stride + max(span - stride, 0)
        return length * stride
    pad = span // 2 if padding == "same" else 0
    return (length - 1) * stride + span - 2 * pad + output_padding


def torch_output_length(length, taps, stride, padding, output_padding, dilation):
    """PyTorch's documented ``ConvTranspose1d`` output length."""
    return (length - 1) * stride - 2 * padding + dilation * (taps - 1) + output_padding + 1


def torch_weight(w, groups=1):
    """MLX-layout ``(C_out, K, C_in/G)`` weight as PyTorch's ``(C_in, C_out/G, K)``, element by element."""
    w = np.asarray(w)
    c_out, taps, cig = w.shape
    cog = c_out // groups
    out = np.zeros((cig * groups, cog, taps), dtype=w.dtype)
    for g in range(groups):
        for co in range(cog):
            for ci in range(cig):
                out[g * cig + ci, co, :] = w[g * cog + co, :, ci]
    return out


# -- the direct convolution ------------------------------------------------------
#
# ``y[n, t, co] = sum_{k, ci in group(co)} x[n, t*s + k*d - left, ci] * w[co, k, ci]``, with
# ``x`` zero outside ``[0, L)``. Written output sample by output sample from that line,
# not through the transposed forms above.


def conv1d_output_length(length, taps, stride, left, right, dilation):
    """Number of output samples whose window fits in the padded input."""
    count = 0
    while count * stride + dilation * (taps - 1) <= length + left + right - 1:
        count += 1
    return count


def tf_same_pads(length, taps, stride, dilation):
    """TensorFlow's ``padding="SAME"`` (Keras ``Conv1D``): ``ceil(L/s)`` outputs, smaller half on the left."""
    out = -(-length // stride)
    effective = (taps - 1) * dilation + 1
    total = max((out - 1) * stride + effective - length, 0)
    return total // 2, total - total // 2


def conv1d_pads(padding, length, taps, stride, dilation):
    """``(left, right)`` zeros of each padding form, from its definition."""
    if padding == "valid":
        return 0, 0
    if padding == "same":
        return tf_same_pads(length, taps, stride, dilation)
    if padding == "causal":
        return (taps - 1) * dilation, 0
    if isinstance(padding, (tuple, list)):
        return tuple(padding)
    return padding, padding


def conv1d(x, w, bias=None, stride=1, left=0, right=0, dilation=1, groups=1):
    """Direct convolution of ``x (N, L, C_in)`` with ``w (C_out, K, C_in/G)`` in float64."""
    x = np.asarray(x, np.float64)
    w = np.asarray(w, np.float64)
    n, length, c_in = x.shape
    c_out, taps, cig = w.shape
    cog = c_out // groups
    out_len = conv1d_output_length(length, taps, stride, left, right, dilation)
    y = np.zeros((n, out_len, c_out))
    for t in range(out_len):
        for k in range(taps):
            row = t * stride + k * dilation - left
            if not 0 <= row < length:
                continue
            for co in range(c_out):
                g = co // cog
                y[:, t, co] += x[:, row, g * cig : (g + 1) * cig] @ w[co, k, :]
    if bias is not None:
        y = y + np.asarray(bias, np.float64)
    return y


def conv1d_vjp(x, w, cotangent, stride=1, left=0, right=0, dilation=1, groups=1):
    """Gradients of ``sum(conv1d(x, w, b) * cotangent)`` w.r.t. x, w and b.

    Each term ``x[row, ci] * w[co, k, ci]`` of output ``t`` sends ``ct[t, co]`` back
    to both factors: ``dx`` is the transposed convolution of the cotangent.
    """
    x = np.asarray(x, np.float64)
    w = np.asarray(w, np.float64)
    ct = np.asarray(cotangent, np.float64)
    n, length, c_in = x.shape
    c_out, taps, cig = w.shape
    cog = c_out // groups
    gx = np.zeros_like(x)
    gw = np.zeros_like(w)
    for t in range(ct.shape[1]):
        for k in range(taps):
            row = t * stride + k * dilation - left
            if not 0 <= row < length:
                continue
            for co in range(c_out):
                g = co // cog
                gx[:, row, g * cig : (g + 1) * cig] += np.outer(ct[:, t, co], w[co, k, :])
                gw[co, k, :] += ct[:, t, co] @ x[:, row, g * cig : (g + 1) * cig]
    return gx, gw, ct.sum(axis=(0, 1))


def torch_conv1d_weight(w):
    """MLX-layout ``(C_out, K, C_in/G)`` conv1d weight as PyTorch's ``(C_out, C_in/G, K)``."""
    w = np.asarray(w)
    c_out, taps, cig = w.shape
    out = np.zeros((c_out, cig, taps), dtype=w.dtype)
    for k in range(taps):
        out[:, :, k] = w[:, k, :]
    return out
