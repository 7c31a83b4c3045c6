"""The commands the README promises, and the package's own check oracle."""

import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import mlx_deconv  # before mlx.core, so MLX's CPU matmul can use the BLAS the package sets up

import mlx.core as mx
import numpy as np
import pytest
from hypothesis import given

from mlx_deconv.backends.metal import emulator
from mlx_deconv.ops import reference as package_reference
from mlx_deconv.cli import build_parser, main, program_name
from mlx_deconv.cli.check import ACTIVATION_CHECKS, CHECKS
from mlx_deconv.geometry.validation import conv_geometry
from strategies import cases


@given(case=cases(max_length=8))
def test_package_oracle_agrees_with_test_reference(case):
    """``check`` and ``demo`` trust mlx_deconv.ops.reference; it must agree with the tests' own."""
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
    # --no-tuned: the suite writes no user cache (the tuned column is tested in tests/test_bench.py).
    main(["bench", "--shapes", "depthwise-up", "--repeat", "1", "--warmup", "0", "--json", str(tmp_path / "b.json"),
          "--plot", str(tmp_path / "b.png"), "--no-tuned"])
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


def test_check_table_columns_never_touch(capsys):
    """Every row of ``check`` splits on runs of two spaces into exactly its six columns."""
    try:
        main(["check"])
    except SystemExit as exit:
        assert exit.code == 0
    lines = capsys.readouterr().out.splitlines()
    rows = [line for line in lines if line.startswith(("stream", "Stream", "emulated"))]
    assert len(rows) > len(CHECKS)
    names = {case[0] for case in CHECKS + ACTIVATION_CHECKS}
    for line in rows:
        cells = re.split(r"\s{2,}", line.strip())
        assert len(cells) == 6, line
        assert cells[0] == "stream" or cells[2] in names, line


