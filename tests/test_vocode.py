"""``mlx-deconv vocode`` end to end: checkpoints in their own formats and a mel in NVIDIA's layout to a WAV whose
samples are the PyTorch generator's, run in float64; and the one-line errors.

The WAV holds ``round(clip(audio) * 32767)``. The MLX model runs in float32: against the float64 generator it is
off by about 1e-7 on these small generators (measured), so every sample must be within ``0.5 + 32767 * 1e-6``
steps (0.53) of ``reference * 32767``: the nearest step, except where the reference sits within 0.03 steps
of a half step. The streamed and segmented runs are held to the same bound.
"""

import json
import os
import subprocess
import sys
import warnings
import wave
from pathlib import Path

import numpy as np
import pytest

import mlx_deconv as md  # noqa: F401 (first, as a user would)
from mlx_deconv import bigvgan, hifigan
from mlx_deconv.cli import vocode

ROOT = Path(__file__).resolve().parent.parent
#: Within this many 16-bit steps of the float64 reference (see the module's docstring).
STEPS = 0.5 + 32767 * 1e-6

HIFIGAN = dict(resblock="1", upsample_rates=[4, 2], upsample_kernel_sizes=[8, 4], upsample_initial_channel=16,
               resblock_kernel_sizes=[3, 5], resblock_dilation_sizes=[[1, 3, 5], [1, 3, 5]], num_mels=8,
               sampling_rate=8000, batch_size=16, learning_rate=0.0002)  # and two training keys, as config.json has
BIGVGAN = dict(resblock="1", upsample_rates=[4, 2], upsample_kernel_sizes=[8, 4], upsample_initial_channel=16,
               resblock_kernel_sizes=[3, 5], resblock_dilation_sizes=[[1, 3], [1, 2]], activation="snakebeta",
               snake_logscale=True, num_mels=8, sampling_rate=8000, use_tanh_at_final=False, use_bias_at_final=False,
               hop_size=8, segment_size=65536)


def cli(*args, cwd=None):
    """``python -m mlx_deconv vocode ARGS`` in a subprocess, this checkout's package first on the path."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p))
    return subprocess.run([sys.executable, "-m", "mlx_deconv", "vocode", *map(str, args)], capture_output=True,
                          text=True, timeout=600, cwd=cwd or ROOT, env=env)


def ok(result):
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return result


def read_wav(path):
    with wave.open(str(path)) as f:
        assert f.getnchannels() == 1 and f.getsampwidth() == 2
        return np.frombuffer(f.readframes(f.getnframes()), "<i2"), f.getframerate()


def assert_wav_is(path, reference, rate):
    """The WAV at ``path`` is ``reference`` (float64, 1-D) at 16 bits, to the module's bound."""
    pcm, got_rate = read_wav(path)
    assert got_rate == rate and pcm.shape == reference.shape
    assert np.std(reference) > 0.01  # a signal, not a flat line
    worst = float(np.abs(pcm - reference * 32767).max())
    assert worst <= STEPS, worst


def hifigan_checkpoint(folder, weight_norm="legacy"):
    """The original repository's layout: ``g_00000100`` (no extension) and ``config.json`` beside it.

    Returns ``(checkpoint, the generator in float64)``."""
    torch = pytest.importorskip("torch")
    config = hifigan.HiFiGANConfig.from_dict(HIFIGAN)
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        generator = hifigan.torch_generator(config, weight_norm=weight_norm)
    with torch.no_grad():  # g away from ||v||, so weight norm is not the identity
        for name, p in generator.named_parameters():
            p.mul_(1 + 0.3 * torch.rand_like(p)) if name.endswith(("weight_g", "original0")) else None
    folder.mkdir(parents=True, exist_ok=True)
    checkpoint = folder / "g_00000100"
    torch.save({"generator": generator.state_dict(), "steps": 100}, checkpoint)
    (folder / "config.json").write_text(json.dumps(HIFIGAN))
    return checkpoint, generator.double().eval()


def bigvgan_checkpoint(folder):
    """NVIDIA's ``bigvgan_generator.pt`` from NVIDIA's own generator, and that generator in float64; skips
    without torch or NVIDIA's ``bigvgan`` package (whose ``__init__`` needs librosa, which the generator does not)."""
    torch = pytest.importorskip("torch")
    try:
        bigvgan.nvidia_module()
    except ImportError as err:
        pytest.skip(f"NVIDIA's bigvgan package is not usable: {err}")
    config = bigvgan.BigVGANConfig.from_dict(BIGVGAN)
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        generator = bigvgan.pytorch.randomize(bigvgan.torch_generator(config))
    folder.mkdir(parents=True, exist_ok=True)
    checkpoint = folder / "bigvgan_generator.pt"
    torch.save({"generator": generator.state_dict()}, checkpoint)
    (folder / "config.json").write_text(json.dumps(BIGVGAN))
    return checkpoint, generator.double().eval()


