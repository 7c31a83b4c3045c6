"""``mlx_deconv.stream``: any local decoder streamed exactly; the receptive field it measures; what it refuses.

The decoders have random weights and few channels. mlx-audio's are built from its 0.6.2 constructors
and skipped cleanly without it. "Exact" is the issue's bar: the streamed output equals the whole
decode within 1e-5 of its peak, at chunk sizes 1, 2, 3, 8, 64 and random splits.
"""

import math

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest

import mlx_deconv as md
from mlx_deconv.streaming import NonLocalDecoderError, ReceptiveField, from_frames, measure

TOLERANCE = 1e-5
CHUNKS = [1, 2, 3, 8, 64]
FRAMES = 70


def take(x, axis, start, stop=None):
    index = [slice(None)] * x.ndim
    index[axis] = slice(start, stop)
    return x[tuple(index)]


# -- the decoders --------------------------------------------------------------------------------------------------------
def package_hifigan():
    from mlx_deconv.models.hifigan import HiFiGAN, HiFiGANConfig

    mx.random.seed(0)
    config = HiFiGANConfig(resblock="1", upsample_rates=(4, 2), upsample_kernel_sizes=(8, 4), upsample_initial_channel=16,
                           resblock_kernel_sizes=(3, 5), resblock_dilation_sizes=((1, 3), (1, 3)), num_mels=8)
    return HiFiGAN(config), (1, None, 8), 1, 1


def package_bigvgan():
    from mlx_deconv import bigvgan

    mx.random.seed(0)
    config = bigvgan.BigVGANConfig.from_dict(dict(
        resblock="1", upsample_rates=[4, 2], upsample_kernel_sizes=[8, 4], upsample_initial_channel=16,
        resblock_kernel_sizes=[3, 5], resblock_dilation_sizes=[[1, 3], [1, 2]], activation="snakebeta",
        snake_logscale=True, num_mels=8, sampling_rate=8000))
    return bigvgan.BigVGAN(config), (1, None, 8), 1, 1


def audio_bigvgan():
    from mlx_audio.codec.models.bigvgan import BigVGAN, BigVGANConfig

    mx.random.seed(0)
    config = BigVGANConfig(num_mels=8, upsample_rates=[2, 2], upsample_kernel_sizes=[4, 4], upsample_initial_channel=16,
                           resblock="1", resblock_kernel_sizes=[3, 7], resblock_dilation_sizes=[[1, 3]] * 2,
                           activation="snakebeta", snake_logscale=True)
    return BigVGAN(config), (1, 8, None), 2, 2


def audio_dac():
    from mlx_audio.codec.models.descript.dac import Decoder

    mx.random.seed(0)
    return Decoder(8, 16, [2, 3]), (1, None, 8), 1, 1


def audio_snac(noise=False, attn_window_size=None):
    from mlx_audio.codec.models.snac.layers import Decoder

    mx.random.seed(0)
    return Decoder(8, 16, [2, 3], noise=noise, depthwise=True, attn_window_size=attn_window_size), (1, None, 8), 1, 1


def audio_vocos():
    from mlx_audio.codec.models.vocos.vocos import ISTFTHead, VocosBackbone

    mx.random.seed(0)
    backbone = VocosBackbone(input_channels=8, dim=16, intermediate_dim=24, num_layers=2)
    head = ISTFTHead(dim=16, n_fft=64, hop_length=16)

    def vocos(mel):
        return head(backbone(mel))
    return vocos, (1, None, 8), 1, 0  # its head returns the samples alone, 1-D


def audio_mimi_seanet():
    """Mimi's convolutional decoder alone (causal SEANet), without the transformer before it."""
    from mlx_deconv.bench.patched_decoders import _mimi

    return _mimi(True).plain, (1, 8, None), 2, 2


def audio_encodec():
    from mlx_deconv.bench.patched_decoders import _encodec

    return _encodec(True).plain, (1, None, 8), 1, 1


