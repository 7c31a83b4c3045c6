"""The package's flat module names from before it had folders, mapped to where each module lives now.

``import mlx_deconv.geometry``, ``from mlx_deconv import bench_timing`` and
``mlx_deconv.blas`` keep working: each old name is the new module itself
(one object, so patching it in a test patches the code), imported on first use.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys

#: Old flat name -> where the module lives now (relative to the package).
MOVED = {
    "functional": "ops.functional", "validation": "geometry.validation", "layouts": "geometry.layouts",
    "reference": "ops.reference",
    "layers": "nn.layers", "conv_config": "nn.config", "keras": "nn.keras",
    "weight_norm": "nn.weight_norm", "initializers": "nn.initializers", "activations": "nn.activations",
    "interop": "nn.interop",
    "hifigan": "models.hifigan", "hifigan_streaming": "models.hifigan.streaming", "hifigan_torch": "models.hifigan.pytorch",
    "autotune": "tuning.tuner", "autotune_cache": "tuning.cache", "autotune_timing": "tuning.timing",
    "autotune_command": "tuning.command",
    "bench_conv1d": "bench.conv1d", "bench_decoder": "bench.decoder", "bench_timing": "bench.timing",
    "bench_transposed": "bench.transposed",
    "blas": "runtime.blas", "devices": "runtime.devices", "compiling": "runtime.compiling",
    "metal_emulator": "backends.metal_emulator",
}


_IDENTITY = ("__name__", "__spec__", "__loader__", "__package__")


class _Alias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds ``<package>.<old name>`` and hands out the module at its new place."""

    def __init__(self, package: str):
        self.package = package
        self._own = {}  # by alias name: imports of different names may run at once

    def target(self, fullname: str):
        """The new name of ``<package>.<old>[.<submodule>...]``, or None for any other name."""
        prefix = self.package + "."
        if not fullname.startswith(prefix):
            return None
        old, _, rest = fullname[len(prefix):].partition(".")
        if old not in MOVED:
            return None
        return f"{prefix}{MOVED[old]}" + (f".{rest}" if rest else "")

    def find_spec(self, fullname, path=None, target=None):
        if self.target(fullname) is None:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec):
        module = importlib.import_module(self.target(spec.name))
        self._own[spec.name] = {key: getattr(module, key) for key in _IDENTITY}
        return module

    def exec_module(self, module):
        # The import machinery stamped the alias's name and spec on the module: give it back its own.
        for key, value in self._own.pop(module.__spec__.name).items():
            setattr(module, key, value)


def install(package: str) -> None:
    """Registers the finder of ``package``'s old names (once)."""
    if not any(isinstance(f, _Alias) and f.package == package for f in sys.meta_path):
        # First: below an old package name (``mlx_deconv.hifigan.streaming``) the path finder
        # would load a second copy of the module under the old name.
        sys.meta_path.insert(0, _Alias(package))


def attribute(package: str, name: str):
    """``package.<old name>`` as an attribute, or the ``AttributeError`` Python gives for an unknown name."""
    if name in MOVED:
        return importlib.import_module(f"{package}.{name}")
    raise AttributeError(f"module {package!r} has no attribute {name!r}")
