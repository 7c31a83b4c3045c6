"""HiFi-GAN: our generator against the same network in PyTorch, checkpoints, streaming, the mel's layout, and a
config that does not fit a checkpoint (the command line is tests/test_vocode.py)."""

import json
import warnings

import mlx.core as mx
import numpy as np
import pytest
from mlx.utils import tree_flatten

import mlx_deconv as md  # noqa: F401 (first, as a user would)
from mlx_deconv import hifigan

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


def test_a_state_dict_of_other_keys_or_values_is_named():
    pytest.importorskip("torch")
    import torch

    config = hifigan.HiFiGANConfig.from_dict(CONFIGS["1"])
    state = dict(torch_model(config, "legacy").state_dict())
    with pytest.raises(TypeError, match="keys must be strings .* got 7"):
        hifigan.HiFiGAN(config).load_torch_state_dict({**state, 7: state["conv_pre.bias"]})
    complex_bias = torch.complex(state["conv_post.bias"], state["conv_post.bias"])
    with pytest.raises(ValueError, match="conv_post.bias holds complex64, not real numbers"):
        hifigan.HiFiGAN(config).load_torch_state_dict({**state, "conv_post.bias": complex_bias})


@pytest.mark.parametrize("spoil, match", [
    (lambda st: st.update({"conv_pre.junk": st["conv_pre.bias"]}), r"unknown tensors under 'conv_pre\.'.*conv_pre\.junk"),
    (lambda st: st.update({"ups.1.weight": st["ups.1.weight_v"]}), r"two weight forms under 'ups\.1\.'"),
    (lambda st: st.update({"ups.1.parametrizations.weight.original0": st["ups.1.weight_g"] * 2,
                           "ups.1.parametrizations.weight.original1": st["ups.1.weight_v"]}), "two weight forms"),
    (lambda st: st.pop("conv_post.weight_v"), r"half a weight-norm pair under 'conv_post\.'"),
])
def test_a_tensor_that_would_be_left_unread_is_refused_and_changes_nothing(spoil, match):
    """Every tensor under a layer's name is read: a stray one, a second form of a weight or half a pair is refused,
    naming the keys, before any layer changes."""
    pytest.importorskip("torch")
    config = hifigan.HiFiGANConfig.from_dict(CONFIGS["1"])
    state = dict(torch_model(config, "legacy").state_dict())
    spoil(state)
    ours = hifigan.HiFiGAN(config)
    before = {k: np.array(v) for k, v in tree_flatten(ours.parameters())}
    with pytest.raises(ValueError, match=match):
        ours.load_torch_state_dict(state)
    for key, value in tree_flatten(ours.parameters()):
        np.testing.assert_array_equal(np.array(value), before[key])


@pytest.mark.parametrize("change, match", [
    (dict(upsample_output_padding="false"), "upsample_output_padding must be true or false, got 'false'"),
    (dict(upsample_rates=[2.5, 2]), r"upsample_rates must be integers, got \[2.5, 2\]"),
    (dict(upsample_rates=[0, 2]), "rates and kernel sizes must be >= 1"),
    (dict(resblock_dilation_sizes=[[1, 0], [1, 3]]), "dilations >= 1"),
    (dict(resblock_kernel_sizes=[4, 5]), r"resblock_kernel_sizes must be odd, got \(4, 5\)"),
    (dict(sampling_rate=0), "sampling_rate must be >= 1, got 0"),
    (dict(sampling_rate="22050"), r"sampling_rate must be integers, got \['22050'\]"),
    (dict(num_mels="10"), "num_mels must be integers"),
    (dict(upsample_initial_channel=True), r"upsample_initial_channel must be integers, got \[True\]"),
])
def test_config_values_are_checked_as_bigvgan_s_are(change, match):
    """Both generators read a config.json with one set of checks: a value that is not what its key means is refused,
    naming the key and the value, never cast ("false" is no flag, 2.5 no rate)."""
    with pytest.raises(ValueError, match=match):
        hifigan.HiFiGANConfig.from_dict(dict(CONFIGS["1"], **change))
    from mlx_deconv import bigvgan

    bigvgan_config = dict(CONFIGS["1"], activation="snakebeta", snake_logscale=True)
    if "upsample_output_padding" not in change:
        with pytest.raises(ValueError, match=match):
            bigvgan.BigVGANConfig.from_dict(dict(bigvgan_config, **change))


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


