"""``mlx-deconv vocode``: a HiFi-GAN or BigVGAN checkpoint, its ``config.json`` and a mel spectrogram to a WAV.

One command, one module (about 480 lines): its arguments, files and one-line errors are one concept,
and nothing else in the package reads mels or writes WAVs.

The checkpoint is the original HiFi-GAN repository's ``g_XXXXXXXX`` or NVIDIA's
``bigvgan_generator.pt`` (``{"generator": state_dict}`` or a bare state dict, weight norm on or
removed; read with ``torch.load(..., weights_only=True)``), or MLX weights this command saved
with ``--save-weights`` (no torch needed then). The config is the ``config.json`` beside the
checkpoint unless ``--config`` names another; the model is told by its keys (BigVGAN's has
``activation`` and ``snake_logscale``) or by ``--model``. The mel is ``(n_mels, frames)`` (a leading
batch of one too), as NVIDIA's code and mlx-audio save it: ``.npy`` (``np.load(allow_pickle=False)``)
or ``.pt`` (``torch.load(weights_only=True)``).

Offline, an input longer than ``--segment-frames`` goes through the model's stream in segments of
that many frames (the same samples to float32 rounding, without the whole graph in memory at once);
``--stream`` feeds ``--chunk-frames`` at a time. A progress bar goes to stderr when it is a terminal
and the work has more than one piece; to a log, a line every tenth, only for ten pieces or more.

A missing file, a config that does not fit the checkpoint (the message names the config key) or a
mel of the wrong shape is one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import wave
from pathlib import Path
from typing import Callable, Dict, Iterable, Iterator, Optional, TypeVar

import mlx.core as mx
import numpy as np

from ..backends import backend_names
from ..models import bigvgan, hifigan
from ..streaming import stream as decoder_stream

T = TypeVar("T")

DESCRIPTION = """\
Vocode a mel spectrogram with a HiFi-GAN or BigVGAN checkpoint, on MLX, into a 16-bit WAV file.

  vocode --checkpoint g_02500000 --mel mel.npy --out out.wav            (config.json beside the checkpoint)
  vocode --checkpoint bigvgan_generator.pt --config config.json --mel mel.pt --out out.wav --stream
  vocode --make-random-checkpoint DIR [--model bigvgan]                   (a small random one, all in DIR)

The checkpoint: the original HiFi-GAN repository's g_XXXXXXXX or NVIDIA's bigvgan_generator.pt
(a "generator" entry or a bare state dict, weight norm on or removed; torch reads it, with
weights_only=True), or .safetensors weights saved by --save-weights (no torch needed).
The mel: (n_mels, frames), as NVIDIA's code and mlx-audio save it, in .npy or .pt.
"""

#: Small generators for --make-random-checkpoint (NVIDIA's keys for BigVGAN).
SMALL_HIFIGAN = dict(resblock="1", upsample_rates=[4, 4], upsample_kernel_sizes=[8, 8], upsample_initial_channel=32,
                     resblock_kernel_sizes=[3, 5], resblock_dilation_sizes=[[1, 3], [1, 3]], num_mels=20,
                     sampling_rate=8000)
SMALL_BIGVGAN = dict(resblock="1", upsample_rates=[4, 4], upsample_kernel_sizes=[8, 8], upsample_initial_channel=32,
                     resblock_kernel_sizes=[3, 5], resblock_dilation_sizes=[[1, 3], [1, 3]], activation="snakebeta",
                     snake_logscale=True, use_tanh_at_final=False, use_bias_at_final=False, num_mels=20,
                     sampling_rate=8000, hop_size=16)

#: Per model: its config and generator classes, its checkpoint reader, the small config and the file name
#: --make-random-checkpoint writes, and its name for messages.
MODELS = {
    "hifigan": dict(config=hifigan.HiFiGANConfig, model=hifigan.HiFiGAN, load=hifigan.load_torch_checkpoint,
                    small=SMALL_HIFIGAN, file="generator.pt", name="HiFi-GAN"),
    "bigvgan": dict(config=bigvgan.BigVGANConfig, model=bigvgan.BigVGAN, load=bigvgan.load_torch_checkpoint,
                    small=SMALL_BIGVGAN, file="bigvgan_generator.pt", name="BigVGAN"),
}
#: Keys only BigVGAN's config.json has (its AMP blocks' activation).
BIGVGAN_KEYS = ("activation", "snake_logscale")
#: Checkpoint endings read as MLX weights (model.save_weights), not with torch.
MLX_WEIGHTS = (".safetensors", ".npz")


class VocodeError(Exception):
    """A problem with the user's input: printed as one line, exit status 2."""


