"""Checking a call's arguments against its shapes, and building the normal-form records from them.

:func:`conv_geometry` (for ``conv_transpose1d``) and :func:`conv1d_geometry`
(for ``conv1d``) read the input, weight and bias shapes in either data format
and weight layout, check every argument, refuse sizes no backend could build,
and return a :class:`~mlx_deconv.geometry.records.Geometry` or
:class:`~mlx_deconv.geometry.records.Conv1dGeometry`. Both ops share the checks
below, so every rule (formats, channels, groups, sizes) is written once. The
arithmetic itself lives in :mod:`mlx_deconv.geometry.records`, which never imports
this module.
"""

from __future__ import annotations

import os
from functools import lru_cache
from typing import Optional, Sequence, Tuple, Union

from .call import Call
from .records import (
    MAX_AXIS,
    Conv1dGeometry,
    ConvShape,
    Geometry,
    Padding,
    as_int,
    conv1d_padding,
    dilated_kernel_size,
    full_length,
    output_padding_for_size,
    resolve_padding,
)

DATA_FORMATS = ("NLC", "NCL")
WEIGHT_FORMATS = ("mlx", "torch")

#: The weight's axes per op (transposed or not) and weight format, as the errors name them.
_WEIGHT_LAYOUTS = {
    (True, "mlx"): "(C_out, K, C_in/groups)",
    (True, "torch"): "(C_in, C_out/groups, K)",
    (False, "mlx"): "(C_out, K, C_in/groups)",
    (False, "torch"): "(C_out, C_in/groups, K)",
}


class _LayoutMismatch(ValueError):
    """x, weight and bias disagree on channels: the other data/weight format may fit."""


def _layout_names(data_format: str) -> str:
    return "(N, L, C_in)" if data_format == "NLC" else "(N, C_in, L)"


def _check_formats(data_format: str, weight_format: str) -> None:
    if data_format not in DATA_FORMATS:
        raise ValueError(f"data_format must be one of {DATA_FORMATS}, got {data_format!r}")
    if weight_format not in WEIGHT_FORMATS:
        raise ValueError(f"weight_format must be one of {WEIGHT_FORMATS}, got {weight_format!r}")


def _input_axes(input_shape: Tuple[int, ...], data_format: str) -> Tuple[int, int, int, bool]:
    """``(batch, length, in_channels, batched)`` of an input shape."""
    if len(input_shape) not in (2, 3):
        raise ValueError(
            f"x must be {_layout_names(data_format)} or unbatched (2-D) for "
            f"data_format={data_format!r}, got shape {input_shape}"
        )
    batched = len(input_shape) == 3
    shape = input_shape if batched else (1,) + input_shape
    if data_format == "NLC":
        batch, length, in_channels = shape
    else:
        batch, in_channels, length = shape
    if length < 1 or in_channels < 1:
        raise ValueError(f"x must have a non-empty length and channel axis, got shape {input_shape}")
    return batch, length, in_channels, batched


def _grouped_channels(in_channels: int, out_channels: int, in_per_group: int, groups: int,
                      weight_shape: Tuple[int, ...], weight_format: str, out_axis: int) -> None:
    """Checks a weight that stores ``C_out`` whole and ``C_in/groups`` per group."""
    if in_channels % groups:
        raise _LayoutMismatch(f"groups={groups} must divide the input channels C_in={in_channels}")
    if out_channels % groups:
        raise _LayoutMismatch(
            f"groups={groups} must divide the output channels "
            f"C_out={out_channels} (weight.shape[{out_axis}] in {weight_format!r} layout)"
        )
    if in_per_group * groups != in_channels:
        raise _LayoutMismatch(
            f"x has C_in={in_channels} channels but the {weight_format!r} weight of shape "
            f"{weight_shape} expects C_in/groups={in_per_group} with groups={groups}, "
            f"i.e. C_in={in_per_group * groups}"
        )


