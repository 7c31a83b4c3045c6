"""The benchmark's machinery on tiny shapes: adaptive timing, rows, columns, phases, JSON.

Nothing here asserts on a measured time.
"""

import itertools
import json
import math

import mlx.core as mx
import pytest

from mlx_deconv import autotune, backends, bench
from mlx_deconv.bench import conv1d as bench_conv1d
from mlx_deconv.bench import decoder as bench_decoder
from mlx_deconv.bench import timing as bench_timing
from mlx_deconv.bench import transposed as bench_transposed
from mlx_deconv.cli import main
from mlx_deconv.bench.conv1d import Conv1dShape
from mlx_deconv.models.hifigan import HiFiGANConfig

TINY_CONV = [Conv1dShape("tiny-k3d2", 1, 40, 8, 3, 2), Conv1dShape("tiny-k5d1", 2, 24, 6, 5, 1)]
TINY_DECODER = HiFiGANConfig(resblock="1", upsample_rates=(2, 2), upsample_kernel_sizes=(4, 4),
                             upsample_initial_channel=16, resblock_kernel_sizes=(3, 5),
                             resblock_dilation_sizes=((1, 3), (1, 3)), num_mels=8, sampling_rate=100)


class FakeClock:
    """A clock that moves only when a fake function runs: each adds its cost."""

    def __init__(self):
        self.now = 0.0
        self.calls = {}

    def __call__(self):
        return self.now

    def fn(self, name, cost):
        def run():
            self.calls[name] = self.calls.get(name, 0) + 1
            self.now += cost
        return run


@pytest.fixture
def tuner():
    """A private in-memory tuner whose timer makes ``builtin`` the fastest: no timing, no user cache."""
    timed = []

    def timer(fns):
        timed.append(sorted(fns))
        return {n: (1.0 if n == "builtin" else 2.0) for n in fns}

    old = autotune.use_tuner(autotune.Tuner(directory=False, timer=timer))
    yield timed
    autotune.use_tuner(old)


def test_adaptive_timing_counts_with_an_injected_clock():
    clock = FakeClock()
    fns = {"fast": clock.fn("fast", 0.01), "slow": clock.fn("slow", 1.0), "limit": clock.fn("limit", 0.5)}
    t = bench_timing.timed_medians(fns, warmup=2, repeat=5, slow=0.5, slow_runs=2, clock=clock)
    # Fast: first call + one more warm-up + 5 timed, each right after an untimed call of its own;
    # slow: its first call and one more, both timed.
    assert clock.calls == {"fast": 12, "slow": 2, "limit": 12}  # "over 0.5 s" is strict
    assert (t["fast"].runs, t["fast"].slow, t["slow"].runs, t["slow"].slow) == (5, False, 2, True)
    assert t["fast"].seconds == pytest.approx(0.01) and t["slow"].seconds == pytest.approx(1.0)


def test_each_timed_call_follows_an_untimed_call_of_its_own():
    """Round-robin, but in steady state: a call right after another function's is cold and slow here,
    and the medians are of warm calls only."""
    clock, last = FakeClock(), []

    def fn(name, warm):
        def run():
            clock.now += warm if last[-1:] == [name] else 5.0
            last.append(name)
        return run

    t = bench_timing.timed_medians({"a": fn("a", 1.0), "b": fn("b", 2.0)}, warmup=1, repeat=3, clock=clock)
    assert (t["a"].seconds, t["b"].seconds) == (1.0, 2.0)
    assert last == ["a", "b"] + ["a", "a", "b", "b"] * 3


def test_a_timed_call_starts_from_an_empty_buffer_cache(monkeypatch):
    """Buffers another backend left in MLX's cache slowed the next one for good (MLX's own op leaves large ones)."""
    from mlx_deconv.tuning import measure as autotune_timing

    events = []
    monkeypatch.setattr(autotune_timing.mx, "clear_cache", lambda: events.append("clear"))
    clock = FakeClock()
    autotune_timing.time_primed(lambda: events.append("call"), clock, lambda out: None)
    assert events == ["clear", "call", "call"]


def test_adaptive_timing_without_warmup_or_threshold():
    clock = FakeClock()
    costs = iter([3.0, 1.0, 2.0])  # successive calls of one function
    fns = {"f": lambda: setattr(clock, "now", clock.now + next(costs))}
    t = bench_timing.timed_medians(fns, warmup=0, repeat=3, slow=None, clock=clock)["f"]
    assert (t.runs, t.seconds) == (3, 2.0)  # the first call is a timed run, median of 3, 1, 2
    clock = FakeClock()
    t = bench_timing.timed_medians({"s": clock.fn("s", 20.0)}, warmup=2, repeat=5, slow=10.0, slow_runs=1,
                                   clock=clock)["s"]
    assert (clock.calls["s"], t.runs, t.slow) == (1, 1, True)
    with pytest.raises(ValueError, match="repeat"):
        bench_timing.timed_medians({}, warmup=1, repeat=0)


