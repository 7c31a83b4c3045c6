"""The commands the README promises, and the package's own check oracle."""

import json

import numpy as np
from hypothesis import given

from mlx_deconv import reference as package_reference
from mlx_deconv.__main__ import main
from mlx_deconv.geometry import conv_geometry
from strategies import cases


@given(case=cases(max_length=8))
def test_package_oracle_agrees_with_test_reference(case):
    """``check`` and ``demo`` trust mlx_deconv.reference; it must agree with the tests' own."""
    x, w, b = case.arrays()
    geom, _ = conv_geometry(x.shape, w.shape, **case.kwargs())
    np.testing.assert_allclose(package_reference.conv_transpose1d(x, w, b, geom), case.expected(x, w, b), atol=1e-10)


def test_info_demo_check_run(capsys):
    main(["info"])
    main(["demo"])
    try:
        main(["check"])
    except SystemExit as exit:
        assert exit.code == 0
    out = capsys.readouterr().out
    assert "backends ['builtin', 'gemm', 'winograd']" in out
    assert "12800 samples" in out
    assert "all backends agree" in out


def test_bench_runs_on_a_small_shape(capsys, tmp_path):
    main(["bench", "--shapes", "depthwise-up", "--repeat", "1", "--warmup", "0", "--json", str(tmp_path / "b.json"),
          "--plot", str(tmp_path / "b.png")])
    out = capsys.readouterr().out
    assert "| depthwise-up | gemm |" in out and "peak MB" in out and "% of copy" in out
    rows = json.loads((tmp_path / "b.json").read_text())["rows"]
    assert rows[0]["peak_bytes"] > 0 and rows[0]["seconds"]["builtin"] > 0
    assert rows[0]["seconds"]["winograd"] is None and "| — |" in out  # depthwise: not its domain
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert "no figure written" in out
    else:
        assert (tmp_path / "b.png").stat().st_size > 1000


def test_readme_example_runs():
    """The README's usage example is code users paste: it must run and print what it says."""
    import pathlib
    import re

    import mlx.core as mx

    text = (pathlib.Path(__file__).parent.parent / "README.md").read_text()
    code = re.search(r"## Example\n\n```python\n(.*?)```", text, re.S).group(1)
    scope = {}
    exec(compile(code, "README.md", "exec"), scope)
    assert scope["y"].shape == (1, 256, 1600)
    assert scope["md"].output_length(200, 16, stride=8, padding="same") == 1600
    causal = scope["md"].conv_transpose1d(scope["x"], scope["w"], stride=8, padding="causal")
    same = scope["md"].conv_transpose1d(scope["x"], scope["w"], stride=8, padding=4)
    # The torch-layout NCL call is the same numbers as the MLX-layout NLC call.
    assert mx.allclose(scope["y"].transpose(0, 2, 1), same, atol=1e-4)
    assert causal.shape == (1, 1600, 256)
