"""``convert(model)``: every ``mlx.nn.Conv1d`` / ``mlx.nn.ConvTranspose1d`` of a model becomes this package's layer.

The replacement keeps the parameter names (``weight``, ``bias``), the very arrays and the
hyper-parameters, so ``model.parameters()``, ``model.load_weights(...)``, ``save_weights`` and
optimizer states keep their keys, and the model computes the same (to float32 rounding).
Unlike :func:`~mlx_deconv.patch_mlx`, nothing outside the model changes, and layers built
before (or holding their own reference to ``mx.conv1d``) are no obstacle; but only these two
``mlx.nn`` classes are reached, not hand-written layers that call ``mx.conv1d`` themselves.
"""

from __future__ import annotations

from typing import Optional

import mlx.core as mx
import mlx.nn as nn

from .layers import Conv1d, ConvTranspose1d


def _zeros(shape, dtype=mx.float32):
    """The initialiser of the new layers: their weights are replaced at once, so draw no random numbers."""
    return mx.zeros(shape, dtype=dtype)


def _is_int(value, minimum: int) -> bool:
    return type(value) is int and value >= minimum


def replacement(layer: nn.Module) -> Optional[nn.Module]:
    """This package's layer computing exactly what ``layer`` does, or None when there is none."""
    kind = type(layer)  # exact classes: a subclass may compute something else
    if kind is not nn.Conv1d and kind is not nn.ConvTranspose1d:
        return None
    weight = layer.get("weight")
    if not isinstance(weight, mx.array) or weight.ndim != 3:
        return None
    c_out, k, cig = weight.shape
    stride, padding, dilation = layer.stride, layer.padding, layer.dilation
    if not (_is_int(stride, 1) and _is_int(padding, 0) and _is_int(dilation, 1) and min(c_out, k, cig) >= 1):
        return None
    has_bias = "bias" in layer
    common = dict(bias=has_bias, kernel_init=_zeros, bias_init="zeros")
    if kind is nn.Conv1d:
        groups = layer.groups
        if not _is_int(groups, 1) or c_out % groups:
            return None
        new = Conv1d(cig * groups, c_out, k, stride, padding, dilation, groups, **common)
    else:
        output_padding = layer.output_padding
        # MLX's transposed op: the full output cropped by `padding` on the left, `padding - output_padding`
        # on the right. Past padding > dilation*(K-1) MLX computes something else: leave those layers alone.
        if not _is_int(output_padding, 0) or padding > dilation * (k - 1):
            return None
        if output_padding < max(stride, dilation):
            padding_arg, op_arg = padding, output_padding
        elif output_padding <= padding:
            padding_arg, op_arg = (padding, padding - output_padding), None
        else:
            return None
        new = ConvTranspose1d(cig, c_out, k, stride, padding_arg, op_arg, dilation, 1, **common)
    # The same arrays, under the same names.
    new.weight = weight
    if has_bias:
        new.bias = layer.bias
    new.train(layer.training)
    frozen = getattr(layer, "_no_grad", None)
    if frozen:
        new.freeze(keys=sorted(frozen), strict=False)
    return new


def _convert(value, counter):
    """``value`` with its conv layers replaced; modules, lists and dicts in place, tuples rebuilt."""
    if isinstance(value, nn.Module):
        new = replacement(value)
        if new is not None:
            counter[0] += 1
            return new
        for key, child in list(value.items()):
            replaced = _convert(child, counter)
            if replaced is not child:
                setattr(value, key, replaced)
        return value
    if isinstance(value, list):
        for i, child in enumerate(value):
            value[i] = _convert(child, counter)
        return value
    if isinstance(value, dict):
        for key, child in list(value.items()):
            value[key] = _convert(child, counter)
        return value
    if isinstance(value, tuple):
        items = [_convert(child, counter) for child in value]
        if any(a is not b for a, b in zip(items, value)):
            return type(value)(*items) if hasattr(value, "_fields") else tuple(items)
    return value


def convert(model: nn.Module) -> nn.Module:
    """Replaces, in place, every ``mlx.nn.Conv1d`` and ``mlx.nn.ConvTranspose1d`` of ``model`` by
    :class:`mlx_deconv.Conv1d` / :class:`mlx_deconv.ConvTranspose1d`.

    Modules are found wherever ``mlx.nn`` looks for children: attributes, and lists, tuples and
    dicts of them, nested. Each new layer holds the old one's ``weight`` and ``bias`` arrays under
    the same names, its stride, padding, dilation, groups and output padding, its training mode
    and frozen parameters, so parameter keys, ``load_weights`` and ``save_weights`` are unchanged.
    It draws no random numbers.

    Left as they are: subclasses of the two classes (they may compute something else), and layers
    the package cannot represent exactly (non-int arguments; a transposed layer whose ``padding``
    exceeds ``dilation*(K-1)``, or whose ``output_padding`` exceeds both its ``padding`` and
    ``max(stride, dilation) - 1``). Code that tests ``isinstance(layer, mlx.nn.Conv1d)`` no longer
    finds the replaced layers. The new layers compute in the input's dtype: an input whose dtype
    differs from the weight's is not promoted as MLX promotes it.

    Args:
        model (mlx.nn.Module): the model; a conv layer itself is not changed (it is returned replaced).

    Returns:
        mlx.nn.Module: ``model`` (changed in place), or for a conv layer its replacement.
    """
    counter = [0]
    return _convert(model, counter)
