"""``bench``'s transposed rows: the decoder shapes of docs/design.md on every ``conv_transpose1d`` backend.

Beside the backends: MLX's matmul of the same FLOP count on the same worker
streams (the ceiling of ``gemm``), a large copy (the bandwidth a
bandwidth-bound op can hope for), ``auto``'s peak memory, the choices of the
rule and of autotuning, and PyTorch, timed in a phase of its own.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable, Dict, List, Sequence

import mlx.core as mx
import numpy as np

from .. import backends
from ..choice import choose
from ..backends import gemm
from .timing import (Progress, add_torch_seconds, peak_bytes, split_copy, split_matmul, timed_medians, torch_conv,
                           tuned_choice)
from ..ops.functional import conv_transpose1d
from ..geometry.validation import conv_geometry


@dataclass(frozen=True)
class Shape:
    name: str
    batch: int
    length: int
    in_channels: int
    out_channels: int
    kernel_size: int
    stride: int
    padding: int
    dilation: int
    groups: int
    output_padding: int = 0

    def kwargs(self) -> dict:
        return dict(
            stride=self.stride,
            padding=self.padding,
            dilation=self.dilation,
            groups=self.groups,
            output_padding=self.output_padding,
        )


SHAPES: List[Shape] = [
    Shape("hifigan-1", 1, 200, 512, 256, 16, 8, 4, 1, 1),
    Shape("hifigan-2", 1, 1600, 256, 128, 16, 8, 4, 1, 1),
    Shape("hifigan-3", 1, 12800, 128, 64, 4, 2, 1, 1, 1),
    Shape("hifigan-4", 1, 25600, 64, 32, 4, 2, 1, 1, 1),
    Shape("bigvgan-aa", 1, 25600, 64, 64, 12, 2, 0, 1, 64),
    Shape("depthwise-up", 1, 400, 512, 512, 3, 2, 1, 1, 512, 1),
    Shape("grouped", 4, 1024, 256, 256, 4, 2, 1, 1, 16),
    Shape("dilated", 1, 2000, 256, 256, 7, 1, 9, 3, 1),
]


def interleaved_medians(fns: Dict[str, Callable[[], mx.array]], warmup: int, repeat: int) -> Dict[str, float]:
    """Median seconds of each function, timed round-robin so that load on a
    shared machine falls on all of them alike."""
    return {name: t.seconds for name, t in timed_medians(fns, warmup, repeat).items()}


def _data(shape: Shape, dtype):
    """The shape's input and weight, the same in the MLX and the PyTorch phase."""
    kx, kw = mx.random.split(mx.random.key(0))
    x = mx.random.normal((shape.batch, shape.length, shape.in_channels), key=kx).astype(dtype)
    w = mx.random.normal((shape.out_channels, shape.kernel_size, shape.in_channels // shape.groups),
                         key=kw).astype(dtype)
    mx.eval(x, w)
    return x, w


def _torch_op(shape: Shape, x: mx.array, w: mx.array, backward: bool):
    """PyTorch's CPU conv_transpose1d on the same data, or None without torch (not a dependency)."""
    try:
        import torch
    except ImportError:
        return None
    from ..nn.interop import mlx_to_torch_weight

    tx = torch.from_numpy(np.array(x.astype(mx.float32))).permute(0, 2, 1).contiguous()
    tw = torch.from_numpy(np.array(mlx_to_torch_weight(w.astype(mx.float32), shape.groups)))
    kwargs = dict(stride=shape.stride, padding=shape.padding, output_padding=shape.output_padding,
                  groups=shape.groups, dilation=shape.dilation)
    return torch_conv(torch.nn.functional.conv_transpose1d, tx, tw, kwargs, backward)


def run_mlx(shapes: Sequence[Shape] = SHAPES, stream=None, dtype=mx.float32, warmup: int = 2, repeat: int = 5,
            backward: bool = False, with_tuned: bool = True) -> List[Dict]:
    """The MLX phase of :func:`run`: every backend, the references, ``auto``'s and autotuning's choices."""
    from ..runtime.devices import resolve_stream

    stream = resolve_stream(stream)
    names = backends.available_backends(stream)
    workers = gemm.worker_streams(stream)
    progress = Progress(len(shapes))
    # A large copy, shared by the same streams: the bandwidth a bandwidth-bound op can hope for.
    big = mx.random.normal((1 << 24,)).astype(dtype)
    mx.eval(big)
    rows = []
    for shape in shapes:
        x, w = _data(shape, dtype)
        kx, kw = mx.random.split(mx.random.key(0))
        # MLX's own matmul on the same FLOP count, shared by the same streams:
        # the ceiling of the gemm backend.
        a = mx.random.normal((shape.batch * shape.length, shape.in_channels // shape.groups), key=kx).astype(dtype)
        b = mx.random.normal((shape.in_channels // shape.groups, shape.kernel_size * shape.out_channels), key=kw).astype(dtype)
        mx.eval(a, b)
        geom, _ = conv_geometry(x.shape, w.shape, **shape.kwargs())
        fns = {}
        for name in backends.usable_backends(geom, stream):
            def op(x, w, name=name):
                return conv_transpose1d(x, w, **shape.kwargs(), backend=name, stream=stream)
            if backward:
                grad = mx.grad(lambda x, w, op=op: op(x, w).sum(), argnums=(0, 1))
                fns[name] = lambda grad=grad: grad(x, w)
            else:
                fns[name] = lambda op=op: op(x, w)
        fns["matmul"] = lambda: split_matmul(a, b, workers)
        fns["copy"] = lambda: split_copy(big, workers)
        seconds = interleaved_medians(fns, warmup, repeat)
        auto = choose(geom, stream).name
        item = mx.zeros((), dtype=dtype).itemsize
        rows.append(dict(
            shape=asdict(shape),
            auto=auto,
            tuned=tuned_choice(geom, stream, dtype, backward) if with_tuned else None,
            seconds={n: seconds.get(n) for n in names},
            torch_seconds=None,
            matmul_seconds=seconds["matmul"],
            copy_bytes_per_second=2 * big.nbytes / seconds["copy"],
            op_bytes=item * (x.size + w.size + geom.batch * geom.output_length * geom.out_channels),
            peak_bytes=peak_bytes(fns[auto]),
            workers=len(workers),
            gflop=geom.flops / 1e9 * (3 if backward else 1),
        ))
        progress.step(shape.name)
    return rows


def add_torch(rows: List[Dict], dtype=mx.float32, warmup: int = 2, repeat: int = 5, backward: bool = False) -> bool:
    """PyTorch's times for the rows of :func:`run_mlx`, in a phase of their own; False without torch."""

    def torch_fn(row):
        shape = Shape(**row["shape"])
        return _torch_op(shape, *_data(shape, dtype), backward)

    return add_torch_seconds(rows, torch_fn, warmup, repeat)


def run(shapes: Sequence[Shape] = SHAPES, stream=None, dtype=mx.float32, warmup: int = 2, repeat: int = 5,
        backward: bool = False, with_torch: bool = True, with_tuned: bool = True) -> List[Dict]:
    """Times every available backend, MLX's matmul of the same FLOP count, a large copy, and PyTorch if present.

    Returns:
        list[dict]: one row per shape: ``seconds`` per backend (and ``torch``),
        the backends ``auto`` and autotuning (``tuned``) chose, useful GFLOP, the
        matmul and copy references, the bytes the op must move, and the peak
        memory of ``auto``.
    """
    rows = run_mlx(shapes, stream, dtype, warmup, repeat, backward, with_tuned)
    if with_torch:
        add_torch(rows, dtype, warmup, repeat, backward)
    return rows


def table(rows: List[Dict], backward: bool = False) -> str:
    """A Markdown table: time per backend, ratio to builtin, GFLOP/s, % of matmul rate, bandwidth, memory.

    With autotuning's choices in the rows, a "tuned" column and ``auto / tuned``
    (the rule's time over the tuned backend's, both from this run).
    """
    names = list(rows[0]["seconds"])
    has_torch = any(r.get("torch_seconds") for r in rows)
    has_tuned = any(r.get("tuned") for r in rows)
    head = ["shape", "auto"] + (["tuned"] if has_tuned else []) + [f"{n} ms" for n in names]
    head += (["torch ms"] if has_torch else []) + ["auto / builtin"] + (["auto / tuned"] if has_tuned else [])
    head += ["GFLOP/s", "% of matmul", "GB/s (% of copy)", "peak MB"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        sec = row["seconds"]
        auto = sec[row["auto"]]
        # Forward+backward is three matmuls' worth of FLOPs.
        matmul = row["matmul_seconds"] * (3 if backward else 1)
        cells = [row["shape"]["name"], row["auto"]] + ([row.get("tuned") or "—"] if has_tuned else [])
        cells += ["—" if sec[n] is None else f"{sec[n] * 1e3:.1f}" for n in names]
        if has_torch:
            cells.append(f"{row['torch_seconds'] * 1e3:.1f}" if row.get("torch_seconds") else "")
        cells.append(f"{sec['builtin'] / auto:.1f}x")
        if has_tuned:
            tuned = sec.get(row.get("tuned"))
            cells.append(f"{auto / tuned:.2f}x" if tuned else "—")
        bandwidth = row["op_bytes"] / auto
        cells += [
            f"{row['gflop'] / auto:.1f}",
            f"{100 * matmul / auto:.0f}%",
            f"{bandwidth / 1e9:.1f} ({100 * bandwidth / row['copy_bytes_per_second']:.0f}%)",
            f"{row['peak_bytes'] / 1e6:.0f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(rows: List[Dict], path: str, title: str) -> None:
    """A bar chart of each backend's speed-up over ``mx.conv_transpose1d`` (needs matplotlib)."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n in rows[0]["seconds"] if n != "builtin"] + (["torch"] if any(r.get("torch_seconds") for r in rows) else [])
    fig, ax = plt.subplots(figsize=(9, 4))
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        ratios = [r["seconds"]["builtin"] / ((r["torch_seconds"] if name == "torch" else r["seconds"][name]) or np.nan)
                  for r in rows]
        ax.bar(np.arange(len(rows)) + i * width, ratios, width, label=name)
    ax.axhline(1, color="black", lw=0.8)
    ax.set_yscale("log")  # PyTorch's bars would otherwise flatten the rest
    ax.set_xticks(np.arange(len(rows)) + width * (len(names) - 1) / 2, [r["shape"]["name"] for r in rows], rotation=20)
    ax.set(ylabel="speed-up over mx.conv_transpose1d", title=title)
    ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}x"))
    ax.legend(ncol=len(names), loc="upper center", bbox_to_anchor=(0.5, -0.28), frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
