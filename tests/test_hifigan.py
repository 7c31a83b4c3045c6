"""HiFi-GAN: our generator against the same network in PyTorch, checkpoints, streaming, the example end to end."""

import json
import subprocess
import sys
import warnings
import wave
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from mlx.utils import tree_flatten

import mlx_deconv as md  # noqa: F401 (first, as a user would)
from mlx_deconv import hifigan

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "hifigan_vocoder.py"

CONFIGS = {
    "1": dict(resblock="1", upsample_rates=[4, 2], upsample_kernel_sizes=[8, 4], upsample_initial_channel=16,
              resblock_kernel_sizes=[3, 5], resblock_dilation_sizes=[[1, 3, 5], [1, 3, 5]], num_mels=8),
    "2": dict(resblock="2", upsample_rates=[3, 2], upsample_kernel_sizes=[7, 4], upsample_initial_channel=16,
              resblock_kernel_sizes=[3, 5], resblock_dilation_sizes=[[1, 2], [2, 3]], num_mels=8),
}


def torch_model(config, weight_norm, seed=0):
    torch = pytest.importorskip("torch")
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        model = hifigan.torch_generator(config, weight_norm=weight_norm)
    with torch.no_grad():  # g away from ||v||, so weight norm is not the identity
        for name, p in model.named_parameters():
            p.mul_(1 + 0.3 * torch.rand_like(p)) if name.endswith(("weight_g", "original0")) else None
    return model


