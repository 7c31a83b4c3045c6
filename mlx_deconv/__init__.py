"""mlx_deconv: complete and fast 1-D transposed convolution and convolution for Apple MLX.

The data's way through the package, one folder each: :mod:`.ops` (the calls) -> :mod:`.geometry`
(arguments validated into a geometry, no arrays) -> :mod:`.backends` (the rule that picks one, and
each backend) -> arrays. Around them: :mod:`.nn` (layers), :mod:`.models` (whole decoders),
:mod:`.tuning`, :mod:`.bench` and :mod:`.runtime` (the BLAS, streams, compiled helpers).
"""

# First, before anything imports mlx.core: an optimized CBLAS under MLX's matmul on Linux (runtime/blas.py).
from .runtime import blas as _blas

_blas.load()
from .runtime.blas import blas_info  # noqa: E402
from .runtime import old_names as _old_names  # noqa: E402

from .models import bigvgan, hifigan  # noqa: E402
from .nn import initializers, interop, keras  # noqa: E402
from .nn.activations import Snake  # noqa: E402
from .nn.anti_aliased import Activation1d, anti_aliased_activation, kaiser_sinc_filter  # noqa: E402
from .nn.config import ConvConfig  # noqa: E402
from .nn.keras import Conv1DTranspose  # noqa: E402
from .nn.layers import Conv1d, ConvTranspose1d  # noqa: E402
from .nn.streaming import StreamingConv1d, StreamingConvTranspose1d  # noqa: E402
from .ops.functional import available_backends, conv1d, conv_transpose1d  # noqa: E402
from .ops.patch import patch_mlx, patched_mlx, unpatch_mlx  # noqa: E402
from .nn.convert import convert  # noqa: E402
from .geometry.records import conv1d_output_length, output_length, resolve_padding  # noqa: E402
from .tuning import tuner as autotune  # noqa: E402
from .tuning.tuner import set_autotune  # noqa: E402

__version__ = "0.1.0"

# ``import mlx_deconv.geometry`` and the other flat names from before the folders keep working.
_old_names.install(__name__)


def __getattr__(name: str):
    """The package's old flat module names (``mlx_deconv.geometry``, ``mlx_deconv.blas``, ...), loaded on first use."""
    return _old_names.attribute(__name__, name)


__all__ = [
    "available_backends", "blas_info", "conv1d", "conv1d_output_length", "conv_transpose1d", "output_length", "resolve_padding",
    "ConvTranspose1d", "Conv1d", "ConvConfig", "Conv1DTranspose", "StreamingConvTranspose1d", "StreamingConv1d", "Snake",
    "Activation1d", "anti_aliased_activation", "kaiser_sinc_filter",
    "initializers", "interop", "autotune", "hifigan", "bigvgan", "keras", "set_autotune", "__version__",
    "patch_mlx", "unpatch_mlx", "patched_mlx", "convert",
]
