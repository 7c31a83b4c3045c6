"""A generator stage's mean over overlapping tiles of the signal on the worker streams (HiFi-GAN offline).

The tiles' mean is checked against the float64 definition, the reach of every block kind against a perturbation
of its input, and whole generators with tiles forced (tiny models, thresholds lowered) against the plain ones.
"""

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import mlx_deconv as md  # noqa: F401 (first, as a user would)
from mlx_deconv import bigvgan, hifigan
from mlx_deconv.models import stages
from mlx_deconv.runtime import worker_streams as ws

import reference


@pytest.fixture
def tiles(monkeypatch):
    """Tiles on any machine: two worker streams, no lower bounds of work, tiles of at most 600 elements.

    Returns the list of tile counts of the calls that were cut (``stages.mean_over_tiles`` spied on)."""
    streams = [mx.default_stream(mx.cpu), mx.new_stream(mx.cpu)]
    monkeypatch.setattr(ws, "worker_streams", lambda stream, max_workers=ws.MAX_WORKERS: streams)
    monkeypatch.setattr(ws, "BRANCH_MIN_FLOPS", 0)
    monkeypatch.setattr(ws, "TILE_MIN_STEP_FLOPS", 0)
    monkeypatch.setattr(ws, "TILE_MAX_ELEMENTS", 600)
    cut = []
    real_count = ws.tile_count

    def counting(*args):
        count = real_count(*args)
        cut.append(count)
        return count
    monkeypatch.setattr(ws, "tile_count", counting)
    return cut


@given(length=st.integers(1, 5000), count=st.integers(1, 9), reach=st.integers(0, 300))
def test_tile_spans_share_the_signal_and_read_a_reach_beyond_inner_edges(length, count, reach):
    spans = ws.tile_spans(length, count, reach)
    assert len(spans) == count
    assert spans[0][2] == 0 and spans[-1][3] == length
    for (lo, hi, start, stop), following in zip(spans, spans[1:] + [None]):
        assert 0 <= lo <= start <= stop <= hi <= length
        assert start - lo == min(reach, start) and hi - stop == min(reach, length - stop)
        if following is not None:
            assert following[2] == stop  # shares meet: every sample kept once


@pytest.mark.parametrize("length, row, reach, streams, expected", [
    (1000, 10, 60, 1, 0),        # one stream: nothing to share
    (959, 10, 60, 2, 0),         # two tiles would keep fewer than 8 reaches each
    (960, 10, 60, 2, 2),         # just enough
    (100_000, 10, 60, 2, 4),     # 1,000,000 elements: tiles of at most 400,000, a multiple of the streams
    (100_000, 10, 4_000, 2, 3),  # ... or as many as keep 8 reaches each
    (100_000, 10, 60, 3, 3),
])
def test_tile_count(length, row, reach, streams, expected):
    assert ws.TILE_MAX_ELEMENTS == 400_000 and ws.TILE_MIN_REACHES == 8
    assert ws.tile_count(length, row, reach, streams) == expected