def reference(generator, mel):
    """The PyTorch generator (float64) on ``mel`` ``(n_mels, frames)``: the samples, 1-D."""
    import torch

    with torch.no_grad():
        return generator(torch.from_numpy(np.asarray(mel, np.float64))[None]).numpy().reshape(-1)


def nvidia_mel(n_mels=8, frames=37, seed=0):
    """A mel as NVIDIA's code saves one: ``(n_mels, frames)``, float32."""
    return np.random.default_rng(seed).standard_normal((n_mels, frames)).astype(np.float32)


# -- end to end --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("weight_norm", ["legacy", None])
def test_hifigan_checkpoint_to_wav_offline_segmented_and_streamed(tmp_path, weight_norm):
    checkpoint, generator = hifigan_checkpoint(tmp_path / "ck", weight_norm)
    mel = nvidia_mel()
    np.save(tmp_path / "mel.npy", mel)
    want = reference(generator, mel)
    assert want.size == 37 * 8
    # No --config: the config.json beside the checkpoint. (Without weight norm, offline only: the rest is the same.)
    runs = (("offline", []), ("segments", ["--segment-frames", 8]), ("stream", ["--stream", "--chunk-frames", 5]))
    for name, extra in runs if weight_norm else runs[:1]:
        out = tmp_path / name / "v.wav"  # a folder that does not exist yet
        result = ok(cli("--checkpoint", checkpoint, "--mel", tmp_path / "mel.npy", "--out", out, *extra))
        assert "HiFi-GAN" in result.stdout and "Traceback" not in result.stderr
        assert_wav_is(out, want, 8000)


def test_bigvgan_checkpoint_to_wav_with_a_pt_mel(tmp_path):
    import torch

    checkpoint, generator = bigvgan_checkpoint(tmp_path / "ck")
    mel = nvidia_mel(frames=29, seed=1)
    torch.save(torch.from_numpy(mel)[None], tmp_path / "mel.pt")  # with a leading batch of one
    want = reference(generator, mel)
    for name, extra in (("offline", []), ("stream", ["--stream", "--chunk-frames", 4])):
        out = tmp_path / f"{name}.wav"
        result = ok(cli("--checkpoint", checkpoint, "--config", tmp_path / "ck" / "config.json",
                        "--mel", tmp_path / "mel.pt", "--out", out, *extra))
        assert "BigVGAN" in result.stdout  # told by the config's keys
        assert_wav_is(out, want, 8000)


def test_a_square_mel_file_is_read_as_n_mels_by_frames(tmp_path, capsys):
    """An 8 x 8 mel (8 bands): the command reads it as NVIDIA's (n_mels, frames), never its transpose."""
    checkpoint, generator = hifigan_checkpoint(tmp_path / "ck")
    square = nvidia_mel(frames=8, seed=3)
    np.save(tmp_path / "mel.npy", square)
    status = vocode.main(["--checkpoint", str(checkpoint), "--mel", str(tmp_path / "mel.npy"),
                          "--out", str(tmp_path / "o.wav")])
    assert status == 0, capsys.readouterr().err
    want, transposed = reference(generator, square), reference(generator, square.T)
    assert_wav_is(tmp_path / "o.wav", want, 8000)
    assert np.abs(want - transposed).max() * 32767 > 100  # the other reading would be caught


def test_make_random_checkpoint_writes_everything_into_its_folder(tmp_path):
    pytest.importorskip("torch")
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    folder = tmp_path / "random"
    result = ok(cli("--make-random-checkpoint", folder, "--frames", 24, "--stream", "--chunk-frames", 7, cwd=elsewhere))
    assert sorted(p.name for p in folder.iterdir()) == [vocode.RANDOM_MARK, "config.json", "generator.pt", "mel.npy",
                                                        "vocoded.wav"]
    assert list(elsewhere.iterdir()) == []  # nothing in the current folder (the example wrote out/hifigan/)
    config = hifigan.HiFiGANConfig.from_json(folder / "config.json")
    mel = np.load(folder / "mel.npy")
    assert mel.shape == (config.num_mels, 24)  # NVIDIA's layout
    import torch

    generator = hifigan.torch_generator(config)
    generator.load_state_dict(torch.load(folder / "generator.pt", weights_only=True)["generator"])
    assert_wav_is(folder / "vocoded.wav", reference(generator.double().eval(), mel), config.sampling_rate)
    assert str(folder / "vocoded.wav") in result.stdout