def run_both(config, model, frames=11, seed=1, keep_weight_norm=False):
    import torch

    mel = torch.randn(2, config.num_mels, frames, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        want = model(mel)[:, 0].numpy()
    ours = hifigan.HiFiGAN(config, weight_norm=keep_weight_norm).load_torch_state_dict(model.state_dict())
    got = np.array(ours(mx.array(mel.numpy().transpose(0, 2, 1))))
    return got, want, ours


@pytest.mark.parametrize("resblock", ["1", "2"])
@pytest.mark.parametrize("weight_norm", ["legacy", "parametrizations", "removed", None])
def test_matches_pytorch(resblock, weight_norm):
    config = hifigan.HiFiGANConfig.from_dict(CONFIGS[resblock])
    model = torch_model(config, "legacy" if weight_norm == "removed" else weight_norm)
    if weight_norm == "removed":
        model.remove_weight_norm()
        assert "conv_pre.weight" in model.state_dict()
    got, want, _ = run_both(config, model)
    assert got.shape == want.shape == (2, 11 * config.hop_size)
    assert np.abs(want).max() > 0.05  # a signal, not a flat line
    np.testing.assert_allclose(got, want, atol=1e-4)


def test_weight_norm_kept_as_parameters():
    config = hifigan.HiFiGANConfig.from_dict(CONFIGS["1"])
    got, want, ours = run_both(config, torch_model(config, "legacy"), keep_weight_norm=True)
    assert ours.resblocks[0].convs1[0].weight_g.shape == (8, 1, 1)  # Conv1d: one norm per output channel
    assert ours.ups[0].weight_g.shape == (16, 1, 1)  # ConvTranspose1d: per input channel
    np.testing.assert_allclose(got, want, atol=1e-4)


def test_output_padding_fork():
    values = dict(CONFIGS["1"], upsample_kernel_sizes=[7, 5], upsample_output_padding=True)  # 7-4, 5-2: odd
    config = hifigan.HiFiGANConfig.from_dict(values)
    assert config.upsample_padding(0) == (2, 1)
    got, want, _ = run_both(config, torch_model(config, "legacy"))
    assert got.shape == (2, 11 * config.hop_size)  # exactly hop_size per frame, as the fork intends
    np.testing.assert_allclose(got, want, atol=1e-4)


def test_checkpoint_file_and_bare_state_dict(tmp_path):
    torch = pytest.importorskip("torch")
    config = hifigan.HiFiGANConfig.from_dict(CONFIGS["2"])
    model = torch_model(config, "legacy")
    torch.save({"generator": model.state_dict(), "steps": 5}, tmp_path / "g.pt")
    torch.save(model.state_dict(), tmp_path / "bare.pt")
    mel = mx.random.normal((1, 6, config.num_mels), key=mx.random.key(0))
    a = hifigan.from_checkpoint(tmp_path / "g.pt", config)(mel)
    b = hifigan.from_checkpoint(tmp_path / "bare.pt", config)(mel)
    assert mx.array_equal(a, b)


def test_a_wrong_config_is_refused_and_changes_nothing():
    pytest.importorskip("torch")
    config1 = hifigan.HiFiGANConfig.from_dict(CONFIGS["1"])
    state = torch_model(config1, "legacy").state_dict()
    other = hifigan.HiFiGAN(hifigan.HiFiGANConfig.from_dict(CONFIGS["2"]))
    with pytest.raises(ValueError, match="no layer for"):
        other.load_torch_state_dict(state)
    ours = hifigan.HiFiGAN(config1)
    before = {k: np.array(v) for k, v in tree_flatten(ours.parameters())}
    broken = dict(state)
    broken["conv_post.bias"] = broken["conv_post.bias"][:0]  # the last layer fails after the others loaded
    with pytest.raises(ValueError, match="conv_post"):
        ours.load_torch_state_dict(broken)
    for key, value in tree_flatten(ours.parameters()):
        np.testing.assert_array_equal(np.array(value), before[key])


def test_config_errors():
    with pytest.raises(ValueError, match="resblock must be"):
        hifigan.HiFiGANConfig.from_dict(dict(CONFIGS["1"], resblock="3"))
    with pytest.raises(ValueError, match="lacks"):
        hifigan.HiFiGANConfig.from_dict({k: v for k, v in CONFIGS["1"].items() if k != "upsample_rates"})
    extra = dict(CONFIGS["1"], batch_size=16, learning_rate=2e-4)  # a config.json's training keys
    assert hifigan.HiFiGANConfig.from_dict(extra).hop_size == 8
    assert hifigan.V1.hop_size == 256 and hifigan.V1.num_mels == 80
    assert [hifigan.V1.channels(i) for i in range(5)] == [512, 256, 128, 64, 32]


@pytest.mark.parametrize("resblock", ["1", "2"])
def test_streaming_equals_offline(resblock):
    config = hifigan.HiFiGANConfig.from_dict(CONFIGS[resblock])
    model = hifigan.HiFiGAN(config)
    mel = mx.random.normal((1, 23, config.num_mels), key=mx.random.key(2))
    whole = model(mel)
    rng = np.random.default_rng(0)
    for _ in range(3):
        stream = hifigan.StreamingHiFiGAN(model)
        pieces, i = [], 0
        while i < 23:
            n = int(rng.integers(0, 6))
            pieces.append(stream.step(mel[:, i:i + n]))
            i += n
        pieces.append(stream.flush())
        streamed = mx.concatenate(pieces, axis=1)
        assert streamed.shape == whole.shape
        np.testing.assert_allclose(np.array(streamed), np.array(whole), atol=1e-6)


def test_stream_and_torch_twin_reachable_from_hifigan():
    from mlx_deconv.models.hifigan import streaming as hifigan_streaming
    from mlx_deconv.models.hifigan import pytorch as hifigan_torch

    assert hifigan.StreamingHiFiGAN is hifigan_streaming.StreamingHiFiGAN
    assert hifigan.torch_generator is hifigan_torch.torch_generator
    with pytest.raises(AttributeError, match="no_such_name"):
        hifigan.no_such_name


def test_backend_reaches_every_layer():
    model = hifigan.HiFiGAN(hifigan.HiFiGANConfig.from_dict(CONFIGS["1"]), backend="builtin")
    assert {layer.backend for _, layer in model.conv_layers()} == {"builtin"}
    mel = mx.random.normal((1, 5, 8), key=mx.random.key(3))
    auto = hifigan.HiFiGAN(model.config)
    auto.update(model.parameters())
    np.testing.assert_allclose(np.array(model(mel)), np.array(auto(mel)), atol=1e-5)


def test_example_end_to_end(tmp_path):
    pytest.importorskip("torch")
    out = tmp_path / "out" / "v.wav"
    out.parent.mkdir()
    out.parent.chmod(0o755)  # private enough to keep the converted weights, whatever the umask
    cmd = [sys.executable, str(EXAMPLE), "--make-random-checkpoint", str(tmp_path / "ck"), "--frames", "40",
           "--out", str(out), "--stream", "--chunk-frames", "7"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((out.parent / "summary.json").read_text())
    assert summary["stream_max_abs_difference"] < 1e-5
    with wave.open(str(out)) as f:
        assert f.getframerate() == 8000 and f.getnframes() == 40 * 16 == summary["samples"]
    assert "converted" in result.stdout and "vocoding [" in result.stderr or "vocoding:" in result.stderr
    # Second run: the converted weights are reused (no torch needed to read them), offline in segments.
    again = subprocess.run([sys.executable, str(EXAMPLE), "--checkpoint", str(tmp_path / "ck" / "generator.pt"),
                            "--config", str(tmp_path / "ck" / "config.json"), "--mel", str(tmp_path / "ck" / "mel.npy"),
                            "--out", str(out), "--segment-frames", "16"], capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "converted earlier" in again.stdout
    with wave.open(str(out)) as f:
        assert f.getnframes() == 640


def _vocoder_example():
    import importlib.util

    sys.path.insert(0, str(EXAMPLE.parent))  # the example imports its sibling common.py
    try:
        spec = importlib.util.spec_from_file_location("hifigan_vocoder_example", EXAMPLE)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(EXAMPLE.parent))
    return module


def test_example_reuses_converted_weights_only_of_the_same_checkpoint_and_config(tmp_path):
    example = _vocoder_example()
    config = hifigan.HiFiGANConfig.from_dict(CONFIGS["1"])
    first, second = tmp_path / "a" / "g.pt", tmp_path / "b" / "g.pt"
    for path, content in ((first, b"one checkpoint"), (second, b"another checkpoint")):
        path.parent.mkdir()
        path.write_bytes(content)
    out = tmp_path / "out"
    out.mkdir(mode=0o755)
    # Same file name, different content or config: a different converted file, never the other's weights.
    assert example.converted_path(out, first, config) != example.converted_path(out, second, config)
    other = hifigan.HiFiGANConfig.from_dict({**CONFIGS["1"], "resblock": "2"})
    assert example.converted_path(out, first, config) != example.converted_path(out, first, other)
    converted = example.converted_path(out, first, config)
    converted.write_bytes(b"weights")
    converted.chmod(0o644)
    assert example.trusted(converted)
    out.chmod(0o777)  # another local user could swap the file
    assert not example.trusted(converted)
    out.chmod(0o775)  # group-writable: a sticky bit or not, someone else could have planted the file
    assert not example.trusted(converted)
    out.chmod(0o1777)
    assert not example.trusted(converted)
    out.chmod(0o755)
    converted.chmod(0o666)
    assert not example.trusted(converted)


def test_example_does_not_trust_a_symlink_named_like_the_converted_file(tmp_path):
    example = _vocoder_example()
    config = hifigan.HiFiGANConfig.from_dict(CONFIGS["1"])
    checkpoint = tmp_path / "g.pt"
    checkpoint.write_bytes(b"a checkpoint")
    out = tmp_path / "out"
    out.mkdir()
    out.chmod(0o755)
    elsewhere = tmp_path / "planted.safetensors"  # a file that would pass every other check
    elsewhere.write_bytes(b"weights")
    elsewhere.chmod(0o644)
    converted = example.converted_path(out, checkpoint, config)
    converted.symlink_to(elsewhere)
    assert example.trusted(elsewhere) and not example.trusted(converted)


def _random_checkpoint(example, tmp_path):
    pytest.importorskip("torch")
    example.make_random_checkpoint(tmp_path / "ck", frames=8)
    config = hifigan.HiFiGANConfig.from_dict(json.loads((tmp_path / "ck" / "config.json").read_text()))
    return tmp_path / "ck" / "generator.pt", config


def test_example_writes_converted_weights_through_a_temporary_file(tmp_path, monkeypatch):
    example = _vocoder_example()
    checkpoint, config = _random_checkpoint(example, tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    out.chmod(0o700)
    converted = example.converted_path(out, checkpoint, config)

    def save_then_fail(model, file):
        Path(file).write_bytes(b"half a file")
        raise RuntimeError("disk full")

    monkeypatch.setattr(hifigan.HiFiGAN, "save_weights", save_then_fail)
    with pytest.raises(RuntimeError, match="disk full"):
        example.load_model(checkpoint, config, converted, "builtin")
    assert list(out.iterdir()) == []  # neither the converted name nor a temporary file is left
    monkeypatch.undo()
    model = example.load_model(checkpoint, config, converted, "builtin")
    assert [p.name for p in out.iterdir()] == [converted.name] and example.trusted(converted)
    again = example.load_model(checkpoint, config, converted, "builtin")
    for (name, value), (_, reloaded) in zip(tree_flatten(model.parameters()), tree_flatten(again.parameters())):
        np.testing.assert_array_equal(np.array(value), np.array(reloaded), err_msg=name)


def test_example_neither_reads_nor_writes_a_cache_in_a_folder_others_can_write(tmp_path, capsys):
    example = _vocoder_example()
    checkpoint, config = _random_checkpoint(example, tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    out.chmod(0o775)
    converted = example.converted_path(out, checkpoint, config)
    capsys.readouterr()
    example.load_model(checkpoint, config, converted, "builtin")
    assert list(out.iterdir()) == [] and "memory only" in capsys.readouterr().out