def test_help_is_plain_text():
    for argv in (["--help"], *([command, "--help"] for command in build_parser()._subparsers._group_actions[0].choices)):
        result = subprocess.run([sys.executable, "-m", "mlx_deconv", *argv], capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        assert "``" not in result.stdout and ":func:" not in result.stdout and "DESIGN" not in result.stdout
        assert result.stdout.startswith("usage: python -m mlx_deconv")


@pytest.mark.parametrize("argv, says", [
    (["tune", "--model", "foo"], "--model must be one of ['hifigan'] or 'package.module:factory', got 'foo'"),
    (["tune", "--model", "no_such_module_here:fn", "--input-shape", "1,4,8"], "cannot import no_such_module_here"),
    (["tune", "--model", "hifigan", "--input-shape", "1,x"], "--input-shape must be integers"),
    (["tune", "--stream", "bogus"], "--stream: stream must be"),
    (["bench", "--stream", "bogus"], "--stream: stream must be"),
])
def test_a_bad_argument_is_one_line_and_status_2(argv, says):
    result = subprocess.run([sys.executable, "-m", "mlx_deconv", *argv], capture_output=True, text=True, timeout=120)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[0].startswith(f"python -m mlx_deconv {argv[0]}: error: ") and says in lines[0], lines[0]


def test_usage_names_the_program_invoked():
    assert program_name("/some/venv/bin/mlx-deconv") == "mlx-deconv"
    assert program_name("/x/mlx_deconv/__main__.py") == "python -m mlx_deconv"
    script = Path(sys.executable).parent / "mlx-deconv"
    if not script.exists():
        pytest.skip(f"no mlx-deconv script next to {sys.executable}: the package is not pip-installed here")
    result = subprocess.run([str(script), "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.startswith("usage: mlx-deconv "), result.stdout[:200]


def test_emulator_cache_is_private_and_versioned(tmp_path, monkeypatch):
    monkeypatch.delenv("MLX_DECONV_CACHE_DIR", raising=False)  # the suite points the cache folder elsewhere
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    folder = emulator.cache_dir()
    assert folder == tmp_path / "cache" / "mlx_deconv" / mlx_deconv.__version__ / "emulator"
    for level in (folder, folder.parent, folder.parent.parent):
        assert stat.S_IMODE(level.stat().st_mode) == 0o700, level
    # Not absolute: the XDG specification says to ignore it.
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/cache")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert emulator.cache_dir() == tmp_path / "home" / ".cache" / "mlx_deconv" / mlx_deconv.__version__ / "emulator"


def test_emulator_cache_is_in_the_package_cache_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("MLX_DECONV_CACHE_DIR", str(tmp_path / "mine"))
    assert emulator.cache_dir() == tmp_path / "mine" / mlx_deconv.__version__ / "emulator"


def test_emulator_refuses_a_cache_others_can_write(tmp_path, monkeypatch):
    monkeypatch.delenv("MLX_DECONV_CACHE_DIR", raising=False)  # the suite points the cache folder elsewhere
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    shared = tmp_path / "mlx_deconv"
    shared.mkdir()
    os.chmod(shared, 0o777)
    with pytest.raises(PermissionError, match="writable by other users"):
        emulator.cache_dir()
    with pytest.raises(PermissionError, match="writable by other users"):
        emulator.compile_kernel(emulator.GeneratedKernel("", "k", []), workdir=str(shared))


def test_emulator_refuses_a_private_cache_under_a_folder_others_can_write(tmp_path, monkeypatch):
    """Whoever may write a folder above the cache can rename the private folders in it and put theirs there."""
    monkeypatch.delenv("MLX_DECONV_CACHE_DIR", raising=False)  # the suite points the cache folder elsewhere
    os.chmod(tmp_path, 0o700)
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)  # no sticky bit: anyone may rename what it holds
    monkeypatch.setenv("XDG_CACHE_HOME", str(shared / "cache"))
    with pytest.raises(PermissionError, match=f"{shared} is writable by other users"):
        emulator.cache_dir()
    os.chmod(shared, 0o755)
    assert emulator.cache_dir().is_dir()


def test_emulated_kernels_compile_into_the_cache(tmp_path, monkeypatch):
    monkeypatch.delenv("MLX_DECONV_CACHE_DIR", raising=False)  # the suite points the cache folder elsewhere
    if emulator.compiler() is None:
        pytest.skip("no C++ compiler: the emulator cannot run")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    x, w = mx.ones((1, 3, 2)), mx.ones((2, 2, 2))
    geom, _ = mlx_deconv.geometry.validation.conv_geometry(x.shape, w.shape, stride=2)
    y = emulator.run(x, w, None, geom)
    np.testing.assert_allclose(np.array(y), np.full((1, 6, 2), 2.0))
    built = list((tmp_path / "mlx_deconv" / mlx_deconv.__version__ / "emulator").glob("kernel_*"))
    assert len(built) == 1 and os.access(built[0], os.X_OK)


@pytest.mark.parametrize("ratio, taps, activation, logscale, length", [(2, 12, "snakebeta", True, 9), (3, 18, "snake", False, 5),
                                                                       (2, 7, "snakebeta", True, 1), (4, 8, "snake", True, 3)])
def test_package_activation_oracle_agrees_with_test_reference(ratio, taps, activation, logscale, length):
    """``check`` trusts mlx_deconv.ops.reference for the anti-aliased activation too; it must agree with the tests' own."""
    from test_anti_aliased import reference as activation_reference
    from mlx_deconv.geometry.activation import ActivationGeometry

    rng = np.random.default_rng(taps + length)
    x = rng.standard_normal((2, length, 3))
    alpha, beta = rng.standard_normal(3) * 0.5, rng.standard_normal(3) * 0.5
    up, down = rng.standard_normal(taps), rng.standard_normal(taps + 1)
    geom = ActivationGeometry(2, length, 3, ratio, taps, taps + 1, activation, logscale)
    ours = package_reference.anti_aliased_activation(x, alpha, beta if activation == "snakebeta" else None, up, down,
                                                     geom)
    theirs = activation_reference(x.transpose(0, 2, 1), alpha, beta, up, down, ratio, activation, logscale)
    np.testing.assert_allclose(ours, theirs.transpose(0, 2, 1), atol=1e-10)
