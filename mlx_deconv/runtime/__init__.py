"""What the package runs on: :mod:`.blas` (an optimized CBLAS under MLX on Linux), :mod:`.devices` (streams),
:mod:`.compiling` (compiled helpers) and :mod:`.thread_exit` (threads empty MLX's caches as they end).

Nothing here may import ``mlx.core`` at import time: :mod:`.blas` must load before it.
"""
