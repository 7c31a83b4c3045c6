"""``bench``'s ``conv1d`` rows: HiFi-GAN V1's residual-block convolutions on every conv1d backend.

HiFi-GAN V1's residual blocks (type "1": kernels 3, 7, 11, dilations 1, 3, 5)
run "same"-length convolutions at 256, 128, 64 and 32 channels, on 8, 64, 128
and 256 samples per mel frame. The rows take one second of 22.05 kHz audio
(86 mel frames) and spread the (kernel, dilation) pairs over the stages.
MLX's CPU ``conv1d`` loops naively for a dilation > 1 (seconds per call):
``builtin`` is timed adaptively (see :func:`~mlx_deconv.bench.timing.timed_medians`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable, Dict, List, Optional, Sequence

import mlx.core as mx
import numpy as np

from .. import backends
from ..choice import choose
from .timing import Clock, Progress, add_torch_seconds, slow_note, timed_medians, torch_conv, tuned_choice
from ..ops.functional import conv1d
from ..geometry.validation import conv1d_geometry

#: Mel frames of one second of 22.05 kHz audio at HiFi-GAN V1's hop of 256 samples.
FRAMES = 86


@dataclass(frozen=True)
class Conv1dShape:
    """One "same"-length ``conv1d`` (``padding = dilation*(K-1)//2``) of ``channels`` to ``channels``."""

    name: str
    batch: int
    length: int
    channels: int
    kernel_size: int
    dilation: int

    def kwargs(self) -> dict:
        return dict(padding=self.dilation * (self.kernel_size - 1) // 2, dilation=self.dilation)

    def weight_shape(self) -> tuple:
        return (self.channels, self.kernel_size, self.channels)


def _res(channels: int, upsampled: int, k: int, d: int) -> Conv1dShape:
    return Conv1dShape(f"res{channels}-k{k}d{d}", 1, FRAMES * upsampled, channels, k, d)


#: Each stage's channel count once, and each (K, d) pair of resblock "1" at least once.
CONV1D_SHAPES: List[Conv1dShape] = [
    _res(256, 8, 3, 1),
    _res(256, 8, 11, 5),
    _res(128, 64, 7, 3),
    _res(128, 64, 11, 1),
    _res(64, 128, 11, 5),
    _res(32, 256, 7, 3),
]


def _data(shape: Conv1dShape, dtype):
    kx, kw = mx.random.split(mx.random.key(1))
    x = mx.random.normal((shape.batch, shape.length, shape.channels), key=kx).astype(dtype)
    w = (mx.random.normal(shape.weight_shape(), key=kw) / (shape.channels * shape.kernel_size) ** 0.5).astype(dtype)
    mx.eval(x, w)
    return x, w


def _mlx_fns(shape: Conv1dShape, names: Sequence[str], x, w, stream, backward: bool) -> Dict[str, Callable]:
    fns = {}
    for name in names:
        def op(x, w, name=name):
            return conv1d(x, w, **shape.kwargs(), backend=name, stream=stream)
        if backward:
            grad = mx.grad(lambda x, w, op=op: op(x, w).sum(), argnums=(0, 1))
            fns[name] = lambda grad=grad: grad(x, w)
        else:
            fns[name] = lambda op=op: op(x, w)
    return fns


def run(shapes: Sequence[Conv1dShape] = CONV1D_SHAPES, stream=None, dtype=mx.float32, warmup: int = 2,
        repeat: int = 5, backward: bool = False, with_tuned: bool = True, slow: Optional[float] = 0.5,
        slow_runs: int = 2, clock: Optional[Clock] = None) -> List[Dict]:
    """Times every ``conv1d`` backend available on the stream (MLX phase only: see :func:`add_torch`).

    Returns:
        list[dict]: one row per shape: ``shape``, ``auto`` (the rule's choice),
        ``tuned`` (autotuning's choice, or None), ``seconds`` and ``runs`` per
        backend, ``gflop``, ``torch_seconds`` (None until :func:`add_torch`).
    """
    from ..runtime.devices import resolve_stream

    stream = resolve_stream(stream)
    names = backends.available_backends(stream, "conv1d")
    progress = Progress(len(shapes))
    extra = {} if clock is None else dict(clock=clock)
    rows = []
    for shape in shapes:
        x, w = _data(shape, dtype)
        geom, _ = conv1d_geometry(x.shape, w.shape, **shape.kwargs())
        timings = timed_medians(_mlx_fns(shape, names, x, w, stream, backward), warmup, repeat,
                                slow=slow, slow_runs=slow_runs, **extra)
        rows.append(dict(
            shape=asdict(shape),
            auto=choose(geom, stream).name,
            tuned=tuned_choice(geom, stream, dtype, backward) if with_tuned else None,
            seconds={n: timings[n].seconds for n in names},
            runs={n: timings[n].runs for n in names},
            torch_seconds=None,
            gflop=geom.flops / 1e9 * (3 if backward else 1),
        ))
        progress.step(shape.name)
    return rows


def _torch_fn(shape: Conv1dShape, dtype, backward: bool) -> Callable[[], None]:
    """PyTorch's ``conv1d`` (or its gradients) on the shape's data."""
    import torch

    x, w = _data(shape, dtype)
    tx = torch.from_numpy(np.array(x.astype(mx.float32))).permute(0, 2, 1).contiguous()
    tw = torch.from_numpy(np.array(w.astype(mx.float32))).permute(0, 2, 1).contiguous()
    return torch_conv(torch.nn.functional.conv1d, tx, tw, shape.kwargs(), backward)


def add_torch(rows: List[Dict], dtype=mx.float32, warmup: int = 2, repeat: int = 5, backward: bool = False) -> bool:
    """PyTorch's ``conv1d`` on the rows' data, in its own phase after MLX's; False without torch."""
    return add_torch_seconds(rows, lambda row: _torch_fn(Conv1dShape(**row["shape"]), dtype, backward), warmup, repeat)


def table(rows: List[Dict], repeat: int, slow: Optional[float] = None) -> str:
    """A Markdown table: time per backend, auto's and tuning's choices, ratio to ``mx.conv1d``, GFLOP/s, PyTorch.

    Cells timed fewer than ``repeat`` times are marked ``*`` and explained under the table.
    """
    names = list(rows[0]["seconds"])
    has_torch = any(r.get("torch_seconds") for r in rows)
    has_tuned = any(r.get("tuned") for r in rows)
    head = ["shape", "L", "C", "K", "dilation", "auto"] + (["tuned"] if has_tuned else [])
    head += [f"{n} ms" for n in names] + (["torch ms"] if has_torch else [])
    head += ["auto / builtin"] + (["auto / tuned"] if has_tuned else []) + ["GFLOP/s"]
    head += ["torch GFLOP/s"] if has_torch else []
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        s, sec, runs = row["shape"], row["seconds"], row.get("runs", {})
        auto = sec[row["auto"]]
        cells = [s["name"], str(s["length"]), str(s["channels"]), str(s["kernel_size"]), str(s["dilation"]),
                 row["auto"]]
        if has_tuned:
            cells.append(row.get("tuned") or "—")
        cells += [f"{sec[n] * 1e3:.1f}" + ("*" if runs.get(n, repeat) < repeat else "") for n in names]
        if has_torch:
            cells.append(f"{row['torch_seconds'] * 1e3:.1f}" if row.get("torch_seconds") else "")
        cells.append(f"{sec['builtin'] / auto:.1f}x")
        if has_tuned:
            cells.append(f"{auto / sec[row['tuned']]:.2f}x" if row.get("tuned") in sec else "—")
        cells.append(f"{row['gflop'] / auto:.1f}")
        if has_torch:
            cells.append(f"{row['gflop'] / row['torch_seconds']:.1f}" if row.get("torch_seconds") else "")
        lines.append("| " + " | ".join(cells) + " |")
    note = slow_note({r["shape"]["name"]: r.get("runs", {}) for r in rows}, repeat, slow)
    return "\n".join(lines) + (f"\n\n{note}" if note else "")