def test_make_random_bigvgan_checkpoint(tmp_path):
    bigvgan_checkpoint(tmp_path / "probe")  # skips without NVIDIA's package
    folder = tmp_path / "random"
    ok(cli("--model", "bigvgan", "--make-random-checkpoint", folder, "--frames", 20))
    assert sorted(p.name for p in folder.iterdir()) == [vocode.RANDOM_MARK, "bigvgan_generator.pt", "config.json",
                                                        "mel.npy", "vocoded.wav"]
    config = bigvgan.BigVGANConfig.from_json(folder / "config.json")
    pcm, rate = read_wav(folder / "vocoded.wav")
    assert rate == config.sampling_rate and pcm.size == 20 * config.hop_size and np.std(pcm) > 100


def test_saved_weights_vocode_the_same_without_the_checkpoint(tmp_path):
    checkpoint, generator = hifigan_checkpoint(tmp_path / "ck")
    mel = nvidia_mel(frames=12)
    np.save(tmp_path / "mel.npy", mel)
    saved = tmp_path / "converted.safetensors"
    ok(cli("--checkpoint", checkpoint, "--mel", tmp_path / "mel.npy", "--out", tmp_path / "a.wav", "--save-weights", saved))
    ok(cli("--checkpoint", saved, "--config", tmp_path / "ck" / "config.json", "--mel", tmp_path / "mel.npy",
           "--out", tmp_path / "b.wav"))
    assert (tmp_path / "a.wav").read_bytes() == (tmp_path / "b.wav").read_bytes()
    assert_wav_is(tmp_path / "b.wav", reference(generator, mel), 8000)


# -- errors: one line on stderr, status 2 -------------------------------------------------------------------------------
def one_line_error(result, prog="python -m mlx_deconv vocode"):
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[0].startswith(f"{prog}: error: "), lines[0]
    return lines[0]


def in_process(capsys, *args):
    """The command run here (no interpreter to start): its status and output, as ``cli`` gives them."""
    capsys.readouterr()
    status = vocode.main(list(map(str, args)), prog="mlx-deconv vocode")
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(args, status, out, err)


def test_a_missing_file_is_one_line_naming_it(tmp_path):
    mel = tmp_path / "mel.npy"
    np.save(mel, nvidia_mel())
    gone = tmp_path / "g_missing"
    assert str(gone) in one_line_error(cli("--checkpoint", gone, "--mel", mel, "--out", tmp_path / "o.wav"))
    checkpoint = tmp_path / "alone" / "g_00000100"  # a checkpoint with no config.json beside it
    checkpoint.parent.mkdir()
    checkpoint.write_bytes(b"x")
    line = one_line_error(cli("--checkpoint", checkpoint, "--mel", mel, "--out", tmp_path / "o.wav"))
    assert str(checkpoint.parent / "config.json") in line and "--config" in line
    (checkpoint.parent / "config.json").write_text(json.dumps(HIFIGAN))
    line = one_line_error(cli("--checkpoint", checkpoint, "--mel", tmp_path / "nope.npy", "--out", tmp_path / "o.wav"))
    assert str(tmp_path / "nope.npy") in line and "--mel" in line
    line = one_line_error(cli("--checkpoint", checkpoint, "--config", tmp_path / "c.json", "--mel", mel,
                              "--out", tmp_path / "o.wav"))
    assert str(tmp_path / "c.json") in line
    assert not (tmp_path / "o.wav").exists()


@pytest.mark.parametrize("kind, change, key, values", [
    ("hifigan", dict(upsample_initial_channel=32), "upsample_initial_channel", ("32", "16")),
    ("hifigan", dict(num_mels=10), "num_mels", ("10", "8")),
    ("hifigan", dict(upsample_kernel_sizes=[8, 6]), "upsample_kernel_sizes", ("[8, 6]", "[8, 4]")),
    ("hifigan", dict(resblock_kernel_sizes=[3, 7]), "resblock_kernel_sizes", ("[3, 7]", "[3, 5]")),
    ("bigvgan", dict(upsample_initial_channel=8), "upsample_initial_channel", ("8", "16")),
    ("bigvgan", dict(upsample_rates=[4, 2, 2], upsample_kernel_sizes=[8, 4, 4], upsample_initial_channel=32, hop_size=16),
     "upsample_rates", ("[4, 2, 2]", "2 rates")),
])
def test_a_config_that_does_not_fit_names_its_key(tmp_path, capsys, kind, change, key, values):
    checkpoint, _ = (hifigan_checkpoint if kind == "hifigan" else bigvgan_checkpoint)(tmp_path / "ck")
    config = json.loads((tmp_path / "ck" / "config.json").read_text())
    (tmp_path / "wrong.json").write_text(json.dumps({**config, **change}))
    mel = tmp_path / "mel.npy"
    np.save(mel, nvidia_mel(n_mels=change.get("num_mels", 8)))
    line = one_line_error(in_process(capsys, "--checkpoint", checkpoint, "--config", tmp_path / "wrong.json",
                                     "--mel", mel, "--out", tmp_path / "o.wav"), "mlx-deconv vocode")
    mine, theirs = values
    assert f"{key} is {mine} in the config, the checkpoint needs {theirs}" in line, line
    assert str(checkpoint) in line and not (tmp_path / "o.wav").exists()


