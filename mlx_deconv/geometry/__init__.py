"""A call's arguments made into a validated geometry, with no arrays: :mod:`.records` (the records and their length
arithmetic), :mod:`.validation` (every argument checked, once per signature) and :mod:`.layouts` (PyTorch's weight layout).

``mlx_deconv.geometry`` was one module before the package had folders; its names are here still.
"""

from .records import (MAX_AXIS, PADDING_STRINGS, Conv1dGeometry, ConvShape, Geometry, Padding, as_int,  # noqa: F401
                      conv1d_output_length, conv1d_padding, dilated_kernel_size, full_length, output_length,
                      output_padding_for_size, resolve_padding)