# -- the command line -------------------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The command's options, on ``parser``."""
    parser.add_argument("--checkpoint", type=Path, help="generator checkpoint: the original HiFi-GAN format, "
                        "NVIDIA's bigvgan_generator.pt, a bare state dict, or --save-weights' .safetensors")
    parser.add_argument("--config", type=Path, help="the checkpoint's config.json (default: the one beside it)")
    parser.add_argument("--mel", type=Path, help="mel spectrogram (n_mels, frames), .npy or .pt")
    parser.add_argument("--out", type=Path, help="the WAV file to write (default with --make-random-checkpoint "
                        "DIR: DIR/vocoded.wav)")
    parser.add_argument("--model", choices=("auto", "hifigan", "bigvgan"), default="auto",
                        help="the generator; auto: BigVGAN when the config has its keys (activation, snake_logscale)")
    parser.add_argument("--stream", action="store_true", help="synthesise chunk by chunk, as a live input would arrive")
    parser.add_argument("--chunk-frames", type=int, default=32, help="mel frames per chunk with --stream (default 32)")
    parser.add_argument("--segment-frames", type=int, default=256,
                        help="offline, longer inputs go through the model's stream in segments of this many frames "
                             "(default 256)")
    parser.add_argument("--backend", default="auto", help="mlx_deconv backend of every layer ('builtin': MLX's own ops)")
    parser.add_argument("--output-padding", action="store_true",
                        help="HiFi-GAN forks whose upsampling layers with an odd kernel - rate use output_padding=1")
    parser.add_argument("--save-weights", type=Path, metavar="FILE",
                        help="also save the converted weights as MLX .safetensors (read back as --checkpoint FILE)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar or lines on stderr")
    parser.add_argument("--make-random-checkpoint", type=Path, metavar="DIR",
                        help="write a small random checkpoint, config.json and mel.npy to DIR (needs torch; with "
                             "--model bigvgan, NVIDIA's bigvgan package too), then vocode them into DIR/vocoded.wav")
    parser.add_argument("--frames", type=int, default=64, help="mel frames of --make-random-checkpoint's mel (default 64)")


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Registers the ``vocode`` subcommand on ``subparsers`` (of ``argparse``), its handler :func:`run`.

    Returns:
        argparse.ArgumentParser: the subcommand's parser.
    """
    parser = subparsers.add_parser("vocode", help="a HiFi-GAN or BigVGAN checkpoint and a mel spectrogram to a WAV",
                                   description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    parser.set_defaults(run=run, vocode_prog=parser.prog)
    return parser


def build_parser(prog: Optional[str] = None) -> argparse.ArgumentParser:
    """The command as a program of its own (``examples/hifigan_vocoder.py`` runs it so)."""
    parser = argparse.ArgumentParser(prog=prog, description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    parser.set_defaults(run=run, vocode_prog=parser.prog)
    return parser


def main(argv=None, prog: Optional[str] = None) -> int:
    """Parses ``argv`` (default ``sys.argv[1:]``) and runs the command; returns its exit status."""
    return run(build_parser(prog).parse_args(argv))


def run(args: argparse.Namespace) -> int:
    """Runs the command on parsed arguments.

    Returns:
        int: ``0``, or ``2`` after one line on stderr for a problem with the input (a missing file, a
        config that does not fit the checkpoint, a mel of the wrong shape, a bad option value).
    """
    prog = getattr(args, "vocode_prog", "mlx-deconv vocode")
    try:
        vocode(args)
    except VocodeError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2
    return 0


# -- the work ---------------------------------------------------------------------------------------------------
def vocode(args: argparse.Namespace) -> Dict:
    """Does what the arguments say; returns a summary (model, samples, sampling_rate, seconds, out).

    Raises:
        VocodeError: for a problem with the input, with a one-line message.
    """
    for name in ("chunk_frames", "segment_frames", "frames"):
        if getattr(args, name) < 1:
            raise VocodeError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    known = ("auto", *backend_names("conv1d", "conv_transpose1d"))  # the models hold layers of both ops
    if args.backend not in known:  # one line here; a layer's own refusal would be a traceback
        raise VocodeError(f"--backend must be one of {', '.join(known)}, got {args.backend!r}")
    if args.save_weights and args.save_weights.suffix != ".safetensors":
        raise VocodeError(f"--save-weights: give a .safetensors file, got {args.save_weights}")
    if args.make_random_checkpoint:
        folder = args.make_random_checkpoint
        made = make_random_checkpoint(folder, args.frames, "hifigan" if args.model == "auto" else args.model)
        args.checkpoint = args.checkpoint or made
        args.config = args.config or folder / "config.json"
        args.mel = args.mel or folder / "mel.npy"
        args.out = args.out or folder / "vocoded.wav"
    missing = [flag for flag in ("checkpoint", "mel", "out") if getattr(args, flag) is None]
    if missing:
        raise VocodeError(f"give {', '.join('--' + m for m in missing)} (or --make-random-checkpoint DIR)")
    existing_file(args.checkpoint, "--checkpoint")
    config_path = args.config
    if config_path is None:
        config_path = args.checkpoint.parent / "config.json"
        if not config_path.is_file():
            raise VocodeError(f"no config.json beside the checkpoint ({config_path}): give --config")
    existing_file(config_path, "--config")
    existing_file(args.mel, "--mel")
    check_out(args.out, {"--checkpoint": args.checkpoint, "--config": config_path, "--mel": args.mel,
                         "--save-weights": args.save_weights})

    kind, config = read_config(config_path, args.model, args.output_padding)
    entry = MODELS[kind]
    print(f"model: {entry['name']} ({config_path})")
    mel = load_mel(args.mel, config.num_mels)  # before the checkpoint: a wrong mel fails without the long read
    model = load_generator(kind, args.checkpoint, config, args.backend, config_path)
    if args.save_weights:
        save_weights(model, args.save_weights)
        print(f"weights: saved to {args.save_weights}")
    frames = mel.shape[1]
    seconds = frames * config.hop_size / config.sampling_rate
    print(f"mel: {config.num_mels} x {frames} frames -> {frames * config.hop_size} samples ({seconds:.2f} s at "
          f"{config.sampling_rate} Hz)")

    show = not args.no_progress
    start = time.perf_counter()
    if args.stream:
        audio = streamed(model, mx.array(mel[None]), args.chunk_frames, show)
    else:
        audio = offline(model, mx.array(mel[None]), args.segment_frames, show)
    elapsed = time.perf_counter() - start
    samples = np.array(audio.reshape(-1))
    bad = int(samples.size - np.isfinite(samples).sum())
    if bad:
        raise VocodeError(f"--checkpoint: the generator gave {bad} non-finite samples (NaN or inf) of {samples.size} "
                          f"from a finite mel: its weights hold non-finite values or a zero weight-norm direction; "
                          f"nothing was written")
    how = f"streamed in chunks of {args.chunk_frames} frames" if args.stream else "offline"
    print(f"synthesis ({how}): {elapsed:.2f} s for {seconds:.2f} s of audio, real-time factor {elapsed / seconds:.3f}")
    write_wav(args.out, samples, config.sampling_rate)
    print(f"wrote {args.out} ({samples.size} samples, 16-bit, {config.sampling_rate} Hz)")
    return dict(model=kind, samples=int(samples.size), sampling_rate=config.sampling_rate, seconds=elapsed,
                out=str(args.out))


def check_out(out: Path, inputs: Dict[str, Optional[Path]]) -> None:
    """Refuses an ``--out`` that is one of the command's other files (it would be replaced by the WAV), and an
    ``--out`` inside a path that is a file; says when an existing file will be replaced.

    Raises:
        VocodeError: naming both flags, or the path.
    """
    for flag, path in inputs.items():
        if path is not None and (out.resolve() == path.resolve() or (out.exists() and path.exists()
                                                                      and os.path.samefile(out, path))):
            raise VocodeError(f"--out: {out} is the {flag} file: writing the WAV there would replace it")
    for parent in out.resolve().parents:
        if parent.exists() and not parent.is_dir():
            raise VocodeError(f"--out: cannot write {out}: {parent} is a file, not a folder")
    if out.is_dir():
        raise VocodeError(f"--out: {out} is a folder: give a file name such as {out / 'vocoded.wav'}")
    if out.exists():
        print(f"--out: replacing {out}")


def existing_file(path: Path, flag: str) -> None:
    """Raises a one-line :class:`VocodeError` naming ``path`` (and ``flag``) unless it is a readable file."""
    if not path.exists():
        raise VocodeError(f"{flag}: no such file: {path}")
    if not path.is_file():
        raise VocodeError(f"{flag}: not a file: {path}")
    if not os.access(path, os.R_OK):
        raise VocodeError(f"{flag}: cannot read {path}: permission denied")


def model_kind(values: Dict, requested: str = "auto") -> str:
    """``"bigvgan"`` or ``"hifigan"``: as requested, or told by the config's keys."""
    if requested != "auto":
        return requested
    return "bigvgan" if any(key in values for key in BIGVGAN_KEYS) else "hifigan"


