"""Vocode a mel spectrogram with a pretrained HiFi-GAN or BigVGAN checkpoint, on MLX.

One command turns a checkpoint of the original HiFi-GAN repository or NVIDIA's BigVGAN
``bigvgan_generator.pt`` (a ``torch.save`` file whose ``"generator"`` entry is the state dict,
or a bare state dict; weight norm on or removed) plus its ``config.json`` and a mel
spectrogram ``(n_mels, frames)`` (``.npy`` or ``.pt``) into a WAV file:

    .venv/bin/python examples/hifigan_vocoder.py --checkpoint g_02500000 --config config.json \\
        --mel mel.npy --out out.wav [--stream --chunk-frames 16]
    .venv/bin/python examples/hifigan_vocoder.py --checkpoint bigvgan_generator.pt --config config.json \\
        --mel mel.npy --out out.wav

The model is told by the config (BigVGAN's has ``activation``, ``snake_logscale``: its AMP
blocks' keys; HiFi-GAN's does not), or by ``--model hifigan|bigvgan``.

The first run converts the weights (torch is needed to read the ``.pt``) and
saves them with MLX's ``save_weights`` next to the output as
``<checkpoint name>-<hash>.mlx.safetensors`` (the hash of the checkpoint and the config);
later runs read that file and need no torch. A converted file is only read or written when it and its folder
are ours alone (no symlink, not writable by group or others); otherwise the weights are converted in memory.
``--stream`` synthesises chunk by chunk through the layers' own streams
(equal to the offline waveform to float32 rounding; the difference is printed).

No checkpoint at hand? ``--make-random-checkpoint DIR`` writes a small random
one (``generator.pt``, ``config.json``, ``mel.npy``) to try the rest with; with
``--model bigvgan``, NVIDIA's own generator (the ``bigvgan`` package, installed
without its dependencies) writes ``bigvgan_generator.pt`` in NVIDIA's format.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import stat
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import mlx_deconv  # noqa: F401 (before mlx.core: it may put a faster BLAS under MLX's CPU matmul)
import mlx.core as mx
from mlx_deconv import bigvgan, hifigan

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import progress, write_wav  # noqa: E402

SMALL_CONFIG = dict(resblock="1", upsample_rates=[4, 4], upsample_kernel_sizes=[8, 8], upsample_initial_channel=32,
                    resblock_kernel_sizes=[3, 5], resblock_dilation_sizes=[[1, 3], [1, 3]], num_mels=20,
                    sampling_rate=8000)
SMALL_BIGVGAN_CONFIG = dict(resblock="1", upsample_rates=[4, 4], upsample_kernel_sizes=[8, 8], upsample_initial_channel=32,
                            resblock_kernel_sizes=[3, 5], resblock_dilation_sizes=[[1, 3], [1, 3]], activation="snakebeta",
                            snake_logscale=True, use_tanh_at_final=False, use_bias_at_final=False, num_mels=20,
                            sampling_rate=8000, hop_size=16)

#: Per model: its config, generator and streaming classes, and the checkpoint name make_random_checkpoint writes.
MODELS = {
    "hifigan": dict(config=hifigan.HiFiGANConfig, model=hifigan.HiFiGAN, stream=hifigan.StreamingHiFiGAN,
                    load=hifigan.load_torch_checkpoint, small=SMALL_CONFIG, file="generator.pt", name="HiFi-GAN"),
    "bigvgan": dict(config=bigvgan.BigVGANConfig, model=bigvgan.BigVGAN, stream=bigvgan.StreamingBigVGAN,
                    load=bigvgan.load_torch_checkpoint, small=SMALL_BIGVGAN_CONFIG, file="bigvgan_generator.pt",
                    name="BigVGAN"),
}
#: Keys only BigVGAN's config.json has (its AMP blocks' activation).
BIGVGAN_KEYS = ("activation", "snake_logscale")


def model_kind(values: dict, requested: str = "auto") -> str:
    """``"bigvgan"`` or ``"hifigan"``: as requested, or told by the config's keys."""
    if requested != "auto":
        return requested
    return "bigvgan" if any(key in values for key in BIGVGAN_KEYS) else "hifigan"


def kind_of(config) -> str:
    return next(kind for kind, entry in MODELS.items() if isinstance(config, entry["config"]))