def _check_bias(bias_shape, out_channels: int) -> None:
    if bias_shape is not None and tuple(bias_shape) != (out_channels,):
        raise _LayoutMismatch(f"bias must have shape ({out_channels},) = (C_out,), got {tuple(bias_shape)}")


def _conv_shape(input_shape, weight_shape, *, bias_shape, stride, dilation, groups, data_format, weight_format,
                transposed: bool) -> Tuple[ConvShape, bool]:
    """Checks x, weight and bias against each other and the integer arguments: ``(shape, batched)``."""
    batch, length, in_channels, batched = _input_axes(input_shape, data_format)
    if len(weight_shape) != 3:
        raise ValueError(
            f"weight must be 3-D {_WEIGHT_LAYOUTS[transposed, weight_format]} for "
            f"weight_format={weight_format!r}, got shape {weight_shape}"
        )
    groups = as_int("groups", groups, 1)
    stride = as_int("stride", stride, 1)
    dilation = as_int("dilation", dilation, 1)
    if weight_format == "mlx":
        out_channels, kernel_size, in_per_group = weight_shape
        _grouped_channels(in_channels, out_channels, in_per_group, groups, weight_shape, weight_format, 0)
    elif transposed:  # torch's transposed layout stores C_in whole and C_out per group
        weight_in, out_per_group, kernel_size = weight_shape
        if weight_in != in_channels:
            raise _LayoutMismatch(
                f"x has C_in={in_channels} channels but the 'torch' weight of shape "
                f"{weight_shape} has C_in={weight_in} (weight.shape[0])"
            )
        if in_channels % groups:
            raise _LayoutMismatch(f"groups={groups} must divide the input channels C_in={in_channels}")
        out_channels = out_per_group * groups
    else:
        out_channels, in_per_group, kernel_size = weight_shape
        _grouped_channels(in_channels, out_channels, in_per_group, groups, weight_shape, weight_format, 0)
    if kernel_size < 1 or out_channels < 1:
        raise ValueError(f"weight must have non-empty axes, got shape {weight_shape}")
    _check_bias(bias_shape, out_channels)
    shape = ConvShape(batch=batch, length=length, in_channels=in_channels, out_channels=out_channels,
                      kernel_size=kernel_size, stride=stride, dilation=dilation, groups=groups)
    return shape, batched