def read_config(path: Path, requested: str = "auto", output_padding: bool = False):
    """``(kind, config)`` from a ``config.json``.

    Raises:
        VocodeError: for a file that is not JSON, or not a config of the model.
    """
    try:
        values = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise VocodeError(f"--config: cannot read {path} as JSON: {err}") from None
    if not isinstance(values, dict):
        raise VocodeError(f"--config: {path} is not a JSON object of config keys")
    kind = model_kind(values, requested)
    if output_padding:
        if kind != "hifigan":
            raise VocodeError("--output-padding is for HiFi-GAN forks; BigVGAN's upsampling has none")
        values["upsample_output_padding"] = True
    try:
        config = MODELS[kind]["config"].from_dict(values)
    except (ValueError, TypeError) as err:
        raise VocodeError(f"--config: {path} is not a {MODELS[kind]['name']} config: {err}") from None
    return kind, config


def load_generator(kind: str, checkpoint: Path, config, backend: str = "auto", config_path: Optional[Path] = None):
    """The generator of ``config`` (taking mels ``(N, n_mels, frames)``) with the checkpoint's weights.

    Raises:
        VocodeError: when the checkpoint cannot be read, or does not fit the config (the message names the
            config key when the checkpoint's tensors tell it).
    """
    entry = MODELS[kind]
    model = entry["model"](config, backend=backend, data_format="NCL")  # NVIDIA's layout, as the mel is saved
    start = time.perf_counter()
    where = f"{config_path}" if config_path is not None else "the config"
    if checkpoint.suffix in MLX_WEIGHTS:
        try:
            model.load_weights(str(checkpoint))
        except (ValueError, OSError, RuntimeError) as err:
            raise VocodeError(f"--checkpoint: {checkpoint} does not hold this model's MLX weights for {where}: "
                              f"{one_line(err)}") from None
    else:
        state = read_checkpoint(entry["load"], checkpoint)
        try:
            model.load_torch_state_dict(state)
        except ValueError as err:
            raise VocodeError(f"--checkpoint: {checkpoint} does not fit {where}: {one_line(err)}") from None
    mx.eval(model.parameters())
    print(f"weights: {checkpoint} read in {time.perf_counter() - start:.1f} s")
    return model