def make_random_checkpoint(folder: Path, frames: int, kind: str = "hifigan") -> Path:
    """A random generator in the original repository's (or NVIDIA's) format, its config.json and a mel to
    vocode; returns the checkpoint's path."""
    import warnings

    import torch

    folder.mkdir(parents=True, exist_ok=True)
    entry = MODELS[kind]
    config = entry["config"].from_dict(entry["small"])
    torch.manual_seed(0)
    with warnings.catch_warnings():  # the original checkpoints use the legacy weight norm, which torch deprecates
        warnings.simplefilter("ignore", FutureWarning)
        if kind == "bigvgan":  # NVIDIA's own generator, its Snake parameters moved off their initial values
            generator = bigvgan.pytorch.randomize(bigvgan.torch_generator(config))
        else:
            generator = hifigan.torch_generator(config)
    checkpoint = folder / entry["file"]
    torch.save({"generator": generator.state_dict()}, checkpoint)
    (folder / "config.json").write_text(json.dumps(entry["small"], indent=2))
    mel = np.random.default_rng(0).standard_normal((config.num_mels, frames)).astype(np.float32)
    np.save(folder / "mel.npy", mel)
    print(f"wrote {checkpoint}, config.json and mel.npy ({config.num_mels} x {frames}) of a random {entry['name']}")
    return checkpoint


def load_mel(path: Path, num_mels: int) -> np.ndarray:
    if path.suffix == ".npy":
        mel = np.load(path, allow_pickle=False)
    else:
        try:
            import torch
        except ImportError as err:
            raise SystemExit(f"reading {path} needs torch; save the mel as .npy to go without") from err
        mel = torch.load(str(path), map_location="cpu", weights_only=True)
        mel = mel.float().numpy() if hasattr(mel, "numpy") else np.asarray(mel)
    mel = np.asarray(mel, np.float32)
    if mel.ndim == 3 and mel.shape[0] == 1:
        mel = mel[0]
    if mel.ndim != 2 or mel.shape[0] != num_mels:
        raise SystemExit(f"mel must be (n_mels={num_mels}, frames), got shape {mel.shape}")
    return mel


def converted_path(folder: Path, checkpoint: Path, config) -> Path:
    """Where the converted weights of this checkpoint and config go: named by a hash of both, so a
    different checkpoint under the same name (or a changed one) is never mistaken for it."""
    digest = hashlib.sha256()
    with open(checkpoint, "rb") as f:  # in chunks: checkpoints can be hundreds of megabytes
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    digest.update(json.dumps(config.to_dict(), sort_keys=True).encode())
    if kind_of(config) != "hifigan":  # (HiFi-GAN's names stay as they were)
        digest.update(kind_of(config).encode())
    return folder / f"{checkpoint.stem}-{digest.hexdigest()[:16]}.mlx.safetensors"


def _mine(info: os.stat_result) -> bool:
    return not hasattr(os, "getuid") or info.st_uid == os.getuid()


def private_folder(folder: Path) -> bool:
    """True when only we (or root) can add, remove or rename files in ``folder``."""
    try:
        info = os.stat(folder)
    except OSError:
        return False
    # A sticky bit does not help: a group or other user could still have planted the file first.
    owner = _mine(info) or info.st_uid == 0
    return stat.S_ISDIR(info.st_mode) and owner and not info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def trusted(path: Path) -> bool:
    """True when ``path`` is a regular file of ours (a symlink is not), writable by no one else, in a
    folder only we (or root) can change."""
    try:
        info = os.lstat(path)
    except OSError:
        return False
    open_file = info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
    return stat.S_ISREG(info.st_mode) and _mine(info) and not open_file and private_folder(path.parent)


