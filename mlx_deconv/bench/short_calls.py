"""``bench``'s short calls: small convolutions as streaming and real decoders make them, ``auto`` against
MLX's function called directly.

One part of the benchmark in one module (about 440 lines): its two grids, their translation to MLX's
own arguments, the paired timing and the tables are one measurement.

A streaming vocoder feeds a few mel frames per step and a codec decodes tens of latent frames, so the
first stages of a decoder run on signals of 1 to 1024 samples. Each cell is one call of either op,
timed three ways, interleaved round by round: MLX's own function (``mx.conv1d`` /
``mx.conv_transpose1d``) called directly with MLX's arguments, which is what a user would call
instead; the package with ``backend="auto"``; and the package with ``backend="builtin"`` (MLX's op
behind the package's call). The headline ratio, ``mx / auto``, is MLX's time over ``auto``'s, paired
per round: above 1 where ``auto`` is faster than calling MLX.

Two grids:

* :data:`SHORT_CALLS`, the **fitting grid**: batch 1, float32 (or ``bench --dtype``), ``C_in = C_out``
  but for upsampling layers, L 1-1024. The thresholds of :mod:`mlx_deconv.choice.rule` were fitted on it.
* :data:`HELD_OUT`, the **held-out grid**, on which no threshold was fitted: batch 2-4, odd lengths
  (7, 33, 129, 515), ``C_in != C_out``, float16, bfloat16 and float32, groups 2 and 8, both ops,
  dense, depthwise, dilated and strided layers. Its cells keep their own dtype.

Every cell is one MLX can express with its own arguments (:meth:`ShortCall.mlx_kwargs`: symmetric
``padding``, ``output_padding``, and for the transposed op a padding of at most ``dilation*(K-1)``);
a grid holding a cell MLX cannot express is refused when the module loads, since such a cell has no
user's alternative to compare with. Each cell's outputs of ``auto`` and of MLX are compared with a
float64 reference before timing (:func:`agreement`).
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import asdict, dataclass
from typing import Dict, List, Optional, Sequence

import mlx.core as mx
import numpy as np

from ..choice import choose
from ..geometry.validation import conv1d_geometry, conv_geometry
from ..ops import reference
from ..ops.functional import conv1d, conv_transpose1d
from .timing import Clock, Progress, timed_medians

#: The grids' names, in the rows' ``"grid"`` field.
FITTING, HELD_OUT_GRID = "fitting", "held-out"
#: A cell whose ``mx / auto`` is below this counts as slower than MLX.
SLOWER = 0.9


@dataclass(frozen=True)
class ShortCall:
    """One call of ``op`` (``"conv1d"`` or ``"conv_transpose1d"``) on ``(batch, length, channels)``.

    ``channels`` go in; ``outputs`` come out (None: as many as go in, half as many for a dense
    transposed layer with ``stride > 1``, as a decoder's upsampling stages halve them);
    ``groups == channels`` is depthwise. ``dtype`` (None: the run's) is ``"float32"``, ``"float16"``
    or ``"bfloat16"``.
    """

    op: str
    kind: str
    length: int
    channels: int
    kernel_size: int
    stride: int = 1
    dilation: int = 1
    groups: int = 1
    batch: int = 1
    outputs: Optional[int] = None
    dtype: Optional[str] = None

    @property
    def name(self) -> str:
        name = f"{self.op}-{self.kind}-L{self.length}-C{self.channels}-K{self.kernel_size}"
        if self.outputs is not None:
            name += f"-to{self.outputs}"
        if self.batch != 1:
            name += f"-N{self.batch}"
        return name + (f"-{self.dtype}" if self.dtype else "")

    @property
    def out_channels(self) -> int:
        if self.outputs is not None:
            return self.outputs
        if self.op == "conv_transpose1d" and self.stride > 1 and self.groups == 1:
            return max(1, self.channels // 2)
        return self.channels

    def kwargs(self) -> dict:
        """The package's arguments: symmetric padding (``conv1d``: half the dilated span; the
        transposed op: ``(K - stride) // 2``, as vocoders crop)."""
        span = self.dilation * (self.kernel_size - 1)
        if self.op == "conv1d":
            return dict(stride=self.stride, padding=span // 2, dilation=self.dilation, groups=self.groups)
        return dict(stride=self.stride, padding=max(0, (self.kernel_size - self.stride) // 2), dilation=self.dilation,
                    groups=self.groups)

    def mlx_kwargs(self) -> dict:
        """The same call in MLX's own arguments, for ``mx.conv1d`` / ``mx.conv_transpose1d``.

        The package's symmetric ``padding`` ``p`` of ``conv1d`` is MLX's ``padding=p``. For the
        transposed op the package crops ``p`` samples of each end of the full output, as MLX does with
        ``padding=p, output_padding=0``; MLX takes that only for ``p <= dilation*(K-1)``.

        Raises:
            ValueError: for a cell MLX's function cannot express.
        """
        kw = self.kwargs()
        if self.op == "conv1d":
            return kw
        if kw["padding"] > self.dilation * (self.kernel_size - 1):
            raise ValueError(f"{self.name}: MLX's conv_transpose1d cannot crop padding={kw['padding']} "
                             f"> dilation*(K-1)={self.dilation * (self.kernel_size - 1)}")
        return dict(kw, output_padding=0)

    def weight_shape(self) -> tuple:
        return (self.out_channels, self.kernel_size, self.channels // self.groups)


def _cells(op: str, length: int, channels: int) -> List[ShortCall]:
    """The layer kinds of one (op, length, channels) point of the fitting grid."""
    if op == "conv1d":
        cells = [ShortCall(op, "dense", length, channels, 3), ShortCall(op, "dense", length, channels, 7),
                 ShortCall(op, "dilated", length, channels, 3, dilation=3),
                 ShortCall(op, "strided", length, channels, 4, stride=2)]
    else:
        cells = [ShortCall(op, "dense", length, channels, 3), ShortCall(op, "up2", length, channels, 4, stride=2),
                 ShortCall(op, "up8", length, channels, 16, stride=8)]
    cells.append(ShortCall(op, "depthwise", length, channels, 12 if op == "conv_transpose1d" else 7,
                           stride=2 if op == "conv_transpose1d" else 1, groups=channels))
    if op == "conv1d":  # BigVGAN's low-pass filter after each anti-aliased activation
        cells.append(ShortCall(op, "depthwise-strided", length, channels, 12, stride=2, groups=channels))
    if channels >= 8:
        cells.append(ShortCall(op, "grouped", length, channels, 7, groups=4))
    return cells


def _has_output(cell: ShortCall) -> bool:
    """Whether the padded input holds the dilated kernel (a strided conv1d on L=1 does not)."""
    span = cell.dilation * (cell.kernel_size - 1)
    return cell.op == "conv_transpose1d" or cell.length + 2 * (span // 2) > span


def _expressible(cells: List[ShortCall]) -> List[ShortCall]:
    for cell in cells:
        cell.mlx_kwargs()  # raises for a cell MLX's function cannot express
    return cells


#: The fitting grid: L from 1 to 1024, few to many channels, every layer kind, both ops (the largest calls
#: left out). The rule's thresholds were fitted on it.
SHORT_CALLS: List[ShortCall] = _expressible([
    cell for op in ("conv1d", "conv_transpose1d") for length in (1, 4, 16, 64, 256, 1024)
    for channels in (1, 8, 32, 128, 512) for cell in _cells(op, length, channels)
    if length * channels * cell.kernel_size <= 1024 * 512 * 4 and _has_output(cell)])

_C, _T = "conv1d", "conv_transpose1d"
#: The held-out grid: no threshold was fitted on it (batch 2-4, odd lengths, C_in != C_out, half
#: precision, groups 2 and 8, both ops; dense, depthwise, dilated, strided).
HELD_OUT: List[ShortCall] = _expressible([
    ShortCall(_C, "dense", 7, 24, 5, batch=2, outputs=40, dtype="float32"),
    ShortCall(_C, "dense", 33, 48, 3, batch=3, outputs=24, dtype="float16"),
    ShortCall(_C, "dense", 129, 40, 7, batch=2, outputs=72, dtype="bfloat16"),
    ShortCall(_C, "dense", 515, 12, 5, batch=4, outputs=20, dtype="float32"),
    ShortCall(_C, "dilated", 33, 24, 3, dilation=2, batch=2, outputs=40, dtype="float16"),
    ShortCall(_C, "dilated", 129, 40, 5, dilation=3, batch=3, outputs=56, dtype="float32"),
    ShortCall(_C, "dilated", 515, 20, 3, dilation=5, batch=2, outputs=12, dtype="bfloat16"),
    ShortCall(_C, "strided", 129, 24, 4, stride=2, batch=2, outputs=48, dtype="float32"),
    ShortCall(_C, "strided", 33, 40, 6, stride=3, batch=4, outputs=20, dtype="bfloat16"),
    ShortCall(_C, "strided", 515, 16, 8, stride=4, batch=2, outputs=24, dtype="float16"),
    ShortCall(_C, "depthwise", 129, 48, 7, groups=48, batch=2, dtype="float16"),
    ShortCall(_C, "depthwise", 515, 24, 12, stride=2, groups=24, batch=3, dtype="float32"),
    ShortCall(_C, "depthwise", 33, 72, 5, dilation=2, groups=72, batch=2, dtype="bfloat16"),
    ShortCall(_C, "grouped", 129, 48, 5, groups=2, batch=2, outputs=64, dtype="float32"),
    ShortCall(_C, "grouped", 33, 64, 3, groups=8, batch=3, outputs=32, dtype="float16"),
    ShortCall(_C, "grouped", 515, 40, 7, dilation=2, groups=8, batch=2, outputs=80, dtype="bfloat16"),
    ShortCall(_C, "grouped", 7, 24, 3, groups=2, batch=4, outputs=36, dtype="float32"),
    ShortCall(_T, "dense", 7, 24, 3, batch=2, outputs=40, dtype="float32"),
    ShortCall(_T, "dense", 33, 48, 5, batch=3, outputs=24, dtype="float16"),
    ShortCall(_T, "up2", 129, 40, 4, stride=2, batch=2, outputs=20, dtype="bfloat16"),
    ShortCall(_T, "up3", 33, 24, 6, stride=3, batch=2, outputs=12, dtype="float32"),
    ShortCall(_T, "up4", 7, 64, 8, stride=4, batch=4, outputs=32, dtype="float16"),
    ShortCall(_T, "up8", 33, 32, 16, stride=8, batch=2, outputs=16, dtype="bfloat16"),
    ShortCall(_T, "up2", 515, 12, 4, stride=2, batch=3, outputs=20, dtype="float32"),
    ShortCall(_T, "dilated", 129, 24, 3, dilation=3, batch=2, outputs=40, dtype="float16"),
    ShortCall(_T, "dilated", 33, 40, 5, dilation=2, batch=2, outputs=24, dtype="bfloat16"),
    ShortCall(_T, "depthwise", 129, 24, 12, stride=2, groups=24, batch=2, dtype="float16"),
    ShortCall(_T, "depthwise", 33, 48, 7, groups=48, batch=3, dtype="float32"),
    ShortCall(_T, "depthwise", 515, 16, 6, stride=3, groups=16, batch=2, dtype="bfloat16"),
    ShortCall(_T, "grouped", 129, 32, 4, stride=2, groups=2, batch=2, outputs=48, dtype="float32"),
    ShortCall(_T, "grouped", 33, 64, 7, groups=8, batch=2, outputs=32, dtype="bfloat16"),
    ShortCall(_T, "grouped", 7, 48, 3, groups=8, batch=4, outputs=72, dtype="float16"),
    ShortCall(_T, "grouped", 515, 20, 3, dilation=2, groups=2, batch=2, outputs=12, dtype="float32"),
])


def _data(cell: ShortCall, dtype):
    kx, kw = mx.random.split(mx.random.key(2))
    x = mx.random.normal((cell.batch, cell.length, cell.channels), key=kx).astype(dtype)
    w = mx.random.normal(cell.weight_shape(), key=kw).astype(dtype)
    mx.eval(x, w)
    return x, w


def _geometry(cell: ShortCall, x, w):
    check = conv1d_geometry if cell.op == "conv1d" else conv_geometry
    return check(x.shape, w.shape, **cell.kwargs())[0]


def reference_output(cell: ShortCall, x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """The cell's output in float64 from the definition (gather form for ``conv1d``; the package's
    float64 oracle for the transposed op), of NLC ``x`` and an MLX-layout ``w``."""
    x, w = np.asarray(x, np.float64), np.asarray(w, np.float64)
    geom = (conv1d_geometry if cell.op == "conv1d" else conv_geometry)(x.shape, w.shape, **cell.kwargs())[0]
    if cell.op == "conv_transpose1d":
        return reference.conv_transpose1d(x, w, None, geom)
    s, d, g = cell.stride, cell.dilation, cell.groups
    xp = np.pad(x, ((0, 0), (geom.pad_left, geom.pad_right), (0, 0)))
    cig, cog, out = x.shape[2] // g, w.shape[0] // g, geom.output_length
    y = np.zeros((x.shape[0], out, w.shape[0]))
    for k in range(cell.kernel_size):
        rows = xp[:, k * d: k * d + s * (out - 1) + 1: s]  # (N, out, C_in): y[t] reads x[t*s + k*d - left]
        for j in range(g):
            y[..., j * cog:(j + 1) * cog] += rows[..., j * cig:(j + 1) * cig] @ w[j * cog:(j + 1) * cog, k].T
    return y


def _rounding(dtype) -> float:
    return {mx.float32: 2.0 ** -23, mx.float16: 2.0 ** -10, mx.bfloat16: 2.0 ** -7}[dtype]


def agreement(cell: ShortCall, x: mx.array, w: mx.array, ours: mx.array, theirs: mx.array) -> Dict:
    """How far ``auto``'s output (``ours``) and MLX's (``theirs``) are from the float64 definition.

    Each output sample's error is measured in units of ``eps(dtype) * sum|x*w|`` over the products it sums:
    rounding the products, their sum and the output in the dtype stays within a few such units (measured:
    at most 2.6 in float32, 0.5 in float16 and bfloat16, over the held-out grid and a fifth of the fitting
    grid), while a wrong tap or channel is off by about ``1 / eps`` of them.

    Returns:
        dict: ``auto`` and ``mx``: the largest error in those units; ``agree``: both at most
        :data:`AGREE_UNITS` and the shapes equal.
    """
    if ours.shape != theirs.shape:
        return dict(auto=math.inf, mx=math.inf, agree=False)
    x64, w64 = (np.array(a.astype(mx.float32)) for a in (x, w))
    exact = reference_output(cell, x64, w64)
    bound = reference_output(cell, np.abs(x64), np.abs(w64))
    unit = _rounding(x.dtype) * bound + np.finfo(np.float32).tiny

    def units(y):
        return float(np.max(np.abs(np.array(y.astype(mx.float32), np.float64) - exact) / unit, initial=0.0))

    out = dict(auto=units(ours), mx=units(theirs))
    out["agree"] = out["auto"] <= AGREE_UNITS and out["mx"] <= AGREE_UNITS
    return out


#: The most rounding units (:func:`agreement`) an output sample may be off and still agree.
AGREE_UNITS = 4.0

#: Timed samples (rounds) per cell, and untimed calls before them: a call takes 0.1 ms, and an
#: evaluation's cost on a 2-core VM jumps between about 15 and 95 us, so each median takes many samples.
REPEAT, WARMUP = 41, 3
#: Rounds of a cell whose one call takes longer than a sample (its own noise is smaller; the grid's
#: slowest cells, MLX's loops over wide channels, would otherwise double the part's time).
LONG_REPEAT = 21
#: Each sample runs a cell's call back to back until about this long (at most :data:`MAX_NUMBER`
#: calls, the same count for every function of the cell), then divides: one 0.1 ms call's time
#: swings by 10% from one evaluation to the next.
SAMPLE_SECONDS, MAX_NUMBER = 4e-4, 8


def calls_per_sample(seconds: float) -> int:
    """How many back-to-back calls one sample of a cell makes, from one call's ``seconds``."""
    return max(1, min(MAX_NUMBER, math.ceil(SAMPLE_SECONDS / max(seconds, 1e-9))))


def _back_to_back(fn, number: int):
    """``fn`` called ``number`` times, each result evaluated; returns the last (the timer evaluates it)."""
    if number == 1:
        return fn

    def calls():
        for _ in range(number - 1):
            mx.eval(fn())
        return fn()
    return calls


def _one_call_seconds(fn, clock: Clock) -> float:
    """One warm call's seconds (its first call prepares and compiles)."""
    mx.eval(fn())
    start = clock()
    mx.eval(fn())
    return clock() - start


def run(cells: Optional[Sequence[ShortCall]] = None, stream=None, dtype=mx.float32, warmup: int = WARMUP,
        repeat: int = REPEAT, long_repeat: int = LONG_REPEAT, clock: Optional[Clock] = None,
        held_out: Optional[Sequence[ShortCall]] = None) -> List[Dict]:
    """Times MLX's function called directly, ``auto`` and ``builtin`` on every cell, round-robin.

    Each sample is :func:`calls_per_sample` back-to-back calls (counted from one
    warm call of MLX's function), its time divided by their number; a cell is timed
    ``repeat`` rounds, or ``long_repeat`` when that one call took longer than a sample.

    Args:
        cells: the fitting grid's cells. Default: :data:`SHORT_CALLS`.
        stream: where the calls run (None: the default stream).
        dtype: the fitting grid's dtype (the held-out cells keep their own). Default: ``mx.float32``.
        warmup, repeat, long_repeat: as above.
        clock: seconds as a float (tests inject their own).
        held_out: the held-out grid's cells. Default: :data:`HELD_OUT` when ``cells`` is None, else none.

    Returns:
        list[dict]: one row per cell: ``cell``, ``name``, ``grid`` (``"fitting"`` or ``"held-out"``),
        ``dtype``, ``auto`` (the rule's choice), ``number`` (calls per sample), ``seconds`` (per call) of
        ``"mx"`` (MLX's function called directly), ``"auto"`` and ``"builtin"``, ``mx_over_auto`` and
        ``builtin_over_auto`` (medians over rounds of the paired ratios) and ``values`` (:func:`agreement`).
    """
    from ..runtime.devices import resolve_stream

    if held_out is None:
        held_out = HELD_OUT if cells is None else ()
    cells = SHORT_CALLS if cells is None else cells
    stream = resolve_stream(stream)
    extra = {} if clock is None else dict(clock=clock)
    jobs = [(FITTING, cell) for cell in cells] + [(HELD_OUT_GRID, cell) for cell in held_out]
    progress = Progress(len(jobs))
    rows = []
    for grid, cell in jobs:
        cell_dtype = getattr(mx, cell.dtype) if cell.dtype else dtype
        x, w = _data(cell, cell_dtype)
        ours = conv1d if cell.op == "conv1d" else conv_transpose1d
        theirs = mx.conv1d if cell.op == "conv1d" else mx.conv_transpose1d
        kw, mlx_kw = cell.kwargs(), cell.mlx_kwargs()
        fns = {"mx": lambda: theirs(x, w, **mlx_kw, stream=stream),
               "auto": lambda: ours(x, w, **kw, stream=stream),
               "builtin": lambda: ours(x, w, **kw, backend="builtin", stream=stream)}
        values = agreement(cell, x, w, fns["auto"](), fns["mx"]())
        one_call = _one_call_seconds(fns["mx"], clock or time.perf_counter)
        number = calls_per_sample(one_call)
        rounds = repeat if one_call < SAMPLE_SECONDS else min(repeat, long_repeat)
        timings = timed_medians({n: _back_to_back(f, number) for n, f in fns.items()}, warmup, rounds, **extra)
        rows.append(dict(cell=asdict(cell), name=cell.name, grid=grid, dtype=str(cell_dtype).split(".")[-1],
                         auto=choose(_geometry(cell, x, w), stream, dtype=cell_dtype).name, number=number,
                         seconds={n: t.seconds / number for n, t in timings.items()},
                         mx_over_auto=paired_ratio(timings["mx"].samples, timings["auto"].samples),
                         builtin_over_auto=paired_ratio(timings["builtin"].samples, timings["auto"].samples),
                         values=values))
        progress.step(cell.name)
    return rows


def timing_phrase() -> str:
    """How the cells are timed, for captions."""
    return (f"{REPEAT} rounds after {WARMUP} warm-up ({LONG_REPEAT} for a call over {SAMPLE_SECONDS * 1e3:g} ms), "
            f"each sample up to {MAX_NUMBER} back-to-back calls lasting about {SAMPLE_SECONDS * 1e3:g} ms, "
            "MLX's function, `auto` and `builtin` interleaved in each round, each ratio the median over rounds "
            "of the ratio of the two times of that round")


def caption(rows: List[Dict]) -> str:
    """What the table compares, and which grid the rule was fitted on."""
    counts = {g: len(grid_rows) for g, grid_rows in by_grid(rows).items()}
    return (f"\"mx / auto\" is the time of MLX's function called directly (`mx.conv1d` / `mx.conv_transpose1d` "
            f"with MLX's arguments) over `backend=\"auto\"`'s: above 1, `auto` is faster. The rule's thresholds "
            f"were fitted on the fitting grid ({counts.get(FITTING, 0)} cells, batch 1); the held-out grid "
            f"({counts.get(HELD_OUT_GRID, 0)} cells: batch 2-4, odd lengths, C_in != C_out, float16/bfloat16/"
            f"float32, groups 2 and 8) was fitted on by nothing. \"values\": `auto`'s and MLX's outputs both "
            f"within {AGREE_UNITS:g} rounding units of the float64 definition")


def paired_ratio(numerator: Sequence[float], denominator: Sequence[float]) -> float:
    """The median over rounds of ``numerator / denominator``, each pair timed side by side in one round.

    A VM's slow spells last longer than a round, so they mostly cancel in a pair. On 89
    cells where both run the same call, the ratio of two medians of 21 ranged 0.84-1.06,
    this one 0.94-1.04, and with 41 rounds 0.96-1.05 (docs/performance.md).
    """
    if len(numerator) != len(denominator) or not numerator:
        raise ValueError(f"paired_ratio needs as many samples of each, got {len(numerator)} and {len(denominator)}")
    return statistics.median(a / b for a, b in zip(numerator, denominator))


def ratios(rows: List[Dict]) -> List[float]:
    """``mx / auto`` of every row (paired per round), above 1 where ``auto`` is faster than MLX's function."""
    return [r["mx_over_auto"] for r in rows]


def by_grid(rows: List[Dict]) -> Dict[str, List[Dict]]:
    """The rows of each grid, fitting first (rows without a ``grid`` are the fitting grid's)."""
    out: Dict[str, List[Dict]] = {}
    for grid in (FITTING, HELD_OUT_GRID):
        chosen = [r for r in rows if r.get("grid", FITTING) == grid]
        if chosen:
            out[grid] = chosen
    return out


def summary(rows: List[Dict]) -> Dict[str, Dict[str, Dict[str, float]]]:
    """Per grid and op: the cell count, the cells below :data:`SLOWER`, the minimum and the geometric
    mean of ``mx / auto``, and the cells whose values disagree."""
    out: Dict[str, Dict[str, Dict[str, float]]] = {}
    for grid, grid_rows in by_grid(rows).items():
        for op in ("conv1d", "conv_transpose1d"):
            op_rows = [r for r in grid_rows if r["cell"]["op"] == op]
            values = ratios(op_rows)
            if values:
                out.setdefault(grid, {})[op] = dict(
                    cells=len(values), below=sum(v < SLOWER for v in values), min=min(values),
                    geomean=math.exp(sum(map(math.log, values)) / len(values)),
                    disagree=sum(not r["values"]["agree"] for r in op_rows if "values" in r))
    return out


def table(rows: List[Dict], worst: Optional[int] = None) -> str:
    """Markdown: per grid, its cells (the ``worst`` lowest ``mx / auto`` only, if given) and a summary per op."""
    head = ["cell", "dtype", "auto", "mx ms", "auto ms", "builtin ms", "mx / auto", "builtin / auto", "values"]
    sections = []
    summaries = summary(rows)
    for grid, grid_rows in by_grid(rows).items():
        shown = sorted(grid_rows, key=lambda r: r["mx_over_auto"])[:worst] if worst else grid_rows
        fitted = "the rule's thresholds were fitted on it" if grid == FITTING else "no threshold was fitted on it"
        lines = [f"**{grid} grid** ({len(grid_rows)} cells; {fitted})" + (f", the {len(shown)} lowest ratios:"
                                                                         if worst else ":"), "",
                 "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r in shown:
            s, v = r["seconds"], r.get("values")
            agree = "—" if v is None else "agree" if v["agree"] else f"DISAGREE ({max(v['auto'], v['mx']):.3g})"
            lines.append("| " + " | ".join([r["name"], r.get("dtype", "—"), r["auto"], f"{s['mx'] * 1e3:.3f}",
                                            f"{s['auto'] * 1e3:.3f}", f"{s['builtin'] * 1e3:.3f}",
                                            f"{r['mx_over_auto']:.2f}x", f"{r['builtin_over_auto']:.2f}x",
                                            agree]) + " |")
        lines.append("")
        for op, v in summaries[grid].items():
            lines.append(f"- {grid}, `{op}`: {v['cells']} cells, {v['below']} below {SLOWER:g}x, mx / auto minimum "
                         f"{v['min']:.2f}x, geomean {v['geomean']:.2f}x; values disagree in {v['disagree']}")
        sections.append("\n".join(lines))
    return "\n\n".join(sections)