def read_checkpoint(load: Callable, checkpoint: Path):
    """The state dict of a PyTorch checkpoint file, read by ``load`` (``weights_only=True``).

    Raises:
        VocodeError: without torch, or for a file that is no state dict.
    """
    import pickle

    try:
        return load(checkpoint)
    except ImportError:
        raise VocodeError(f"--checkpoint: reading {checkpoint} needs torch (pip install torch); weights saved by "
                          f"--save-weights do not") from None
    except (ValueError, RuntimeError, EOFError, OSError, KeyError, pickle.UnpicklingError) as err:
        # a file that is no checkpoint makes torch's unpickler raise several kinds (KeyError: an unknown opcode)
        raise VocodeError(f"--checkpoint: cannot read {checkpoint} as a PyTorch checkpoint: "
                          f"{type(err).__name__}: {one_line(err)}") from None


def one_line(err: BaseException) -> str:
    """An exception's message on one line (torch's can span several)."""
    return " ".join(str(err).split()) or type(err).__name__


def save_weights(model, path: Path) -> None:
    """The model's MLX weights to ``path`` (``.safetensors``), through a temporary file renamed into place."""
    try:
        write_atomically(path, lambda temporary: model.save_weights(str(temporary)), suffix=".safetensors")
    except OSError as err:
        raise VocodeError(f"--save-weights: cannot write {path}: {err.strerror or err}") from None