def audio_mimi():
    """Mimi's whole decoder from latents: upsampling, its transformer, then the SEANet."""
    from mlx_audio.codec.models.mimi.mimi import Mimi, MimiConfig
    from mlx_audio.codec.models.mimi.modules.seanet import SeanetConfig
    from mlx_audio.codec.models.mimi.modules.transformer import TransformerConfig

    mx.random.seed(0)
    seanet = SeanetConfig(dimension=8, channels=1, causal=True, nfilters=4, nresidual_layers=1, ratios=[3, 2], ksize=7,
                          residual_ksize=3, last_ksize=3, dilation_base=2, pad_mode="constant", true_skip=True,
                          compress=2)
    transformer = TransformerConfig(
        d_model=8, num_heads=2, num_layers=1, causal=True, norm_first=True, bias_ff=False, bias_attn=False,
        layer_scale=0.01, positional_embedding="rope", use_conv_block=False, cross_attention=False, conv_kernel_size=3,
        use_conv_bias=True, gating=False, norm="layer_norm", context=250, max_period=10000, max_seq_len=8192,
        kv_repeat=1, dim_feedforward=16, conv_layout=True)
    mimi = Mimi(MimiConfig(channels=1, sample_rate=24000, frame_rate=2000, renormalize=True, seanet=seanet,
                           transformer=transformer, quantizer_nq=2, quantizer_bins=16, quantizer_dim=4))

    def decode_latents(z):
        return mimi.decoder(mimi.decoder_transformer(mimi.upsample(z), cache=mimi.decoder_cache)[0])
    return decode_latents, (1, 8, None), 2, 2


LOCAL = {
    "hifigan": (package_hifigan, False),
    "bigvgan": (package_bigvgan, False),
    "mlx-audio bigvgan": (audio_bigvgan, True),
    "mlx-audio dac": (audio_dac, True),
    "mlx-audio snac": (audio_snac, True),
    "mlx-audio vocos": (audio_vocos, True),
    "mlx-audio mimi seanet": (audio_mimi_seanet, True),
}


def build(name):
    make, needs_audio = LOCAL[name]
    if needs_audio:
        pytest.importorskip("mlx_audio.codec")
    return make()


def frames_input(shape, frames, seed=1):
    shape = tuple(frames if s is None else s for s in shape)
    return mx.array(np.random.default_rng(seed).standard_normal(shape).astype(np.float32))


_STREAMS = {}


def stream_of(name, **kwargs):
    """One stream per decoder for the whole module (its receptive field is measured once)."""
    key = (name, tuple(sorted(kwargs.items())))
    if key not in _STREAMS:
        fn, shape, in_axis, out_axis = build(name)
        _STREAMS[key] = (md.stream(fn, in_axis, out_axis, example=frames_input(shape, 1), **kwargs), fn, shape)
    return _STREAMS[key]


def run(s, x, sizes):
    """Feeds ``x`` in pieces of ``sizes`` (the last takes the rest) and flushes; the concatenated output."""
    s.reset()  # the streams are shared between tests: one that failed midway leaves nothing behind
    pieces, start = [], 0
    total = x.shape[s.in_axis]
    for size in list(sizes) + [total]:
        size = min(size, total - start)
        pieces.append(s.step(take(x, s.in_axis, start, start + size)))
        start += size
        if start == total:
            break
    pieces.append(s.flush())
    return mx.concatenate(pieces, axis=s.out_axis)


def assert_exact(streamed, whole):
    assert streamed.shape == whole.shape
    a, b = np.array(streamed.astype(mx.float32)), np.array(whole.astype(mx.float32))
    peak = np.abs(b).max()
    assert peak > 0
    err = np.abs(a - b).max()
    assert err <= TOLERANCE * peak, f"streamed differs from whole by {err:.3g} ({err / peak:.2g} of the peak)"


# -- streamed equals whole -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(LOCAL))
def test_streamed_equals_whole_at_every_chunk_size(name):
    s, fn, shape = stream_of(name)
    x = frames_input(shape, FRAMES)
    whole = fn(x)
    rng = np.random.default_rng(7)
    splits = [[size] * math.ceil(FRAMES / size) for size in CHUNKS]
    splits += [list(rng.integers(0, 12, size=FRAMES)) for _ in range(2)]  # empty chunks included
    for sizes in splits:
        assert_exact(run(s, x, sizes), whole)


@pytest.mark.parametrize("name", ["hifigan", "bigvgan", "mlx-audio bigvgan"])
def test_package_models_stream_both_ways(name):
    """``method="state"`` (the models' own streams; mlx-audio's BigVGAN through a copy in this package's layers) and
    ``"recompute"`` (overlap-save) both equal the whole."""
    for method in ("state", "recompute"):
        s, fn, shape = stream_of(name, method=method)
        assert s.method == method
        x = frames_input(shape, 40, seed=3)
        whole = fn(x)
        for size in (1, 3, 8):
            assert_exact(run(s, x, [size] * 40), whole)


def test_mlx_audio_bigvgan_keeps_state_through_a_copy_and_says_so():
    pytest.importorskip("mlx_audio.codec")
    s, fn, shape = stream_of("mlx-audio bigvgan")
    assert s.method == "state"
    assert "holding a copy of mlx-audio's weights" in repr(s) and "hop=4" in repr(s)
    negative = md.stream(audio_bigvgan()[0], in_axis=-1, out_axis=-1, verify=False)
    assert negative.method == "state"


