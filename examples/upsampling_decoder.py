"""A 1-D convolutional autoencoder whose decoder upsamples with mlx_deconv.ConvTranspose1d.

The encoder is three strided ``mlx.nn.Conv1d`` layers (8x down); the decoder
climbs back with a plain, a grouped and a dilated transposed convolution.
Signals are synthetic: sums of sinusoids, chirps and clicks. Training runs
an MLX optimizer until the reconstruction error has fallen, then writes the
loss curve and input-vs-reconstruction plots.

Run: .venv/bin/python examples/upsampling_decoder.py            (--steps, --length, --batch, --out)
"""

from __future__ import annotations

import argparse
import json
import time
from functools import partial

import mlx_deconv as md  # before mlx: on Linux it puts an optimized BLAS under MLX's matmul
import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np

from common import output_dir, progress, pyplot


def synthetic_signals(batch: int, length: int, rng: np.random.Generator) -> np.ndarray:
    """``(batch, length, 1)`` signals: a few sinusoids, a chirp, and sparse clicks, scaled to about [-1, 1]."""
    t = np.arange(length) / length
    out = np.zeros((batch, length))
    for i in range(batch):
        for _ in range(rng.integers(1, 4)):
            out[i] += rng.uniform(0.2, 0.6) * np.sin(2 * np.pi * (rng.uniform(1, 12) * t + rng.uniform()))
        f0, f1 = rng.uniform(1, 6), rng.uniform(6, 20)
        out[i] += rng.uniform(0, 0.4) * np.sin(2 * np.pi * (f0 * t + (f1 - f0) * t**2 / 2))
        clicks = rng.integers(0, length, size=rng.integers(0, 3))
        out[i, clicks] += rng.choice([-1, 1], size=clicks.size) * rng.uniform(0.3, 0.8, size=clicks.size)
    return (out / max(1.0, np.abs(out).max()))[..., None].astype(np.float32)


class Autoencoder(nn.Module):
    def __init__(self, channels: int = 32, latent: int = 16):
        super().__init__()
        self.encoder = [
            nn.Conv1d(1, channels // 2, 4, stride=2, padding=1),
            nn.Conv1d(channels // 2, channels, 4, stride=2, padding=1),
            nn.Conv1d(channels, latent, 4, stride=2, padding=1),
        ]
        self.decoder = [
            md.ConvTranspose1d(latent, channels, 4, stride=2, padding=1),  # plain
            md.ConvTranspose1d(channels, channels, 4, stride=2, padding=1, groups=4),  # grouped
            md.ConvTranspose1d(channels, channels // 2, 4, stride=2, padding="same", dilation=2),  # dilated
        ]
        self.head = nn.Conv1d(channels // 2, 1, 7, padding=3)

    def __call__(self, x: mx.array) -> mx.array:
        for conv in self.encoder:
            x = nn.gelu(conv(x))
        for deconv in self.decoder:
            x = nn.gelu(deconv(x))
        return self.head(x)


def reconstruction_error(model: Autoencoder, x: mx.array) -> mx.array:
    return mx.mean(mx.square(model(x) - x))


def train(steps: int, batch: int, length: int, seed: int = 0, lr: float = 3e-3, show_progress: bool = True):
    """Trains on fresh random signals each step; returns the model, the losses and a held-out batch."""
    mx.random.seed(seed)
    rng = np.random.default_rng(seed)
    model = Autoencoder()
    mx.eval(model.parameters())
    optimizer = optim.Adam(learning_rate=lr)
    loss_and_grad = nn.value_and_grad(model, reconstruction_error)
    state = [model.state, optimizer.state]

    @partial(mx.compile, inputs=state, outputs=state)
    def step(x):
        loss, grads = loss_and_grad(model, x)
        optimizer.update(model, grads)
        return loss

    held_out = mx.array(synthetic_signals(batch, length, np.random.default_rng(seed + 1)))
    initial = float(reconstruction_error(model, held_out))
    losses = []
    steps_iter = range(steps)
    if show_progress:
        steps_iter = progress(steps_iter, steps, "training")
    for _ in steps_iter:
        loss = step(mx.array(synthetic_signals(batch, length, rng)))
        mx.eval(state)
        losses.append(float(loss))
    final = float(reconstruction_error(model, held_out))
    return model, losses, held_out, initial, final


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--length", type=int, default=256, help="samples per signal (a multiple of 8)")
    parser.add_argument("--out", default="out/upsampling_decoder")
    args = parser.parse_args(argv)
    if args.length % 8:
        parser.error(f"--length must be a multiple of 8 (three 2x stages), got {args.length}")
    out = output_dir(args.out)
    print(f"training a conv autoencoder ({args.steps} steps, batch {args.batch}, {args.length} samples); output in {out}/")
    start = time.perf_counter()
    model, losses, held_out, initial, final = train(args.steps, args.batch, args.length)
    print(f"reconstruction error (MSE, held-out batch): {initial:.4f} -> {final:.5f}, "
          f"{initial / final:.1f}x lower, in {time.perf_counter() - start:.1f} s")
    summary = dict(initial_error=initial, final_error=final, steps=args.steps, losses=losses)
    (out / "summary.json").write_text(json.dumps(summary))
    plt = pyplot()
    if plt is not None:
        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.semilogy(losses)
        ax.set(xlabel="step", ylabel="training MSE", title="Autoencoder with a ConvTranspose1d decoder")
        fig.tight_layout()
        fig.savefig(out / "loss.png", dpi=120)
        recon = np.array(model(held_out))
        fig, axes = plt.subplots(3, 1, figsize=(8, 6), sharex=True)
        for i, ax in enumerate(axes):
            ax.plot(np.array(held_out)[i, :, 0], label="input", lw=1.2)
            ax.plot(recon[i, :, 0], label="reconstruction", lw=1, ls="--")
        axes[0].legend(loc="upper right")
        axes[-1].set_xlabel("sample")
        fig.suptitle("Held-out signals and their reconstructions")
        fig.tight_layout()
        fig.savefig(out / "reconstruction.png", dpi=120)
        print(f"wrote {out / 'loss.png'} and {out / 'reconstruction.png'}")
    return summary


if __name__ == "__main__":
    main()
