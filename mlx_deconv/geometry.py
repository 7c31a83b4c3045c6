"""Shape arithmetic of the 1-D transposed convolution: pure functions, no arrays.

Every padding form is reduced to one normal form, a *crop* of the full
transposed-convolution output. The full output of an input of length ``L`` has

    full_length = (L - 1) * stride + dilation * (kernel_size - 1) + 1

samples; a padding form says how many to drop on the left (``left >= 0``) and
on the right (``right``, negative when the output is extended past the full
length with zeros, which is what ``output_padding`` does). Backends only ever
see the normal form, so "same", "causal", asymmetric padding and
``output_size`` cost them nothing.

The direct convolution (:func:`conv1d_geometry`) has its own normal form, the
zero padding ``(pad_left, pad_right)`` of the input; both share the argument
checks below, so every rule (formats, channels, groups, sizes) is written once.
"""

from __future__ import annotations

import numbers
import os
from dataclasses import dataclass
from functools import lru_cache
from typing import Optional, Sequence, Tuple, Union

Padding = Union[str, int, Sequence[int]]

PADDING_STRINGS = ("valid", "same", "causal")
DATA_FORMATS = ("NLC", "NCL")
WEIGHT_FORMATS = ("mlx", "torch")
#: MLX's shapes are 32-bit: no axis (and no stride, dilation or padding) may pass this.
MAX_AXIS = 2**31 - 1


def as_int(name: str, value, minimum: int = 0, maximum: int = MAX_AXIS) -> int:
    """Reads an int or a 1-tuple of int (PyTorch and Keras spell both).

    Raises:
        TypeError: for anything but an integer (bools and floats included).
        ValueError: when the value is below ``minimum`` or above ``maximum``
            (by default MLX's 32-bit shape limit, :data:`MAX_AXIS`).
    """
    original = value
    if isinstance(value, (tuple, list)):
        if len(value) != 1:
            raise ValueError(f"{name} must be an int or a 1-tuple, got {original!r}")
        value = value[0]
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {original!r}")
    value = int(value)
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {original!r}")
    if value > maximum:
        limit = " (MLX's 32-bit shape limit)" if maximum == MAX_AXIS else ""
        raise ValueError(f"{name} must be <= {maximum}{limit}, got {original!r}")
    return value


def dilated_kernel_size(kernel_size: int, dilation: int) -> int:
    """Span of a dilated kernel, in samples."""
    return dilation * (kernel_size - 1) + 1


def full_length(length: int, kernel_size: int, stride: int, dilation: int) -> int:
    """Length of the uncropped transposed-convolution output."""
    return (length - 1) * stride + dilated_kernel_size(kernel_size, dilation)


def _check_output_padding(output_padding: int, stride: int, dilation: int) -> int:
    output_padding = as_int("output_padding", output_padding)
    if output_padding >= max(stride, dilation):
        raise ValueError(
            f"output_padding must be smaller than stride or dilation "
            f"(max(stride={stride}, dilation={dilation}) = {max(stride, dilation)}), "
            f"got output_padding={output_padding}"
        )
    return output_padding


