"""What the package runs on: :mod:`.blas` (an optimized CBLAS under MLX on Linux), :mod:`.devices` (streams),
:mod:`.worker_streams` (the CPU streams that share work), :mod:`.compiling` (compiled helpers), :mod:`.thread_exit` (threads empty MLX's caches as they end), and the folders
on disk: :mod:`.cache_folder` (the package's), :mod:`.kernel_folder` (MLX's compiled CPU kernels, made private)
and :mod:`.trust` (whether another local user could change a path).

Nothing here may import ``mlx.core`` at import time: :mod:`.blas` must load before it.
"""
