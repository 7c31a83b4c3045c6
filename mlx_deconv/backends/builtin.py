"""Backend ``"builtin"``: MLX's own ``mx.conv_transpose1d`` and ``mx.conv_general``.

For the transposed op MLX takes symmetric padding only, at most ``dilation*(K-1)``, so the op runs
with that part of the crop and the rest (asymmetric crops, output extended past the full
length) is a slice and a zero pad around it.
"""

from __future__ import annotations

from typing import Optional

import mlx.core as mx

from ..geometry.records import Conv1dGeometry, Geometry

# MLX's own functions, taken when the package is imported: under patch_mlx() the names on mx are ours.
MLX_CONV_TRANSPOSE1D = mx.conv_transpose1d
MLX_CONV1D = mx.conv1d


def _symmetric_padding(geom: Geometry) -> int:
    """The ``padding`` MLX's op is given: the smaller crop, at most ``span - 1`` (MLX pads the stuffed input by
    ``span - 1 - padding``, which must not go negative)."""
    right = geom.full_length - geom.crop - geom.output_length
    return max(0, min(geom.crop, right, geom.dilation * (geom.kernel_size - 1)))


def multiplies_its_padding(geom: Geometry) -> bool:
    """Whether MLX's transposed op multiplies zero padding of its own into the outputs: where it is one unfolded
    matmul (stride 1, no dilation, no groups) over an input it pads. The definition has no such products, so a NaN
    or infinite weight tap would make those outputs NaN where the definition keeps them finite."""
    return (geom.stride == 1 and geom.dilation == 1 and geom.groups == 1
            and _symmetric_padding(geom) < geom.kernel_size - 1)


def _mlx_window(geom: Geometry):
    """``(padding, start, stop)``: MLX's ``padding`` for the call, and the samples ``[start, stop)`` of MLX's output
    (``full_length - 2*padding`` long) that are the call's; past MLX's output they are zeros."""
    both = _symmetric_padding(geom)
    start = geom.crop - both
    return both, start, start + geom.output_length


def conv_transpose1d(x: mx.array, weight: mx.array, bias: Optional[mx.array], geom: Geometry) -> mx.array:
    """Transposed conv of NLC ``x`` with an MLX-layout ``weight``, as ``geom`` says."""
    both, start, stop = _mlx_window(geom)
    y = MLX_CONV_TRANSPOSE1D(
        x, weight, stride=geom.stride, padding=both, dilation=geom.dilation, groups=geom.groups
    )
    if stop > y.shape[1]:
        y = mx.pad(y, [(0, 0), (0, stop - y.shape[1]), (0, 0)])
    if start or stop != y.shape[1]:
        y = y[:, start:stop]
    if bias is not None:
        y = y + bias
    return y


def pads_input(geom: Conv1dGeometry) -> bool:
    """Whether :func:`conv1d` pads the input with real zeros before MLX's op: a grouped call with
    ``left != right``, whose weight gradient from MLX's op (mlx 0.32.4) can come out in the wrong shape."""
    return geom.groups > 1 and geom.pad_left != geom.pad_right


def skips_padding_products(geom: Conv1dGeometry) -> bool:
    """Whether MLX's ``conv1d`` leaves out the products of this call's zero padding: its CPU loop for a dilation
    above 1 visits real input rows only, so a NaN or infinite weight tap that reads only padding gives a finite
    output where the definition (0 * NaN) gives NaN. MLX's own behaviour, kept: padding the input first
    costs a short call a third of its time (docs/guarantees.md)."""
    return geom.dilation > 1 and bool(geom.pad_left or geom.pad_right) and not pads_input(geom)


def conv1d(x: mx.array, weight: mx.array, bias: Optional[mx.array], geom: Conv1dGeometry) -> mx.array:
    """Direct conv of NLC ``x`` with an MLX-layout ``weight``, as ``geom`` says.

    ``mx.conv_general`` takes ``([left], [right])`` padding, so asymmetric
    ("same" with an even span, "causal") needs no copy of the input, except for a grouped call
    (:func:`pads_input`), whose input is padded with real zeros first.
    """
    padding = ([geom.pad_left], [geom.pad_right])
    if pads_input(geom):
        x = mx.pad(x, [(0, 0), (geom.pad_left, geom.pad_right), (0, 0)])
        padding = 0
    y = mx.conv_general(x, weight, stride=geom.stride, padding=padding, kernel_dilation=geom.dilation, groups=geom.groups)
    if bias is not None:
        y = y + bias
    return y


def bind(op: str, geom, stream: mx.Stream):
    """``run(x, weight, bias)``: MLX's op with this call's arguments bound, on ``stream``, and nothing else
    where the call needs nothing else (no crop, no padded copy), so that a short call costs what MLX's op does.

    Args:
        op (str): ``"conv_transpose1d"`` or ``"conv1d"``.
        geom: the call's validated geometry.
        stream (mx.Stream): where it runs.

    Returns:
        callable: ``run(x, weight, bias=None)`` on NLC ``x`` and an MLX-layout weight of ``x``'s dtype (bias None
        or of that dtype). Where it is MLX's op alone, its attribute ``mlx_arguments`` holds the op's
        positional arguments after ``(x, weight)``, so that a caller passing those very arguments may call
        MLX's op itself.
    """
    stride, dilation, groups = geom.stride, geom.dilation, geom.groups
    if op == "conv1d" and geom.pad_left == geom.pad_right:  # even padding: nothing to pad first (pads_input)
        padding = geom.pad_left

        def run(x, weight, bias=None):
            y = MLX_CONV1D(x, weight, stride, padding, dilation, groups, stream=stream)
            return y if bias is None else mx.add(y, bias, stream=stream)
        run.mlx_arguments = (stride, padding, dilation, groups)
        return run
    if op == "conv_transpose1d":
        padding, start, stop = _mlx_window(geom)
        if start == 0 and stop == geom.full_length - 2 * padding:  # MLX's output is the call's, as it is
            def run(x, weight, bias=None):
                y = MLX_CONV_TRANSPOSE1D(x, weight, stride, padding, dilation, 0, groups, stream=stream)
                return y if bias is None else mx.add(y, bias, stream=stream)
            run.mlx_arguments = (stride, padding, dilation, 0, groups)
            return run
    compute = conv1d if op == "conv1d" else conv_transpose1d

    def run(x, weight, bias=None):
        with mx.stream(stream):
            return compute(x, weight, bias, geom)
    return run
