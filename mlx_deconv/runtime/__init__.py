"""What the package runs on: :mod:`.blas` (an optimized CBLAS under MLX on Linux), :mod:`.devices` (streams)
and :mod:`.compiling` (compiled helpers).

Nothing here may import ``mlx.core`` at import time: :mod:`.blas` must load before it.
"""
