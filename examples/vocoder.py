"""A small causal HiFi-GAN-style vocoder, trained briefly, then run again chunk by chunk.

* Generator: pointwise input conv, two weight-normed ``ConvTranspose1d``
  upsampling layers (8x each, ``padding="causal"``) each followed by a
  multi-receptive-field residual block of causal dilated convs, then a
  BigVGAN-style anti-aliased Snake activation (2x up with a depthwise
  ``ConvTranspose1d`` carrying a Kaiser-windowed sinc low-pass, Snake, 2x down
  with the same filter), and a causal output conv.
* Target: a synthetic harmonic signal (vibrato, decaying harmonics, an
  envelope); its log-mel spectrogram, computed here with MLX ops (no audio
  libraries), is the vocoder's input, and the training loss compares mels.
* Output: ``vocoded.wav`` (standard-library ``wave``), ``spectrograms.png``
  (target vs generated), the real-time factor, and a streaming run through
  ``ConvTranspose1d.streaming()`` whose waveform equals the offline one.

Run: .venv/bin/python examples/vocoder.py            (--steps, --seconds, --out)
"""

from __future__ import annotations

import argparse
import json
import math
import time
from functools import partial
from typing import List

import mlx_deconv as md  # before mlx: on Linux it puts an optimized BLAS under MLX's matmul
import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np

from common import output_dir, progress, pyplot, write_wav

SAMPLE_RATE = 8000
HOP = 64  # samples per mel frame = the generator's total upsampling (8 * 8)
N_FFT = 256
N_MELS = 32


# -- signal and features -------------------------------------------------------------------------
def harmonic_signal(seconds: float, rng: np.random.Generator) -> np.ndarray:
    """A voiced-sounding test signal: f0 with vibrato, 8 decaying harmonics, a smooth envelope."""
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    f0 = 180 + 40 * np.sin(2 * np.pi * 0.7 * t) + 6 * np.sin(2 * np.pi * 5.5 * t)
    phase = 2 * np.pi * np.cumsum(f0) / SAMPLE_RATE
    y = sum(np.sin(h * phase + rng.uniform(0, 2 * np.pi)) / h**1.2 for h in range(1, 9))
    envelope = 0.6 + 0.4 * np.sin(2 * np.pi * 1.3 * t) ** 2
    y = y * envelope
    return (0.7 * y / np.abs(y).max()).astype(np.float32)


