"""The backends, the record each one fills in, and the rule that picks one per stream.

Every backend is a :class:`Backend` record in :data:`BACKENDS`; the rest of
the package (``functional``, ``bench``, the CLI) asks the record and never
tests a backend's name. A run function is ``(x, weight, bias, geometry) -> y``
on NLC input and an MLX-layout weight; it trusts the geometry and validates
nothing. The geometry's type says the op: :class:`~mlx_deconv.geometry.records.Geometry`
for ``conv_transpose1d``, :class:`~mlx_deconv.geometry.records.Conv1dGeometry` for ``conv1d``.

The ``"auto"`` rule for ``conv_transpose1d``:
    * Metal GPU stream, layers where each output channel reads at most
      :data:`METAL_MAX_IN_PER_GROUP` input channels (depthwise, grouped,
      few-channel): ``"metal"``. There the matmul of ``gemm`` is too thin to
      keep the GPU busy, and MLX's own op multiplies its stuffed zeros.
    * Otherwise, on any stream: ``"winograd"`` where minimal filtering applies
      (taps on 2 or 3 consecutive input rows, as ``K = 2*stride`` in vocoders)
      and each output sums enough products to pay for its extra passes
      (:data:`WINOGRAD_MIN_DEPTH_REFERENCE_BLAS` on a Linux CPU behind MLX's
      bundled BLAS, never behind the optimized BLAS of :mod:`mlx_deconv.runtime.blas`,
      :data:`WINOGRAD_MIN_DEPTH` behind other CPU BLAS such as Accelerate, never
      on a GPU stream, where its look at the values would wait for the GPU on
      every call); else ``"gemm"`` (matmul +
      overlap-add; matmul-free when every output channel reads one input
      channel, as in depthwise). MLX's CPU op takes a naive loop for every
      stride or dilation > 1; on GPUs a matmul is hard to beat with a gather
      kernel for wide layers.
    * Never ``"metal"`` on MLX's CUDA backend.

For ``conv1d``: ``"gemm"`` on a CPU stream (MLX's CPU op loops naively for a
dilation > 1); MLX's own ``"builtin"`` on a GPU stream, whose conv kernels are
tuned for it (reasoned, not measured: no GPU was at hand).

Measured on a Linux CPU only; the GPU and macOS thresholds are reasoned:
``bench`` on a Mac prints what ``auto`` chose next to every backend's time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Union

import mlx.core as mx

from ..runtime.devices import cpu_blas, is_gpu, is_metal
from ..geometry.records import Conv1dGeometry, Geometry
from . import builtin, gemm, metal, winograd

Run = Callable[..., mx.array]
AnyGeometry = Union[Geometry, Conv1dGeometry]
OPS = ("conv_transpose1d", "conv1d")


def _anywhere(stream: mx.Stream) -> bool:
    return True


def _always(geom: AnyGeometry) -> bool:
    return True


def op_of(geom: AnyGeometry) -> str:
    """``"conv1d"`` or ``"conv_transpose1d"``: the op a geometry describes."""
    return "conv1d" if isinstance(geom, Conv1dGeometry) else "conv_transpose1d"


@dataclass(frozen=True)
class Backend:
    """What the package needs to know about one backend.

    Attributes:
        name: the name users pass as ``backend=``.
        conv_transpose1d: the run function of the transposed op.
        conv1d: the run function of the direct op, or None where the backend has none.
        available: ``available(stream)``: whether it can run on that stream.
        applies: ``applies(geometry)``: whether it computes that call its own
            way (``"winograd"`` only where minimal filtering applies; elsewhere
            a forced ``"winograd"`` runs as ``"gemm"``).
        compilable: whether calls may be wrapped in ``mx.compile`` (not a
            backend that launches its own kernel outside MLX's tracing).
    """

    name: str
    conv_transpose1d: Run
    conv1d: Optional[Run] = None
    available: Callable[[mx.Stream], bool] = _anywhere
    applies: Callable[[AnyGeometry], bool] = _always
    compilable: bool = True

    def run(self, op: str) -> Optional[Run]:
        """The run function of ``op`` (``"conv_transpose1d"`` or ``"conv1d"``), or None."""
        return getattr(self, op)


def _on_metal(stream: mx.Stream) -> bool:
    return is_metal(stream)  # looked up per call, so tests can stand in for a Mac's GPU stream


def _winograd_applies(geom: AnyGeometry) -> bool:
    return isinstance(geom, Geometry) and winograd.applies(geom)


BACKENDS: Dict[str, Backend] = {
    "builtin": Backend("builtin", builtin.conv_transpose1d, getattr(builtin, "conv1d", None)),
    "gemm": Backend("gemm", gemm.conv_transpose1d, gemm.conv1d),
    # winograd looks at its input's values (non-finite ones take the gemm path): no compiling.
    "winograd": Backend("winograd", winograd.conv_transpose1d, applies=_winograd_applies, compilable=False),
    "metal": Backend("metal", metal.conv_transpose1d, available=_on_metal, compilable=False),
}

#: On Metal, layers with at most this many input channels per group go to the kernel.
METAL_MAX_IN_PER_GROUP = 32
#: ``"winograd"`` saves a third of the matmul FLOPs and adds a few passes over
#: the output, so it pays once each output sums enough products
#: (``C_in/groups * K``) and the call has enough of them: behind the reference BLAS,
#: depth 256 and 4e6 FLOPs (depth 128 lost up to 1024 input rows, 0.53-0.85x of gemm;
#: figures: ``docs/performance.md``).
WINOGRAD_MIN_DEPTH_REFERENCE_BLAS = 256
WINOGRAD_MIN_FLOPS_REFERENCE_BLAS = 4_000_000
#: Behind Accelerate (15-40 FLOP per byte of bandwidth) reasoned, not measured:
#: the same balance is reached about 8x deeper.
WINOGRAD_MIN_DEPTH = 512
#: Behind the optimized BLAS that :mod:`mlx_deconv.runtime.blas` loads on Linux, the
#: transforms cost about what the FLOPs they save do: gemm was faster up to depth
#: 4096, either could win at 8192, and gemm's forward+backward was much faster
#: there (figures: docs/performance.md). Autotuning takes winograd where it wins.
WINOGRAD_MIN_DEPTH_OPTIMIZED_BLAS: Optional[int] = None
#: On shorter inputs (``batch * length``) the transforms' fixed cost outweighs the FLOPs saved.
WINOGRAD_MIN_INPUT_ROWS = 32


def available_backends(stream: mx.Stream, op: str = "conv_transpose1d") -> List[str]:
    """Names of the backends that can run ``op`` on ``stream``."""
    return [b.name for b in BACKENDS.values() if b.run(op) is not None and b.available(stream)]


def usable_backends(geom: AnyGeometry, stream: mx.Stream) -> List[str]:
    """The backends of :func:`available_backends` that compute this geometry their own way
    (``"winograd"`` only where it is not ``"gemm"``)."""
    return [n for n in available_backends(stream, op_of(geom)) if BACKENDS[n].applies(geom)]


def _winograd_pays(geom: Geometry, stream: mx.Stream) -> bool:
    if is_gpu(stream):
        return False  # its look at the values (non-finite ones take gemm) would wait for the GPU each call
    blas = cpu_blas(stream)
    least = {"reference": WINOGRAD_MIN_DEPTH_REFERENCE_BLAS,
             "optimized": WINOGRAD_MIN_DEPTH_OPTIMIZED_BLAS}.get(blas, WINOGRAD_MIN_DEPTH)
    return (least is not None and BACKENDS["winograd"].applies(geom) and geom.in_per_group * geom.kernel_size >= least
            and geom.batch * geom.length >= WINOGRAD_MIN_INPUT_ROWS
            and (blas != "reference" or geom.flops >= WINOGRAD_MIN_FLOPS_REFERENCE_BLAS))


#: Below this much work (FLOPs of MLX's naive loop, see :func:`naive_work`) MLX's own op is
#: faster: its loop costs less than the few MLX ops of a matmul path (grid: docs/performance.md).
BUILTIN_MAX_NAIVE_WORK = 100_000
#: Grouped transposed layers, and upsampling layers of few channels (``C_in/G * C_out < 256``),
#: pay more per FLOP on the matmul path: thin matmuls and a longer overlap-add.
BUILTIN_MAX_NAIVE_WORK_THIN = 1_000_000
#: Depthwise transposed layers take a matmul-free path, cheaper than a thin matmul.
BUILTIN_MAX_NAIVE_WORK_DEPTHWISE = 200_000
#: Where MLX's CPU op is a matmul itself, the package's path wins only on long, wide signals:
#: from this many output rows (``batch * output_length``) and input channels per group on.
GEMM_MIN_ROWS_WHERE_MLX_MATMULS = 512
GEMM_MIN_DEPTH_WHERE_MLX_MATMULS = 64
#: On an input of at most this many samples (``batch * length``) MLX's loop visits only real taps,
#: so the thin limit applies to every layer; behind the reference BLAS, whose matmul runs at
#: about that loop's rate, MLX's op wins there at any width.
SHORT_INPUT_ROWS = 4


def mlx_matmuls(geom: AnyGeometry) -> bool:
    """Whether MLX's CPU op computes this call by one unfolded matmul, not its naive loop:
    ``conv1d`` without dilation and not depthwise, the transposed op only for stride 1, no dilation, no groups."""
    if op_of(geom) == "conv1d":
        return geom.dilation == 1 and geom.in_per_group > 1
    return geom.stride == 1 and geom.dilation == 1 and geom.groups == 1


def naive_work(geom: AnyGeometry) -> int:
    """FLOPs of MLX's naive loop: the call's own, times the stride for the transposed op,
    whose loop visits every tap of the zero-stuffed input."""
    return geom.flops * (geom.stride if op_of(geom) == "conv_transpose1d" else 1)


#: A dense undilated ``conv1d`` (MLX: one unfolded matmul on one thread) goes to ``gemm`` (unfolded
#: or row views, shared by the worker streams) where it pays, measured on Linux over L 16-2048,
#: C 16-512, K 3-11 (docs/performance.md). Behind the reference BLAS: from the FLOPs where the
#: call is split between the cores, or from this many output rows.
DENSE_CONV1D_GEMM_MIN_FLOPS_REFERENCE_BLAS = 20_000_000
DENSE_CONV1D_GEMM_MIN_ROWS = 1024
#: ... with at least this many input channels (at 8, MLX's op was 1.25-1.7x faster at 1024 rows).
DENSE_CONV1D_GEMM_MIN_DEPTH = 16
#: Behind the optimized BLAS, whose single matmul is fast: long signals, wide ones from 512 rows,
#: and very wide ones (C_in >= 256) from 64 rows once the call is worth splitting.
DENSE_CONV1D_WIDE = (512, 128)
DENSE_CONV1D_VERY_WIDE = (64, 256, 50_000_000)


def dense_conv1d_gemm_pays(geom: Conv1dGeometry, blas: str) -> bool:
    """Whether ``gemm`` beats MLX's op on an undilated, ungrouped ``conv1d`` behind a Linux BLAS."""
    rows, depth = geom.batch * geom.output_length, geom.in_per_group
    if rows >= DENSE_CONV1D_GEMM_MIN_ROWS and depth >= DENSE_CONV1D_GEMM_MIN_DEPTH:
        return True
    if blas == "reference":
        return geom.flops >= DENSE_CONV1D_GEMM_MIN_FLOPS_REFERENCE_BLAS
    wide_rows, wide_depth = DENSE_CONV1D_WIDE
    very_rows, very_depth, very_flops = DENSE_CONV1D_VERY_WIDE
    return ((rows >= wide_rows and depth >= wide_depth)
            or (rows >= very_rows and depth >= very_depth and geom.flops >= very_flops))


def builtin_is_faster(geom: AnyGeometry, blas: str) -> bool:
    """Where MLX's own op beats every path of the package on a CPU stream behind ``blas``
    (``cpu_blas``'s kind; measured over the short-calls grid: docs/performance.md)."""
    if mlx_matmuls(geom) and op_of(geom) == "conv1d" and geom.groups == 1 and blas in ("reference", "optimized"):
        return not dense_conv1d_gemm_pays(geom, blas)
    if mlx_matmuls(geom):
        return (geom.batch * geom.output_length < GEMM_MIN_ROWS_WHERE_MLX_MATMULS
                or geom.in_per_group < GEMM_MIN_DEPTH_WHERE_MLX_MATMULS)
    short = geom.batch * geom.length <= SHORT_INPUT_ROWS
    if short and blas == "reference":
        return True
    transposed = op_of(geom) == "conv_transpose1d"
    if transposed and geom.depthwise and not short:
        return naive_work(geom) < BUILTIN_MAX_NAIVE_WORK_DEPTHWISE
    thin = short or (transposed and (geom.groups > 1 or (geom.stride > 1 and geom.in_per_group * geom.out_channels < 256)))
    return naive_work(geom) < (BUILTIN_MAX_NAIVE_WORK_THIN if thin else BUILTIN_MAX_NAIVE_WORK)


def _auto(geom: AnyGeometry, stream: mx.Stream) -> str:
    if op_of(geom) == "conv1d":
        if is_gpu(stream):
            return "builtin"
        return "builtin" if builtin_is_faster(geom, cpu_blas(stream)) else "gemm"
    if BACKENDS["metal"].available(stream) and geom.in_per_group <= METAL_MAX_IN_PER_GROUP:
        return "metal"
    if not is_gpu(stream) and builtin_is_faster(geom, cpu_blas(stream)):
        return "builtin"
    return "winograd" if _winograd_pays(geom, stream) else "gemm"


def resolve_backend(name: str, geom: AnyGeometry, stream: mx.Stream) -> str:
    """Resolves ``"auto"`` to a backend name, or checks a forced one.

    A forced ``"winograd"`` stays ``"winograd"`` on any transposed geometry:
    where minimal filtering does not apply it runs as ``"gemm"``, as MLX's
    fused ``mx.fast`` ops fall back to their unfused form.

    Raises:
        ValueError: for an unknown name, or one that cannot run this op on ``stream``.
    """
    if name == "auto":
        name = _auto(geom, stream)
    if name not in BACKENDS:
        raise ValueError(f"backend must be 'auto' or one of {sorted(BACKENDS)}, got {name!r}")
    op = op_of(geom)
    usable = available_backends(stream, op)
    if name not in usable:
        raise ValueError(f"backend={name!r} is not available for {op} on {stream}; available: {usable}")
    return name
