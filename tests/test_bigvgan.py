"""BigVGAN: our generator against NVIDIA's own PyTorch generator (the installed ``bigvgan`` package), checkpoints,
config.json, streaming, the mel's layout, and a config that does not fit a checkpoint (the command line is
tests/test_vocode.py)."""

import json
import subprocess
import sys
import warnings

import mlx.core as mx
import numpy as np
import pytest
from mlx.utils import tree_flatten, tree_unflatten

import mlx_deconv as md  # noqa: F401 (first, as a user would)
from mlx_deconv import bigvgan

#: Small: two stages, both block kinds.
SMALL = dict(resblock="1", upsample_rates=[4, 2], upsample_kernel_sizes=[8, 4], upsample_initial_channel=16,
             resblock_kernel_sizes=[3, 5], resblock_dilation_sizes=[[1, 3], [1, 2]], activation="snakebeta",
             snake_logscale=True, num_mels=8, sampling_rate=8000)


def v2_like(preset, channels=64, num_mels=12, **changes):
    """NVIDIA's v2 shape (six stages, kernels 3/7/11, dilations 1/3/5, snakebeta, clamp, no final bias),
    at fewer channels and mel bands."""
    return bigvgan.BigVGANConfig.from_dict({**preset.to_dict(), "upsample_initial_channel": channels,
                                            "num_mels": num_mels, **changes})


