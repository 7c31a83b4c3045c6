"""mlx_deconv: complete and fast 1-D transposed convolution for Apple MLX."""

# First, before anything imports mlx.core: an optimized CBLAS under MLX's matmul on Linux (blas.py).
from . import blas as _blas

_blas.load()
_blas.warn_if_too_late()
from .blas import blas_info  # noqa: E402

from . import autotune, initializers, interop
from .autotune import set_autotune
from .activations import Snake
from .functional import available_backends, conv1d, conv_transpose1d
from .geometry import conv1d_output_length, output_length, resolve_padding
from .keras import Conv1DTranspose
from .conv_config import ConvConfig
from .layers import Conv1d, ConvTranspose1d
from .streaming import StreamingConv1d, StreamingConvTranspose1d

__version__ = "0.1.0"

__all__ = [
    "available_backends", "blas_info", "conv1d", "conv1d_output_length", "conv_transpose1d", "output_length", "resolve_padding",
    "ConvTranspose1d", "Conv1d", "ConvConfig", "Conv1DTranspose", "StreamingConvTranspose1d", "StreamingConv1d", "Snake",
    "initializers", "interop", "autotune", "set_autotune", "__version__",
]