def test_a_mel_in_the_other_layout_is_refused_not_guessed(tmp_path, capsys):
    checkpoint, _ = hifigan_checkpoint(tmp_path / "ck")
    np.save(tmp_path / "mel.npy", nvidia_mel(frames=30).T)  # (frames, n_mels)
    line = one_line_error(in_process(capsys, "--checkpoint", checkpoint, "--mel", tmp_path / "mel.npy",
                                     "--out", tmp_path / "o.wav"), "mlx-deconv vocode")
    assert "(n_mels=8, frames)" in line and "(30, 8)" in line and "mel.T" in line


def test_bad_values_are_one_line(tmp_path, capsys):
    checkpoint, _ = hifigan_checkpoint(tmp_path / "ck")
    np.save(tmp_path / "mel.npy", nvidia_mel())
    mel, out = ["--mel", tmp_path / "mel.npy"], ["--out", tmp_path / "o.wav"]
    base = ["--checkpoint", checkpoint, *mel, *out]
    error = lambda *args: one_line_error(in_process(capsys, *args), "mlx-deconv vocode")  # noqa: E731
    assert "--chunk-frames must be >= 1, got 0" in error(*base, "--stream", "--chunk-frames", 0)
    assert "--backend must be one of auto, builtin" in error(*base, "--backend", "nope")
    assert "--save-weights: give a .safetensors" in error(*base, "--save-weights", tmp_path / "w.npz")
    bad = nvidia_mel()
    bad[3, 4] = np.nan
    np.save(tmp_path / "nan.npy", bad)
    assert "1 non-finite" in error("--checkpoint", checkpoint, "--mel", tmp_path / "nan.npy", *out)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    line = error("--checkpoint", tmp_path / "junk.pt", "--config", tmp_path / "ck" / "config.json", *mel, *out)
    assert "cannot read" in line and "junk.pt" in line
    assert "not a BigVGAN config" in error(*base, "--model", "bigvgan")  # a HiFi-GAN config lacks BigVGAN's keys
    assert not (tmp_path / "o.wav").exists()


def test_no_file_of_the_user_s_is_replaced_unasked(tmp_path, capsys):
    """``--out`` naming an input is refused (the WAV would replace it); a random checkpoint goes into a new folder
    or its own earlier one only; an existing ``--out`` is replaced, and the command says so."""
    checkpoint, _ = hifigan_checkpoint(tmp_path / "ck")
    np.save(tmp_path / "mel.npy", nvidia_mel())
    config = tmp_path / "ck" / "config.json"
    before = {p: p.read_bytes() for p in (checkpoint, config, tmp_path / "mel.npy")}
    error = lambda *args: one_line_error(in_process(capsys, *args), "mlx-deconv vocode")  # noqa: E731
    base = ["--checkpoint", checkpoint, "--mel", tmp_path / "mel.npy"]
    for flag, target in (("--checkpoint", checkpoint), ("--config", config), ("--mel", tmp_path / "mel.npy")):
        assert f"is the {flag} file" in error(*base, "--out", target)
    assert "is a file, not a folder" in error(*base, "--out", tmp_path / "mel.npy" / "x.wav")
    assert all(p.read_bytes() == data for p, data in before.items())
    (tmp_path / "old.wav").write_bytes(b"old")
    replaced = in_process(capsys, *base, "--out", tmp_path / "old.wav")
    assert replaced.returncode == 0 and f"--out: replacing {tmp_path / 'old.wav'}" in replaced.stdout
    assert (tmp_path / "old.wav").read_bytes()[:4] == b"RIFF"
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "config.json").write_text("{my own}")
    assert "already holds config.json" in error("--make-random-checkpoint", mine)
    assert (mine / "config.json").read_text() == "{my own}"
    again = tmp_path / "again"
    for _ in range(2):  # its own folder, written twice
        assert in_process(capsys, "--make-random-checkpoint", again, "--frames", 8).returncode == 0
    # A link planted under one of its names, marker and all, is replaced: the file it points to is left alone.
    planted = tmp_path / "planted"
    planted.mkdir()
    (planted / vocode.RANDOM_MARK).write_text("")
    victim = tmp_path / "victim.txt"
    victim.write_text("mine")
    for name in ("config.json", "mel.npy", "generator.pt"):
        (planted / name).symlink_to(victim)
    assert in_process(capsys, "--make-random-checkpoint", planted, "--frames", 8).returncode == 0
    assert victim.read_text() == "mine" and not (planted / "config.json").is_symlink()


