"""``mlx-deconv demo``: a small HiFi-GAN-style upsampling stack, checked against the float64 reference."""

from __future__ import annotations

import mlx.core as mx
import numpy as np

from ..choice import choose
from ..geometry.validation import conv_geometry
from ..ops import reference
from ..ops.functional import conv_transpose1d
from ..runtime.devices import resolve_stream


def run(_args=None) -> int:
    """A HiFi-GAN-style upsampling stack on a random mel spectrogram, checked against the oracle."""
    stream = resolve_stream(None)
    rng = np.random.default_rng(0)
    # (C_in, C_out, K, stride, padding) of HiFi-GAN V1's four upsampling layers, channels / 8.
    stack = [(64, 32, 16, 8, 4), (32, 16, 16, 8, 4), (16, 8, 4, 2, 1), (8, 4, 4, 2, 1)]
    h = mx.array(rng.standard_normal((1, 50, 64)), mx.float32)
    print(f"input (N, L, C) = {h.shape}: 50 mel frames")
    worst = 0.0
    for c_in, c_out, k, s, p in stack:
        w = mx.array(rng.standard_normal((c_out, k, c_in)) / np.sqrt(c_in * k), mx.float32)
        b = mx.array(rng.standard_normal(c_out) * 0.1, mx.float32)
        geom, _ = conv_geometry(h.shape, w.shape, stride=s, padding=p)
        chosen = choose(geom, stream).name
        y = conv_transpose1d(h, w, b, stride=s, padding=p)
        expected = reference.conv_transpose1d(np.array(h), np.array(w), np.array(b), geom)
        err = float(np.abs(np.array(y) - expected).max())
        worst = max(worst, err)
        print(f"  ConvTranspose K={k:<2} stride={s} padding={p}: {tuple(h.shape)} -> {tuple(y.shape)}  "
              f"backend={chosen}  max |y - float64 reference| = {err:.2e}")
        h = mx.maximum(y, 0.1 * y)  # leaky ReLU between layers, as in HiFi-GAN
    print(f"upsampled 50 frames x 256 = {h.shape[1]} samples; worst error {worst:.2e} (float32)")
    if worst > 1e-4:
        raise SystemExit("demo: disagreement with the reference")
    return 0


