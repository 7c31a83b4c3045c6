"""The wheel carries the Metal kernel source and the emulator shim, and finds them once installed."""

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_metal_sources_ship_in_the_wheel(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(tmp_path), str(ROOT)],
                   check=True, capture_output=True)
    wheel = next(tmp_path.glob("mlx_deconv-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "mlx_deconv/metal/conv_transpose1d.metal" in names
    assert "mlx_deconv/metal/emulator_shim.h" in names
    assert "mlx_deconv/backends/metal.py" in names
    # Installed layout: the package finds them next to itself.
    target = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(target)
    probe = ("import sys; sys.path.insert(0, sys.argv[1]); from mlx_deconv.backends import metal; "
             "from mlx_deconv import metal_emulator as e; import mlx_deconv; "
             "assert mlx_deconv.__file__.startswith(sys.argv[1]), mlx_deconv.__file__; "
             "assert 'thread_position_in_grid' in metal.kernel_source(); print(e.shim_path())")
    out = subprocess.run([sys.executable, "-c", probe, str(target)], check=True, capture_output=True, text=True, cwd=tmp_path)
    assert out.stdout.strip().startswith(str(target))