def test_slow_note_names_the_counts():
    assert bench_timing.slow_note({"a": {"builtin": 5, "gemm": 5}}, 5, 0.5) == ""
    note = bench_timing.slow_note({"a": {"builtin": 2, "gemm": 5}, "b": {"builtin": 1}}, 5, 0.5)
    assert "once or 2 times" in note and "over 0.5 s" in note and "median of 5" in note


def test_machine_names_cpu_and_blas():
    details = bench_timing.machine_details()
    assert {"system", "arch", "cpu", "cores", "mlx", "python", "blas", "blas_optimized", "torch"} <= set(details)
    line = bench.machine()
    assert "CPU BLAS" in line and mx.__version__ in line
    if details["cpu"]:
        assert details["cpu"] in line


def test_conv1d_rows_every_backend_auto_tuned_and_torch(tuner):
    rows = bench_conv1d.run(TINY_CONV, warmup=0, repeat=1)
    names = backends.available_backends(mx.default_stream(mx.cpu), "conv1d")
    assert len(rows) == len(TINY_CONV) and len(names) > 1
    for row, shape in zip(rows, TINY_CONV):
        assert row["shape"]["name"] == shape.name and set(row["seconds"]) == set(names)
        assert row["auto"] in names and row["tuned"] == "builtin"  # the injected timer's fastest
        assert all(row["runs"][n] == 1 for n in names) and row["torch_seconds"] is None
        assert row["gflop"] == pytest.approx(2 * shape.batch * shape.length * shape.channels ** 2
                                             * shape.kernel_size / 1e9)
    assert tuner  # the tuner was asked
    text = bench_conv1d.table(rows, repeat=1)
    head = text.splitlines()[0]
    for column in ["auto", "tuned", "auto / builtin", "auto / tuned", "GFLOP/s"] + [f"{n} ms" for n in names]:
        assert f"| {column} |" in head
    assert "| tiny-k3d2 | 40 | 8 | 3 | 2 |" in text
    pytest.importorskip("torch")
    assert bench_conv1d.add_torch(rows, warmup=0, repeat=1)
    assert all(r["torch_seconds"] > 0 for r in rows)
    assert "| torch ms |" in bench_conv1d.table(rows, repeat=1)


def test_conv1d_slow_cells_are_marked_and_explained():
    rows = bench_conv1d.run(TINY_CONV[:1], warmup=1, repeat=3, with_tuned=False, slow=0.0, slow_runs=2)
    assert set(rows[0]["runs"].values()) == {2} and rows[0]["tuned"] is None
    text = bench_conv1d.table(rows, repeat=3, slow=0.0)
    assert "| tuned |" not in text.splitlines()[0]
    assert text.count("*") >= len(rows[0]["seconds"]) and "timed 2 times without warm-up" in text


def test_decoder_three_ways_agree_and_are_compared(monkeypatch):
    result = bench_decoder.run(TINY_DECODER, seconds=0.4, warmup=0, repeat=1, slow=None)
    assert result["frames"] == 10 and result["audio_seconds"] == pytest.approx(0.4)
    assert set(result["seconds"]) == {"builtin", "auto"} and result["max_abs_diff"]["builtin"] < 1e-5
    if result["_torch"][0] is not None:
        assert bench_decoder.add_torch(result, warmup=0, repeat=1)
        assert result["max_abs_diff"]["torch"] < bench_decoder.AGREE and result["seconds"]["torch"] > 0
        assert len(result["paired"]["ratios"]) == 1 and result["paired"]["ratio"] > 0
        assert "Paired" in bench_decoder.caption(result, 1, 0, None)
    text = bench_decoder.table(result, repeat=1)
    assert text.count("(agree)") == len(result["seconds"]) - 1 and "DISAGREE" not in text
    assert "real-time factor" in text and "speed-up over MLX ops" in text
    assert not [k for k in json.loads(json.dumps(bench_decoder.public(result))) if k.startswith("_")]
    # The comparison reads the outputs: weights changed in one model show.
    real = bench_decoder._models

    def perturbed(*args):
        auto, builtin, torch_model = real(*args)
        builtin.conv_post.weight = builtin.conv_post.weight + 1.0
        return auto, builtin, torch_model

    monkeypatch.setattr(bench_decoder, "_models", perturbed)
    bad = bench_decoder.run(TINY_DECODER, seconds=0.4, warmup=0, repeat=1, slow=None, with_torch=False)
    assert bad["max_abs_diff"]["builtin"] > 1e-2 and "DISAGREE" in bench_decoder.table(bad, repeat=1)


