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
from dataclasses import asdict, dataclass
from typing import Dict, List, Optional, Sequence

import mlx.core as mx

from .. import backends
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


#: Timed calls per cell, and untimed ones before them: a call takes 0.1 ms, and an evaluation's cost
#: on a 2-core VM jumps between about 15 and 95 us, so each median takes many samples.
REPEAT, WARMUP = 21, 3


def run(cells: Sequence[ShortCall] = SHORT_CALLS, stream=None, dtype=mx.float32, warmup: int = WARMUP,
        repeat: int = REPEAT,
        clock: Optional[Clock] = None) -> List[Dict]:
    """Times ``auto``, ``builtin`` and MLX's own function on every cell.

    Returns:
        list[dict]: one row per cell: ``cell``, ``auto`` (the rule's choice) and ``seconds`` of
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
        timings = timed_medians(fns, warmup, repeat, **extra)
        rows.append(dict(cell=asdict(cell), name=cell.name,
                         auto=backends.resolve_backend("auto", _geometry(cell, x, w), stream),
                         seconds={n: t.seconds for n, t in timings.items()}))
        progress.step(cell.name)
    return rows


def ratios(rows: List[Dict]) -> List[float]:
    """``builtin / auto`` of every row: above 1 where ``auto`` is faster than MLX's op."""
    return [r["seconds"]["builtin"] / r["seconds"]["auto"] for r in rows]


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
    shown = sorted(rows, key=lambda r: r["seconds"]["builtin"] / r["seconds"]["auto"])[:worst] if worst else rows
    head = ["cell", "op", "kind", "L", "C", "K", "stride", "auto", "auto ms", "builtin ms", "mx ms", "builtin / auto"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in shown:
        c, s = r["cell"], r["seconds"]
        mlx = f"{s['mlx'] * 1e3:.3f}" if "mlx" in s else "—"
        lines.append("| " + " | ".join([r["name"], c["op"], c["kind"], str(c["length"]), str(c["channels"]),
                                        str(c["kernel_size"]), str(c["stride"]), r["auto"], f"{s['auto'] * 1e3:.3f}",
                                        f"{s['builtin'] * 1e3:.3f}", mlx, f"{s['builtin'] / s['auto']:.2f}x"]) + " |")
    lines.append("")
    for op, v in summary(rows).items():
        lines.append(f"- `{op}`: {v['cells']} cells, builtin / auto minimum {v['min']:.2f}x, geomean {v['geomean']:.2f}x")
    return "\n".join(lines)
