"""A call of an op as the user made it: its shapes, dtype and every argument, with no arrays.

:class:`Call` is what the ops hand down: :func:`~mlx_deconv.geometry.validation.geometry_of` validates it
into a geometry, and it is the key of the call's prepared form (``ops.functional`` keeps one table of
them per thread, which ``patch_mlx`` shares). It is a tuple, so building and hashing it costs about
what MLX's own op costs to dispatch.
"""

from __future__ import annotations

from typing import NamedTuple, Optional, Tuple

#: The ops a call can name.
OPS = ("conv_transpose1d", "conv1d")


class Call(NamedTuple):
    """One call of ``conv_transpose1d`` or ``conv1d``, before validation.

    Attributes:
        op: ``"conv_transpose1d"`` or ``"conv1d"``.
        x_shape, weight_shape, bias_shape: the arrays' shapes (``bias_shape`` None without a bias).
        dtype: the input's dtype (``mx.Dtype``): the choice depends on it.
        stride, padding, output_padding, dilation, groups: as the op takes them, unvalidated
            (``output_padding`` and ``output_size`` are None for ``conv1d``).
        data_format, weight_format, output_size: likewise.
        backend: the backend asked for, ``"auto"`` or a name.
        stream: the resolved stream's text (streams compare by device and index, but hash by identity).
        tuning: None, or ``(mode, generation)`` while autotuning is on: a tuned choice may change.
    """

    op: str
    x_shape: Tuple[int, ...]
    weight_shape: Tuple[int, ...]
    bias_shape: Optional[Tuple[int, ...]]
    dtype: object
    stride: object
    padding: object
    output_padding: object
    dilation: object
    groups: object
    data_format: object
    weight_format: object
    output_size: object
    backend: object
    stream: str
    tuning: Optional[tuple]
