"""The bench's models part (mlx-audio's decoders, plain MLX against ``patch_mlx()``) on tiny models.

Nothing here asserts on a measured time.
"""

import functools
import json

import mlx.core as mx
import pytest

from mlx_deconv import bench
from mlx_deconv.cli import build_parser, main
from mlx_deconv.bench import patched_decoders as bench_models, runner
from mlx_deconv.ops import patch


def args_for(argv):
    return build_parser().parse_args(["bench", *argv])


@pytest.fixture
def tiny(monkeypatch):
    """The part's models at a few channels, wherever the runner calls it."""
    monkeypatch.setattr(bench_models, "run", functools.partial(bench_models.run, tiny=True))


def test_every_model_runs_plain_and_patched_and_agrees():
    result = bench_models.run(tiny=True, frames=(7, 9), warmup=0, repeat=1)
    names = [m.name for m in bench_models.MODELS if bench_models.has_mlx_audio() or not m.needs_mlx_audio]
    assert [r["name"] for r in result["rows"]] == [n for n in names for _ in (7, 9)]
    assert [r["frames"] for r in result["rows"]] == [7, 9] * len(names)
    for row in result["rows"]:
        assert set(row["seconds"]) == set(row["runs"]) == {"plain", "patched"}
        assert row["samples"] > 0 and bench_models.agrees(row), row
    assert not patch.is_patched() and mx.conv1d is patch.original("conv1d")  # the part leaves MLX as it found it
    table = bench_models.table(result, repeat=1)
    assert table.splitlines()[0] == ("| model | frames | samples | plain MLX s | patched s | speed-up | max abs diff "
                                     "| / max abs of plain |")
    assert "| hifigan | 7 |" in table and "(agree)" in table and "DISAGREE" not in table
    caption = bench_models.caption(result, repeat=1, warmup=0)
    assert "hifigan: mlx_deconv HiFi-GAN V2" in caption
    if bench_models.has_mlx_audio():
        assert not result["skipped"] and result["mlx_audio"] and "| bigvgan | 7 |" in table
        assert "mlx-audio " + result["mlx_audio"] in caption


def test_without_mlx_audio_only_the_package_s_own_model_runs(monkeypatch):
    monkeypatch.setattr(bench_models, "has_mlx_audio", lambda: False)
    result = bench_models.run(tiny=True, frames=(3,), warmup=0, repeat=1)
    assert [r["name"] for r in result["rows"]] == ["hifigan"]
    assert set(result["skipped"]) == {m.name for m in bench_models.MODELS if m.needs_mlx_audio}
    assert "mlx-audio is not installed" in bench_models.caption(result, 1, 0)
    assert result["mlx_audio"] is None


def test_a_model_that_cannot_be_built_is_skipped_with_its_reason():
    def broken(tiny):
        raise TypeError("unexpected keyword argument 'depthwise'")

    case = bench_models.ModelCase("broken", "a model whose constructor changed", broken, needs_mlx_audio=False)
    result = bench_models.run([case], frames=(3,), tiny=True, warmup=0, repeat=1)
    assert result["rows"] == [] and "TypeError: unexpected keyword" in result["skipped"]["broken"]


def test_the_part_is_selected_like_the_decoder():
    sel = lambda *argv: [m.name for m in runner.select_models(args_for(argv))]  # noqa: E731
    everything = [m.name for m in bench_models.MODELS]
    assert "models" in bench.PARTS
    assert sel() == everything and sel("--only", "models") == everything
    assert sel("--only", "transposed") == [] and sel("--no-models") == [] and sel("--no-decoder") == []
    assert sel("--shapes", "hifigan-1") == [] and sel("--backward") == []
    assert sel("--only", "models", "--models", "dac", "bigvgan") == ["bigvgan", "dac"]
    with pytest.raises(SystemExit, match="inference"):
        sel("--backward", "--only", "models")
    with pytest.raises(SystemExit):
        args_for(["--models", "nope"])


def test_cli_runs_the_part_and_writes_it_to_json(tiny, tmp_path, capsys):
    path = tmp_path / "bench.json"
    main(["bench", "--only", "models", "--models", "hifigan", "dac", "--model-frames", "7", "8",
          "--repeat", "1", "--warmup", "0", "--no-torch", "--json", str(path)])
    out = capsys.readouterr().out
    data = json.loads(path.read_text())
    names = ["dac", "hifigan"] if bench_models.has_mlx_audio() else ["hifigan"]
    assert [r["name"] for r in data["models"]["rows"]] == [n for n in names for _ in (7, 8)]
    assert data["models"]["frames"] == [7, 8]
    assert "plain MLX against mlx_deconv.patch_mlx()" in out and "| hifigan | 8 |" in out
    assert data["rows"] == [] and data["conv1d_rows"] == [] and data["decoder"] is None
