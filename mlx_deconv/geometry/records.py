"""Shape arithmetic of the 1-D convolutions and their normal forms: pure functions and records, no arrays.

Every padding form is reduced to one normal form, a *crop* of the full
transposed-convolution output. The full output of an input of length ``L`` has

    full_length = (L - 1) * stride + dilation * (kernel_size - 1) + 1

samples; a padding form says how many to drop on the left (``left >= 0``) and
on the right (``right``, negative when the output is extended past the full
length with zeros, which is what ``output_padding`` does). Backends only ever
see the normal form, so "same", "causal", asymmetric padding and
``output_size`` cost them nothing.

The direct convolution (:class:`Conv1dGeometry`) has its own normal form, the
zero padding ``(pad_left, pad_right)`` of the input. Checking a call's shapes
and building these records is :mod:`mlx_deconv.geometry.validation`'s job; this module
knows nothing of it (backends import only this one).
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple, Union

Padding = Union[str, int, Sequence[int]]

PADDING_STRINGS = ("valid", "same", "causal")
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


def _padding_amounts(padding) -> Tuple[int, int]:
    """``(left, right)`` of the forms both ops read alike: ``p``, ``(p,)`` or ``(left, right)``."""
    if isinstance(padding, (tuple, list)) and len(padding) == 2:
        return as_int("padding[0]", padding[0]), as_int("padding[1]", padding[1])
    if isinstance(padding, (tuple, list)) and len(padding) != 1:
        raise _unknown_padding_form(padding)
    left = as_int("padding", padding)
    return left, left


def _unknown_padding_form(padding) -> ValueError:
    return ValueError(f"padding must be an int, a (left, right) pair or one of {PADDING_STRINGS}, got {padding!r}")


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
        raise _unknown_padding_form(padding)

    op = 0 if output_padding is None else output_padding
    left, right = _padding_amounts(padding)
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
) -> Optional[int]:
    """The ``output_padding`` that makes the output ``output_size`` long (PyTorch's ``output_size``).

    Returns:
        int or None: None where the length is the one the padding form gives by itself (``"same"``'s
        ``L*stride``, which no explicit output padding reaches when the dilated kernel's span is even).

    Raises:
        ValueError: naming the reachable lengths when no output padding fits.
    """
    output_size = as_int("output_size", output_size, 1)
    inferred = output_length(length, kernel_size, stride, padding, None, dilation)
    if output_size == inferred:
        return None
    # Every padding form adds output_padding to the length one for one, so the
    # reachable lengths are a range (computed, not enumerated: stride may be huge).
    shortest = output_length(length, kernel_size, stride, padding, 0, dilation)
    longest = shortest + max(stride, dilation) - 1
    if not shortest <= output_size <= longest:
        also = "" if shortest <= inferred <= longest else f" and {inferred} (output_padding=None)"
        raise ValueError(
            f"output_size={output_size} cannot be reached from an input of length "
            f"{length} with kernel_size={kernel_size}, stride={stride}, "
            f"padding={padding!r}, dilation={dilation}: reachable lengths are "
            f"{shortest}..{longest}{also}"
        )
    return output_size - shortest


@dataclass(frozen=True)
class ConvShape:
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
class Geometry(ConvShape):
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
class Conv1dGeometry(ConvShape):
    """One validated direct convolution, in normal form (NLC, MLX weight layout).

    Output sample ``t`` reads input rows ``t*stride + k*dilation - pad_left``
    for taps ``k = 0..K-1``; rows outside ``[0, length)`` are zeros.
    """

    pad_left: int
    pad_right: int
    output_length: int

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
        raise _unknown_padding_form(padding)
    return _padding_amounts(padding)


def padding_follows_length(padding: Padding, kernel_size: int, stride: int = 1, dilation: int = 1) -> bool:
    """Whether :func:`conv1d_padding` gives different padding for different input lengths: ``"same"`` with a
    stride and a dilated span both above 1, whose total is ``span - (L % stride or stride)`` (clipped at 0).
    A graph traced at one length keeps that length's padding, so it is right at that length only."""
    return (isinstance(padding, str) and padding.lower() == "same" and stride > 1
            and dilated_kernel_size(kernel_size, dilation) > 1)


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