def nvidia(config, weight_norm="legacy", seed=0):
    """NVIDIA's generator with every parameter moved off its initial value; skips without torch or bigvgan."""
    torch = pytest.importorskip("torch")
    try:
        bigvgan.nvidia_module()
    except ImportError as err:  # not importorskip("bigvgan"): its __init__ imports librosa, which it does not need
        pytest.skip(f"NVIDIA's bigvgan package is not usable: {err}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # NVIDIA's code uses the legacy weight norm
        torch.manual_seed(seed)  # NVIDIA's init draws from the global generator: the same weights in any test order
        model = bigvgan.torch_generator(config, weight_norm=weight_norm)
    return bigvgan.pytorch.randomize(model, seed=seed)


def run_both(config, model, frames=9, seed=1, **ours_kwargs):
    import torch

    mel = torch.randn(2, config.num_mels, frames, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        want = model(mel)[:, 0].numpy()
    ours = bigvgan.BigVGAN(config, **ours_kwargs).load_torch_state_dict(model.state_dict())
    got = np.array(ours(mx.array(mel.numpy().transpose(0, 2, 1))))
    return got, want, ours


def check(got, want, config, frames=9):
    assert got.shape == want.shape == (2, frames * config.hop_size)
    assert np.abs(want).max() > 0.02 and np.std(want) > 1e-3  # a signal, not a flat line
    np.testing.assert_allclose(got, want, atol=1e-4)


@pytest.mark.parametrize("resblock", ["1", "2"])
@pytest.mark.parametrize("activation", ["snake", "snakebeta"])
@pytest.mark.parametrize("logscale", [True, False])
def test_matches_nvidia(resblock, activation, logscale):
    config = bigvgan.BigVGANConfig.from_dict(dict(SMALL, resblock=resblock, activation=activation, snake_logscale=logscale))
    got, want, _ = run_both(config, nvidia(config))
    check(got, want, config)


@pytest.mark.parametrize("preset", ["bigvgan_v2_24khz_100band_256x", "bigvgan_v2_44khz_128band_512x"])
@pytest.mark.parametrize("resblock", ["1", "2"])
def test_matches_nvidia_v2_shapes(preset, resblock):
    config = v2_like(bigvgan.PRESETS[preset], resblock=resblock)
    assert not config.use_tanh_at_final and not config.use_bias_at_final  # the clamp and no bias, as v2
    got, want, ours = run_both(config, nvidia(config), frames=5)
    check(got, want, config, frames=5)
    assert "bias" not in ours.conv_post and float(np.abs(got).max()) <= 1.0


def test_parity_path():
    config = bigvgan.BigVGANConfig.from_dict(dict(SMALL, resblock="2", activation="snake"))
    nvidia(config)  # skips without torch or bigvgan
    result = bigvgan.pytorch.parity(config, frames=6, batch=2, backend="builtin")
    assert result["ours"].shape == result["theirs"].shape == (2, 6 * config.hop_size)
    assert result["max_abs_difference"] < 1e-4 and np.std(result["theirs"]) > 1e-3


@pytest.mark.parametrize("tanh, bias", [(True, True), (False, True), (True, False)])
def test_final_tanh_or_clamp_and_bias(tanh, bias):
    config = bigvgan.BigVGANConfig.from_dict(dict(SMALL, use_tanh_at_final=tanh, use_bias_at_final=bias))
    model = nvidia(config)
    import torch  # (nvidia() skipped without it)

    with torch.no_grad():  # a larger output, so that the clamp (or tanh) has something to do
        model.conv_post.weight_g.mul_(40)
    got, want, ours = run_both(config, model)
    assert ("bias" in ours.conv_post) == bias
    if not tanh:
        assert (np.abs(want) == 1).any()  # the clamp was reached
    np.testing.assert_allclose(got, want, atol=1e-4)


@pytest.mark.parametrize("weight_norm", ["legacy", "parametrizations", None])
def test_weight_norm_styles(weight_norm):
    config = bigvgan.BigVGANConfig.from_dict(dict(SMALL, resblock="2"))
    model = nvidia(config, weight_norm=weight_norm)
    keys = set(model.state_dict())
    expected = {"legacy": "conv_pre.weight_g", "parametrizations": "conv_pre.parametrizations.weight.original0",
                None: "conv_pre.weight"}[weight_norm]
    assert expected in keys
    got, want, _ = run_both(config, model)
    check(got, want, config)


def test_weight_norm_kept_as_parameters():
    config = bigvgan.BigVGANConfig.from_dict(SMALL)
    got, want, ours = run_both(config, nvidia(config), weight_norm=True)
    assert ours.resblocks[0].convs1[0].weight_g.shape == (8, 1, 1)  # Conv1d: one norm per output channel
    assert ours.ups[0][0].weight_g.shape == (16, 1, 1)  # ConvTranspose1d: per input channel
    np.testing.assert_allclose(got, want, atol=1e-4)


def test_filters_are_read_from_the_state_dict():
    torch = pytest.importorskip("torch")
    config = bigvgan.BigVGANConfig.from_dict(SMALL)
    model = nvidia(config)
    original = {k: v.clone() for k, v in model.state_dict().items() if k.endswith("filter")}
    assert len(original) == 2 * 17  # up and down in each of the 17 activations
    with torch.no_grad():  # other filters than the Kaiser sinc every layer would compute for itself
        for name, buffer in model.named_buffers():
            assert name.endswith(("upsample.filter", "downsample.lowpass.filter")) and buffer.shape == (1, 1, 12)
            buffer.copy_(buffer.flip(-1) * torch.linspace(0.5, 1.5, 12))
    got, want, ours = run_both(config, model)
    check(got, want, config)
    plain = bigvgan.BigVGAN(config).load_torch_state_dict({**model.state_dict(), **original})
    mel = mx.random.normal((1, 9, config.num_mels), key=mx.random.key(0))
    assert float(mx.abs(plain(mel) - ours(mel)).max()) > 1e-3


@pytest.mark.parametrize("weight_norm", ["legacy", "parametrizations", None])
def test_checkpoint_file_round_trip(tmp_path, weight_norm):
    torch = pytest.importorskip("torch")
    config = bigvgan.BigVGANConfig.from_dict(SMALL)
    model = nvidia(config, weight_norm=weight_norm)
    torch.save({"generator": model.state_dict()}, tmp_path / "bigvgan_generator.pt")  # NVIDIA's file
    torch.save(model.state_dict(), tmp_path / "bare.pt")
    mel = np.random.default_rng(0).standard_normal((1, config.num_mels, 7)).astype(np.float32)
    with torch.no_grad():
        want = model(torch.from_numpy(mel))[:, 0].numpy()
    x = mx.array(mel.transpose(0, 2, 1))
    a = bigvgan.from_checkpoint(tmp_path / "bigvgan_generator.pt", config)(x)
    b = bigvgan.from_checkpoint(str(tmp_path / "bare.pt"), config)(x)
    c = bigvgan.from_checkpoint(model.state_dict(), config)(x)
    assert mx.array_equal(a, b) and mx.array_equal(a, c)
    np.testing.assert_allclose(np.array(a), want, atol=1e-4)


def test_a_checkpoint_of_another_config_is_refused_and_changes_nothing():
    config = bigvgan.BigVGANConfig.from_dict(SMALL)
    state = nvidia(config).state_dict()
    for change, match in ((dict(activation="snake"), "no layer for"), (dict(resblock="2"), "no layer for"),
                          (dict(resblock_kernel_sizes=[3, 7]), "shape")):
        other = bigvgan.BigVGAN(bigvgan.BigVGANConfig.from_dict(dict(SMALL, **change)))
        with pytest.raises(ValueError, match=match):
            other.load_torch_state_dict(state)
    snake = nvidia(bigvgan.BigVGANConfig.from_dict(dict(SMALL, activation="snake"))).state_dict()
    with pytest.raises(ValueError, match="act.beta"):  # snakebeta's beta is missing
        bigvgan.BigVGAN(config).load_torch_state_dict(snake)
    ours = bigvgan.BigVGAN(config)
    before = {k: np.array(v) for k, v in tree_flatten(ours.parameters())}
    for broken_key, value in (("conv_post.weight_v", state["conv_post.weight_v"][:, :, :3]),  # the last conv
                              ("activation_post.downsample.lowpass.filter", state["conv_pre.bias"])):
        broken = dict(state)
        broken[broken_key] = value
        with pytest.raises(ValueError, match=broken_key.split(".")[0]):
            ours.load_torch_state_dict(broken)
        for key, value in tree_flatten(ours.parameters()):
            np.testing.assert_array_equal(np.array(value), before[key])


# -- config.json ---------------------------------------------------------------------------------------------------------
#: NVIDIA's configs/bigvgan_v2_24khz_100band_256x.json (the generator's keys, and some training keys around them).
NVIDIA_24KHZ = {
    "resblock": "1", "num_gpus": 0, "batch_size": 4, "learning_rate": 0.0001, "adam_b1": 0.8, "adam_b2": 0.99,
    "lr_decay": 0.9999996, "seed": 1234, "upsample_rates": [4, 4, 2, 2, 2, 2], "upsample_kernel_sizes": [8, 8, 4, 4, 4, 4],
    "upsample_initial_channel": 1536, "resblock_kernel_sizes": [3, 7, 11],
    "resblock_dilation_sizes": [[1, 3, 5], [1, 3, 5], [1, 3, 5]], "use_tanh_at_final": False,
    "use_bias_at_final": False, "activation": "snakebeta", "snake_logscale": True, "use_cqtd_instead_of_mrd": True,
    "cqtd_dilations": [1, 2, 4], "mpd_reshapes": [2, 3, 5, 7, 11], "use_spectral_norm": False,
    "segment_size": 65536, "num_mels": 100, "num_freq": 1025, "n_fft": 1024, "hop_size": 256, "win_size": 1024,
    "sampling_rate": 24000, "fmin": 0, "fmax": None, "fmax_for_loss": None, "num_workers": 4,
    "dist_config": {"dist_backend": "nccl", "dist_url": "tcp://localhost:54321", "world_size": 1},
}


def test_config_json(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(NVIDIA_24KHZ, indent=4))
    config = bigvgan.BigVGANConfig.from_json(path)
    assert config == bigvgan.V2_24KHZ_100BAND_256X == bigvgan.PRESETS["bigvgan_v2_24khz_100band_256x"]
    assert config.hop_size == 256 and config.num_mels == 100 and config.sampling_rate == 24000
    assert [config.channels(i) for i in range(7)] == [1536, 768, 384, 192, 96, 48, 24]
    assert bigvgan.BigVGANConfig.from_dict(config.to_dict()) == config
    json.dumps(config.to_dict())  # plain JSON again
    v1 = {k: v for k, v in NVIDIA_24KHZ.items() if k not in ("use_tanh_at_final", "use_bias_at_final")}
    v1 = bigvgan.BigVGANConfig.from_dict(v1)  # v1 configs lack them: NVIDIA's code defaults both to true
    assert v1.use_tanh_at_final and v1.use_bias_at_final
    shapes = {name: (c.num_mels, c.sampling_rate, c.hop_size, c.upsample_rates, c.upsample_kernel_sizes)
              for name, c in bigvgan.PRESETS.items()}
    assert shapes == {  # NVIDIA's configs/*.json
        "bigvgan_v2_22khz_80band_256x": (80, 22050, 256, (4, 4, 2, 2, 2, 2), (8, 8, 4, 4, 4, 4)),
        "bigvgan_v2_22khz_80band_fmax8k_256x": (80, 22050, 256, (4, 4, 2, 2, 2, 2), (8, 8, 4, 4, 4, 4)),
        "bigvgan_v2_24khz_100band_256x": (100, 24000, 256, (4, 4, 2, 2, 2, 2), (8, 8, 4, 4, 4, 4)),
        "bigvgan_v2_44khz_128band_256x": (128, 44100, 256, (4, 4, 2, 2, 2, 2), (8, 8, 4, 4, 4, 4)),
        "bigvgan_v2_44khz_128band_512x": (128, 44100, 512, (8, 4, 2, 2, 2, 2), (16, 8, 4, 4, 4, 4)),
    }
    assert all(c.upsample_initial_channel == 1536 and c.activation == "snakebeta" and c.snake_logscale
               and not c.use_tanh_at_final and not c.use_bias_at_final for c in bigvgan.PRESETS.values())


@pytest.mark.parametrize("change, match", [
    (dict(resblock="3"), "resblock must be"),
    (dict(activation="relu"), "activation must be one of"),
    (dict(snake_logscale="true"), "snake_logscale must be true or false"),
    (dict(use_tanh_at_final=1), "use_tanh_at_final must be true or false"),
    (dict(hop_size=200), "not the product"),
    (dict(upsample_kernel_sizes=[8]), "of one length"),
    (dict(upsample_kernel_sizes=[2, 4]), "shorter than its rate"),
    (dict(resblock_dilation_sizes=[[1, 3]]), "of one length"),
    (dict(upsample_initial_channel=18), "divisible"),
    (dict(upsample_rates=[4.5, 2]), "must be integers"),
    (dict(num_mels=0), "num_mels must be >= 1"),
])
def test_config_errors(change, match):
    with pytest.raises(ValueError, match=match):
        bigvgan.BigVGANConfig.from_dict(dict(SMALL, **change))


def test_config_missing_keys_and_bad_files(tmp_path):
    with pytest.raises(ValueError, match=r"lacks \['activation', 'snake_logscale'\]"):
        bigvgan.BigVGANConfig.from_dict({k: v for k, v in SMALL.items() if k not in ("activation", "snake_logscale")})
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="not JSON"):
        bigvgan.BigVGANConfig.from_json(tmp_path / "bad.json")
    with pytest.raises(TypeError, match="BigVGANConfig"):
        bigvgan.BigVGAN(SMALL)


# -- streaming, namespace, backends --------------------------------------------------------------------------------------
def randomized(config, seed=4):
    """An MLX generator whose Snake parameters are off their initial values (the rest drawn as the layers do)."""
    model = bigvgan.BigVGAN(config)
    key = mx.random.key(seed)
    changed = []
    for name, value in tree_flatten(model.parameters()):
        if name.endswith(("alpha", "beta")):
            key, sub = mx.random.split(key)
            value = value + 0.4 * mx.random.normal(value.shape, key=sub)
        changed.append((name, value))
    model.update(tree_unflatten(changed))
    return model


@pytest.mark.parametrize("resblock", ["1", "2"])
def test_streaming_equals_offline(resblock):
    config = bigvgan.BigVGANConfig.from_dict(dict(SMALL, resblock=resblock, use_tanh_at_final=False))
    model = randomized(config)
    mel = mx.random.normal((1, 23, config.num_mels), key=mx.random.key(2))
    whole = model(mel)
    assert float(mx.std(whole)) > 1e-3
    rng = np.random.default_rng(0)
    for trial in range(3):
        stream = bigvgan.StreamingBigVGAN(model)
        pieces, i = [], 0
        while i < 23:
            n = 1 if trial == 0 else int(rng.integers(0, 6))
            pieces.append(stream.step(mel[:, i:i + n]))
            i += n
        pieces.append(stream.flush())
        streamed = mx.concatenate(pieces, axis=1)
        assert streamed.shape == whole.shape
        np.testing.assert_allclose(np.array(streamed), np.array(whole), atol=1e-6)


def test_activation_stream_edges():
    """The replicate pads act at the true ends only: a ramp (where they matter most), in chunks of every size."""
    config = bigvgan.BigVGANConfig.from_dict(SMALL)
    layer = randomized(config).activation_post
    assert bigvgan.streaming.activation_context(2, 12) == (5, 5)
    x = mx.linspace(-3, 5, 40).reshape(1, 40, 1) * mx.ones((1, 1, 4)) + 0.1 * mx.random.normal((1, 40, 4))
    whole = layer(x)
    for size in (1, 2, 5, 11, 40):
        stream = bigvgan.ActivationStream(layer)
        pieces = [stream.step(x[:, i:i + size]) for i in range(0, 40, size)] + [stream.flush()]
        np.testing.assert_allclose(np.array(mx.concatenate(pieces, axis=1)), np.array(whole), atol=1e-6)
    with pytest.raises(ValueError, match="before any input"):
        bigvgan.ActivationStream(layer).flush()


@pytest.mark.parametrize("ratio, taps", [(2, 2), (3, 3), (2, 4)])
def test_activation_stream_of_filters_as_long_as_the_ratio(ratio, taps):
    """Such filters read no neighbour: no context on either side, and the flush has nothing left to give."""
    layer = md.Activation1d(3, ratio=ratio, kernel_size=taps)
    x = mx.random.normal((1, 9, 3), key=mx.random.key(5))
    whole = layer(x)
    for size in (1, 4, 9):
        stream = bigvgan.ActivationStream(layer)
        pieces = [stream.step(x[:, i:i + size]) for i in range(0, 9, size)] + [stream.flush()]
        np.testing.assert_allclose(np.array(mx.concatenate(pieces, axis=1)), np.array(whole), atol=1e-6)


@pytest.mark.parametrize("family", ["hifigan", "bigvgan"])
@pytest.mark.parametrize("data_format", ["NLC", "NCL"])
def test_model_streams_take_an_unbatched_mel_as_the_models_do(family, data_format):
    """A mel without N gives audio without N, chunk by chunk as whole; a batched chunk after unbatched ones is refused."""
    from mlx_deconv.models.hifigan import HiFiGAN, HiFiGANConfig, StreamingHiFiGAN

    if family == "bigvgan":
        model, stream_of = randomized(bigvgan.BigVGANConfig.from_dict(SMALL)), bigvgan.StreamingBigVGAN
    else:
        mx.random.seed(0)
        model = HiFiGAN(HiFiGANConfig(resblock="1", upsample_rates=(4, 2), upsample_kernel_sizes=(8, 4),
                                      upsample_initial_channel=16, resblock_kernel_sizes=(3, 5),
                                      resblock_dilation_sizes=((1, 3), (1, 3)), num_mels=SMALL["num_mels"]))
        stream_of = StreamingHiFiGAN
    bands = model.config.num_mels
    mel = mx.random.normal((11, bands) if data_format == "NLC" else (bands, 11), key=mx.random.key(3))
    model.data_format = data_format
    whole = model(mel)
    take = (lambda i, n: mel[i:i + n]) if data_format == "NLC" else (lambda i, n: mel[:, i:i + n])
    stream = stream_of(model, data_format=data_format)
    pieces = [stream.step(take(i, 2)) for i in range(0, 11, 2)] + [stream.flush()]
    streamed = mx.concatenate(pieces, axis=-1)
    assert streamed.shape == whole.shape
    np.testing.assert_allclose(np.array(streamed), np.array(whole), atol=1e-5)
    stream.step(take(0, 2))
    with pytest.raises(ValueError, match="the stream started unbatched"):
        stream.step(take(2, 2)[None])


def test_namespace():
    from mlx_deconv.models import bigvgan as by_import
    from mlx_deconv.models.bigvgan import pytorch, streaming

    assert by_import is bigvgan is md.bigvgan and "bigvgan" in md.__all__
    assert bigvgan.StreamingBigVGAN is streaming.StreamingBigVGAN and bigvgan.torch_generator is pytorch.torch_generator
    for name in ("BigVGAN", "BigVGANConfig", "AMPBlock1", "AMPBlock2", "from_checkpoint", "load_torch_checkpoint",
                 "PRESETS", "V2_24KHZ_100BAND_256X"):
        assert hasattr(bigvgan, name)


def test_nvidia_is_loaded_without_librosa_or_a_real_import():
    nvidia(bigvgan.BigVGANConfig.from_dict(SMALL))  # skips without torch or bigvgan
    code = ("import sys, mlx_deconv; from mlx_deconv import bigvgan; m = bigvgan.nvidia_module(); "
            "print(m.BigVGAN.__name__, 'librosa' in sys.modules, 'bigvgan' in sys.modules, 'matplotlib' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["BigVGAN", "False", "False", "False"]


def test_backend_reaches_every_layer():
    config = bigvgan.BigVGANConfig.from_dict(SMALL)
    model = randomized(config)
    builtin = bigvgan.BigVGAN(config, backend="builtin")
    builtin.update(model.parameters())
    assert {layer.backend for _, layer in builtin.conv_layers()} == {"builtin"}
    assert len(builtin.activation_layers()) == 2 * 2 * 4 + 1  # stages x blocks x (2 per dilation, 2 dilations) + post
    mel = mx.random.normal((1, 5, config.num_mels), key=mx.random.key(3))
    np.testing.assert_allclose(np.array(builtin(mel)), np.array(model(mel)), atol=1e-5)


# -- the mel's layout ---------------------------------------------------------------------------------------------------
def test_square_mel_runs_in_the_layout_named():
    """An 8 x 8 mel is read as the model was told: ``"NCL"`` is NVIDIA's ``(N, n_mels, frames)``, ``"NLC"`` its
    transpose; each agrees with NVIDIA's generator (float64) on the matching input, and they differ."""
    import torch

    config = bigvgan.BigVGANConfig.from_dict(SMALL)
    generator = nvidia(config)
    state = generator.state_dict()
    generator = generator.double()
    square = np.random.default_rng(5).standard_normal((1, 8, 8))
    with torch.no_grad():
        as_bands_by_frames = generator(torch.from_numpy(square)).numpy()  # (1, 1, samples)
        as_frames_by_bands = generator(torch.from_numpy(square.transpose(0, 2, 1).copy())).numpy()
    ncl = bigvgan.from_checkpoint(state, config, data_format="NCL")
    nlc = bigvgan.BigVGAN(config).load_torch_state_dict(state)
    x = mx.array(square.astype(np.float32))
    got_ncl, got_nlc = np.array(ncl(x)), np.array(nlc(x))
    assert got_ncl.shape == (1, 1, 64) and got_nlc.shape == (1, 64)  # NCL's output as NVIDIA's generator gives it
    np.testing.assert_allclose(got_ncl, as_bands_by_frames, atol=1e-5)
    np.testing.assert_allclose(got_nlc, as_frames_by_bands[:, 0], atol=1e-5)
    assert np.abs(as_bands_by_frames[:, 0] - as_frames_by_bands[:, 0]).max() > 1e-2
    stream = bigvgan.StreamingBigVGAN(ncl)
    pieces = [stream.step(x[..., i:i + 3]) for i in range(0, 8, 3)] + [stream.flush()]
    np.testing.assert_allclose(np.array(mx.concatenate(pieces, axis=-1)), got_ncl, atol=1e-6)


def test_a_mel_in_the_other_layout_names_data_format():
    """The hint names an argument BigVGAN has (the layers' hint would name theirs)."""
    config = bigvgan.BigVGANConfig.from_dict(SMALL)
    with pytest.raises(ValueError, match=r"BigVGAN \(data_format='NLC'\).*\(1, 8, 20\) has 20 mel bands.*"
                                         r"data_format=\"NCL\""):
        bigvgan.BigVGAN(config)(mx.zeros((1, 8, 20)))
    with pytest.raises(ValueError, match=r"StreamingBigVGAN \(data_format='NCL'\).*20 mel bands.*"
                                         r"build StreamingBigVGAN with data_format=\"NLC\""):
        bigvgan.StreamingBigVGAN(bigvgan.BigVGAN(config, data_format="NCL")).step(mx.zeros((1, 20, 8)))
    with pytest.raises(ValueError, match="num_mels=8 .is the config"):
        bigvgan.BigVGAN(config, data_format="NCL")(mx.zeros((1, 10, 20)))


# -- a config that does not fit ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("change, key, needs", [
    (dict(upsample_initial_channel=8), "upsample_initial_channel", 16),  # first seen at activation_post's alpha
    (dict(num_mels=10), "num_mels", 8),
    (dict(activation="snake"), "activation", "snakebeta"),
    (dict(use_bias_at_final=False), "use_bias_at_final", True),
    (dict(resblock="2"), "resblock", "1"),
    (dict(upsample_kernel_sizes=[8, 6]), "upsample_kernel_sizes", [8, 4]),
    (dict(resblock_kernel_sizes=[3, 7]), "resblock_kernel_sizes", [3, 5]),
    (dict(resblock_dilation_sizes=[[1, 3, 5], [1, 2]]), "resblock_dilation_sizes", None),
])
def test_a_config_that_does_not_fit_names_its_key(change, key, needs):
    from mlx_deconv.models.mismatch import ConfigMismatch

    state = nvidia(bigvgan.BigVGANConfig.from_dict(SMALL)).state_dict()
    wrong = bigvgan.BigVGAN(bigvgan.BigVGANConfig.from_dict({**SMALL, **change}))
    with pytest.raises(ConfigMismatch, match=f"{key} is .* in the config, the checkpoint needs") as caught:
        wrong.load_torch_state_dict(state)
    assert set(caught.value.keys) == {key}
    if needs is not None:
        assert caught.value.keys[key][1] == needs
    if key == "upsample_initial_channel":  # the message, now with the key and both values
        assert str(caught.value).startswith("activation_post.act.alpha has shape (4,), this layer's alpha has (2,)")
        assert "upsample_initial_channel is 8 in the config, the checkpoint needs 16" in str(caught.value)