def test_a_copy_that_differs_from_mlx_audio_s_bigvgan_is_never_streamed(monkeypatch):
    """A weight carried over wrongly shows in the copy's check: "auto" recomputes, "state" refuses, naming the gap."""
    pytest.importorskip("mlx_audio.codec")
    from mlx_deconv.models.bigvgan import mlx_audio as adapter

    real = adapter.torch_state_dict

    def off_by_a_little(model):
        state = real(model)
        state["conv_post.bias"] = state["conv_post.bias"] + 1e-3
        return state

    monkeypatch.setattr(adapter, "torch_state_dict", off_by_a_little)
    fn, shape, in_axis, out_axis = audio_bigvgan()
    s = md.stream(fn, in_axis, out_axis, example=frames_input(shape, 1))
    assert s.method == "recompute" and "differs from it by" in repr(s)
    assert_exact(run(s, frames_input(shape, 30), [3] * 10), fn(frames_input(shape, 30)))
    with pytest.raises(ValueError, match="method='state' needs a decoder that can keep state: mlx-audio's BigVGAN could "
                                         "not be copied .* differs from it by"):
        md.stream(fn, in_axis, out_axis, method="state")


@pytest.mark.parametrize("kwargs, match", [
    (dict(check_frames=0), "check_frames must be an int >= 1, got 0"),
    (dict(check_frames=2.5), "check_frames must be an int >= 1, got 2.5"),
    (dict(check_frames=True), "check_frames must be an int >= 1, got True"),
    (dict(tolerance=-1.0), "tolerance must be a finite number >= 0, got -1.0"),
    (dict(tolerance=float("nan")), "tolerance must be a finite number >= 0, got nan"),
    (dict(tolerance="1e-5"), "tolerance must be a finite number >= 0, got '1e-5'"),
])
def test_from_mlx_audio_names_a_bad_argument(kwargs, match):
    pytest.importorskip("mlx_audio.codec")
    from mlx_deconv.models.bigvgan.mlx_audio import from_mlx_audio

    with pytest.raises(ValueError, match=match):
        from_mlx_audio(audio_bigvgan()[0], **kwargs)


def test_a_decoder_that_needs_more_than_sixteen_frames_is_measured_on_longer_inputs():
    """Wide unpadded kernels: 16 frames give it no output, so the probes double the length until it takes one."""
    mx.random.seed(2)
    fn = nn.Sequential(nn.Conv1d(8, 8, 21), nn.ConvTranspose1d(8, 2, 4, stride=2, padding=1))
    x = frames_input((1, None, 8), 50)
    for method in ("recompute", "auto"):
        s = md.stream(fn, 1, 1, method=method)
        assert_exact(run(s, x, [1] * 50), fn(x))
    assert s.method == "state"
    with pytest.raises(ValueError, match="input channels"):  # the decoder's own error, for any length
        md.stream(nn.Conv1d(8, 8, 3), 1, 1, method="recompute").step(mx.zeros((1, 4, 5)))


def sequential_decoder():
    mx.random.seed(4)
    return nn.Sequential(nn.Conv1d(8, 16, 5, padding=2), nn.LeakyReLU(0.1), nn.ConvTranspose1d(16, 8, 8, stride=4, padding=2),
                         nn.Tanh(), nn.Conv1d(8, 2, 3, padding=1))


@pytest.mark.parametrize("converted", [False, True])
def test_a_tree_of_known_modules_streams_layer_by_layer(converted):
    """``mlx.nn`` layers in a ``Sequential`` (as written, or after ``convert``) keep state layer by layer, and equal
    the whole decode at every chunk size."""
    fn = sequential_decoder()
    if converted:
        fn = md.convert(fn)
    s = md.stream(fn, 1, 1, example=frames_input((2, None, 8), 1))
    assert s.method == "state" and "layer-by-layer stream of its modules" in repr(s) and "hop=4" in repr(s)
    x = frames_input((2, None, 8), 33, seed=6)
    for size in CHUNKS:
        assert_exact(run(s, x, [size] * 40), fn(x))