def test_paired_ratios_time_one_call_of_each_a_pause_apart():
    clock, events, slept = FakeClock(), [], []
    theirs_costs = iter([1.0, 4.0, 2.0, 2.0, 8.0, 1.0])  # (untimed, timed) per round

    def ours():
        events.append("ours")
        clock.now += 2.0

    def theirs():
        events.append("theirs")
        clock.now += next(theirs_costs)

    paired = bench_timing.paired_ratios(ours, theirs, 3, pause=0.25, clock=clock, evaluate=lambda out: None,
                                        sleep=slept.append)
    # Each timed call right after an untimed one of its own; the sides alternate; a pause after each side.
    assert events == ["ours", "ours", "theirs", "theirs"] * 3 and slept == [0.25] * 6
    assert paired.ratios == (0.5, 1.0, 2.0) and paired.ratio == 1.0
    cell = bench_timing.paired_cell(dict(ratio=paired.ratio, ratios=list(paired.ratios), pause=0.25))
    assert cell == "1.00x (0.50-2.00)" and bench_timing.paired_cell(None) == "-"
    with pytest.raises(ValueError, match="rounds"):
        bench_timing.paired_ratios(ours, theirs, 0)


def test_decoder_slow_variant_runs_once():
    ticks = iter(range(1000))
    clock = lambda: 20.0 * next(ticks)  # noqa: E731  (every call seems to take 20 s)
    result = bench_decoder.run(TINY_DECODER, seconds=0.2, warmup=1, repeat=3, with_torch=False, slow=10.0,
                               clock=clock)
    assert result["runs"] == {"builtin": 1, "auto": 1} and result["seconds"] == {"builtin": 20.0, "auto": 20.0}
    assert "`builtin` once" in bench_decoder.caption(result, 3, 1, 10.0) and "| 20* |" in bench_decoder.table(result, 3)