# -- the mel's layout ---------------------------------------------------------------------------------------------------
def test_square_mel_runs_in_the_layout_named():
    """An 8 x 8 mel (8 bands, 8 frames) is read as the model was told: ``"NCL"`` is PyTorch's ``(N, n_mels, frames)``,
    ``"NLC"`` its transpose; each agrees with the PyTorch generator on the matching input, and they differ."""
    torch = pytest.importorskip("torch")
    config = hifigan.HiFiGANConfig.from_dict(CONFIGS["1"])
    generator = torch_model(config, "legacy").double()
    square = np.random.default_rng(5).standard_normal((1, 8, 8))
    with torch.no_grad():
        as_bands_by_frames = generator(torch.from_numpy(square)).numpy()  # (1, 1, samples)
        as_frames_by_bands = generator(torch.from_numpy(square.transpose(0, 2, 1).copy())).numpy()
    state = generator.float().state_dict()
    ncl = hifigan.HiFiGAN(config, data_format="NCL").load_torch_state_dict(state)
    nlc = hifigan.from_checkpoint(state, config)
    x = mx.array(square.astype(np.float32))
    got_ncl, got_nlc = np.array(ncl(x)), np.array(nlc(x))
    assert got_ncl.shape == (1, 1, 64) and got_nlc.shape == (1, 64)  # NCL's output as PyTorch's generator gives it
    np.testing.assert_allclose(got_ncl, as_bands_by_frames, atol=1e-5)
    np.testing.assert_allclose(got_nlc, as_frames_by_bands[:, 0], atol=1e-5)
    assert np.abs(as_bands_by_frames[:, 0] - as_frames_by_bands[:, 0]).max() > 1e-2
    # The streams read the same layout (the model's, or their own data_format).
    for stream, want in ((hifigan.StreamingHiFiGAN(ncl), got_ncl), (hifigan.StreamingHiFiGAN(nlc, data_format="NCL"), got_ncl),
                         (hifigan.StreamingHiFiGAN(ncl, data_format="NLC"), got_nlc)):
        step = 3 if stream.data_format == "NCL" else None
        pieces = [stream.step(x[..., i:i + 3] if step else x[:, i:i + 3]) for i in range(0, 8, 3)] + [stream.flush()]
        np.testing.assert_allclose(np.array(mx.concatenate(pieces, axis=-1)), want, atol=1e-6)


def test_a_mel_in_the_other_layout_names_data_format():
    config = hifigan.HiFiGANConfig.from_dict(CONFIGS["1"])
    nvidia_layout = mx.zeros((1, 8, 20))  # (N, n_mels, frames)
    with pytest.raises(ValueError, match=r"HiFiGAN \(data_format='NLC'\).*\(1, 8, 20\) has 20 mel bands.*"
                                         r"num_mels=8.*data_format=\"NCL\""):
        hifigan.HiFiGAN(config)(nvidia_layout)
    with pytest.raises(ValueError, match=r"data_format='NCL'.*data_format=\"NLC\""):
        hifigan.HiFiGAN(config, data_format="NCL")(nvidia_layout.transpose(0, 2, 1))
    with pytest.raises(ValueError, match=r"StreamingHiFiGAN \(data_format='NCL'\).*12 mel bands"):
        hifigan.StreamingHiFiGAN(hifigan.HiFiGAN(config), data_format="NCL").step(mx.zeros((1, 12, 8)))
    with pytest.raises(ValueError, match="data_format must be one of"):
        hifigan.HiFiGAN(config, data_format="NCHW")
    one = hifigan.HiFiGAN(config, data_format="channels_first")(mx.zeros((8, 5)))  # unbatched: (n_mels, frames)
    assert one.shape == (1, 40)


# -- a config that does not fit ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("weight_norm", ["legacy", "parametrizations", "removed"])
@pytest.mark.parametrize("change, key, needs", [
    (dict(upsample_initial_channel=32), "upsample_initial_channel", 16),
    (dict(num_mels=10), "num_mels", 8),
    (dict(upsample_kernel_sizes=[8, 6]), "upsample_kernel_sizes", [8, 4]),
    (dict(upsample_rates=[4, 2, 2], upsample_kernel_sizes=[8, 4, 4], upsample_initial_channel=32), "upsample_rates", None),
    (dict(resblock_kernel_sizes=[3, 7]), "resblock_kernel_sizes", [3, 5]),
    (dict(resblock_kernel_sizes=[3, 5, 7], resblock_dilation_sizes=[[1, 3, 5]] * 3), "resblock_kernel_sizes", [3, 5]),
    (dict(resblock="2", resblock_dilation_sizes=[[1, 3, 5], [1, 3, 5]]), "resblock", "1"),
    (dict(resblock_dilation_sizes=[[1, 3], [1, 3, 5]]), "resblock_dilation_sizes", None),
])
def test_a_config_that_does_not_fit_names_its_key(weight_norm, change, key, needs):
    from mlx_deconv.models.mismatch import ConfigMismatch

    config = hifigan.HiFiGANConfig.from_dict(CONFIGS["1"])
    model = torch_model(config, "legacy" if weight_norm == "removed" else weight_norm)
    if weight_norm == "removed":
        model.remove_weight_norm()
    wrong = hifigan.HiFiGAN(hifigan.HiFiGANConfig.from_dict({**CONFIGS["1"], **change}))
    before = {k: np.array(v) for k, v in tree_flatten(wrong.parameters())}
    with pytest.raises(ConfigMismatch, match=f"{key} is .* in the config, the checkpoint needs") as caught:
        wrong.load_torch_state_dict(model.state_dict())
    plain = lambda value: json.loads(json.dumps(value))  # noqa: E731 (tuples and lists alike)
    assert plain(caught.value.keys[key][0]) == plain(getattr(wrong.config, key))
    if needs is not None:
        assert caught.value.keys[key][1] == needs
    assert set(caught.value.keys) <= set(change)  # only keys that were changed are blamed
    for name, value in tree_flatten(wrong.parameters()):
        np.testing.assert_array_equal(np.array(value), before[name])
