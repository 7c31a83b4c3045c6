"""A call made into a validated geometry, with no arrays: the second step of every call's way.

:mod:`.call` (the record of a call as made, and the key of its prepared form), :mod:`.records` (the
convolutions' geometries and their length arithmetic), :mod:`.validation` (every argument of a
convolution checked, once per signature), :mod:`.activation` (the anti-aliased activation's geometry
and checks) and :mod:`.torch_layout` (PyTorch's weight layouts).
"""

from .records import (MAX_AXIS, PADDING_STRINGS, Conv1dGeometry, ConvShape, Geometry, Padding, as_int,  # noqa: F401
                      conv1d_output_length, conv1d_padding, dilated_kernel_size, full_length, output_length,
                      output_padding_for_size, resolve_padding)
