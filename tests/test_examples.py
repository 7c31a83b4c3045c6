"""Each example at a tiny size: it runs, writes what it says, and its numbers hold."""

import json
import shutil
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run_example(script, *args, cwd=None):
    result = subprocess.run([sys.executable, str(EXAMPLES / script), *args], capture_output=True, text=True,
                            timeout=600, cwd=cwd)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def has_matplotlib():
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def test_upsampling_decoder_learns(tmp_path):
    out = run_example("upsampling_decoder.py", "--steps", "60", "--batch", "8", "--length", "64", "--out", str(tmp_path))
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert len(summary["losses"]) == 60
    assert summary["final_error"] < 0.5 * summary["initial_error"], summary  # the 10x is at default settings
    assert "lower" in out
    if has_matplotlib():
        assert (tmp_path / "loss.png").stat().st_size > 1000
        assert (tmp_path / "reconstruction.png").stat().st_size > 1000


def test_vocoder_writes_wav_and_streams_within_rounding(tmp_path):
    out = run_example("vocoder.py", "--steps", "3", "--seconds", "0.25", "--chunk-frames", "3", "--out", str(tmp_path))
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["stream_max_abs_difference"] < 1e-5
    assert summary["latency_samples"] == 0
    with wave.open(str(tmp_path / "vocoded.wav")) as f:
        assert f.getframerate() == 8000 and f.getnframes() == summary["samples"] and f.getsampwidth() == 2
    assert "real-time factor" in out and "max |streamed - offline|" in out
    if has_matplotlib():
        assert (tmp_path / "spectrograms.png").stat().st_size > 1000


def test_hifigan_vocoder_example_is_the_vocode_command(tmp_path):
    """The example only runs ``mlx-deconv vocode`` (tests/test_vocode.py checks the command's audio)."""
    usage = run_example("hifigan_vocoder.py", "--help")
    assert usage.startswith("usage: examples/hifigan_vocoder.py") and "--make-random-checkpoint" in usage
    missing = subprocess.run([sys.executable, str(EXAMPLES / "hifigan_vocoder.py"), "--checkpoint",
                              str(tmp_path / "g_missing"), "--mel", "m.npy", "--out", str(tmp_path / "o.wav")],
                             capture_output=True, text=True, timeout=600)
    assert missing.returncode == 2 and missing.stderr.strip() == (
        f"examples/hifigan_vocoder.py: error: --checkpoint: no such file: {tmp_path / 'g_missing'}")
    try:
        import torch  # noqa: F401
    except ImportError:
        return
    run_example("hifigan_vocoder.py", "--make-random-checkpoint", str(tmp_path / "ck"), "--frames", "16", cwd=tmp_path)
    written = sorted(p.name for p in (tmp_path / "ck").iterdir())
    assert written == [".mlx-deconv-random-checkpoint", "config.json", "generator.pt", "mel.npy", "vocoded.wav"]
    with wave.open(str(tmp_path / "ck" / "vocoded.wav")) as f:
        assert f.getnframes() == 16 * 16 and f.getframerate() == 8000


def test_cpu_vs_gpu_table(tmp_path):
    out = run_example("cpu_vs_gpu.py", "--repeat", "1", "--scale", "0.05", "--out", str(tmp_path))
    rows = json.loads((tmp_path / "results.json").read_text())
    assert {r["backend"] for r in rows} >= {"builtin", "gemm"}
    assert all(r["max_abs_diff"] < 1e-4 for r in rows)
    assert "| layer | stream | backend |" in out


def test_distributed_training_equals_single_process(tmp_path):
    """Two processes (ring backend on localhost) end where one process on the combined batch ends."""
    launcher = Path(sys.executable).parent / "mlx.launch"
    if not launcher.exists():
        launcher = shutil.which("mlx.launch")
    args = ["--steps", "4", "--batch", "8", "--length", "64", "--out", str(tmp_path)]
    result = subprocess.run([str(launcher), "-n", "2", "--backend", "ring", "--python", sys.executable,
                             str(EXAMPLES / "train_distributed.py"), *args],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    run_example("train_distributed.py", *args)
    rank0 = np.load(tmp_path / "params_rank0_of2.npz")
    rank1 = np.load(tmp_path / "params_rank1_of2.npz")
    single = np.load(tmp_path / "params_rank0_of1.npz")
    assert set(rank0.files) == set(single.files) and len(single.files) > 10
    for name in single.files:
        np.testing.assert_array_equal(rank0[name], rank1[name])  # the ranks never diverge
        np.testing.assert_allclose(rank0[name], single[name], rtol=1e-4, atol=1e-5)
    # Training moved: the loss trajectories agree step by step and are not flat.
    two = json.loads((tmp_path / "summary_of2.json").read_text())["losses"]
    one = json.loads((tmp_path / "summary_of1.json").read_text())["losses"]
    np.testing.assert_allclose(two, one, rtol=1e-4)
    assert len(set(np.round(one, 6))) > 1