def load_mel(path: Path, num_mels: int) -> np.ndarray:
    """The mel of a ``.npy`` or ``.pt`` file as float32 ``(n_mels, frames)``.

    The layout is NVIDIA's and mlx-audio's, ``(n_mels, frames)`` (or ``(1, n_mels, frames)``); it is not
    guessed from the shape.

    Raises:
        VocodeError: for another file type, a shape that does not fit ``num_mels``, or non-finite values.
    """
    if path.suffix == ".npy":
        try:
            mel = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as err:
            raise VocodeError(f"--mel: cannot read {path} as .npy: {one_line(err)}") from None
    elif path.suffix == ".pt":
        try:
            import torch
        except ImportError:
            raise VocodeError(f"--mel: reading {path} needs torch (pip install torch); save the mel as .npy "
                              f"to go without") from None
        try:
            mel = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 (torch raises several kinds for a bad file; each is the user's input)
            raise VocodeError(f"--mel: cannot read {path} with torch.load(weights_only=True): "
                              f"{type(err).__name__}: {one_line(err)}") from None
        if not hasattr(mel, "detach"):
            raise VocodeError(f"--mel: {path} holds a {type(mel).__name__}, not a tensor")
        if mel.is_complex() or mel.dtype == torch.bool:  # before .float(), which drops the imaginary part
            raise VocodeError(f"--mel: {path} holds {mel.dtype}, not real numbers")
        mel = mel.detach().cpu().float().numpy()
    else:
        raise VocodeError(f"--mel: {path} is neither .npy nor .pt")
    if not np.issubdtype(mel.dtype, np.number) or np.iscomplexobj(mel):
        raise VocodeError(f"--mel: {path} holds {mel.dtype}, not real numbers")
    mel = np.asarray(mel, np.float32)
    if mel.ndim == 3 and mel.shape[0] == 1:
        mel = mel[0]
    if mel.ndim != 2 or mel.shape[0] != num_mels:
        hint = ""
        if mel.ndim == 2 and mel.shape[1] == num_mels:
            hint = f": it looks (frames, n_mels); save its transpose (mel.T)"
        raise VocodeError(f"--mel: {path} must be (n_mels={num_mels}, frames) as the config's num_mels says, "
                          f"got shape {tuple(mel.shape)}{hint}")
    if mel.shape[1] < 1:
        raise VocodeError(f"--mel: {path} has no frames")
    bad = int(np.size(mel) - np.isfinite(mel).sum())
    if bad:
        raise VocodeError(f"--mel: {path} has {bad} non-finite values (NaN or inf)")
    return mel


def offline(model, mel: mx.array, segment_frames: int, show: bool = True) -> mx.array:
    """The model on ``mel`` ``(1, n_mels, frames)``: in one call when it is at most ``segment_frames`` long,
    else through :func:`streamed` in segments of that many frames (the same samples to float32 rounding,
    without the whole input's graph in memory)."""
    if mel.shape[-1] <= segment_frames:
        audio = model(mel)
        mx.eval(audio)
        return audio
    return streamed(model, mel, segment_frames, show)


def streamed(model, mel: mx.array, chunk_frames: int, show: bool = True) -> mx.array:
    """The model fed ``mel`` ``(1, n_mels, frames)`` ``chunk_frames`` at a time through
    :func:`mlx_deconv.stream`, the package's exact stream of any decoder (for this package's models it keeps
    their own state); the audio ``(1, 1, samples)``."""
    stream = decoder_stream(model, in_axis=-1, out_axis=-1)
    starts = range(0, mel.shape[-1], chunk_frames)
    pieces = []
    for i in progress(starts, len(starts), "vocoding", enabled=show):
        pieces.append(stream.step(mel[..., i:i + chunk_frames]))
        mx.eval(pieces[-1])  # one chunk's graph at a time
    pieces.append(stream.flush())
    audio = mx.concatenate(pieces, axis=-1)
    mx.eval(audio)
    return audio


def progress(items: Iterable[T], total: int, label: str, enabled: bool = True,
             stream=None) -> Iterator[T]:
    """Yields ``items``, drawing a bar on stderr when it is a terminal and ``total > 1``; to a file or pipe, a
    line every tenth, only when ``total >= 10`` (a log gets no bar's carriage returns, and a short input no lines)."""
    out = sys.stderr if stream is None else stream
    tty = enabled and out.isatty() and total > 1
    lines = enabled and not out.isatty() and total >= 10
    for i, item in enumerate(items, 1):
        yield item
        if tty:
            filled = 30 * i // total
            out.write(f"\r{label} [{'#' * filled}{'.' * (30 - filled)}] {i}/{total}" + ("\n" if i == total else ""))
            out.flush()
        elif lines and i * 10 // total != (i - 1) * 10 // total:  # each tenth, once
            out.write(f"{label}: {i}/{total}\n")
            out.flush()


def write_atomically(path: Path, write: Callable[[Path], None], suffix: str = "") -> None:
    """``write(temporary)`` in ``path``'s folder (made if missing), then the file renamed to ``path``: a reader
    never sees half a file, and a failure leaves nothing behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-", suffix=suffix)
    os.close(handle)
    try:
        write(Path(temporary))
        os.chmod(temporary, 0o666 & ~_umask())  # mkstemp's 0600 is for the temporary name only
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_wav(path: Path, audio: np.ndarray, rate: int) -> None:
    """Mono 16-bit PCM of ``audio`` (1-D float, clipped to ``[-1, 1]``, rounded to the nearest step) at ``rate`` Hz."""
    pcm = np.round(np.clip(np.asarray(audio, np.float64), -1.0, 1.0) * 32767).astype("<i2")

    def write(temporary: Path) -> None:
        with wave.open(str(temporary), "wb") as f:
            f.setnchannels(1)
            f.setsampwidth(2)
            f.setframerate(int(rate))
            f.writeframes(pcm.tobytes())

    try:
        write_atomically(path, write, suffix=".wav")
    except OSError as err:
        raise VocodeError(f"--out: cannot write {path}: {err.strerror or err}") from None


#: The file that marks a folder as ``--make-random-checkpoint``'s own: its files may be written again.
RANDOM_MARK = ".mlx-deconv-random-checkpoint"


def make_random_checkpoint(folder: Path, frames: int, kind: str = "hifigan") -> Path:
    """A small random generator in its own repository's format (NVIDIA's own code writes BigVGAN's), its
    ``config.json`` and a mel ``(n_mels, frames)`` in ``folder``; returns the checkpoint's path.

    Raises:
        VocodeError: without torch (or, for BigVGAN, NVIDIA's ``bigvgan`` package), or when ``folder`` holds one
            of those files and another run of this command did not write them (they would be replaced).
    """
    import warnings

    try:
        import torch
    except ImportError:
        raise VocodeError("--make-random-checkpoint needs torch (pip install torch)") from None
    entry = MODELS[kind]
    config = entry["config"].from_dict(entry["small"])
    torch.manual_seed(0)
    with warnings.catch_warnings():  # the original checkpoints use the legacy weight norm, which torch deprecates
        warnings.simplefilter("ignore", FutureWarning)
        if kind == "bigvgan":  # NVIDIA's own generator, its Snake parameters moved off their initial values
            try:
                generator = bigvgan.pytorch.randomize(bigvgan.torch_generator(config))
            except ImportError as err:
                raise VocodeError(f"--make-random-checkpoint --model bigvgan needs NVIDIA's generator: {err}") from None
        else:
            generator = hifigan.torch_generator(config)
    checkpoint = folder / entry["file"]
    theirs = [p.name for p in (checkpoint, folder / "config.json", folder / "mel.npy", folder / "vocoded.wav")
              if p.exists()]
    if theirs and not (folder / RANDOM_MARK).exists():  # files another run of this command did not write
        raise VocodeError(f"--make-random-checkpoint: {folder} already holds {', '.join(theirs)}, which this command "
                          f"would replace: give a new or empty folder")
    mel = np.random.default_rng(0).standard_normal((config.num_mels, frames)).astype(np.float32)
    # Each file through a temporary name renamed into place: a link planted under its name is replaced, never followed.
    try:
        write_atomically(folder / RANDOM_MARK,
                         lambda t: t.write_text("written by mlx-deconv vocode --make-random-checkpoint\n"))
        write_atomically(checkpoint, lambda t: torch.save({"generator": generator.state_dict()}, t), suffix=".pt")
        write_atomically(folder / "config.json", lambda t: t.write_text(json.dumps(entry["small"], indent=2)))
        write_atomically(folder / "mel.npy", lambda t: np.save(t, mel), suffix=".npy")
    except OSError as err:
        raise VocodeError(f"--make-random-checkpoint: cannot write into {folder}: {err.strerror or err}") from None
    print(f"wrote {checkpoint}, config.json and mel.npy ({config.num_mels} x {frames}) of a random {entry['name']}")
    return checkpoint
