"""What the package runs on: :mod:`.blas` (an optimized CBLAS under MLX on Linux), :mod:`.devices` (streams),
:mod:`.compiling` (compiled helpers) and :mod:`.old_names` (the flat module names from before the folders).

Nothing here may import ``mlx.core`` at import time: :mod:`.blas` must load before it.
"""