def test_v1_config_is_hifigan_v1():
    config = bench_decoder.v1_config()
    assert (config.resblock, config.upsample_rates, config.upsample_kernel_sizes, config.upsample_initial_channel,
            config.resblock_kernel_sizes, config.resblock_dilation_sizes, config.num_mels, config.sampling_rate) == (
        "1", (8, 8, 2, 2), (16, 16, 4, 4), 512, (3, 7, 11), ((1, 3, 5),) * 3, 80, 22050)
    assert bench_decoder.frames_for(1.0, config) == 86
    # HiFi-GAN V1's residual-block convolutions: each stage's channels, every (K, d) of resblock "1".
    shapes = bench_conv1d.CONV1D_SHAPES
    assert {s.channels: s.length // 86 for s in shapes} == {256: 8, 128: 64, 64: 128, 32: 256}
    assert {(s.kernel_size, s.dilation) for s in shapes} >= {(3, 1), (7, 3), (11, 5)}


def args_for(argv):
    from mlx_deconv.cli import build_parser

    return build_parser().parse_args(["bench", *argv])


def test_parts_selected_by_only_shapes_backward():
    sel = lambda *argv: bench.select(args_for(argv))  # noqa: E731
    shapes, conv, decoder = sel()
    assert shapes == bench.SHAPES and conv == bench_conv1d.CONV1D_SHAPES and decoder
    assert sel("--no-decoder")[2] is False and sel("--backward")[2] is False
    assert sel("--only", "decoder") == ([], [], True)
    assert sel("--only", "conv1d")[:2] == ([], bench_conv1d.CONV1D_SHAPES)
    shapes, conv, decoder = sel("--shapes", "hifigan-1", bench_conv1d.CONV1D_SHAPES[0].name)
    assert [s.name for s in shapes] == ["hifigan-1"] and conv == bench_conv1d.CONV1D_SHAPES[:1] and not decoder
    with pytest.raises(SystemExit, match="nope"):
        sel("--shapes", "nope")
    with pytest.raises(SystemExit, match="inference"):
        sel("--backward", "--only", "decoder")


def test_cli_runs_every_part_mlx_first_then_torch(monkeypatch, tmp_path, capsys, tuner):
    monkeypatch.setattr(bench_conv1d, "CONV1D_SHAPES", TINY_CONV)
    monkeypatch.setattr(bench_decoder, "v1_config", lambda: TINY_DECODER)
    order = []
    for module in (bench_transposed, bench_conv1d, bench_decoder, bench_timing):  # bench_timing: the rows' PyTorch
        def recorder(fns, *args, real=bench_timing.timed_medians, **kwargs):
            order.append("torch" if "torch" in fns else "mlx")
            return real(fns, *args, **kwargs)
        monkeypatch.setattr(module, "timed_medians", recorder)
    path = tmp_path / "bench.json"
    main(["bench", "--only", "transposed", "conv1d", "decoder", "--shapes", "depthwise-up", "tiny-k3d2",
          "--decoder-seconds", "0.2", "--repeat", "1", "--warmup", "0", "--json", str(path)])
    out = capsys.readouterr().out
    data = json.loads(path.read_text())
    assert {"machine", "machine_details", "kind", "dtype", "stream", "repeat", "warmup", "rows", "conv1d_rows",
            "decoder"} <= set(data)
    assert data["machine_details"]["cpu"] == bench_timing.cpu_model()
    assert [r["shape"]["name"] for r in data["rows"]] == ["depthwise-up"]
    assert [r["shape"]["name"] for r in data["conv1d_rows"]] == ["tiny-k3d2"]
    assert {"seconds", "runs", "max_abs_diff", "audio_seconds", "frames", "config"} <= set(data["decoder"])
    assert "| depthwise-up | gemm | builtin |" in out and "| auto / tuned |" in out  # the injected tuner's choice
    assert "| depthwise-up | gemm |" in out and "| tiny-k3d2 |" in out and "mlx_deconv (`backend=\"auto\"`)" in out
    assert "mlx" in order and order == sorted(order, key=lambda phase: phase == "torch")
    try:
        import torch  # noqa: F401
    except ImportError:
        assert "torch" not in order
    else:
        assert order.count("torch") == 3 and data["decoder"]["max_abs_diff"]["torch"] < bench_decoder.AGREE
        assert f"with {bench_timing.torch_default_threads()} threads (its default)" in out


def test_torch_phase_runs_torch_at_its_own_default_and_restores():
    torch = pytest.importorskip("torch")
    default = bench_timing.torch_default_threads()
    assert default >= 1
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(3 if default != 3 else 4)  # a count the phase must replace
        before = torch.get_num_threads()
        with bench_timing.torch_phase() as threads:
            assert threads == default and torch.get_num_threads() == default
        assert torch.get_num_threads() == before
    finally:
        torch.set_num_threads(old)


def test_short_calls_time_back_to_back_calls_and_divide():
    """A cell's sample is several calls when one is short, the same count for every function, and
    the row holds seconds per call."""
    from mlx_deconv.bench import short_calls

    assert short_calls.calls_per_sample(1.0) == 1
    assert short_calls.calls_per_sample(short_calls.SAMPLE_SECONDS / 3) == 3
    assert short_calls.calls_per_sample(0.0) == short_calls.MAX_NUMBER
    ticks = itertools.count()
    tick = 2.0 ** -12  # each reading 0.24 ms after the last (exact in binary)
    clock = lambda: tick * next(ticks)  # noqa: E731
    cells = [short_calls.ShortCall("conv1d", "dense", 8, 4, 3), short_calls.ShortCall("conv_transpose1d", "strided",
                                                                                    8, 4, 4, stride=2)]
    rows = short_calls.run(cells, warmup=1, repeat=3, clock=clock)
    for row in rows:
        assert row["number"] == math.ceil(short_calls.SAMPLE_SECONDS / tick) == 2
        assert set(row["seconds"]) == {"mx", "auto", "builtin"} and row["grid"] == "fitting"
        for seconds in row["seconds"].values():
            assert seconds == tick / 2


def test_short_calls_ratio_pairs_each_round():
    """The ratio is the median of per-round ratios, not the ratio of medians: a slow spell that falls on
    one round of both functions cancels."""
    from mlx_deconv.bench import short_calls

    mlx, auto = [1.0, 1.0, 5.0, 5.0, 5.0], [1.0, 1.0, 5.0, 5.0, 4.0]  # medians 5 and 5; pairs 1,1,1,1,1.25
    assert short_calls.paired_ratio(mlx, auto) == 1.0
    assert short_calls.paired_ratio([2.0, 4.0, 9.0], [1.0, 1.0, 10.0]) == 2.0  # ratio of medians: 4.0
    with pytest.raises(ValueError, match="as many samples of each, got 2 and 1"):
        short_calls.paired_ratio([1.0, 2.0], [1.0])
    # The headline ratio is MLX's function called directly over auto, not builtin over auto.
    row = dict(seconds=dict(mx=4.0, builtin=8.0, auto=1.0), mx_over_auto=2.0, builtin_over_auto=9.0)
    assert short_calls.ratios([row]) == [2.0]
