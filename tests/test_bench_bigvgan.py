"""The bench's BigVGAN part (the anti-aliased activation, and the generator end to end) on a tiny network.

Nothing here asserts on a measured time.
"""

import functools
import json

import pytest

from mlx_deconv.cli import build_parser, main
from mlx_deconv.bench import bigvgan as bench_bigvgan, runner


def args_for(argv):
    return build_parser().parse_args(["bench", *argv])


def has(module):
    import importlib.util

    return importlib.util.find_spec(module) is not None


def test_activation_rows_follow_the_stages_and_agree():
    result = bench_bigvgan.run(5, tiny=True, warmup=0, repeat=1, with_torch=False)
    config = bench_bigvgan._config(True)
    assert [(r["length"], r["channels"]) for r in result["activations"]] == [(10, 8), (20, 4)]
    assert config.channels(1) == 8
    for row in result["activations"]:
        assert set(row["seconds"]) == {"fused", "unfused"}
        assert row["max_abs_diff"] < 1e-5, row
    gen = result["generator"]
    assert gen["samples"] == 5 * 4 and gen["audio_seconds"] == pytest.approx(20 / config.sampling_rate)
    assert "torch" not in gen["seconds"]
    table = bench_bigvgan.activation_table(result, repeat=1)
    assert table.splitlines()[0].startswith("| stage | length x channels | fused ms | unfused ms | PyTorch ms |")
    assert "| 0 | 10 x 8 |" in table
    json.dumps(bench_bigvgan.public(result))


@pytest.mark.skipif(not has("torch") or not has("bigvgan"), reason="torch or NVIDIA's bigvgan is not installed")
def test_pytorch_phase_times_nvidia_s_code_and_agrees():
    result = bench_bigvgan.run(4, tiny=True, warmup=0, repeat=1)
    assert bench_bigvgan.add_torch(result, warmup=0, repeat=1)
    for row in result["activations"]:
        assert "torch" in row["seconds"] and row["torch_max_abs_diff"] < 1e-5, row
    gen = result["generator"]
    assert "torch" in gen["seconds"] and gen["max_abs_diff"]["torch"] < 1e-4
    assert "| PyTorch, NVIDIA's code" in bench_bigvgan.generator_table(result, repeat=1)
    assert len(gen["paired"]["ratios"]) == 1 and "Paired" in bench_bigvgan.caption(result, 1, 0)


@pytest.mark.skipif(not has("mlx_audio"), reason="mlx-audio is not installed")
def test_mlx_audio_rows_plain_and_patched_agree():
    result = bench_bigvgan.run(4, tiny=True, warmup=0, repeat=1, with_torch=False)
    gen = result["generator"]
    assert {"mlx_audio", "mlx_audio_patched"} <= set(gen["seconds"])
    assert gen["max_abs_diff"]["mlx_audio_patched"] < 1e-4
    assert result["mlx_audio"] and "not installed" not in bench_bigvgan.caption(result, 1, 0)


def test_without_mlx_audio_its_rows_are_left_out(monkeypatch):
    monkeypatch.setattr(bench_bigvgan, "_mlx_audio_model", lambda config: None)
    result = bench_bigvgan.run(3, tiny=True, warmup=0, repeat=1, with_torch=False)
    assert set(result["generator"]["seconds"]) == {"auto"}
    assert "mlx-audio is not installed" in bench_bigvgan.caption(result, 1, 0)


def test_the_part_is_selected_like_the_decoder():
    assert "bigvgan" in runner.PARTS
    assert runner._bigvgan_selected(args_for([]))
    assert runner._bigvgan_selected(args_for(["--only", "bigvgan"]))
    assert not runner._bigvgan_selected(args_for(["--only", "short"]))
    assert not runner._bigvgan_selected(args_for(["--no-decoder"]))
    assert not runner._bigvgan_selected(args_for(["--backward"]))
    with pytest.raises(SystemExit, match="bigvgan part times inference only"):
        runner._bigvgan_selected(args_for(["--only", "bigvgan", "--backward"]))


def test_command_line_prints_both_tables(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(bench_bigvgan, "run", functools.partial(bench_bigvgan.run, tiny=True))
    out = tmp_path / "bench.json"
    main(["bench", "--only", "bigvgan", "--bigvgan-frames", "3", "--repeat", "1", "--warmup", "0", "--no-torch",
          "--json", str(out)])
    text = capsys.readouterr().out
    assert "BigVGAN's anti-aliased activation" in text and "| BigVGAN v2 24 kHz generator |" in text
    saved = json.loads(out.read_text())
    assert saved["bigvgan"]["frames"] == 3 and len(saved["bigvgan"]["activations"]) == 2
