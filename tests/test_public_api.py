"""Every name users imported before the package had folders still imports, from where it did."""

import importlib
import subprocess
import sys

import pytest

#: ``from mlx_deconv import <name>`` for each, as the README and earlier releases spell them.
PUBLIC = ["available_backends", "blas_info", "conv1d", "conv1d_output_length", "conv_transpose1d", "output_length",
          "resolve_padding", "ConvTranspose1d", "Conv1d", "ConvConfig", "Conv1DTranspose", "StreamingConvTranspose1d",
          "StreamingConv1d", "Snake", "initializers", "interop", "autotune", "set_autotune", "hifigan", "bigvgan", "keras",
          "__version__"]
#: Modules by their old flat names, and a name each must hold.
OLD_MODULES = {
    "hifigan": "HiFiGAN", "keras": "Conv1DTranspose", "autotune": "set_autotune", "initializers": "NAMES",
    "interop": "mlx_to_torch_weight", "bench": "SHAPES", "functional": "conv1d", "geometry": "Geometry",
    "validation": "conv_geometry", "layouts": "from_torch_layout", "reference": "conv_transpose1d",
    "layers": "ConvTranspose1d", "conv_config": "ConvConfig", "streaming": "StreamingConv1d",
    "weight_norm": "combine", "activations": "Snake", "hifigan_streaming": "StreamingHiFiGAN",
    "hifigan_torch": "torch_generator", "autotune_cache": "code_fingerprint", "autotune_timing": "time_primed",
    "autotune_command": "main", "bench_conv1d": "Conv1dShape", "bench_decoder": "run", "bench_timing": "timed_medians",
    "bench_transposed": "SHAPES", "blas": "blas_info", "devices": "resolve_stream", "compiling": "COMPILE_MAX_OUTPUT",
    "metal_emulator": "shim_path",
}


@pytest.mark.parametrize("name", PUBLIC)
def test_public_name_imports_from_the_package(name):
    import mlx_deconv
    assert name in mlx_deconv.__all__
    assert getattr(mlx_deconv, name) is not None


@pytest.mark.parametrize("old", sorted(OLD_MODULES))
def test_old_module_names_are_the_modules_themselves(old):
    """Three spellings, one module object: patching it in a test patches the code that runs."""
    module = importlib.import_module(f"mlx_deconv.{old}")
    assert hasattr(module, OLD_MODULES[old]), (old, module.__name__)
    import mlx_deconv
    assert getattr(mlx_deconv, old) is module
    exec(f"from mlx_deconv import {old} as spelled", ns := {})
    assert ns["spelled"] is module
    assert module.__name__.count(".") >= 1 and module.__spec__.name == module.__name__


def test_hifigan_namespace_has_its_neighbours():
    from mlx_deconv.hifigan import HiFiGAN, HiFiGANConfig, StreamingHiFiGAN, V1, from_checkpoint, torch_generator  # noqa: F401


def test_submodules_below_an_old_package_name_are_the_new_modules():
    code = ("import mlx_deconv.hifigan.streaming as s, mlx_deconv.models.hifigan.streaming as n; "
            "assert s is n, (s, n); print(s.__name__)")
    out = subprocess.run([sys.executable, "-W", "error", "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "mlx_deconv.models.hifigan.streaming"


def test_unknown_names_raise_attribute_and_import_errors():
    import mlx_deconv
    with pytest.raises(AttributeError, match="no attribute 'nothing_here'"):
        mlx_deconv.nothing_here
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("mlx_deconv.nothing_here")


def test_old_names_import_in_a_fresh_process():
    """Before anything else imported the package's new modules (the finder alone gets there)."""
    code = ("import mlx_deconv.hifigan_streaming as s, mlx_deconv.bench_timing as t, mlx_deconv.keras as k; "
            "print(s.__name__, t.__name__, k.__name__)")
    out = subprocess.run([sys.executable, "-W", "error", "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["mlx_deconv.models.hifigan.streaming", "mlx_deconv.bench.timing", "mlx_deconv.nn.keras"]


def test_top_level_has_a_folder_per_concept():
    import mlx_deconv
    from pathlib import Path
    root = Path(mlx_deconv.__file__).parent
    entries = sorted(p.name for p in root.iterdir() if p.name not in ("__init__.py", "__main__.py", "__pycache__")
                     and not p.name.endswith(".egg-info"))
    assert len(entries) <= 8, entries
    assert not [e for e in entries if e.endswith(".py") and not e.startswith("_")], entries
