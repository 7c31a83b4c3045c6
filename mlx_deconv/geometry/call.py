"""A call of an op as the user made it: its shapes, dtype and every argument, with no arrays.

:class:`Call` is what the ops hand down: :func:`~mlx_deconv.geometry.validation.geometry_of` validates it
into a geometry, and it is the key of the call's prepared form (``ops.functional`` keeps one table of
them per thread, which ``patch_mlx`` shares). It is a tuple, so building and hashing it costs about
what MLX's own op costs to dispatch; :func:`key_of` makes the key tell ``1``, ``1.0`` and ``True`` apart.
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


#: Argument types a key holds as they are: equal values of these types are the same argument.
_PLAIN_TYPES = frozenset((int, str, type(None)))
#: The argument fields, by index (the shapes, dtype and stream are plain by construction).
_ARGUMENTS = range(Call._fields.index("stride"), Call._fields.index("backend") + 1)


def _typed(value):
    """``value`` as a key part that tells types apart: ``1.0 == True == 1`` and they hash alike, so a key of
    values alone would hand ``dilation=1.0`` the call prepared (and checked) for ``1``."""
    kind = type(value)
    if kind in _PLAIN_TYPES:
        return value
    if kind is tuple or kind is list:
        return (kind, tuple(_typed(v) for v in value))
    return (kind, value)


def key_of(call: Call) -> Call:
    """``call`` itself when every argument is a plain int, str or None (nearly every call), else a copy whose
    arguments carry their types."""
    if _PLAIN_TYPES.issuperset(map(type, call[_ARGUMENTS.start:_ARGUMENTS.stop])):
        return call
    return call._replace(**{Call._fields[i]: _typed(call[i]) for i in _ARGUMENTS})
