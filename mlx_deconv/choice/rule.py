"""The ``"auto"`` rule: which backend a call's geometry gets on a stream, without measuring.

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

On a CPU stream the naive-work thresholds move with the input's dtype (MLX's float16 loop is
slower: :data:`HALF_PRECISION_WORK_FACTOR`).

For ``conv1d``: ``"gemm"`` on a CPU stream (MLX's CPU op loops naively for a
dilation > 1); MLX's own ``"builtin"`` on a GPU stream, whose conv kernels are
tuned for it (reasoned, not measured: no GPU was at hand).

Measured on a Linux CPU only; the GPU and macOS thresholds are reasoned:
``bench`` on a Mac prints what ``auto`` chose next to every backend's time.
For the anti-aliased activation: ``"metal"`` on a Metal GPU stream, else ``"polyphase"``, or ``"unfused"``
below :data:`FUSED_MIN_ELEMENTS` input elements.
"""

from __future__ import annotations

from typing import Optional, Union

import mlx.core as mx

from ..backends import BACKENDS, builtin, op_of, winograd
from ..geometry.activation import ActivationGeometry
from ..geometry.records import Conv1dGeometry, Geometry
from ..runtime.devices import cpu_blas, is_gpu

AnyGeometry = Union[Geometry, Conv1dGeometry]

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