def test_a_layered_stream_follows_weight_updates():
    """``mlx.nn``'s layers (run by this package's layers holding their arrays) and mlx-audio's weight-normed ones
    (folded): an update of the decoder's weights after the stream was made shows at the next step."""
    fn = sequential_decoder()
    s = md.stream(fn, 1, 1, example=frames_input((1, None, 8), 1))
    assert s.method == "state"
    x = frames_input((1, None, 8), 20, seed=3)
    mx.random.seed(5)
    fn.update({"layers": [{"weight": mx.random.normal((16, 5, 8)), "bias": mx.random.normal((16,))}, {}, {}, {},
                          {"weight": mx.random.normal((2, 3, 8))}]})
    assert_exact(run(s, x, [3] * 7), fn(x))
    pytest.importorskip("mlx_audio.codec")
    dac, shape, in_axis, out_axis = audio_dac()
    s = md.stream(dac, in_axis, out_axis, example=frames_input(shape, 1))
    assert s.method == "state"
    x = frames_input(shape, 12, seed=4)
    first = dac.model.layers[0]
    first.weight_v = first.weight_v * 2.0 + 1.0
    first.weight_g = first.weight_g * 0.5
    assert_exact(run(s, x, [2] * 6), dac(x))


@pytest.mark.parametrize("layer, method", [
    (lambda: nn.ConvTranspose1d(8, 2, 3, stride=2, padding=5), "recompute"),  # padding past the span: MLX's arithmetic
    (lambda: nn.ConvTranspose1d(8, 1, 4, stride=2, padding=5, output_padding=6), "recompute"),
    (lambda: nn.ConvTranspose1d(8, 1, 4, stride=2, padding=3, output_padding=3), "state"),  # (3, 0) here
])
def test_mlx_s_transposed_layers_with_any_padding_stream_exactly(layer, method):
    fn = nn.Sequential(nn.Conv1d(8, 8, 3, padding=1), layer())
    s = md.stream(fn, 1, 1, example=frames_input((1, None, 8), 1))
    assert s.method == method
    if method == "recompute":
        assert "has arguments this package's layers do not take" in repr(s)
    x = frames_input((1, None, 8), 24, seed=2)
    for size in (1, 5):
        assert_exact(run(s, x, [size] * 24), fn(x))


@pytest.mark.parametrize("crop", [md.ConvTranspose1d(3, 1, 8, stride=4, padding=(6, 0)),
                                  lambda x: nn.ConvTranspose1d(3, 1, 8, stride=4)(x)[:, 6:]])
def test_a_decoder_that_crops_its_start_streams_by_recomputing(crop):
    """Its samples depend on frames past their own (``first_frame(t) > t // hop``): the kept window still starts
    at or before the first sample not returned."""
    mx.random.seed(1)
    fn = crop if isinstance(crop, nn.Module) else (lambda layer: (lambda x: layer(x)[:, 6:]))(nn.ConvTranspose1d(3, 1, 8, 4))
    x = frames_input((1, None, 3), 30)
    s = md.stream(fn, 1, 1, method="recompute")
    for size in (1, 2, 3, 30):
        assert_exact(run(s, x, [size] * 30), fn(x))


@pytest.mark.parametrize("name", ["hifigan", "bigvgan", "mlx-audio bigvgan"])
@pytest.mark.parametrize("dtype", [mx.float16, mx.bfloat16])
def test_half_precision_chunks_keep_state_and_equal_the_whole_to_their_rounding(name, dtype):
    """The check runs in float32 (where the stream's structure shows), and a decoder that computes a half mel in
    float32 (mlx-audio's BigVGAN, float32 weights) gives float32 samples streamed too."""
    fn, shape, in_axis, out_axis = build(name)
    x = frames_input(shape, 30).astype(dtype)
    whole = fn(x)
    s = md.stream(fn, in_axis, out_axis)
    assert s.method == "state"
    streamed = run(s, x, [1, 2, 3, 8])
    assert streamed.dtype == whole.dtype
    a, b = np.array(streamed.astype(mx.float32)), np.array(whole.astype(mx.float32))
    # One rounding of the output's dtype at the peak: float16's 2**-10, bfloat16's 2**-7.
    ulp = {mx.float16: 2.0 ** -10, mx.bfloat16: 2.0 ** -7, mx.float32: TOLERANCE}[whole.dtype]
    assert np.abs(a - b).max() <= 2 * ulp * np.abs(b).max()


