"""What the ops run on: :mod:`.blas` (an optimized CBLAS under MLX on Linux), :mod:`.devices` (streams),
:mod:`.compiling` (compiled helpers) and :mod:`.metal_emulator` (Metal kernels run on the CPU).

Nothing here may import ``mlx.core`` at import time: :mod:`.blas` must load before it.
"""
