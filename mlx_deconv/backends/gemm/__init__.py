"""Backend ``"gemm"``: both ops as matmuls plus an overlap-add (transposed) or row views (direct), no zero-stuffing.

:mod:`.transposed` runs the transposed op (its docstring has the table from kind of layer to path,
:mod:`.transposed_paths`); :mod:`.conv1d_paths` runs ``conv1d``, its adjoint, on the same layout
(:mod:`.tap_layout`, :mod:`.slabs`, :mod:`.planes`) and scheduling (:mod:`.schedule`: blocks, worker
streams, in-place writes); :mod:`.minimal_filtering` holds the maths the ``"winograd"`` backend adds.
"""

from .conv1d_paths import conv1d  # noqa: F401
from .schedule import DEFAULT_POLICY, BlockPolicy, worker_streams  # noqa: F401
from .tap_layout import slab_shifts  # noqa: F401  (the rule every path shares)
from .transposed import conv_transpose1d, in_compute_dtype, run_path  # noqa: F401
