"""The wheel carries the Metal sources, installs into a fresh venv, and works outside the repository.

Marked ``packaging`` (about 30 s; ``pytest -m "not packaging"`` leaves it out). The fresh venv gets
mlx and numpy the way a user's would: from the package index pip is configured with.
"""

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.packaging


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(out), str(ROOT)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return next(out.glob("mlx_deconv-*.whl"))


def test_metal_sources_ship_in_the_wheel(wheel, tmp_path):
    names = zipfile.ZipFile(wheel).namelist()
    assert "mlx_deconv/metal/conv_transpose1d.metal" in names
    assert "mlx_deconv/metal/anti_aliased_activation.metal" in names
    assert "mlx_deconv/metal/emulator_shim.h" in names
    assert "mlx_deconv/backends/metal/__init__.py" in names and "mlx_deconv/backends/metal/anti_aliased.py" in names
    # Every folder of the package ships (pyproject lists them one by one).
    root = Path(__file__).resolve().parents[1]
    folders = [str(p.relative_to(root)) for p in (root / "mlx_deconv").rglob("__init__.py")]
    assert not [f for f in folders if f not in names], folders
    assert not any(name.startswith(("tests/", "tools/", "examples/")) for name in names), names
    # Installed layout: the package finds them next to itself.
    target = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(target)
    probe = ("import sys; sys.path.insert(0, sys.argv[1]); from mlx_deconv.backends import metal; "
             "from mlx_deconv.backends.metal import emulator as e; import mlx_deconv; "
             "assert mlx_deconv.__file__.startswith(sys.argv[1]), mlx_deconv.__file__; "
             "assert 'thread_position_in_grid' in metal.kernel_source(); print(e.shim_path())")
    out = subprocess.run([sys.executable, "-c", probe, str(target)], check=True, capture_output=True, text=True, cwd=tmp_path)
    assert out.stdout.strip().startswith(str(target))


def test_wheel_installs_into_a_fresh_venv_and_runs_outside_the_repository(wheel, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True, timeout=120)
    python, script = venv / "bin" / "python", venv / "bin" / "mlx-deconv"
    installed = subprocess.run([str(python), "-m", "pip", "install", "--quiet", str(wheel)],
                               capture_output=True, text=True, timeout=600)
    assert installed.returncode == 0, installed.stderr[-3000:]
    work = tmp_path / "elsewhere"
    work.mkdir()
    info = subprocess.run([str(script), "info"], capture_output=True, text=True, cwd=work, timeout=120)
    assert info.returncode == 0, info.stderr[-3000:]
    assert info.stdout.startswith("mlx_deconv 0.1.0") and "backends ['builtin', 'gemm'" in info.stdout, info.stdout
    usage = subprocess.run([str(script), "--help"], capture_output=True, text=True, cwd=work, timeout=120)
    assert usage.stdout.startswith("usage: mlx-deconv "), usage.stdout[:200]
    forward = ("import mlx_deconv as md, mlx.core as mx, sys\n"
               "assert md.__file__.startswith(sys.prefix), md.__file__\n"
               "x, w = mx.ones((1, 3, 2)), mx.ones((2, 2, 2))\n"
               "print(md.conv_transpose1d(x, w, stride=2).tolist())\n")
    run = subprocess.run([str(python), "-c", forward], capture_output=True, text=True, cwd=work, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    # Each input row of ones times two channels of ones: every output sample is 2.
    assert run.stdout.strip() == str([[[2.0, 2.0]] * 6])
