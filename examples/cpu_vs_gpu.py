"""The same transposed convolutions on every stream and backend this machine has.

For a dense (HiFi-GAN), a depthwise (BigVGAN anti-aliasing) and a dilated
layer: time per backend, speed-up over ``mx.conv_transpose1d`` on the same
stream, and the largest difference from the CPU stream's ``gemm`` output.
Without a GPU it says so and compares the CPU backends.

Run: .venv/bin/python examples/cpu_vs_gpu.py            (--repeat, --scale, --out)
"""

from __future__ import annotations

import argparse
import json

import mlx_deconv as md  # before mlx: on Linux it puts an optimized BLAS under MLX's matmul
import mlx.core as mx

from common import output_dir, progress
from mlx_deconv.bench.runner import interleaved_medians

LAYERS = {
    # name: (N, L, C_in, C_out, K, op kwargs)
    "dense (HiFi-GAN up 1)": (1, 200, 512, 256, 16, dict(stride=8, padding=4)),
    "depthwise (BigVGAN up)": (1, 6400, 64, 64, 12, dict(stride=2, groups=64, padding="causal")),
    "dilated": (1, 500, 128, 128, 7, dict(dilation=3, padding=9)),
}


def main(argv=None) -> list:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every length by this")
    parser.add_argument("--out", default="out/cpu_vs_gpu")
    args = parser.parse_args(argv)
    out = output_dir(args.out)
    streams = [mx.default_stream(mx.cpu)]
    if mx.is_available(mx.gpu):
        streams.append(mx.default_stream(mx.gpu))
    else:
        print("No GPU on this machine: comparing the CPU backends only (on a Mac the GPU stream and the Metal kernel join in).")
    rows = []
    for name, (n, length, c_in, c_out, k, kwargs) in progress(LAYERS.items(), len(LAYERS), "layers"):
        length = max(1, int(length * args.scale))
        key_x, key_w = mx.random.split(mx.random.key(0))
        x = mx.random.normal((n, length, c_in), key=key_x)
        w = mx.random.normal((c_out, k, c_in // kwargs.get("groups", 1)), key=key_w) / (c_in * k) ** 0.5
        mx.eval(x, w)
        baseline = md.conv_transpose1d(x, w, **kwargs, backend="gemm", stream=mx.cpu)
        for stream in streams:
            fns = {b: (lambda b=b: md.conv_transpose1d(x, w, **kwargs, backend=b, stream=stream))
                   for b in md.available_backends(stream)}
            seconds = interleaved_medians(fns, warmup=1, repeat=args.repeat)
            for backend, sec in seconds.items():
                y = fns[backend]()
                diff = float(mx.abs(y.astype(mx.float32) - baseline).max())
                rows.append(dict(layer=name, stream=str(stream.device), backend=backend, ms=sec * 1e3,
                                 speedup=seconds["builtin"] / sec, max_abs_diff=diff))
    print("\n| layer | stream | backend | ms | vs mx.conv_transpose1d | max abs diff vs CPU gemm |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['layer']} | {r['stream']} | {r['backend']} | {r['ms']:.2f} | {r['speedup']:.1f}x | {r['max_abs_diff']:.1e} |")
    (out / "results.json").write_text(json.dumps(rows, indent=1))
    print(f"\nwrote {out / 'results.json'}")
    return rows


if __name__ == "__main__":
    main()
