"""The bench's streaming rows (HiFi-GAN streamed a few frames a step) on a small network.

Nothing here asserts on a measured time.
"""

import json

import mlx.core as mx
import numpy as np
import pytest

from mlx_deconv.bench import streaming as bench_streaming
from mlx_deconv.models.hifigan import V1, HiFiGAN, HiFiGANConfig

SMALL = HiFiGANConfig(resblock="1", upsample_rates=(4, 2), upsample_kernel_sizes=(8, 4), upsample_initial_channel=16,
                      resblock_kernel_sizes=(3, 7), resblock_dilation_sizes=((1, 3, 5), (1, 3, 5)), num_mels=8)


def has_torch():
    import importlib.util

    return importlib.util.find_spec("torch") is not None


@pytest.mark.parametrize("config", [SMALL, HiFiGANConfig(**dict(SMALL.__dict__, resblock="2",
                                                                 resblock_dilation_sizes=((1, 3), (1, 3))))])
def test_left_context_is_what_a_chunk_s_audio_depends_on(config):
    """The chunk's audio from the chunk with that context on both sides equals the whole signal's."""
    mx.random.seed(0)
    model = HiFiGAN(config)
    mx.eval(model.parameters())
    hop, context = int(np.prod(config.upsample_rates)), bench_streaming.left_context(config)
    mel = mx.random.normal((1, 4 * context + 12, config.num_mels))
    whole = np.array(model(mel))
    t, chunk = 2 * context, 4

    def chunk_audio(c):
        part = np.array(model(mel[:, t - c: t + chunk + c]))
        return part[:, c * hop: (c + chunk) * hop]

    np.testing.assert_allclose(chunk_audio(context), whole[:, t * hop: (t + chunk) * hop], atol=1e-5)
    assert np.abs(chunk_audio(context // 3) - whole[:, t * hop: (t + chunk) * hop]).max() > 1e-4


def test_v1_context():
    assert bench_streaming.left_context(V1) == 17


def test_rows_cover_every_chunk_size_and_steady_steps():
    result = bench_streaming.run((1, 3), config=SMALL, warmup=0, repeat=2, with_torch=has_torch())
    assert [r["frames"] for r in result["rows"]] == [1, 3]
    for row in result["rows"]:
        assert row["runs"]["mlx_deconv"] == 2 and row["audio_seconds"] == row["frames"] * 8 / SMALL.sampling_rate
    if has_torch():
        assert bench_streaming.add_torch(result, warmup=0, repeat=2)
        assert all("torch" in r["seconds"] for r in result["rows"])
    table = bench_streaming.table(result)
    assert table.splitlines()[0].startswith("| frames per step | audio per step ms | step ms | real-time factor |")
    assert "| 3 | " in table
    json.dumps(bench_streaming.public(result))


def test_decoder_rows_stream_exactly_and_show_snac_s_own_streaming():
    """One row per decoder and chunk size; this package's stream equals the whole decode, SNAC's own does not."""
    names = ["hifigan", "snac"] if bench_streaming_has_audio() else ["hifigan"]
    result = bench_streaming.run_decoders(names, chunks=(2, 8), tiny=True, steps=2)
    assert [(r["name"], r["frames"]) for r in result["rows"]] == [(n, c) for n in names for c in (2, 8)]
    for row in result["rows"]:
        assert row["max_rel"] <= 1e-5 and row["samples"] == row["whole_samples"]
        assert row["first_audio_frames"] is not None and row["step_seconds"] > 0
    if "snac" in names:
        snac = [r for r in result["rows"] if r["name"] == "snac"]
        assert snac[0]["own"] is None  # decode_stream takes whole coarse frames (4 finest ones)
        own = snac[1]["own"]
        assert own["max_rel"] > 1e-3 and "decode_stream returned" in own["note"]
    table = bench_streaming.decoders_table(result)
    assert table.splitlines()[0].startswith("| decoder | frames per step | how | step ms |")
    json.dumps(result)


def bench_streaming_has_audio():
    from mlx_deconv.bench.patched_decoders import has_mlx_audio

    return has_mlx_audio()


def test_both_methods_run_on_the_same_chunks_and_both_equal_the_whole_decode(monkeypatch):
    """One row per decoder and chunk size, with each method's time and its error against the whole decode; a
    method that went wrong shows in its own column."""
    result = bench_streaming.compare_methods(["hifigan", "bigvgan"], chunks=(1, 3), tiny=True, steps=2)
    assert [(r["name"], r["frames"]) for r in result["rows"]] == [("hifigan", 1), ("hifigan", 3), ("bigvgan", 1),
                                                                   ("bigvgan", 3)]
    for row in result["rows"]:
        for method in ("state", "recompute"):
            assert row[method]["max_rel"] <= 1e-5 and row[method]["samples"] == row[method]["whole_samples"]
            assert row[method]["step_seconds"] > 0
    table = bench_streaming.methods_table(result)
    assert table.splitlines()[0].startswith("| decoder | frames per step | state: step ms (RTF) |")
    json.dumps(result)
    # A stateful stream that drops its last sample is reported, not hidden.
    from mlx_deconv.models.hifigan import StreamingHiFiGAN

    real_flush = StreamingHiFiGAN.flush
    monkeypatch.setattr(StreamingHiFiGAN, "flush", lambda self: real_flush(self)[:, :-1])
    broken = bench_streaming.compare_methods(["hifigan"], chunks=(3,), tiny=True, steps=2)["rows"][0]
    assert broken["state"]["samples"] < broken["state"]["whole_samples"]
    assert broken["recompute"]["samples"] == broken["recompute"]["whole_samples"]


def test_compare_methods_refuses_a_decoder_that_keeps_no_state():
    with pytest.raises(ValueError, match="compare_methods takes one of .*the decoders that keep state"):
        bench_streaming.compare_methods(["dac-24khz"], tiny=True)