def test_an_unknown_module_is_recomputed_and_a_layered_stream_that_is_not_exact_is_never_used(monkeypatch):
    fn = nn.Sequential(nn.Conv1d(8, 3, 3, padding=1), TwoLayers())
    s = md.stream(fn, 1, 1, example=frames_input((1, None, 8), 1))
    assert s.method == "recompute" and "is not a module the layered stream knows" in repr(s)
    pytest.importorskip("mlx_audio.codec")
    # A weight-norm folding planted wrong (over another axis): the layered stream's check finds it out.
    from mlx_deconv.streaming import layered

    key = ("mlx_audio.codec.models.descript.nn.layers", "WNConvTranspose1d")
    monkeypatch.setitem(layered.WEIGHT_NORMED, key, (lambda g, v: g * v / layered._norm(v, 0), {}))
    dac, shape, in_axis, out_axis = audio_dac()
    s = md.stream(dac, in_axis, out_axis, example=frames_input(shape, 1))
    assert s.method == "recompute" and "the layer-by-layer stream was not exact" in repr(s)
    with pytest.raises(md.streaming.NonLocalDecoderError, match="method='state': the layer-by-layer stream is not exact"):
        md.stream(dac, in_axis, out_axis, example=frames_input(shape, 1), method="state")


@pytest.mark.parametrize("name", ["mlx-audio dac", "mlx-audio snac"])
def test_mlx_audio_dac_and_snac_keep_state_layer_by_layer(name):
    pytest.importorskip("mlx_audio.codec")
    s, fn, shape = stream_of(name)
    assert s.method == "state" and "layer-by-layer stream of its modules" in repr(s)


def test_batched_input_and_other_axes():
    pytest.importorskip("mlx_audio.codec")
    fn, _, _, _ = audio_dac()
    s = md.stream(fn, in_axis=-2, out_axis=1)
    x = frames_input((3, None, 8), 30)
    assert_exact(run(s, x, [4] * 8), fn(x))


# -- latency and bounded state, checked against whole decodes --------------------------------------------------------------
@pytest.mark.parametrize("name", ["hifigan", "bigvgan", "mlx-audio dac", "mlx-audio mimi seanet"])
def test_each_sample_comes_as_soon_as_its_frames_have_arrived(name):
    """After R frames the stream has returned every sample no later frame reaches, and no other.

    Checked on whole decodes: the samples returned are bit-identical when every later frame is replaced
    (by large values, so that far tails show), and the first sample held back has a nonzero gradient with
    respect to some later frame (a path exists from it, however small its weight).
    """
    s, fn, shape = stream_of(name, method="recompute")
    s.reset()
    frames = 40
    x = frames_input(shape, frames)
    other = 1000 * frames_input(shape, frames, seed=9)
    whole = np.array(fn(x))
    total = whole.shape[s.out_axis]
    returned = 0
    for r in range(1, frames):
        returned += s.step(take(x, s.in_axis, r - 1, r)).shape[s.out_axis]
        changed = np.array(fn(mx.concatenate([take(x, s.in_axis, 0, r), take(other, s.in_axis, r)], axis=s.in_axis)))
        assert np.array_equal(take(changed, s.out_axis, 0, returned), take(whole, s.out_axis, 0, returned)), \
            f"after {r} frames a returned sample still changes with later frames"
        if returned < total:
            cotangent = np.zeros(whole.shape, np.float32)
            index = [slice(None)] * whole.ndim
            index[s.out_axis] = returned
            cotangent[tuple(index)] = 1.0
            _, (grad,) = mx.vjp(fn, [x], [mx.array(cotangent)])
            later = np.abs(np.array(take(grad, s.in_axis, r))).max()
            assert later > 0, f"after {r} frames sample {returned} was held back though no later frame reaches it"
    s.flush()


def test_memory_is_bounded_on_a_long_stream():
    pytest.importorskip("mlx_audio.codec")
    s, fn, shape = stream_of("mlx-audio dac", method="recompute")
    x = frames_input(shape, 300, seed=4)
    s.reset()
    pieces = []
    for t in range(300):
        pieces.append(s.step(take(x, 1, t, t + 1)))
        assert s._buffer.shape[1] <= s.window_frames + 1
    pieces.append(s.flush())
    assert_exact(mx.concatenate(pieces, axis=1), fn(x))


# -- the receptive field, against one worked out by hand ------------------------------------------------------------------
class TwoLayers(nn.Module):
    """ConvTranspose1d(K=4, stride 2, padding 1) then Conv1d(K=5, padding 2), NLC.

    Frame t writes transposed-output samples 2t-1 .. 2t+2 (full output 2t .. 2t+3, one cropped on the left);
    output n reads those samples n-2 .. n+2: frame t reaches 2t-3 .. 2t+4. Lengths: 2L, then 2L.
    """

    def __init__(self):
        super().__init__()
        self.up = nn.ConvTranspose1d(3, 4, 4, stride=2, padding=1)
        self.conv = nn.Conv1d(4, 2, 5, padding=2)

    def __call__(self, x):
        return self.conv(nn.leaky_relu(self.up(x), 0.1))