@lru_cache(maxsize=None)
def _memory_bytes() -> Optional[int]:
    """This machine's physical memory, or None where the OS does not say."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


#: Bytes per element of the arrays the size check counts: float32, which the ops compute in on the CPU
#: even for half inputs (the check sees shapes only, so a half call on a GPU is counted the same).
FLOAT32_BYTES = 4


def check_size(what: str, length: int, elements: int, culprits: str, itemsize: int = FLOAT32_BYTES) -> None:
    """Refuses at once an array no backend could make: an axis past MLX's
    32-bit shape limit, or more bytes (``itemsize`` per element) than the
    machine has. MLX would hang or be killed building it.

    Args:
        what (str): the array, as the message names it (``"the output"``).
        length (int): its longest axis, checked against :data:`~mlx_deconv.geometry.records.MAX_AXIS`.
        elements (int): its element count, checked against the machine's memory.
        culprits (str): the arguments that made it so large, as the message names them.
        itemsize (int): bytes per element. Default: :data:`FLOAT32_BYTES`.

    Raises:
        ValueError: naming ``culprits``, ``what`` and the limit passed.
    """
    if length > MAX_AXIS:
        raise ValueError(
            f"{culprits} make {what} {length} samples long, past MLX's 32-bit shape limit of {MAX_AXIS}"
        )
    memory = _memory_bytes()
    if memory is not None and itemsize * elements > memory:
        raise ValueError(
            f"{culprits} make {what} {elements} elements ({itemsize} bytes each), more than this machine's "
            f"{memory} bytes of memory can hold"
        )


def _with_layout_hint(validate, input_shape, weight_shape, data_format: str, weight_format: str, **args):
    """Runs ``validate``; when shapes disagree and the other data or weight format
    would fit, the error names the argument to pass."""
    try:
        return validate(input_shape, weight_shape, data_format=data_format, weight_format=weight_format, **args)
    except _LayoutMismatch as err:
        other_data = "NCL" if data_format == "NLC" else "NLC"
        other_weight = "torch" if weight_format == "mlx" else "mlx"
        for fix in ({"data_format": other_data}, {"weight_format": other_weight},
                    {"data_format": other_data, "weight_format": other_weight}):
            tried = dict(data_format=data_format, weight_format=weight_format, **args)
            tried.update(fix)
            try:
                validate(input_shape, weight_shape, **tried)
            except (ValueError, TypeError):
                continue
            what = []
            if "data_format" in fix:
                what.append(f"x of shape {tuple(input_shape)} looks {'channels-first' if other_data == 'NCL' else 'channels-last'}")
            if "weight_format" in fix:
                what.append(f"the weight of shape {tuple(weight_shape)} looks {other_weight!r}-layout")
            passes = " and ".join(f'{k}="{v}"' for k, v in fix.items())
            raise ValueError(f"{err}; {' and '.join(what)}: pass {passes}") from None
        raise ValueError(str(err)) from None


# -- the transposed op ---------------------------------------------------------

def conv_geometry(
    input_shape: Sequence[int],
    weight_shape: Sequence[int],
    *,
    bias_shape: Optional[Sequence[int]] = None,
    stride=1,
    padding: Padding = 0,
    output_padding=None,
    dilation=1,
    groups=1,
    data_format: str = "NLC",
    weight_format: str = "mlx",
    output_size=None,
) -> Tuple[Geometry, bool]:
    """Validates every argument of :func:`mlx_deconv.conv_transpose1d` against the shapes and normalises them.

    Returns:
        ``(geometry, batched)``; ``batched`` is False for an unbatched input.

    Raises:
        ValueError, TypeError: naming the argument and its value; a channel
        mismatch that the other ``data_format`` or ``weight_format`` would
        fix says so.
    """
    _check_formats(data_format, weight_format)
    return _with_layout_hint(
        _transposed_geometry, tuple(input_shape), tuple(weight_shape), data_format, weight_format,
        bias_shape=bias_shape, stride=stride, padding=padding, output_padding=output_padding,
        dilation=dilation, groups=groups, output_size=output_size,
    )


def _transposed_geometry(input_shape, weight_shape, *, bias_shape, stride, padding, output_padding, dilation,
                         groups, data_format, weight_format, output_size) -> Tuple[Geometry, bool]:
    shape, batched = _conv_shape(input_shape, weight_shape, bias_shape=bias_shape, stride=stride, dilation=dilation,
                                 groups=groups, data_format=data_format, weight_format=weight_format, transposed=True)
    batch, length, kernel_size, stride, dilation = (shape.batch, shape.length, shape.kernel_size, shape.stride,
                                                    shape.dilation)
    culprits = f"length {length}, stride={stride}, dilation={dilation}, kernel_size={kernel_size}"
    full = full_length(length, kernel_size, stride, dilation)
    check_size("the full (uncropped) output", full, batch * full * shape.out_channels, culprits)
    if output_size is not None:
        if output_padding is not None:
            raise ValueError(
                f"give output_size or output_padding, not both "
                f"(output_size={output_size!r}, output_padding={output_padding!r})"
            )
        output_padding = output_padding_for_size(
            output_size, length, kernel_size, stride, padding, dilation
        )
    left, right = resolve_padding(padding, kernel_size, stride, dilation, output_padding)
    out_len = full - left - right
    if out_len < 1:
        raise ValueError(
            f"padding={padding!r} leaves no output for an input of length {length} "
            f"(kernel_size={kernel_size}, stride={stride}, dilation={dilation}): "
            f"output length would be {out_len}"
        )
    check_size("the output", out_len, batch * out_len * shape.out_channels,
               f"{culprits}, padding={padding!r}, output_padding={output_padding!r}")
    return Geometry(**vars(shape), crop=left, output_length=out_len), batched


# -- the direct op ---------------------------------------------------------------

def conv1d_geometry(
    input_shape: Sequence[int],
    weight_shape: Sequence[int],
    *,
    bias_shape: Optional[Sequence[int]] = None,
    stride=1,
    padding: Padding = 0,
    dilation=1,
    groups=1,
    data_format: str = "NLC",
    weight_format: str = "mlx",
) -> Tuple[Conv1dGeometry, bool]:
    """Validates every argument of :func:`mlx_deconv.conv1d` against the shapes and normalises them.

    Weight layouts: ``"mlx"`` ``(C_out, K, C_in/groups)``, ``"torch"`` ``(C_out, C_in/groups, K)``.

    Returns:
        ``(geometry, batched)``; ``batched`` is False for an unbatched input.

    Raises:
        ValueError, TypeError: naming the argument and its value; a channel
        mismatch that the other ``data_format`` or ``weight_format`` would
        fix says so.
    """
    _check_formats(data_format, weight_format)
    return _with_layout_hint(
        _direct_geometry, tuple(input_shape), tuple(weight_shape), data_format, weight_format,
        bias_shape=bias_shape, stride=stride, padding=padding, dilation=dilation, groups=groups,
    )


def _direct_geometry(input_shape, weight_shape, *, bias_shape, stride, padding, dilation, groups,
                     data_format, weight_format) -> Tuple[Conv1dGeometry, bool]:
    shape, batched = _conv_shape(input_shape, weight_shape, bias_shape=bias_shape, stride=stride, dilation=dilation,
                                 groups=groups, data_format=data_format, weight_format=weight_format, transposed=False)
    batch, length, kernel_size, stride, dilation = (shape.batch, shape.length, shape.kernel_size, shape.stride,
                                                    shape.dilation)
    left, right = conv1d_padding(padding, length, kernel_size, stride, dilation)
    padded = left + length + right
    culprits = f"length {length}, padding={padding!r}"
    check_size("the padded input", padded, batch * padded * shape.in_channels, culprits)
    span = dilated_kernel_size(kernel_size, dilation)
    if span > padded:
        raise ValueError(
            f"the dilated kernel (dilation={dilation}, kernel_size={kernel_size}: "
            f"dilation*(K-1)+1 = {span} samples) is longer than the padded input "
            f"(length {length}, padding={padding!r}: {padded} samples), so there is no output"
        )
    out_len = (padded - span) // stride + 1
    check_size("the output", out_len, batch * out_len * shape.out_channels, f"{culprits}, stride={stride}")
    return Conv1dGeometry(**vars(shape), pad_left=left, pad_right=right, output_length=out_len), batched


# -- a whole call ------------------------------------------------------------------

def geometry_of(call: Call) -> Tuple[Union[Geometry, Conv1dGeometry], bool]:
    """Validates a :class:`~mlx_deconv.geometry.call.Call` of either op into its geometry.

    Returns:
        ``(geometry, batched)``, as :func:`conv_geometry` and :func:`conv1d_geometry` return them.

    Raises:
        ValueError, TypeError: naming the argument and its value.
    """
    common = dict(bias_shape=call.bias_shape, stride=call.stride, padding=call.padding, dilation=call.dilation,
                  groups=call.groups, data_format=call.data_format, weight_format=call.weight_format)
    if call.op == "conv1d":
        return conv1d_geometry(call.x_shape, call.weight_shape, **common)
    return conv_geometry(call.x_shape, call.weight_shape, output_padding=call.output_padding,
                         output_size=call.output_size, **common)
