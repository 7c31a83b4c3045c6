"""The public names: what ``mlx_deconv`` exports, its three model and spelling namespaces, and the command line.

Everything else is the package's inside and may move. The flat module names of an unpublished 0.1.0
(``mlx_deconv.hifigan_streaming``, ``mlx_deconv.bench_timing``, ...) are gone.
"""

import importlib
import subprocess
import sys

import pytest

#: ``from mlx_deconv import <name>`` for each, as the README spells them.
PUBLIC = ["available_backends", "blas_info", "conv1d", "conv1d_output_length", "conv_transpose1d", "output_length",
          "resolve_padding", "ConvTranspose1d", "Conv1d", "ConvConfig", "Conv1DTranspose", "StreamingConvTranspose1d",
          "StreamingConv1d", "Snake", "Activation1d", "anti_aliased_activation", "kaiser_sinc_filter",
          "initializers", "interop", "autotune", "set_autotune", "hifigan", "bigvgan", "keras",
          "patch_mlx", "unpatch_mlx", "patched_mlx", "convert", "stream", "__version__"]
#: The namespaces and a name each must hold.
NAMESPACES = {"hifigan": ["HiFiGAN", "HiFiGANConfig", "StreamingHiFiGAN", "V1", "from_checkpoint", "torch_generator"],
              "bigvgan": ["BigVGAN", "BigVGANConfig", "StreamingBigVGAN", "from_checkpoint", "PRESETS"],
              "keras": ["Conv1DTranspose"]}
#: Flat names that an import hook used to keep alive.
GONE = ["hifigan_streaming", "bench_timing", "autotune_command", "conv_config", "functional", "blas"]


@pytest.mark.parametrize("name", PUBLIC)
def test_public_name_imports_from_the_package(name):
    import mlx_deconv
    assert name in mlx_deconv.__all__
    assert getattr(mlx_deconv, name) is not None


def test_all_names_exactly_the_public_ones():
    import mlx_deconv
    assert sorted(mlx_deconv.__all__) == sorted(PUBLIC)


@pytest.mark.parametrize("namespace", sorted(NAMESPACES))
def test_namespaces_hold_their_names(namespace):
    import mlx_deconv
    module = getattr(mlx_deconv, namespace)
    for name in NAMESPACES[namespace]:
        assert getattr(module, name) is not None, (namespace, name)


@pytest.mark.parametrize("old", GONE)
def test_old_flat_names_are_gone(old):
    import mlx_deconv
    assert not hasattr(mlx_deconv, old)
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module(f"mlx_deconv.{old}")


def test_the_command_line_runs_as_a_module_and_names_its_commands():
    out = subprocess.run([sys.executable, "-m", "mlx_deconv", "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    for command in ("info", "demo", "check", "bench", "tune"):
        assert command in out.stdout


def test_version_has_a_module_of_its_own():
    import mlx_deconv
    from mlx_deconv.version import __version__
    assert mlx_deconv.__version__ == __version__


def test_top_level_has_a_folder_per_concept():
    import mlx_deconv
    from pathlib import Path
    root = Path(mlx_deconv.__file__).parent
    entries = sorted(p.name for p in root.iterdir() if p.name not in ("__init__.py", "__main__.py", "__pycache__")
                     and not p.name.endswith(".egg-info"))
    modules = [e for e in entries if e.endswith(".py")]
    assert modules == ["version.py"], entries
    assert len(entries) <= 12, entries
