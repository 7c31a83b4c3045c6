"""Upsample a batch of random "mel frames" 256x with a HiFi-GAN-shaped stack.

Run: python examples/quickstart.py
"""

import time

import mlx.core as mx

import mlx_deconv as md

# (C_in, C_out, K, stride, padding): HiFi-GAN V1's upsampling layers.
STACK = [(512, 256, 16, 8, 4), (256, 128, 16, 8, 4), (128, 64, 4, 2, 1), (64, 32, 4, 2, 1)]


def main() -> None:
    key = mx.random.key(0)
    h = mx.random.normal((1, 100, 512), key=key)
    weights = [mx.random.normal((c_out, k, c_in), key=mx.random.key(i)) / (c_in * k) ** 0.5
               for i, (c_in, c_out, k, _, _) in enumerate(STACK)]
    for backend in ("builtin", "gemm"):
        y = h
        start = time.perf_counter()
        for w, (_, _, _, s, p) in zip(weights, STACK):
            y = md.conv_transpose1d(y, w, stride=s, padding=p, backend=backend)
            y = mx.maximum(y, 0.1 * y)
        mx.eval(y)
        print(f"{backend:>8}: {tuple(h.shape)} -> {tuple(y.shape)} in {time.perf_counter() - start:.2f} s")


if __name__ == "__main__":
    main()