def test_what_cannot_be_audio_is_refused(tmp_path, capsys):
    """A checkpoint that makes non-finite samples writes no silence; a complex or boolean mel, and a file that is
    no checkpoint at all, are one line each."""
    torch = pytest.importorskip("torch")
    checkpoint, _ = hifigan_checkpoint(tmp_path / "ck")
    np.save(tmp_path / "mel.npy", nvidia_mel())
    error = lambda *args: one_line_error(in_process(capsys, *args), "mlx-deconv vocode")  # noqa: E731
    state = torch.load(checkpoint, weights_only=True)
    state["generator"]["conv_post.bias"] = torch.full_like(state["generator"]["conv_post.bias"], float("nan"))
    torch.save(state, tmp_path / "ck" / "g_nan")
    out = tmp_path / "o.wav"
    line = error("--checkpoint", tmp_path / "ck" / "g_nan", "--mel", tmp_path / "mel.npy", "--out", out)
    assert "non-finite samples" in line and not out.exists()
    for name, tensor in (("complex", torch.complex(torch.ones(8, 5), torch.ones(8, 5))),
                         ("bool", torch.ones(8, 5, dtype=torch.bool))):
        torch.save(tensor, tmp_path / f"{name}.pt")
        assert "not real numbers" in error("--checkpoint", checkpoint, "--mel", tmp_path / f"{name}.pt", "--out", out)
    (tmp_path / "hello.pt").write_bytes(b"hello world")
    line = error("--checkpoint", tmp_path / "hello.pt", "--config", tmp_path / "ck" / "config.json",
                 "--mel", tmp_path / "mel.npy", "--out", out)
    assert "cannot read" in line and "hello.pt" in line


# -- pieces ------------------------------------------------------------------------------------------------------------
class FakeStderr:
    def __init__(self, tty):
        self.tty, self.text = tty, ""

    def isatty(self):
        return self.tty

    def write(self, text):
        self.text += text

    def flush(self):
        pass


@pytest.mark.parametrize("tty, total, lines", [(True, 1, 0), (True, 5, 1), (False, 5, 0), (False, 9, 0),
                                               (False, 10, 10), (False, 37, 10)])
def test_progress_draws_on_a_terminal_and_logs_long_inputs_only(tty, total, lines):
    out = FakeStderr(tty)
    assert list(vocode.progress(range(total), total, "vocoding", stream=out)) == list(range(total))
    assert out.text.count("\n") == lines
    if tty and total > 1:
        assert out.text.count("\r") == total and f"{total}/{total}" in out.text
    quiet = FakeStderr(tty)
    list(vocode.progress(range(total), total, "vocoding", enabled=False, stream=quiet))
    assert quiet.text == ""


def test_wav_rounds_to_the_nearest_step_and_clips(tmp_path):
    audio = np.array([0.0, 0.51 / 32767, 0.49 / 32767, -1.51 / 32767, 1.5, -2.0, 1.0, -1.0])
    vocode.write_wav(tmp_path / "a.wav", audio, 16000)
    pcm, rate = read_wav(tmp_path / "a.wav")
    assert rate == 16000 and pcm.tolist() == [0, 1, 0, -2, 32767, -32767, 32767, -32767]
    assert [p.name for p in tmp_path.iterdir()] == ["a.wav"]  # no temporary file left


def test_the_command_is_registered():
    from mlx_deconv.cli import build_parser

    args = build_parser().parse_args(["vocode", "--checkpoint", "g", "--mel", "m.npy", "--out", "o.wav", "--stream"])
    assert args.run is vocode.run and args.stream and args.chunk_frames == 32 and args.config is None


def test_the_package_command_exits_with_the_status(tmp_path, capsys):
    from mlx_deconv.cli import main

    with pytest.raises(SystemExit) as exit:
        main(["vocode", "--checkpoint", str(tmp_path / "g"), "--mel", "m.npy", "--out", str(tmp_path / "o.wav")])
    assert exit.value.code == 2 and f"no such file: {tmp_path / 'g'}" in capsys.readouterr().err