def save_atomically(model, path: Path) -> None:
    """Save the weights under a temporary name in ``path``'s folder, then rename: a reader never sees half a
    file, and a failed save leaves nothing behind."""
    # MLX picks the format by the name's ending, so the temporary name ends in .safetensors too.
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-", suffix=".safetensors")
    os.close(handle)
    try:
        model.save_weights(temporary)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def load_model(checkpoint: Path, config, converted: Path, backend: str):
    """The generator (HiFi-GAN or BigVGAN, by the config's class) from the converted weights if present and
    trusted, else converted from the checkpoint (and saved for next time, when the folder is private to us)."""
    entry = MODELS[kind_of(config)]
    model = entry["model"](config, backend=backend)
    print(f"model: {entry['name']}")
    if trusted(converted):
        model.load_weights(str(converted))
        print(f"weights: {converted} (converted earlier)")
    else:
        start = time.perf_counter()
        model.load_torch_state_dict(entry["load"](checkpoint))
        seconds = time.perf_counter() - start
        if private_folder(converted.parent):
            save_atomically(model, converted)
            print(f"weights: converted {checkpoint} in {seconds:.1f} s, saved to {converted}")
        else:
            print(f"weights: converted {checkpoint} in {seconds:.1f} s, kept in memory only: {converted.parent} is "
                  f"not ours alone (writable by group or others), so no converted copy is read or saved there")
    mx.eval(model.parameters())
    return model


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, help="generator .pt (original HiFi-GAN format, NVIDIA's "
                        "bigvgan_generator.pt, or a bare state dict)")
    parser.add_argument("--model", choices=("auto", "hifigan", "bigvgan"), default="auto",
                        help="the generator; auto: BigVGAN when the config has its keys (activation, snake_logscale)")
    parser.add_argument("--config", type=Path, help="the checkpoint's config.json")
    parser.add_argument("--mel", type=Path, help="mel spectrogram (n_mels, frames), .npy or .pt")
    parser.add_argument("--out", type=Path, default=Path("out/hifigan/vocoded.wav"))
    parser.add_argument("--stream", action="store_true", help="synthesise chunk by chunk, and compare with offline")
    parser.add_argument("--chunk-frames", type=int, default=32, help="mel frames per chunk with --stream")
    parser.add_argument("--segment-frames", type=int, default=256,
                        help="offline, longer inputs go through the streams in segments of this many frames, with progress")
    parser.add_argument("--backend", default="auto", help="mlx_deconv backend of every layer ('builtin': MLX's own ops)")
    parser.add_argument("--output-padding", action="store_true",
                        help="HiFi-GAN: upsampling layers with odd kernel - rate use output_padding=1 (some forks)")
    parser.add_argument("--make-random-checkpoint", type=Path, metavar="DIR",
                        help="write a small random checkpoint, config.json and mel.npy to DIR, then vocode them")
    parser.add_argument("--frames", type=int, default=64, help="mel frames of --make-random-checkpoint's mel")
    args = parser.parse_args(argv)

    if args.make_random_checkpoint:
        made = make_random_checkpoint(args.make_random_checkpoint, args.frames,
                                      "hifigan" if args.model == "auto" else args.model)
        args.checkpoint = args.checkpoint or made
        args.config = args.config or args.make_random_checkpoint / "config.json"
        args.mel = args.mel or args.make_random_checkpoint / "mel.npy"
    if not (args.checkpoint and args.config and args.mel):
        parser.error("give --checkpoint, --config and --mel (or --make-random-checkpoint DIR)")
    for name in ("chunk_frames", "segment_frames", "frames"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")

    values = json.loads(args.config.read_text())
    kind = model_kind(values, args.model)
    if args.output_padding:
        if kind != "hifigan":
            parser.error("--output-padding is for HiFi-GAN forks; BigVGAN's upsampling has none")
        values["upsample_output_padding"] = True
    try:
        config = MODELS[kind]["config"].from_dict(values)
    except ValueError as err:
        raise SystemExit(f"{args.config}: not a {MODELS[kind]['name']} config: {err}") from None
    if not args.out.parent.exists():  # ours: private to this user whatever the umask, so the cache can be kept there
        args.out.parent.mkdir(parents=True)
        args.out.parent.chmod(0o755)
    converted = converted_path(args.out.parent, args.checkpoint, config)
    model = load_model(args.checkpoint, config, converted, args.backend)
    mel = load_mel(args.mel, config.num_mels)
    frames = mel.shape[1]
    x = mx.array(mel.T[None])  # (1, frames, n_mels): the layers are channels-last
    seconds = frames * config.hop_size / config.sampling_rate
    print(f"mel: {config.num_mels} x {frames} frames -> {frames * config.hop_size} samples ({seconds:.2f} s at "
          f"{config.sampling_rate} Hz)")

    # Streamed, or a long input in segments: the stream shows progress and never holds the whole graph at once.
    step = args.chunk_frames if args.stream else args.segment_frames
    chunks = range(0, frames, step)
    start = time.perf_counter()
    if len(chunks) > 1 or args.stream:
        stream = MODELS[kind]["stream"](model)
        pieces = []
        for i in progress(chunks, len(chunks), "vocoding"):
            pieces.append(stream.step(x[:, i:i + step]))
            mx.eval(pieces[-1])
        pieces.append(stream.flush())
        audio = mx.concatenate(pieces, axis=1)
    else:
        audio = model(x)
    mx.eval(audio)
    elapsed = time.perf_counter() - start
    summary = dict(model=kind, samples=int(audio.shape[1]), sampling_rate=config.sampling_rate, seconds=elapsed,
                   real_time_factor=elapsed / seconds, converted=str(converted) if trusted(converted) else None)
    print(f"synthesis: {elapsed:.2f} s for {seconds:.2f} s of audio, real-time factor {elapsed / seconds:.3f}")
    if args.stream:
        offline = model(x)
        difference = float(mx.abs(audio - offline).max())
        summary["stream_max_abs_difference"] = difference
        print(f"streaming: {len(chunks)} chunks of {step} frames; max |streamed - offline| = {difference:.2e} "
              f"(float32 rounding)")
    write_wav(args.out, np.array(audio[0]), config.sampling_rate)
    (args.out.parent / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"wrote {args.out}")
    return summary


if __name__ == "__main__":
    main()