def mel_filterbank(n_mels: int = N_MELS, n_fft: int = N_FFT, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Triangular filters evenly spaced on the mel scale: ``(n_fft // 2 + 1, n_mels)``."""
    mel = lambda f: 2595 * np.log10(1 + f / 700)
    hz = lambda m: 700 * (10 ** (m / 2595) - 1)
    edges = hz(np.linspace(mel(0), mel(sr / 2), n_mels + 2))
    bins = np.linspace(0, sr / 2, n_fft // 2 + 1)
    fb = np.zeros((n_fft // 2 + 1, n_mels))
    for i in range(n_mels):
        lo, mid, hi = edges[i : i + 3]
        fb[:, i] = np.clip(np.minimum((bins - lo) / (mid - lo), (hi - bins) / (hi - mid)), 0, None)
    return fb.astype(np.float32)


class LogMel:
    """Log-mel spectrogram with MLX ops (a DFT as two matmuls), so it is differentiable."""

    def __init__(self):
        n = np.arange(N_FFT)
        k = np.arange(N_FFT // 2 + 1)
        window = 0.5 - 0.5 * np.cos(2 * np.pi * n / N_FFT)
        angle = 2 * np.pi * np.outer(n, k) / N_FFT
        self.cos = mx.array((window[:, None] * np.cos(angle)).astype(np.float32))
        self.sin = mx.array((window[:, None] * np.sin(angle)).astype(np.float32))
        self.fb = mx.array(mel_filterbank())

    def __call__(self, audio: mx.array) -> mx.array:
        """``(N, samples)`` -> ``(N, frames, N_MELS)``, one frame per ``HOP`` samples."""
        frames = audio.shape[1] // HOP
        padded = mx.pad(audio, [(0, 0), (N_FFT // 2, N_FFT // 2)])
        index = mx.arange(frames)[:, None] * HOP + mx.arange(N_FFT)[None, :]
        chunks = padded[:, index]  # (N, frames, N_FFT)
        power = mx.square(chunks @ self.cos) + mx.square(chunks @ self.sin)
        return mx.log(power @ self.fb + 1e-5)


# -- generator -------------------------------------------------------------------------------------
def kaiser_sinc(taps: int = 12, ratio: int = 2) -> np.ndarray:
    """A low-pass FIR (cutoff at the new Nyquist) with a Kaiser window, as BigVGAN's resampler uses."""
    cutoff, transition = 0.5 / ratio, 0.6 / ratio
    attenuation = 2.285 * (taps // 2 - 1) * math.pi * 4 * transition + 7.95
    if attenuation > 50:
        beta = 0.1102 * (attenuation - 8.7)
    elif attenuation >= 21:
        beta = 0.5842 * (attenuation - 21) ** 0.4 + 0.07886 * (attenuation - 21)
    else:
        beta = 0.0
    t = np.arange(-(taps // 2), taps - taps // 2) + (0.5 if taps % 2 == 0 else 0.0)
    h = 2 * cutoff * np.kaiser(taps, beta) * np.sinc(2 * cutoff * t)
    return (h / h.sum()).astype(np.float32)


class CausalConv1d(nn.Module):
    """``nn.Conv1d`` with all padding on the left: output ``t`` sees inputs up to ``t * stride``."""

    def __init__(self, c_in: int, c_out: int, taps: int, stride: int = 1, dilation: int = 1, groups: int = 1):
        super().__init__()
        self.conv = nn.Conv1d(c_in, c_out, taps, stride=stride, dilation=dilation, groups=groups)
        self.left = dilation * (taps - 1)

    def __call__(self, x: mx.array) -> mx.array:
        return self.conv(mx.pad(x, [(0, 0), (self.left, 0), (0, 0)]))


class ResBlock(nn.Module):
    """HiFi-GAN's residual block (kernel 3, dilations 1 and 3), made causal."""

    def __init__(self, channels: int, dilations=(1, 3)):
        super().__init__()
        self.convs = [CausalConv1d(channels, channels, 3, dilation=d) for d in dilations]

    def __call__(self, x: mx.array) -> mx.array:
        for conv in self.convs:
            x = x + conv(nn.leaky_relu(x, 0.1))
        return x


class AntiAliasedSnake(nn.Module):
    """BigVGAN's activation: 2x up (depthwise ConvTranspose1d, Kaiser-sinc), Snake, 2x down (same filter)."""

    def __init__(self, channels: int, taps: int = 12):
        super().__init__()
        fir = kaiser_sinc(taps)
        self.up = md.ConvTranspose1d(channels, channels, taps, stride=2, padding="causal", groups=channels, bias=False)
        self.down = CausalConv1d(channels, channels, taps, stride=2, groups=channels)
        self.up.weight = mx.array(np.tile(2 * fir[None, :, None], (channels, 1, 1)))  # gain 2 keeps the level
        self.down.conv.weight = mx.array(np.tile(fir[::-1][None, :, None], (channels, 1, 1)).copy())
        del self.down.conv["bias"]
        self.up.freeze()
        self.down.freeze()
        self.snake = md.Snake(channels)

    def __call__(self, x: mx.array) -> mx.array:
        return self.down(self.snake(self.up(x)))


class Generator(nn.Module):
    def __init__(self, channels: int = 64):
        super().__init__()
        self.pre = nn.Conv1d(N_MELS, channels, 1)
        self.ups = [
            md.ConvTranspose1d(channels, channels // 2, 16, stride=8, padding="causal", weight_norm=True),
            md.ConvTranspose1d(channels // 2, channels // 4, 16, stride=8, padding="causal", weight_norm=True),
        ]
        self.blocks = [ResBlock(channels // 2), ResBlock(channels // 4)]
        self.act = AntiAliasedSnake(channels // 4)
        self.post = CausalConv1d(channels // 4, 1, 7)

    def __call__(self, mel: mx.array) -> mx.array:
        """``(N, frames, N_MELS)`` -> ``(N, frames * HOP)``."""
        x = self.pre(mel)
        for up, block in zip(self.ups, self.blocks):
            x = block(up(nn.leaky_relu(x, 0.1)))
        return mx.tanh(self.post(self.act(x)))[..., 0]


# -- streaming -----------------------------------------------------------------------------------
class CausalConvStream:
    """Runs a :class:`CausalConv1d` on chunks, keeping only the inputs that later outputs still need."""

    def __init__(self, layer: CausalConv1d):
        self.layer, self.stride = layer, layer.conv.stride[0] if isinstance(layer.conv.stride, (tuple, list)) else layer.conv.stride
        self.span = layer.left + 1
        self.buffer = None  # padded input from position self.start on
        self.start = 0  # padded position of buffer[0]
        self.emitted = 0

    def step(self, chunk: mx.array) -> mx.array:
        if self.buffer is None:
            self.buffer = mx.zeros((chunk.shape[0], self.layer.left, chunk.shape[2]), chunk.dtype)
        self.buffer = mx.concatenate([self.buffer, chunk], axis=1)
        available = self.start + self.buffer.shape[1]  # padded samples seen
        ready = (available - self.span) // self.stride + 1  # outputs whose window is complete
        if ready <= self.emitted:
            return mx.zeros((chunk.shape[0], 0, self.layer.conv.weight.shape[0]), chunk.dtype)
        lo = self.emitted * self.stride - self.start
        hi = (ready - 1) * self.stride + self.span - self.start
        out = self.layer.conv(self.buffer[:, lo:hi])
        self.emitted = ready
        keep = ready * self.stride - self.start  # the next output's window starts here
        self.buffer, self.start = self.buffer[:, keep:], self.start + keep
        return out


class GeneratorStream:
    """The generator, one mel chunk at a time; every stage is causal, so nothing waits for the future."""

    def __init__(self, g: Generator):
        self.g = g
        self.ups = [up.streaming() for up in g.ups]
        self.blocks = [[CausalConvStream(c) for c in block.convs] for block in g.blocks]
        self.act_up = g.act.up.streaming()
        self.act_down = CausalConvStream(g.act.down)
        self.post = CausalConvStream(g.post)

    def step(self, mel_chunk: mx.array) -> mx.array:
        x = self.g.pre(mel_chunk)
        for up, block in zip(self.ups, self.blocks):
            x = up.step(nn.leaky_relu(x, 0.1))
            for conv in block:
                x = x + conv.step(nn.leaky_relu(x, 0.1))
        x = self.act_down.step(self.g.act.snake(self.act_up.step(x)))
        return mx.tanh(self.post.step(x))[..., 0]

    def flush(self) -> mx.array:
        tails = [up.flush() for up in self.ups] + [self.act_up.flush()]
        assert all(t.shape[1] == 0 for t in tails), "causal layers leave nothing behind"
        return mx.zeros((1, 0))


# -- the run -------------------------------------------------------------------------------------
def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--chunk-frames", type=int, default=5, help="mel frames per streaming chunk")
    parser.add_argument("--out", default="out/vocoder")
    args = parser.parse_args(argv)
    out = output_dir(args.out)
    mx.random.seed(0)
    logmel = LogMel()
    audio = mx.array(harmonic_signal(args.seconds, np.random.default_rng(0)))[None]
    audio = audio[:, : (audio.shape[1] // HOP) * HOP]
    target = logmel(audio)
    print(f"target: {audio.shape[1]} samples at {SAMPLE_RATE} Hz -> log-mel {tuple(target.shape[1:])}; output in {out}/")

    g = Generator()
    mx.eval(g.parameters())
    optimizer = optim.Adam(learning_rate=2e-3)

    def loss_fn(model, mel, wav):
        generated = model(mel)
        return mx.mean(mx.abs(logmel(generated) - mel)) + mx.mean(mx.abs(generated - wav))

    loss_and_grad = nn.value_and_grad(g, loss_fn)
    state = [g.state, optimizer.state]

    @partial(mx.compile, inputs=state, outputs=state)
    def step(mel, wav):
        loss, grads = loss_and_grad(g, mel, wav)
        optimizer.update(g, grads)
        return loss

    losses: List[float] = []
    start = time.perf_counter()
    for _ in progress(range(args.steps), args.steps, "training"):
        losses.append(float(step(target, audio)))
        mx.eval(state)
    print(f"training: loss {losses[0]:.3f} -> {losses[-1]:.3f} in {time.perf_counter() - start:.1f} s")

    generated = g(target)
    mx.eval(generated)
    start = time.perf_counter()
    for _ in range(5):
        mx.eval(g(target))
    seconds = (time.perf_counter() - start) / 5
    rtf = seconds / (audio.shape[1] / SAMPLE_RATE)
    print(f"synthesis: {audio.shape[1]} samples in {seconds * 1e3:.1f} ms, real-time factor {rtf:.4f} "
          f"({1 / rtf:.0f}x faster than real time) on {mx.default_device()}")
    write_wav(out / "vocoded.wav", np.array(generated[0]), SAMPLE_RATE)
    write_wav(out / "target.wav", np.array(audio[0]), SAMPLE_RATE)

    # The same generator, chunk by chunk.
    stream = GeneratorStream(g)
    pieces = [stream.step(target[:, i : i + args.chunk_frames]) for i in range(0, target.shape[1], args.chunk_frames)]
    streamed = mx.concatenate(pieces + [stream.flush()], axis=1)
    difference = float(mx.abs(streamed - generated).max())
    latency = sum(up.latency for up in stream.ups) + stream.act_up.latency
    print(f"streaming: {len(pieces)} chunks of {args.chunk_frames} frames; max |streamed - offline| = {difference:.2e}; "
          f"latency: {latency} samples beyond the chunk itself (each mel frame yields its {HOP} samples at once)")

    mel_error = float(mx.mean(mx.abs(logmel(generated) - target)))
    summary = dict(losses=losses, rtf=rtf, stream_max_abs_difference=difference, latency_samples=latency,
                   mel_l1=mel_error, samples=int(audio.shape[1]))
    (out / "summary.json").write_text(json.dumps(summary))
    plt = pyplot()
    if plt is not None:
        fig, axes = plt.subplots(2, 1, figsize=(8, 5), sharex=True)
        for ax, mel, title in ((axes[0], target, "target log-mel"), (axes[1], logmel(generated), "generated log-mel")):
            ax.imshow(np.array(mel[0]).T, origin="lower", aspect="auto", cmap="magma")
            ax.set(title=title, ylabel="mel bin")
        axes[1].set_xlabel(f"frame ({HOP} samples)")
        fig.tight_layout()
        fig.savefig(out / "spectrograms.png", dpi=120)
        print(f"wrote {out / 'vocoded.wav'} and {out / 'spectrograms.png'}")
    else:
        print(f"wrote {out / 'vocoded.wav'}")
    return summary


if __name__ == "__main__":
    main()
