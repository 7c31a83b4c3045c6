"""mlx_deconv: complete and fast 1-D transposed convolution and convolution for Apple MLX.

A call's way through the package, one folder a step: :mod:`.ops` (the calls: the two convolutions,
the anti-aliased activation, ``patch_mlx``) -> :mod:`.geometry` (the call validated, no arrays) ->
:mod:`.choice` (one function picks the backend) -> :mod:`.backends` (each backend) -> arrays. Above:
:mod:`.nn` (layers), :mod:`.models` (whole decoders), :mod:`.bench` and :mod:`.cli`; below:
:mod:`.tuning` (measured choices) and :mod:`.runtime` (the BLAS, MLX's buffer cache, streams, compiled helpers, thread exit).
"""

# An optimized BLAS under MLX's CPU matmul on Linux, whatever was imported before (runtime/blas.py).
from .runtime import blas as _blas

_blas.load()
# MLX's CPU-only build caches 32 MiB of freed buffers; a decoder's step frees hundreds (runtime/buffer_cache.py).
from .runtime import buffer_cache as _buffer_cache  # noqa: E402

_buffer_cache.raise_cpu_limit()
# MLX loads any compiled CPU kernel it finds in its folder of them, under the shared /tmp on Linux (runtime/kernel_folder.py).
from .runtime import kernel_folder as _kernel_folder  # noqa: E402

_kernel_folder.secure()
from .runtime.blas import blas_info  # noqa: E402
from .runtime import thread_exit as _thread_exit  # noqa: E402, F401  (threads empty MLX's caches as they end)

from .models import bigvgan, hifigan  # noqa: E402
from .nn import initializers, interop, keras  # noqa: E402
from .nn.activations import Snake  # noqa: E402
from .nn.anti_aliased import Activation1d, kaiser_sinc_filter  # noqa: E402
from .ops.anti_aliased import anti_aliased_activation  # noqa: E402
from .nn.config import ConvConfig  # noqa: E402
from .nn.keras import Conv1DTranspose  # noqa: E402
from .nn.layers import Conv1d, ConvTranspose1d  # noqa: E402
from .nn.streaming import StreamingConv1d, StreamingConvTranspose1d  # noqa: E402
from .ops.functional import available_backends, conv1d, conv_transpose1d  # noqa: E402
from .ops.patch import patch_mlx, patched_mlx, unpatch_mlx  # noqa: E402
from .nn.convert import convert  # noqa: E402
from .streaming import stream  # noqa: E402
from .geometry.records import conv1d_output_length, output_length, resolve_padding  # noqa: E402
from .tuning import tuner as autotune  # noqa: E402
from .tuning.tuner import set_autotune  # noqa: E402
from .version import __version__  # noqa: E402


__all__ = [
    "available_backends", "blas_info", "conv1d", "conv1d_output_length", "conv_transpose1d", "output_length", "resolve_padding",
    "ConvTranspose1d", "Conv1d", "ConvConfig", "Conv1DTranspose", "StreamingConvTranspose1d", "StreamingConv1d", "Snake",
    "Activation1d", "anti_aliased_activation", "kaiser_sinc_filter",
    "initializers", "interop", "autotune", "hifigan", "bigvgan", "keras", "set_autotune", "__version__",
    "patch_mlx", "unpatch_mlx", "patched_mlx", "convert", "stream",
]