def _winograd_pays(geom: Geometry, stream: mx.Stream) -> bool:
    if is_gpu(stream):
        return False  # its look at the values (non-finite ones take gemm) would wait for the GPU each call
    blas = cpu_blas(stream)
    least = {"reference": WINOGRAD_MIN_DEPTH_REFERENCE_BLAS,
             "optimized": WINOGRAD_MIN_DEPTH_OPTIMIZED_BLAS}.get(blas, WINOGRAD_MIN_DEPTH)
    return (least is not None and winograd.applies(geom) and geom.in_per_group * geom.kernel_size >= least
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


#: How much more a half-precision call's naive work counts on a CPU stream, so that the package's path takes
#: over from a smaller call. MLX's float16 loop took 1.46x its float32 time (median over the 46 loop cells
#: of the fitting grid with 3e4-1e6 FLOPs; quartiles 1.24-1.70 over its 70 loop cells of 2e4-3e6), and the
#: package's float16 path, which computes in float32 between two casts, 1.17x its own; their ratio is 1.25.
#: MLX's bfloat16 loop took 1.06x (quartiles 1.00-1.08): no change. (Paired in one process, AMD EPYC, MKL,
#: a loaded machine; not the 8x measured before.) Where MLX's op is a matmul its half-precision time was
#: 1.0-3x its float32 time and the package's moved alike, so those thresholds stay.
HALF_PRECISION_WORK_FACTOR = {"float16": 1.25, "bfloat16": 1.0}
#: Depthwise ``conv1d`` with a stride (BigVGAN's low-pass filter: K=12, stride 2): the package's strided
#: path took 1.1-1.6x the time of MLX's loop from 2e5 to 8e5 FLOPs and 0.26-0.74x from 1.6e6 on (the
#: ``depthwise-strided`` cells of the fitting grid, L 16-1024, C 8-512), so the thin limit applies.
BUILTIN_MAX_NAIVE_WORK_STRIDED_DEPTHWISE_CONV1D = BUILTIN_MAX_NAIVE_WORK_THIN


def _work_factor(dtype) -> float:
    """:data:`HALF_PRECISION_WORK_FACTOR` of ``dtype`` (an ``mx.Dtype`` or its name); 1 for float32."""
    return HALF_PRECISION_WORK_FACTOR.get(str(dtype).rsplit(".", 1)[-1], 1.0)


def builtin_is_faster(geom: AnyGeometry, blas: str, dtype=mx.float32) -> bool:
    """Where MLX's own op beats every path of the package on a CPU stream behind ``blas``
    (``cpu_blas``'s kind; measured over the short-calls fitting grid: docs/performance.md).

    Args:
        geom: the call's geometry (either op).
        blas (str): :func:`~mlx_deconv.runtime.devices.cpu_blas`'s kind.
        dtype: the input's dtype: MLX's loop is slower in float16 (:data:`HALF_PRECISION_WORK_FACTOR`).
            Default: ``mx.float32``.

    Returns:
        bool: True where ``"builtin"`` should run the call.
    """
    if mlx_matmuls(geom) and op_of(geom) == "conv1d" and geom.groups == 1 and blas in ("reference", "optimized"):
        return not dense_conv1d_gemm_pays(geom, blas)
    if mlx_matmuls(geom):
        return (geom.batch * geom.output_length < GEMM_MIN_ROWS_WHERE_MLX_MATMULS
                or geom.in_per_group < GEMM_MIN_DEPTH_WHERE_MLX_MATMULS)
    # On a short input MLX's loop skips the padding rows; not a padded dilated conv1d's, slow all the same
    # (4 x 128, K=3, dilation 3: 0.28 ms against gemm's 0.11), nor one "builtin" pads first.
    padded = op_of(geom) == "conv1d" and bool(geom.pad_left or geom.pad_right) and geom.dilation > 1
    short = geom.batch * geom.length <= SHORT_INPUT_ROWS and not (
        padded or (op_of(geom) == "conv1d" and builtin.pads_input(geom)))
    if short and blas == "reference":
        return True
    work = naive_work(geom) * _work_factor(dtype)
    transposed = op_of(geom) == "conv_transpose1d"
    if transposed and geom.depthwise and not short:
        return work < BUILTIN_MAX_NAIVE_WORK_DEPTHWISE
    if not transposed and geom.depthwise and geom.stride > 1:
        return work < BUILTIN_MAX_NAIVE_WORK_STRIDED_DEPTHWISE_CONV1D
    thin = short or (transposed and (geom.groups > 1 or (geom.stride > 1 and geom.in_per_group * geom.out_channels < 256)))
    return work < (BUILTIN_MAX_NAIVE_WORK_THIN if thin else BUILTIN_MAX_NAIVE_WORK)


def _convolution(geom: AnyGeometry, stream: mx.Stream, dtype) -> str:
    if op_of(geom) == "conv1d":
        if is_gpu(stream):
            return "builtin"
        return "builtin" if builtin_is_faster(geom, cpu_blas(stream), dtype) else "gemm"
    if BACKENDS["metal"].available(stream) and geom.in_per_group <= METAL_MAX_IN_PER_GROUP:
        return "metal"
    if not is_gpu(stream) and builtin_is_faster(geom, cpu_blas(stream), dtype):
        return "builtin"
    return "winograd" if _winograd_pays(geom, stream) else "gemm"



#: On a CPU stream, below this many input elements (``N * L * C``) the fused form's dozen small
#: kernels cost more than the unfused ops' few (measured: 0.46 ms against 0.54 at 32 x 32, 0.53
#: against 0.64 at 64 x 64; docs/performance.md).
FUSED_MIN_ELEMENTS = 2048


def _activation(geom: ActivationGeometry, stream: mx.Stream) -> str:
    """The Metal kernel on a Metal stream; elsewhere the polyphase form, or the unfused steps for the
    tiniest calls (:data:`FUSED_MIN_ELEMENTS`)."""
    if BACKENDS["metal"].available(stream):
        return "metal"
    return "polyphase" if geom.batch * geom.length * geom.channels >= FUSED_MIN_ELEMENTS else "unfused"


def auto(geom, stream: mx.Stream, dtype=mx.float32) -> str:
    """The backend the rule picks for ``geom`` on ``stream`` (of any op) for an input of ``dtype``.

    Args:
        geom: the call's geometry.
        stream (mx.Stream): where it runs.
        dtype: the input's dtype (the convolutions' CPU thresholds depend on it). Default: ``mx.float32``.

    Returns:
        str: a backend's name.
    """
    if isinstance(geom, ActivationGeometry):
        return _activation(geom, stream)
    return _convolution(geom, stream, dtype)