def resolve_padding(
    padding: Padding,
    kernel_size: int,
    stride: int = 1,
    dilation: int = 1,
    output_padding: Optional[int] = None,
) -> Tuple[int, int]:
    """Turns any padding form into ``(left, right)`` crops of the full output.

    Forms:
        * ``int p`` or ``(p,)``: drop ``p`` on both sides (PyTorch, MLX).
        * ``(left, right)``: asymmetric (brainstate).
        * ``"valid"`` / ``"same"``: Keras ``Conv1DTranspose`` lengths and
          alignment, including Keras' inference when ``output_padding`` is
          ``None``: ``"valid"`` gives ``(L-1)*s + max(k, s)`` samples and
          ``"same"`` gives ``L*s`` (``k`` the dilated kernel span).
        * ``"causal"``: ``L*s`` samples, every crop on the right, so output
          sample ``t`` depends on no input after ``t // s`` (streaming codecs).

    ``output_padding`` (``None`` means 0, or Keras' inference for strings)
    extends the output on the right; it must be below ``max(stride, dilation)``.

    Returns:
        ``(left, right)``: ``left >= 0``; ``right`` is negative when the output
        reaches past the full length.
    """
    span = dilated_kernel_size(kernel_size, dilation)
    if output_padding is not None:
        output_padding = _check_output_padding(output_padding, stride, dilation)

    if isinstance(padding, str):
        form = padding.lower()
        if form == "valid":
            # Keras: pads of (span - 1, span - 1 + op) around the zero-stuffed
            # input, i.e. no crop on the left and op extra samples on the right.
            op = max(span, stride) - span if output_padding is None else output_padding
            return 0, -op
        if form == "same":
            # Keras' split of the total padding of the equivalent direct conv:
            # the larger half on the left, never more than span - 1.
            if output_padding is None:
                total = stride + span - 2
            else:
                total = span + span % 2 - 2 + output_padding
            pad_left = min(total // 2 + total % 2, span - 1)
            pad_right = total - pad_left
            return span - 1 - pad_left, span - 1 - pad_right
        if form == "causal":
            op = 0 if output_padding is None else output_padding
            return 0, span - stride - op
        raise ValueError(
            f"padding must be an int, a (left, right) pair or one of "
            f"{PADDING_STRINGS}, got {padding!r}"
        )

    op = 0 if output_padding is None else output_padding
    if isinstance(padding, (tuple, list)) and len(padding) == 2:
        left = as_int("padding[0]", padding[0])
        right = as_int("padding[1]", padding[1])
    else:
        left = right = as_int("padding", padding)
    return left, right - op


def output_length(
    length: int,
    kernel_size: int,
    stride: int = 1,
    padding: Padding = 0,
    output_padding: Optional[int] = None,
    dilation: int = 1,
) -> int:
    """Output length of :func:`mlx_deconv.conv_transpose1d` for every padding form.

    Args:
        length (int): input length ``L``.
        kernel_size (int): number of taps ``K``.
        stride (int): upsampling factor. Default: ``1``.
        padding: an int, ``(left, right)``, ``"valid"``, ``"same"`` or
            ``"causal"`` (see :func:`resolve_padding`). Default: ``0``.
        output_padding (int, optional): extra samples on the right. Default: ``None``.
        dilation (int): spacing between taps. Default: ``1``.

    Returns:
        int: ``(L-1)*stride - left - right + dilation*(K-1) + 1`` with
        ``(left, right)`` from :func:`resolve_padding`; may be ``<= 0`` for
        paddings too large for the input (the op refuses those).
    """
    length = as_int("length", length, 1)
    kernel_size = as_int("kernel_size", kernel_size, 1)
    stride = as_int("stride", stride, 1)
    dilation = as_int("dilation", dilation, 1)
    left, right = resolve_padding(padding, kernel_size, stride, dilation, output_padding)
    return full_length(length, kernel_size, stride, dilation) - left - right


def output_padding_for_size(
    output_size: int,
    length: int,
    kernel_size: int,
    stride: int,
    padding: Padding,
    dilation: int,
) -> int:
    """The ``output_padding`` that makes the output ``output_size`` long (PyTorch's ``output_size``).

    Raises:
        ValueError: naming the reachable range when no output padding fits.
    """
    output_size = as_int("output_size", output_size, 1)
    # Every padding form adds output_padding to the length one for one, so the
    # reachable lengths are a range (computed, not enumerated: stride may be huge).
    shortest = output_length(length, kernel_size, stride, padding, 0, dilation)
    longest = shortest + max(stride, dilation) - 1
    if not shortest <= output_size <= longest:
        raise ValueError(
            f"output_size={output_size} cannot be reached from an input of length "
            f"{length} with kernel_size={kernel_size}, stride={stride}, "
            f"padding={padding!r}, dilation={dilation}: reachable lengths are "
            f"{shortest}..{longest}"
        )
    return output_size - shortest


@dataclass(frozen=True)
class _ConvShape:
    """The fields and channel arithmetic both normal forms share (their own fields follow these)."""

    batch: int
    length: int
    in_channels: int
    out_channels: int
    kernel_size: int
    stride: int
    dilation: int
    groups: int

    @property
    def in_per_group(self) -> int:
        return self.in_channels // self.groups

    @property
    def out_per_group(self) -> int:
        return self.out_channels // self.groups

    @property
    def depthwise(self) -> bool:
        return self.groups == self.in_channels == self.out_channels


@dataclass(frozen=True)
class Geometry(_ConvShape):
    """One validated transposed convolution, in normal form (NLC, MLX weight layout).

    The output is ``full[crop : crop + output_length]`` of the full output,
    zero past its end.
    """

    crop: int
    output_length: int

    @property
    def full_length(self) -> int:
        return full_length(self.length, self.kernel_size, self.stride, self.dilation)

    @property
    def flops(self) -> int:
        """Multiply-adds times two, counting no inserted zeros."""
        return 2 * self.batch * self.length * self.in_per_group * self.out_channels * self.kernel_size

    def input_span(self, start: int, stop: int) -> Tuple[int, int]:
        """Input rows ``[lo, hi)`` outside which no row reaches output samples ``[start, stop)``.

        (With dilation some rows inside may still miss them.) Output sample ``t`` is full-output sample ``t + crop``, which input row
        ``l`` reaches through tap ``k`` when ``l*stride + k*dilation == t + crop``.
        """
        reach = (self.kernel_size - 1) * self.dilation
        lo = max(0, -(-(start + self.crop - reach) // self.stride))
        hi = min(self.length, (stop - 1 + self.crop) // self.stride + 1)
        return lo, max(lo, hi)


@dataclass(frozen=True)
class Conv1dGeometry(_ConvShape):
    """One validated direct convolution, in normal form (NLC, MLX weight layout).

    Output sample ``t`` reads input rows ``t*stride + k*dilation - pad_left``
    for taps ``k = 0..K-1``; rows outside ``[0, length)`` are zeros.
    """

    pad_left: int
    pad_right: int
    output_length: int

    @property
    def padded_length(self) -> int:
        return self.pad_left + self.length + self.pad_right

    @property
    def flops(self) -> int:
        """Multiply-adds times two, padding zeros included: ``2*N*L_out*C_in/G*C_out*K``."""
        return 2 * self.batch * self.output_length * self.in_per_group * self.out_channels * self.kernel_size

    def input_span(self, start: int, stop: int) -> Tuple[int, int]:
        """Input rows ``[lo, hi)`` that output samples ``[start, stop)`` read (clipped to the signal).

        (With dilation or stride some rows inside may be skipped.)
        """
        lo = min(max(0, start * self.stride - self.pad_left), self.length)
        hi = min(self.length, (stop - 1) * self.stride + (self.kernel_size - 1) * self.dilation - self.pad_left + 1)
        return lo, max(lo, hi)


def conv1d_padding(padding: Padding, length: int, kernel_size: int, stride: int = 1, dilation: int = 1) -> Tuple[int, int]:
    """Turns any padding form of :func:`mlx_deconv.conv1d` into zero padding ``(left, right)`` of the input.

    Forms:
        * ``int p`` or ``(p,)``: ``p`` zeros on both sides (PyTorch, MLX).
        * ``(left, right)``: asymmetric.
        * ``"valid"``: none.
        * ``"same"``: TensorFlow/Keras: ``ceil(L/stride)`` outputs, total pad
          ``max((ceil(L/stride)-1)*stride + dilation*(K-1) + 1 - L, 0)``, the
          smaller half (``total // 2``) on the left.
        * ``"causal"``: ``dilation*(K-1)`` on the left, none on the right, so
          output ``t`` reads no input after ``t*stride``.

    Returns:
        ``(left, right)``, both ``>= 0``.
    """
    span = dilated_kernel_size(kernel_size, dilation)
    if isinstance(padding, str):
        form = padding.lower()
        if form == "valid":
            return 0, 0
        if form == "same":
            total = max((-(-length // stride) - 1) * stride + span - length, 0)
            return total // 2, total - total // 2
        if form == "causal":
            return span - 1, 0
        raise ValueError(
            f"padding must be an int, a (left, right) pair or one of "
            f"{PADDING_STRINGS}, got {padding!r}"
        )
    if isinstance(padding, (tuple, list)) and len(padding) == 2:
        return as_int("padding[0]", padding[0]), as_int("padding[1]", padding[1])
    left = as_int("padding", padding)
    return left, left


def conv1d_output_length(length: int, kernel_size: int, stride: int = 1, padding: Padding = 0, dilation: int = 1) -> int:
    """Output length of :func:`mlx_deconv.conv1d` for every padding form.

    Args:
        length (int): input length ``L``.
        kernel_size (int): number of taps ``K``.
        stride (int): step between outputs. Default: ``1``.
        padding: an int, ``(left, right)``, ``"valid"``, ``"same"`` or
            ``"causal"`` (see :func:`conv1d_padding`). Default: ``0``.
        dilation (int): spacing between taps. Default: ``1``.

    Returns:
        int: ``floor((L + left + right - dilation*(K-1) - 1) / stride) + 1``;
        ``<= 0`` when the padded input is shorter than the dilated kernel
        (the op refuses those).
    """
    length = as_int("length", length, 1)
    kernel_size = as_int("kernel_size", kernel_size, 1)
    stride = as_int("stride", stride, 1)
    dilation = as_int("dilation", dilation, 1)
    left, right = conv1d_padding(padding, length, kernel_size, stride, dilation)
    reach = length + left + right - dilated_kernel_size(kernel_size, dilation)
    return reach // stride + 1 if reach >= 0 else 0


# -- validation shared by both ops --------------------------------------------

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


def _check_weight_rank(weight_shape: Tuple[int, ...], expected: str, weight_format: str) -> None:
    if len(weight_shape) != 3:
        raise ValueError(
            f"weight must be 3-D {expected} for weight_format={weight_format!r}, got shape {weight_shape}"
        )


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


@lru_cache(maxsize=None)
def _memory_bytes() -> Optional[int]:
    """This machine's physical memory, or None where the OS does not say."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def _check_size(what: str, length: int, elements: int, culprits: str) -> None:
    """Refuses at once an array no backend could make: an axis past MLX's
    32-bit shape limit, or more bytes (at 2 per element, float16) than the
    machine has. MLX would hang or be killed building it."""
    if length > MAX_AXIS:
        raise ValueError(
            f"{culprits} make {what} {length} samples long, past MLX's 32-bit shape limit of {MAX_AXIS}"
        )
    memory = _memory_bytes()
    if memory is not None and 2 * elements > memory:
        raise ValueError(
            f"{culprits} make {what} {elements} elements, more than this machine's "
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
    batch, length, in_channels, batched = _input_axes(input_shape, data_format)
    _check_weight_rank(
        weight_shape, "(C_out, K, C_in/groups)" if weight_format == "mlx" else "(C_in, C_out/groups, K)", weight_format
    )
    groups = as_int("groups", groups, 1)
    stride = as_int("stride", stride, 1)
    dilation = as_int("dilation", dilation, 1)
    if weight_format == "mlx":
        out_channels, kernel_size, in_per_group = weight_shape
        _grouped_channels(in_channels, out_channels, in_per_group, groups, weight_shape, weight_format, 0)
    else:
        weight_in, out_per_group, kernel_size = weight_shape
        if weight_in != in_channels:
            raise _LayoutMismatch(
                f"x has C_in={in_channels} channels but the 'torch' weight of shape "
                f"{weight_shape} has C_in={weight_in} (weight.shape[0])"
            )
        if in_channels % groups:
            raise _LayoutMismatch(f"groups={groups} must divide the input channels C_in={in_channels}")
        out_channels = out_per_group * groups
    if kernel_size < 1 or out_channels < 1:
        raise ValueError(f"weight must have non-empty axes, got shape {weight_shape}")
    _check_bias(bias_shape, out_channels)

    culprits = f"length {length}, stride={stride}, dilation={dilation}, kernel_size={kernel_size}"
    full = full_length(length, kernel_size, stride, dilation)
    _check_size("the full (uncropped) output", full, batch * full * out_channels, culprits)
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
    _check_size("the output", out_len, batch * out_len * out_channels,
                f"{culprits}, padding={padding!r}, output_padding={output_padding!r}")
    geometry = Geometry(
        batch=batch,
        length=length,
        in_channels=in_channels,
        out_channels=out_channels,
        kernel_size=kernel_size,
        stride=stride,
        dilation=dilation,
        groups=groups,
        crop=left,
        output_length=out_len,
    )
    return geometry, batched


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
    batch, length, in_channels, batched = _input_axes(input_shape, data_format)
    _check_weight_rank(
        weight_shape, "(C_out, K, C_in/groups)" if weight_format == "mlx" else "(C_out, C_in/groups, K)", weight_format
    )
    groups = as_int("groups", groups, 1)
    stride = as_int("stride", stride, 1)
    dilation = as_int("dilation", dilation, 1)
    if weight_format == "mlx":
        out_channels, kernel_size, in_per_group = weight_shape
    else:
        out_channels, in_per_group, kernel_size = weight_shape
    _grouped_channels(in_channels, out_channels, in_per_group, groups, weight_shape, weight_format, 0)
    if kernel_size < 1 or out_channels < 1:
        raise ValueError(f"weight must have non-empty axes, got shape {weight_shape}")
    _check_bias(bias_shape, out_channels)

    left, right = conv1d_padding(padding, length, kernel_size, stride, dilation)
    padded = left + length + right
    culprits = f"length {length}, padding={padding!r}"
    _check_size("the padded input", padded, batch * padded * in_channels, culprits)
    span = dilated_kernel_size(kernel_size, dilation)
    if span > padded:
        raise ValueError(
            f"the dilated kernel (dilation={dilation}, kernel_size={kernel_size}: "
            f"dilation*(K-1)+1 = {span} samples) is longer than the padded input "
            f"(length {length}, padding={padding!r}: {padded} samples), so there is no output"
        )
    out_len = (padded - span) // stride + 1
    _check_size("the output", out_len, batch * out_len * out_channels, f"{culprits}, stride={stride}")
    geometry = Conv1dGeometry(
        batch=batch,
        length=length,
        in_channels=in_channels,
        out_channels=out_channels,
        kernel_size=kernel_size,
        stride=stride,
        dilation=dilation,
        groups=groups,
        pad_left=left,
        pad_right=right,
        output_length=out_len,
    )
    return geometry, batched