def test_measured_field_is_the_hand_worked_one():
    mx.random.seed(3)
    field = measure(TwoLayers(), mx.zeros((1, 1, 3)), 1, 1)
    assert (field.hop, field.offset, field.first, field.last, field.min_frames) == (2, 0, -3, 4, 1)
    # The frame-level view: a sample of frame k reads frames k-2 .. k+2.
    assert (field.context, field.lookahead) == (2, 2)


@pytest.mark.parametrize("hop,offset,first,last", [(2, 0, -3, 4), (4, 3, 0, 9), (3, -1, -7, -1), (5, 2, 4, 12)])
def test_field_rules_from_their_definitions(hop, offset, first, last):
    """ready, first_frame, context and lookahead, against brute force over frames and samples."""
    f = ReceptiveField(hop, offset, first, last)

    def frames_of(n):  # the frames sample n depends on: hop*t + first <= n <= hop*t + last
        return [t for t in range(-50, 200) if hop * t + first <= n <= hop * t + last]

    for r in range(1, 30):
        final = [n for n in range(f.length(r)) if all(t < r for t in frames_of(n))]
        assert f.ready(r) == (max(final) + 1 if final else 0) == len(final)
    for n in range(0, 60):
        assert f.first_frame(n) == max(0, min(t for t in frames_of(n)))
    assert f.context == max(0, max(k - min(frames_of(n)) for k in range(5, 10) for n in range(hop * k, hop * k + hop)))
    assert f.lookahead == max(0, max(max(frames_of(n)) - k for k in range(5, 10) for n in range(hop * k, hop * k + hop)))


def test_given_context_and_lookahead_skip_the_probe():
    f = from_frames(4, 0, context=3, lookahead=2)
    assert (f.context, f.lookahead, f.measured) == (3, 2, False)
    mx.random.seed(3)
    model = TwoLayers()
    s = md.stream(model, context=2, lookahead=2, example=mx.zeros((1, 1, 3)))
    assert not s.field.measured and "as given" in repr(s)
    x = frames_input((1, None, 3), 30)
    assert_exact(run(s, x, [1] * 30), model(x))


def test_too_small_a_given_context_is_caught_by_the_check():
    mx.random.seed(3)
    with pytest.raises(NonLocalDecoderError, match=r"context=1, lookahead=2 as given"):
        md.stream(TwoLayers(), context=1, lookahead=2, example=mx.zeros((1, 1, 3)))


def test_repr_says_what_was_found():
    mx.random.seed(3)
    s = md.stream(TwoLayers())
    assert "not measured yet" in repr(s)
    s.step(mx.zeros((1, 2, 3)))
    text = repr(s)
    for part in ("hop=2", "context=2 frames", "lookahead=2 frames", "hop*t-3 .. hop*t+4", "measured by perturbation",
                 "decodes the kept window"):
        assert part in text
    s.flush()


# -- refusals --------------------------------------------------------------------------------------------------------------
class GlobalNorm(nn.Module):
    """Upsampling, then a normalisation over the whole signal: every sample depends on every frame."""

    def __init__(self):
        super().__init__()
        self.up = nn.ConvTranspose1d(3, 2, 4, stride=2, padding=1)

    def __call__(self, x):
        y = self.up(x)
        return (y - y.mean(axis=1, keepdims=True)) / (y.std(axis=1, keepdims=True) + 1e-5)


class RunningSum(nn.Module):
    """A recurrence written as a cumulative sum, no recurrent layer to find: each sample depends on every earlier frame."""

    def __init__(self):
        super().__init__()
        self.up = nn.ConvTranspose1d(3, 2, 4, stride=2, padding=1)

    def __call__(self, x):
        return mx.cumsum(self.up(x), axis=1)


