"""``python -m mlx_deconv bench``: the decoder shapes of docs/design.md, every backend, one run.

Each figure is the median of ``repeat`` timed runs after ``warmup`` untimed
ones, the backends timed in turn within each repetition. Ratios compare
backends measured in the same run on the same stream, so a noisy machine
moves them less than it moves the times.
"""

from __future__ import annotations

import json
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from typing import Callable, Dict, List, Sequence

import mlx.core as mx
import numpy as np

from . import backends
from .backends import gemm
from .functional import conv_transpose1d
from .geometry import conv_geometry


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


def interleaved_medians(fns: Dict[str, Callable[[], mx.array]], warmup: int, repeat: int, progress=None) -> Dict[str, float]:
    """Median seconds of each function, timed round-robin so that load on a
    shared machine falls on all of them alike."""
    for fn in fns.values():
        for _ in range(warmup):
            mx.eval(fn())
    times: Dict[str, List[float]] = {name: [] for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            start = time.perf_counter()
            mx.eval(fn())
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def split_copy(a: mx.array, workers: List[mx.Stream]) -> List[mx.array]:
    """A copy of ``a`` (read + write) with its parts shared by ``workers``."""
    bounds = [a.shape[0] * i // len(workers) for i in range(len(workers) + 1)]
    parts = []
    for stream, lo, hi in zip(workers, bounds, bounds[1:]):
        with mx.stream(stream):
            parts.append(a[lo:hi] * 1)
    return parts


def split_matmul(a: mx.array, b: mx.array, workers: List[mx.Stream]) -> mx.array:
    """``a @ b`` with ``a``'s rows shared by ``workers``, as the gemm backend shares its blocks."""
    bounds = [a.shape[0] * i // len(workers) for i in range(len(workers) + 1)]
    parts = []
    for stream, lo, hi in zip(workers, bounds, bounds[1:]):
        with mx.stream(stream):
            parts.append(a[lo:hi] @ b)
    return parts[0] if len(parts) == 1 else mx.concatenate(parts, axis=0)


class Progress:
    """A one-line progress bar on stderr (a plain line per step when not a terminal)."""

    def __init__(self, total: int, width: int = 30):
        self.total, self.done, self.width = total, 0, width
        self.tty = sys.stderr.isatty()

    def step(self, label: str) -> None:
        self.done += 1
        filled = self.width * self.done // self.total
        bar = "#" * filled + "." * (self.width - filled)
        line = f"[{bar}] {self.done}/{self.total} {label}"
        if self.tty:
            sys.stderr.write("\r" + line.ljust(100) + ("\n" if self.done == self.total else ""))
        else:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()


def _torch_op(shape: Shape, x: mx.array, w: mx.array, backward: bool):
    """PyTorch's CPU conv_transpose1d on the same data, or None without torch (not a dependency)."""
    try:
        import torch
    except ImportError:
        return None
    from .interop import mlx_to_torch_weight

    tx = torch.from_numpy(np.array(x.astype(mx.float32))).permute(0, 2, 1).contiguous()
    tw = torch.from_numpy(np.array(mlx_to_torch_weight(w.astype(mx.float32), shape.groups)))
    kwargs = dict(stride=shape.stride, padding=shape.padding, output_padding=shape.output_padding,
                  groups=shape.groups, dilation=shape.dilation)
    if backward:
        tx.requires_grad_(True)
        tw.requires_grad_(True)

        def fn():
            torch.nn.functional.conv_transpose1d(tx, tw, **kwargs).sum().backward()
            return mx.array(0)
    else:
        def fn():
            with torch.no_grad():
                torch.nn.functional.conv_transpose1d(tx, tw, **kwargs)
            return mx.array(0)
    return fn


def _peak_bytes(fn: Callable[[], mx.array]) -> int:
    """Peak MLX memory of one call, above what was allocated before it."""
    mx.synchronize()
    base = mx.get_active_memory()
    mx.reset_peak_memory()
    out = fn()
    mx.eval(out)
    peak = mx.get_peak_memory() - base
    del out
    return peak


def run(
    shapes: Sequence[Shape] = SHAPES,
    stream=None,
    dtype=mx.float32,
    warmup: int = 2,
    repeat: int = 5,
    backward: bool = False,
    with_torch: bool = True,
) -> List[Dict]:
    """Times every available backend, MLX's matmul of the same FLOP count, a large copy, and PyTorch if present.

    Returns:
        list[dict]: one row per shape: ``seconds`` per backend (and ``torch``),
        the backend ``auto`` chose, useful GFLOP, the matmul and copy
        references, the bytes the op must move, and the peak memory of ``auto``.
    """
    from .devices import resolve_stream

    stream = resolve_stream(stream)
    names = backends.available_backends(stream)
    workers = gemm.worker_streams(stream)
    progress = Progress(len(shapes))
    # A large copy, shared by the same streams: the bandwidth a bandwidth-bound op can hope for.
    big = mx.random.normal((1 << 24,)).astype(dtype)
    mx.eval(big)
    rows = []
    for shape in shapes:
        key = mx.random.key(0)
        kx, kw = mx.random.split(key)
        x = mx.random.normal((shape.batch, shape.length, shape.in_channels), key=kx).astype(dtype)
        w = mx.random.normal(
            (shape.out_channels, shape.kernel_size, shape.in_channels // shape.groups), key=kw
        ).astype(dtype)
        # MLX's own matmul on the same FLOP count, shared by the same streams:
        # the ceiling of the gemm backend.
        a = mx.random.normal((shape.batch * shape.length, shape.in_channels // shape.groups), key=kx).astype(dtype)
        b = mx.random.normal((shape.in_channels // shape.groups, shape.kernel_size * shape.out_channels), key=kw).astype(dtype)
        mx.eval(x, w, a, b)
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
        torch_fn = _torch_op(shape, x, w, backward) if with_torch else None
        if torch_fn is not None:
            fns["torch"] = torch_fn
        seconds = interleaved_medians(fns, warmup, repeat)
        auto = backends.resolve_backend("auto", geom, stream)
        item = mx.zeros((), dtype=dtype).itemsize
        rows.append(dict(
            shape=asdict(shape),
            auto=auto,
            seconds={n: seconds.get(n) for n in names},
            torch_seconds=seconds.get("torch"),
            matmul_seconds=seconds["matmul"],
            copy_bytes_per_second=2 * big.nbytes / seconds["copy"],
            op_bytes=item * (x.size + w.size + geom.batch * geom.output_length * geom.out_channels),
            peak_bytes=_peak_bytes(fns[auto]),
            workers=len(workers),
            gflop=geom.flops / 1e9 * (3 if backward else 1),
        ))
        progress.step(shape.name)
    return rows


def table(rows: List[Dict], backward: bool = False) -> str:
    """A Markdown table: time per backend, ratio to builtin, GFLOP/s, % of matmul rate, bandwidth, memory."""
    names = list(rows[0]["seconds"])
    has_torch = any(r.get("torch_seconds") for r in rows)
    head = ["shape", "auto"] + [f"{n} ms" for n in names] + (["torch ms"] if has_torch else [])
    head += ["auto / builtin", "GFLOP/s", "% of matmul", "GB/s (% of copy)", "peak MB"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        sec = row["seconds"]
        auto = sec[row["auto"]]
        # Forward+backward is three matmuls' worth of FLOPs.
        matmul = row["matmul_seconds"] * (3 if backward else 1)
        cells = [row["shape"]["name"], row["auto"]]
        cells += ["—" if sec[n] is None else f"{sec[n] * 1e3:.1f}" for n in names]
        if has_torch:
            cells.append(f"{row['torch_seconds'] * 1e3:.1f}" if row.get("torch_seconds") else "")
        bandwidth = row["op_bytes"] / auto
        cells += [
            f"{sec['builtin'] / auto:.1f}x",
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


# HiFi-GAN V1's upsampling stack: (C_in, C_out, K, stride, padding); 256 samples per mel frame.
HIFIGAN_STACK = [(512, 256, 16, 8, 4), (256, 128, 16, 8, 4), (128, 64, 4, 2, 1), (64, 32, 4, 2, 1)]


def long_signal(seconds: float, sample_rate: int = 24000, stream=None) -> Dict:
    """Runs the HiFi-GAN V1 upsampling stack (random weights) over ``seconds`` of audio, layer by layer.

    Returns:
        dict: time, final output bytes, and for each layer its input + output
        bytes and the peak MLX memory while it ran: the ``gemm`` backend writes
        its blocks into the output one by one, so the peak stays near input +
        output plus the few blocks in flight, whatever the length.
    """
    frames = int(seconds * sample_rate) // 256
    h = mx.random.normal((1, frames, HIFIGAN_STACK[0][0]), key=mx.random.key(0))
    mx.eval(h)
    layers = []
    start = time.perf_counter()
    for i, (c_in, c_out, k, s, p) in enumerate(HIFIGAN_STACK):
        w = mx.random.normal((c_out, k, c_in), key=mx.random.key(i + 1)) / (c_in * k) ** 0.5
        mx.eval(w)
        mx.synchronize()
        base = mx.get_active_memory()
        mx.reset_peak_memory()
        y = conv_transpose1d(h, w, stride=s, padding=p, stream=stream)
        mx.eval(y)
        layers.append(dict(layer=i + 1, in_bytes=h.nbytes, out_bytes=y.nbytes,
                           peak_above_inputs=mx.get_peak_memory() - base))
        h = mx.maximum(y, 0.1 * y)  # HiFi-GAN's leaky ReLU, outside the measured op
        del y
        mx.eval(h)
    return dict(seconds_of_audio=seconds, samples=h.shape[1], wall_seconds=time.perf_counter() - start,
                output_bytes=h.nbytes, layers=layers)


def machine() -> str:
    return f"{platform.system()} {platform.machine()}, mlx {mx.__version__}, python {platform.python_version()}"


def main(args) -> None:
    if args.long_signal:
        result = long_signal(args.long_signal, stream=args.stream)
        print(f"HiFi-GAN V1 upsampling stack over {result['seconds_of_audio']:g} s of 24 kHz audio "
              f"({result['samples']} samples) in {result['wall_seconds']:.1f} s; {machine()}")
        print("| layer | input MB | output MB | peak MB above what was allocated before the layer | peak / output |")
        print("|---|---|---|---|---|")
        for r in result["layers"]:
            print(f"| {r['layer']} | {r['in_bytes'] / 1e6:.0f} | {r['out_bytes'] / 1e6:.0f} | "
                  f"{r['peak_above_inputs'] / 1e6:.0f} | {r['peak_above_inputs'] / r['out_bytes']:.2f} |")
        if args.json:
            with open(args.json, "w") as f:
                json.dump(dict(machine=machine(), **result), f, indent=2)
        return
    shapes = SHAPES if not args.shapes else [s for s in SHAPES if s.name in args.shapes]
    if not shapes:
        raise SystemExit(f"--shapes: none of {args.shapes} is one of {[s.name for s in SHAPES]}")
    dtype = getattr(mx, args.dtype)
    rows = run(shapes, args.stream, dtype, args.warmup, args.repeat, args.backward, not args.no_torch)
    kind = "forward+backward" if args.backward else "forward"
    title = f"{kind}, {args.dtype}, stream {args.stream or 'default'}; {machine()}; median of {args.repeat} after {args.warmup} warm-up"
    print(f"\n{title}\n")
    print(table(rows, args.backward))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(machine=machine(), kind=kind, dtype=args.dtype, stream=args.stream or "default",
                           repeat=args.repeat, warmup=args.warmup, rows=rows), f, indent=2)
    if args.plot:
        try:
            plot(rows, args.plot, f"{kind}, {args.dtype}")
            print(f"\nwrote {args.plot}")
        except ImportError:
            print("\n--plot needs matplotlib (pip install 'mlx-deconv[examples]'): no figure written")