def _lrelu64(x):
    return np.where(x >= 0, x, 0.1 * x)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_mean_over_tiles_is_the_float64_definition(data, tiles):  # the fixture only patches; tiles[-1] is this call's
    """Branches of residual steps ``x + conv(lrelu(x))`` with "same" padding, dilated, on tiles of random signals."""
    rng = np.random.default_rng(data.draw(st.integers(0, 2 ** 31)))
    batch = data.draw(st.sampled_from([None, 1, 2]))
    channels = data.draw(st.integers(1, 5))
    branches_spec = [[(data.draw(st.sampled_from([1, 3, 5])), data.draw(st.integers(1, 4)))
                      for _ in range(data.draw(st.integers(1, 3)))] for _ in range(data.draw(st.integers(1, 3)))]
    reach = max(sum(d * (k - 1) // 2 for k, d in spec) for spec in branches_spec)
    length = data.draw(st.integers(2 * ws.TILE_MIN_REACHES * max(1, reach), 800))
    x64 = rng.standard_normal(((batch or 1), length, channels))
    weights = [[rng.standard_normal((channels, k, channels)) / np.sqrt(k * channels) for k, _ in spec]
               for spec in branches_spec]

    def step(w, k, d):
        wm = mx.array(w.astype(np.float32))
        return lambda y: y + md.conv1d(mx.maximum(y, 0.1 * y), wm, padding=d * (k - 1) // 2, dilation=d)

    branches = [[step(w, k, d) for w, (k, d) in zip(ws_, spec)] for ws_, spec in zip(weights, branches_spec)]
    x = mx.array(x64.astype(np.float32))
    got = ws.mean_over_tiles(branches, x if batch else x[0], reach, 1.0)
    assert got is not None and tiles and tiles[-1] >= 2
    want = 0
    for ws_, spec in zip(weights, branches_spec):
        y = x64
        for w, (k, d) in zip(ws_, spec):
            pad = d * (k - 1) // 2
            y = y + reference.conv1d(_lrelu64(y), w, left=pad, right=pad, dilation=d)
        want = want + y
    want = want / len(branches_spec)
    got = np.array(got, dtype=np.float64)
    assert got.shape == (want.shape if batch else want.shape[1:])
    np.testing.assert_allclose(got, want if batch else want[0], rtol=1e-5, atol=1e-5 * np.abs(want).max())


def _reach_seen(block, channels, length=400):
    """The farthest output sample a change of one input sample moves, measured (float32, exact zeros)."""
    x = mx.random.normal((1, length, channels), key=mx.random.key(0))
    base = np.array(block(x))
    p = length // 2
    moved = np.array(block(x + mx.array(np.eye(length, dtype=np.float32)[p][None, :, None])))
    changed = np.nonzero(np.any(moved != base, axis=(0, 2)))[0]
    return int(max(p - changed.min(), changed.max() - p))


@pytest.mark.parametrize("kind", ["hifigan-1", "hifigan-2", "bigvgan-1", "bigvgan-2"])
def test_block_reach_bounds_what_a_block_reads(kind):
    mx.random.seed(0)
    if kind.startswith("hifigan"):
        block = (hifigan.ResBlock1 if kind.endswith("1") else hifigan.ResBlock2)(4, 5, (1, 3))
    else:
        config = bigvgan.BigVGANConfig.from_dict(dict(
            resblock=kind[-1], upsample_rates=[2], upsample_kernel_sizes=[4], upsample_initial_channel=8,
            resblock_kernel_sizes=[5], resblock_dilation_sizes=[[1, 3]], activation="snakebeta",
            snake_logscale=True, num_mels=4))
        block = bigvgan.BigVGAN(config).resblocks[0]
    mx.eval(block.parameters())
    seen, bound = _reach_seen(block, 4), stages.block_extent(block)[0]
    assert 0 < seen <= bound
    if kind.startswith("hifigan"):  # convolutions alone: the bound is their exact reach
        assert seen == bound == {"1": (2 + 6) + (2 + 2), "2": 2 + 6}[kind[-1]]
    steps = stages.residual_steps(block)
    x = mx.random.normal((1, 50, 4), key=mx.random.key(1))
    y = x
    for step in steps:
        y = step(y)
    np.testing.assert_array_equal(np.array(y), np.array(block(x)))  # the steps are the block


SMALL = dict(resblock="1", upsample_rates=[4, 2], upsample_kernel_sizes=[8, 4], upsample_initial_channel=16,
             resblock_kernel_sizes=[3, 5], resblock_dilation_sizes=[[1, 3, 5], [1, 3, 5]], num_mels=8)


def _plain(model, mel, monkeypatch):
    with monkeypatch.context() as m:
        m.setattr(stages, "mean_over_tiles", lambda *args: None)
        return np.array(model(mel))


@pytest.mark.parametrize("resblock", ["1", "2"])
@pytest.mark.parametrize("shape", [(2, 121), (121,)])
def test_a_tiled_hifigan_is_the_plain_one(resblock, shape, tiles, monkeypatch):
    config = hifigan.HiFiGANConfig.from_dict(dict(
        SMALL, resblock=resblock, resblock_dilation_sizes=[[1, 3, 5], [1, 3, 5]] if resblock == "1" else [[1, 2], [2, 3]]))
    model = hifigan.HiFiGAN(config)
    mel = mx.random.normal(shape[:-1] + (shape[-1], 8) if len(shape) == 2 else (shape[0], 8), key=mx.random.key(2))
    want = _plain(model, mel, monkeypatch)
    tiles.clear()
    got = np.array(model(mel))
    assert tiles and max(tiles) >= 2  # the stages were cut
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_a_traced_hifigan_keeps_whole_stages(tiles, monkeypatch):
    """Inside mx.grad and mx.compile (where mx.async_eval refuses tracers), and with compiling disabled (where a
    tracer cannot be told), the stages are not cut, and the gradients are the plain model's."""
    model = hifigan.HiFiGAN(hifigan.HiFiGANConfig.from_dict(SMALL))
    mel = mx.random.normal((1, 121, 8), key=mx.random.key(4))

    def loss(m, mel):
        return (m(mel) ** 2).mean()

    tiles.clear()
    value, grads = nn.value_and_grad(model, loss)(model, mel)
    mx.eval(value, grads)
    compiled = np.array(mx.compile(lambda mel: model(mel))(mel))
    assert not tiles
    mx.disable_compile()
    try:
        disabled = np.array(model(mel))
        v2, g2 = nn.value_and_grad(model, loss)(model, mel)
        mx.eval(v2, g2)
    finally:
        mx.enable_compile()
    assert not tiles
    want = _plain(model, mel, monkeypatch)
    np.testing.assert_allclose(compiled, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(disabled, want, rtol=1e-5, atol=1e-6)
    assert np.isclose(float(v2), float(value), rtol=1e-6)


def test_bigvgan_keeps_whole_stages(tiles):
    config = bigvgan.BigVGANConfig.from_dict(dict(
        resblock="1", upsample_rates=[2], upsample_kernel_sizes=[4], upsample_initial_channel=8,
        resblock_kernel_sizes=[3], resblock_dilation_sizes=[[1, 3]], activation="snake", snake_logscale=True,
        num_mels=4))
    model = bigvgan.BigVGAN(config)
    tiles.clear()
    mx.eval(model(mx.random.normal((1, 300, 4), key=mx.random.key(5))))
    assert not tiles


def test_a_model_told_not_to_keeps_whole_stages(tiles):
    model = hifigan.HiFiGAN(hifigan.HiFiGANConfig.from_dict(SMALL))
    mel = mx.random.normal((1, 121, 8), key=mx.random.key(6))
    tiles.clear()
    mx.eval(model(mel))
    assert tiles and max(tiles) >= 2
    model.tiled_stages = False
    tiles.clear()
    mx.eval(model(mel))
    assert not tiles and "tiled_stages" not in model.parameters()


def test_tiles_are_made_only_for_enough_work_per_handoff(tiles, monkeypatch):
    monkeypatch.setattr(ws, "BRANCH_MIN_FLOPS", 30)
    monkeypatch.setattr(ws, "TILE_MIN_STEP_FLOPS", 10)
    double = [lambda y: 2 * y] * 2
    x = mx.arange(40, dtype=mx.float32).reshape(1, 20, 2)
    for flops, made in ((39, False), (40, True)):  # 2 branches of 2 steps: 4 handoffs of at least 10
        got = ws.mean_over_tiles([double, double], x, 1, flops)
        assert (got is not None) is made, flops
    np.testing.assert_array_equal(np.array(got), 4 * np.array(x))
    assert ws.mean_over_tiles([[lambda y: y]], x, 1, 29) is None  # and never below BRANCH_MIN_FLOPS
    assert ws.mean_over_tiles([[lambda y: y]], x, 1, 30) is not None