class WithLSTM(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = nn.LSTM(3, 3)
        self.up = nn.ConvTranspose1d(3, 2, 4, stride=2, padding=1)

    def __call__(self, x):
        return self.up(self.rnn(x)[0])


def test_a_global_normalisation_is_refused_by_the_probe():
    with pytest.raises(NonLocalDecoderError, match=r"not local in time: changing input frame 64 of 128 changed output "
                                                   r"samples back to the start \(sample 0\) and to the end"):
        md.stream(GlobalNorm(), max_probe_frames=128, example=mx.zeros((1, 1, 3)))


def test_a_recurrence_without_a_recurrent_layer_is_refused_by_the_probe():
    with pytest.raises(NonLocalDecoderError, match=r"changed output samples to the end \(sample 255 of 256\)"):
        md.stream(RunningSum(), max_probe_frames=128, example=mx.zeros((1, 1, 3)))


def test_a_recurrent_layer_is_refused_by_name_before_any_call():
    calls = []

    class Counting(WithLSTM):
        def __call__(self, x):
            calls.append(1)
            return super().__call__(x)

    with pytest.raises(NonLocalDecoderError, match=r"recurrent layer Counting.rnn \(LSTM\)"):
        md.stream(Counting(), example=mx.zeros((1, 1, 3)))
    assert calls == []


class Holder:
    """A plain object wrapping a model, as an app's own class would."""

    def __init__(self, model):
        self.model = model

    def __call__(self, x):
        return self.model(x)


@pytest.mark.parametrize("wrap, path", [
    (Holder, r"Holder\.model\.rnn"),
    (lambda m: (lambda held: (lambda x: held["decoder"](x)))({"decoder": m}), r"held\['decoder'\]\.rnn"),
])
def test_a_recurrent_layer_held_by_a_plain_object_or_a_dict_is_named(wrap, path):
    calls = []

    class Counting(WithLSTM):
        def __call__(self, x):
            calls.append(1)
            return super().__call__(x)

    with pytest.raises(NonLocalDecoderError, match=path + r" \(LSTM\)"):
        md.stream(wrap(Counting()), example=mx.zeros((1, 1, 3)))
    assert calls == []


@pytest.mark.parametrize("norm, name", [(nn.InstanceNorm(4), "InstanceNorm"), (nn.GroupNorm(2, 4), "GroupNorm"),
                                        (nn.BatchNorm(4), r"BatchNorm in training mode: call \.eval\(\)")])
def test_a_normalisation_over_the_whole_signal_is_named_before_any_call(norm, name):
    """Instance and group norms take statistics over time, as a batch norm does until ``eval()``: refused by name,
    with no probing; the same batch norm in eval mode streams exactly."""
    model = nn.Sequential(nn.Conv1d(4, 4, 3, padding=1), norm)
    with pytest.raises(NonLocalDecoderError, match=rf"normalisation layer Sequential\.layers\.1 \({name}"):
        md.stream(model, 1, 1)
    if isinstance(norm, nn.BatchNorm):
        norm.update({"running_mean": mx.full((4,), 0.3), "running_var": mx.full((4,), 2.0)})
        model.eval()
        x = frames_input((1, None, 4), 20, seed=5)
        assert_exact(run(md.stream(model, 1, 1), x, [3] * 7), model(x))


def test_mlx_audio_encodec_is_refused_naming_its_lstm():
    pytest.importorskip("mlx_audio.codec")
    with pytest.raises(NonLocalDecoderError, match=r"recurrent layer EncodecDecoder.layers.1 \(EncodecLSTM\)"):
        md.stream(audio_encodec()[0])


def test_mlx_audio_mimi_is_refused_naming_its_transformer():
    pytest.importorskip("mlx_audio.codec")
    fn, shape, in_axis, out_axis = audio_mimi()
    with pytest.raises(NonLocalDecoderError, match=r"attention layer mimi.decoder_transformer \(ProjectedTransformer\)"):
        md.stream(fn, in_axis, out_axis)


def test_mlx_audio_snac_with_noise_or_attention_is_refused():
    pytest.importorskip("mlx_audio.codec")
    with pytest.raises(NonLocalDecoderError, match="not deterministic: two calls on one input differ"):
        md.stream(audio_snac(noise=True)[0], example=mx.zeros((1, 1, 8)))
    with pytest.raises(NonLocalDecoderError, match=r"attention layer Decoder.model.layers.2 \(LocalMHA\)"):
        md.stream(audio_snac(attn_window_size=8)[0])


# -- arguments and chunks --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs,error,match", [
    (dict(context=-1, lookahead=0), ValueError, r"context must be an int >= 0 \(input frames\), got -1"),
    (dict(context=2, lookahead=1.5), ValueError, r"lookahead must be an int >= 0 \(input frames\), got 1.5"),
    (dict(context=2), ValueError, r"pass both context= and lookahead= .*got context=2 and lookahead=None"),
    (dict(in_axis="time"), ValueError, r"in_axis must be an int \(the time axis\), got 'time'"),
    (dict(in_axis=5), ValueError, r"in_axis=5 is not an axis of a 3-D chunk"),
    (dict(out_axis=4), ValueError, r"out_axis=4 is not an axis of the decoder's output of shape \(1, 32, 2\)"),
    (dict(method="fast"), ValueError, r"method must be one of \('auto', 'recompute', 'state'\), got 'fast'"),
    (dict(method="state"), ValueError, r"method='state' needs a decoder that can keep state: TwoLayers is not one of "
                                       r"this package's HiFiGAN or BigVGAN, nor mlx-audio's BigVGAN, nor a tree of modules "
                                       r"streamed layer by layer \(TwoLayers \(TwoLayers\) is not a module"),
    (dict(max_probe_frames=8), ValueError, r"max_probe_frames must be an int >= 32, got 8"),
])
def test_bad_arguments_are_named(kwargs, error, match):
    mx.random.seed(3)
    with pytest.raises(error, match=match):
        md.stream(TwoLayers(), example=mx.zeros((1, 1, 3)), **kwargs)


