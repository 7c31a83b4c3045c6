"""``bench``'s short calls: the grid of small convolutions streaming and real decoders make, ``auto`` against MLX's op.

A streaming vocoder feeds a few mel frames per step and a codec decodes tens of
latent frames, so the first stages of a decoder run on signals of 1 to 1024
samples. Each cell of the grid is one call of either op, timed with
``backend="auto"`` and with ``backend="builtin"`` (MLX's own op behind the
package's call) and, as the floor of what a call can cost, MLX's function called
directly. The ratio ``builtin / auto`` is what ``auto`` gains over MLX: the rule
must keep it at 1 or above in every cell.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import asdict, dataclass
from typing import Dict, List, Optional, Sequence

import mlx.core as mx

from ..choice import choose
from ..geometry.validation import conv1d_geometry, conv_geometry
from ..ops.functional import conv1d, conv_transpose1d
from .timing import Clock, Progress, timed_medians


@dataclass(frozen=True)
class ShortCall:
    """One call of ``op`` (``"conv1d"`` or ``"conv_transpose1d"``) on ``(1, length, channels)``.

    ``channels`` go in and out (half out for a transposed layer with ``stride > 1``,
    as a decoder's upsampling stages halve them); ``groups == channels`` is depthwise.
    """

    op: str
    kind: str
    length: int
    channels: int
    kernel_size: int
    stride: int = 1
    dilation: int = 1
    groups: int = 1

    @property
    def name(self) -> str:
        return f"{self.op}-{self.kind}-L{self.length}-C{self.channels}-K{self.kernel_size}"

    @property
    def out_channels(self) -> int:
        if self.op == "conv_transpose1d" and self.stride > 1 and self.groups == 1:
            return max(1, self.channels // 2)
        return self.channels

    def kwargs(self) -> dict:
        span = self.dilation * (self.kernel_size - 1)
        if self.op == "conv1d":
            return dict(stride=self.stride, padding=span // 2, dilation=self.dilation, groups=self.groups)
        return dict(stride=self.stride, padding=max(0, (self.kernel_size - self.stride) // 2), dilation=self.dilation,
                    groups=self.groups)

    def weight_shape(self) -> tuple:
        return (self.out_channels, self.kernel_size, self.channels // self.groups)


def _cells(op: str, length: int, channels: int) -> List[ShortCall]:
    """The layer kinds of one (op, length, channels) point of the grid."""
    if op == "conv1d":
        cells = [ShortCall(op, "dense", length, channels, 3), ShortCall(op, "dense", length, channels, 7),
                 ShortCall(op, "dilated", length, channels, 3, dilation=3),
                 ShortCall(op, "strided", length, channels, 4, stride=2)]
    else:
        cells = [ShortCall(op, "dense", length, channels, 3), ShortCall(op, "up2", length, channels, 4, stride=2),
                 ShortCall(op, "up8", length, channels, 16, stride=8)]
    cells.append(ShortCall(op, "depthwise", length, channels, 12 if op == "conv_transpose1d" else 7,
                           stride=2 if op == "conv_transpose1d" else 1, groups=channels))
    if channels >= 8:
        cells.append(ShortCall(op, "grouped", length, channels, 7, groups=4))
    return cells


def _has_output(cell: ShortCall) -> bool:
    """Whether the padded input holds the dilated kernel (a strided conv1d on L=1 does not)."""
    span = cell.dilation * (cell.kernel_size - 1)
    return cell.op == "conv_transpose1d" or cell.length + 2 * (span // 2) > span


#: L from 1 to 1024, few to many channels, every layer kind, both ops (the largest calls left out).
SHORT_CALLS: List[ShortCall] = [cell for op in ("conv1d", "conv_transpose1d") for length in (1, 4, 16, 64, 256, 1024)
                                for channels in (1, 8, 32, 128, 512) for cell in _cells(op, length, channels)
                                if length * channels * cell.kernel_size <= 1024 * 512 * 4 and _has_output(cell)]


def _data(cell: ShortCall, dtype):
    kx, kw = mx.random.split(mx.random.key(2))
    x = mx.random.normal((1, cell.length, cell.channels), key=kx).astype(dtype)
    w = mx.random.normal(cell.weight_shape(), key=kw).astype(dtype)
    mx.eval(x, w)
    return x, w


def _geometry(cell: ShortCall, x, w):
    check = conv1d_geometry if cell.op == "conv1d" else conv_geometry
    return check(x.shape, w.shape, **cell.kwargs())[0]


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


def run(cells: Sequence[ShortCall] = SHORT_CALLS, stream=None, dtype=mx.float32, warmup: int = WARMUP,
        repeat: int = REPEAT, long_repeat: int = LONG_REPEAT,
        clock: Optional[Clock] = None) -> List[Dict]:
    """Times ``auto``, ``builtin`` and MLX's own function on every cell, round-robin.

    Each sample is :func:`calls_per_sample` back-to-back calls (counted from one
    warm ``builtin`` call), its time divided by their number; a cell is timed
    ``repeat`` rounds, or ``long_repeat`` when that one call took longer than a sample.

    Returns:
        list[dict]: one row per cell: ``cell``, ``auto`` (the rule's choice), ``number`` (calls per
        sample) and ``seconds`` (per call) of
        ``"auto"``, ``"builtin"`` and ``"mlx"`` (MLX's function, called directly).
    """
    from ..runtime.devices import resolve_stream

    stream = resolve_stream(stream)
    extra = {} if clock is None else dict(clock=clock)
    progress = Progress(len(cells))
    rows = []
    for cell in cells:
        x, w = _data(cell, dtype)
        ours = conv1d if cell.op == "conv1d" else conv_transpose1d
        theirs = mx.conv1d if cell.op == "conv1d" else mx.conv_transpose1d
        kw = cell.kwargs()
        fns = {"auto": lambda: ours(x, w, **kw, stream=stream),
               "builtin": lambda: ours(x, w, **kw, backend="builtin", stream=stream)}
        if cell.op == "conv1d" or cell.kwargs()["padding"] <= cell.dilation * (cell.kernel_size - 1):
            fns["mlx"] = lambda: theirs(x, w, **kw, stream=stream)
        one_call = _one_call_seconds(fns["builtin"], clock or time.perf_counter)
        number = calls_per_sample(one_call)
        rounds = repeat if one_call < SAMPLE_SECONDS else min(repeat, long_repeat)
        timings = timed_medians({n: _back_to_back(f, number) for n, f in fns.items()}, warmup, rounds, **extra)
        rows.append(dict(cell=asdict(cell), name=cell.name,
                         auto=choose(_geometry(cell, x, w), stream).name, number=number,
                         seconds={n: t.seconds / number for n, t in timings.items()},
                         gain=paired_gain(timings["builtin"].samples, timings["auto"].samples)))
        progress.step(cell.name)
    return rows


def timing_phrase() -> str:
    """How the cells are timed, for captions."""
    return (f"{REPEAT} rounds after {WARMUP} warm-up ({LONG_REPEAT} for a call over {SAMPLE_SECONDS * 1e3:g} ms), "
            f"each sample up to {MAX_NUMBER} back-to-back calls lasting about {SAMPLE_SECONDS * 1e3:g} ms, "
            "each ratio the median over rounds of builtin / auto timed side by side")


def paired_gain(builtin: Sequence[float], auto: Sequence[float]) -> float:
    """The median over rounds of ``builtin / auto``, each pair timed side by side in one round.

    A VM's slow spells last longer than a round, so they mostly cancel in a pair. On 89
    cells where both run the same call, the ratio of two medians of 21 ranged 0.84-1.06,
    this one 0.94-1.04, and with 41 rounds 0.96-1.05 (docs/performance.md).
    """
    if len(builtin) != len(auto) or not builtin:
        raise ValueError(f"paired_gain needs as many builtin as auto samples, got {len(builtin)} and {len(auto)}")
    return statistics.median(b / a for b, a in zip(builtin, auto))


def ratios(rows: List[Dict]) -> List[float]:
    """``builtin / auto`` of every row (paired per round; rows of older runs: the medians' ratio),
    above 1 where ``auto`` is faster than MLX's op."""
    return [r.get("gain") or r["seconds"]["builtin"] / r["seconds"]["auto"] for r in rows]


def summary(rows: List[Dict]) -> Dict[str, Dict[str, float]]:
    """Per op: the minimum and the geometric mean of ``builtin / auto``, and the cell count."""
    out = {}
    for op in ("conv1d", "conv_transpose1d"):
        values = ratios([r for r in rows if r["cell"]["op"] == op])
        if values:
            out[op] = dict(min=min(values), geomean=math.exp(sum(map(math.log, values)) / len(values)),
                           cells=len(values))
    return out


def table(rows: List[Dict], worst: Optional[int] = None) -> str:
    """A Markdown table of the cells (the ``worst`` lowest ratios only, if given), then the summary per op."""
    gains = dict(zip(map(id, rows), ratios(rows)))
    shown = sorted(rows, key=lambda r: gains[id(r)])[:worst] if worst else rows
    head = ["cell", "op", "kind", "L", "C", "K", "stride", "auto", "auto ms", "builtin ms", "mx ms", "builtin / auto"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in shown:
        c, s = r["cell"], r["seconds"]
        mlx = f"{s['mlx'] * 1e3:.3f}" if "mlx" in s else "—"
        lines.append("| " + " | ".join([r["name"], c["op"], c["kind"], str(c["length"]), str(c["channels"]),
                                        str(c["kernel_size"]), str(c["stride"]), r["auto"], f"{s['auto'] * 1e3:.3f}",
                                        f"{s['builtin'] * 1e3:.3f}", mlx, f"{gains[id(r)]:.2f}x"]) + " |")
    lines.append("")
    for op, v in summary(rows).items():
        lines.append(f"- `{op}`: {v['cells']} cells, builtin / auto minimum {v['min']:.2f}x, geomean {v['geomean']:.2f}x")
    return "\n".join(lines)
