"""mlx_deconv: complete and fast 1-D transposed convolution for Apple MLX."""

from .functional import available_backends, conv_transpose1d
from .geometry import output_length, resolve_padding

__version__ = "0.1.0"

__all__ = ["available_backends", "conv_transpose1d", "output_length", "resolve_padding", "__version__"]