def test_not_a_callable():
    with pytest.raises(TypeError, match="fn must be a callable decoder"):
        md.stream("decoder")


def test_a_failed_step_leaves_the_stream_as_it_was():
    mx.random.seed(3)
    model = TwoLayers()
    s = md.stream(model)
    x = frames_input((1, None, 3), 20)
    pieces = [s.step(x[:, :7])]
    for bad, error, match in [(mx.zeros((1, 2, 4)), ValueError, r"off the time axis in_axis=1 the stream takes \(1, 0, 3\)"),
                              (mx.zeros((2, 3)), ValueError, r"2-D, but the stream takes 3-D chunks"),
                              (mx.zeros((1, 2, 3), mx.float16), TypeError, "dtype mlx.core.float16")]:
        with pytest.raises(error, match=match):
            s.step(bad)
    pieces += [s.step(x[:, 7:]), s.flush()]
    assert_exact(mx.concatenate(pieces, axis=1), model(x))
    with pytest.raises(ValueError, match="flush\\(\\) before any input"):
        s.flush()


def test_stream_is_exported():
    assert md.stream is md.streaming.stream
    assert "stream" in md.__all__


def test_auto_keeps_state_for_the_package_models_and_says_so():
    fn, shape, _, _ = package_hifigan()
    s = md.stream(fn)
    assert s.method == "state" and s.field is None  # the layers' streams need no measured field
    assert "hop=8; each step runs the model's own layer-by-layer stream" in repr(s)
    x = frames_input(shape, 12)
    assert_exact(run(s, x, [2] * 6), fn(x))
    with pytest.raises(ValueError, match="flush\\(\\) before any input"):
        s.flush()


RECURRENT_GLOBAL = WithLSTM()


def test_a_recurrent_layer_read_as_a_global_is_found():
    def decode(x):
        return RECURRENT_GLOBAL(x)

    with pytest.raises(NonLocalDecoderError, match=r"recurrent layer RECURRENT_GLOBAL.rnn \(LSTM\)"):
        md.stream(decode)


def test_bad_arguments_are_refused_before_any_call():
    calls = []

    def decoder(x):
        calls.append(1)
        return x

    for kwargs in (dict(context=-1, lookahead=0), dict(lookahead=3), dict(max_probe_frames=True)):
        with pytest.raises(ValueError):
            md.stream(decoder, **kwargs)
    assert calls == []


def test_a_measured_field_is_reused_for_another_batch():
    pytest.importorskip("mlx_audio.codec")
    s, fn, shape = stream_of("mlx-audio dac", method="recompute")
    calls = []

    def counted(x):
        calls.append(x.shape)
        return fn(x)

    again = md.stream(counted, field=s.field, verify=False)
    x = frames_input((2, None, 8), 90, seed=5)
    pieces = [again.step(x[:, t:t + 8]) for t in range(0, 90, 8)] + [again.flush()]
    assert_exact(mx.concatenate(pieces, axis=1), fn(x))
    # One short call for the output's shape, then one per step that returned samples: no measurement.
    assert len(calls) == 1 + sum(p.shape[1] > 0 for p in pieces)
    assert "from field=" in repr(again)
    with pytest.raises(TypeError, match="field must be a ReceptiveField"):
        md.stream(fn, field=(6, -1))
    with pytest.raises(ValueError, match="pass field= or context=/lookahead=, not both"):
        md.stream(fn, field=s.field, context=1, lookahead=1)


def test_class_names_match_as_written():
    from mlx_deconv.streaming import nonlocal_layers

    class TurnNet(nn.Module):  # "rnn" in lower case is no RNN
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv1d(3, 3, 3, padding=1)

        def __call__(self, x):
            return self.conv(x)

    class MyGRUCell(nn.Module):
        def __call__(self, x):
            return x

    assert nonlocal_layers(TurnNet()) == []
    holder = TurnNet()
    holder.cell = MyGRUCell()
    assert nonlocal_layers(holder) == [("TurnNet.cell", "MyGRUCell", "recurrent")]
