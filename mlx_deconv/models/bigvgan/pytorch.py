"""NVIDIA's BigVGAN generator in PyTorch, from the installed ``bigvgan`` package, for parity tests and benchmarks.

``pip install bigvgan`` (2.4.x) brings NVIDIA's own ``bigvgan.py``,
``activations.py`` and ``alias_free_activation/torch``. Its package
``__init__`` imports ``meldataset`` (librosa) and ``bigvgan.py`` imports
``utils`` (matplotlib, scipy, librosa again), none of which the generator
needs. :func:`nvidia_module` therefore loads NVIDIA's files under a private
package name whose ``utils`` is a small stand-in (``init_weights``,
``get_padding``), so neither librosa nor matplotlib is needed, and a real
``import bigvgan`` elsewhere is left alone. torch (and ``huggingface_hub``,
which ``bigvgan.py`` imports) are imported only when these functions are called.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.machinery
import io
import sys
import threading
import types
from typing import Optional

from .config import BigVGANConfig

#: The private name NVIDIA's files are loaded under (never ``bigvgan`` itself).
PACKAGE = "_mlx_deconv_nvidia_bigvgan"
_LOCK = threading.Lock()


def _utils_stand_in(torch) -> types.ModuleType:
    """The two names ``bigvgan.py`` takes from NVIDIA's ``utils.py``, with their meaning there."""
    module = types.ModuleType(f"{PACKAGE}.utils")

    def init_weights(m, mean=0.0, std=0.01):
        if "Conv" in type(m).__name__:  # NVIDIA's rule: any module whose class name holds "Conv"
            m.weight.data.normal_(mean, std)

    def get_padding(kernel_size, dilation=1):
        return dilation * (kernel_size - 1) // 2

    module.init_weights, module.get_padding = init_weights, get_padding
    return module


def nvidia_module(name: str = "bigvgan"):
    """A module of NVIDIA's ``bigvgan`` package, loaded without its ``__init__`` (which imports librosa).

    The package is loaded under a private name, so a ``bigvgan`` the user imported is left alone.

    Args:
        name (str): the module inside the package: ``"bigvgan"`` (``BigVGAN``, ``AMPBlock1``,
            ``AMPBlock2``), ``"activations"`` (``Snake``, ``SnakeBeta``) or
            ``"alias_free_activation.torch.act"`` (``Activation1d``). Default: ``"bigvgan"``.

    Returns:
        module: the loaded module.

    Raises:
        ImportError: when torch, huggingface_hub or the ``bigvgan`` package is not installed.
    """
    with _LOCK:
        full = f"{PACKAGE}.{name}"
        if full in sys.modules:
            return sys.modules[full]
        import torch

        if PACKAGE not in sys.modules:
            # The path finder finds the folder and runs nothing of it, whatever sys.modules holds.
            spec = importlib.machinery.PathFinder.find_spec("bigvgan")
            if spec is None or not spec.submodule_search_locations:
                raise ImportError("NVIDIA's BigVGAN is not installed (pip install bigvgan --no-deps)")
            package = types.ModuleType(PACKAGE)
            package.__path__ = list(spec.submodule_search_locations)
            package.__package__ = PACKAGE
            package.__spec__ = importlib.machinery.ModuleSpec(PACKAGE, None, is_package=True)
            package.__spec__.submodule_search_locations = package.__path__
            sys.modules[PACKAGE] = package
            sys.modules[f"{PACKAGE}.utils"] = _utils_stand_in(torch)
        try:
            return importlib.import_module(full)
        except BaseException:
            for key in [k for k in sys.modules if k == PACKAGE or k.startswith(PACKAGE + ".")]:
                del sys.modules[key]
            raise


def _quietly(function, *args):
    """Runs NVIDIA's code without its prints ("Removing weight norm...")."""
    with contextlib.redirect_stdout(io.StringIO()):
        return function(*args)


def torch_generator(config: BigVGANConfig, weight_norm: Optional[str] = "legacy"):
    """NVIDIA's generator (``bigvgan.BigVGAN``) for ``config``, its parameters as NVIDIA initialises them.

    Args:
        config (BigVGANConfig): the network's shape.
        weight_norm: ``"legacy"`` (``weight_g``/``weight_v``, as NVIDIA's code and checkpoints),
            ``"parametrizations"`` (re-applied with ``torch.nn.utils.parametrizations.weight_norm``)
            or ``None`` (removed, as for inference). Default: ``"legacy"``.

    Returns:
        torch.nn.Module: call it on ``(N, num_mels, frames)``; it returns ``(N, 1, samples)``.
        Its ``state_dict()`` is what ``bigvgan_generator.pt``'s ``"generator"`` holds.

    Raises:
        ImportError: without torch, huggingface_hub or bigvgan.
        ValueError: for another ``weight_norm``.
    """
    if weight_norm not in ("legacy", "parametrizations", None):
        raise ValueError(f"weight_norm must be 'legacy', 'parametrizations' or None, got {weight_norm!r}")
    module = nvidia_module()
    from torch import nn as tnn

    hparams = module.AttrDict(config.to_dict())  # BigVGAN writes "use_cuda_kernel" into it: a fresh one
    model = module.BigVGAN(hparams, use_cuda_kernel=False)
    if weight_norm is None:
        _quietly(model.remove_weight_norm)
    elif weight_norm == "parametrizations":
        _quietly(model.remove_weight_norm)
        for layer in model.modules():
            if isinstance(layer, (tnn.Conv1d, tnn.ConvTranspose1d)):
                tnn.utils.parametrizations.weight_norm(layer)
    return model.eval()


def randomize(model, seed: int = 0, scale: float = 0.3):
    """Moves every parameter of a PyTorch generator away from its initial value, in place.

    NVIDIA initialises the Snake ``alpha``/``beta`` to one (or zero in log scale) and
    weight norm's ``g`` to ``||v||``, which would leave those paths untested. Here
    every floating-point parameter is multiplied by ``1 + scale * U(-1, 1)``, and the
    Snake parameters are set to random values around their initial ones
    (``U(-0.5, 0.5)`` in log scale, ``U(0.5, 1.5)`` otherwise). Buffers (the
    anti-aliasing filters) are left as they are.

    Returns:
        The model.
    """
    import torch

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.rand(p.shape, generator=generator, dtype=p.dtype) * 2 - 1
            if name.endswith(("act.alpha", "act.beta")):
                logscale = getattr(_owner(model, name), "alpha_logscale", False)
                p.copy_(0.5 * noise if logscale else 1 + 0.5 * noise)
            else:
                p.mul_(1 + scale * noise)
    return model


def _owner(model, name: str):
    module = model
    for part in name.split(".")[:-1]:
        module = getattr(module, part) if not part.isdigit() else module[int(part)]
    return module


def parity(config: BigVGANConfig, *, frames: int = 16, batch: int = 1, seed: int = 0, weight_norm: Optional[str] = "legacy",
           backend: str = "auto") -> dict:
    """NVIDIA's generator and this package's on the same random weights and mel: the parity path.

    NVIDIA's generator is built (:func:`torch_generator`), moved off its initial values (:func:`randomize`), its
    state dict loaded into a :class:`~mlx_deconv.bigvgan.BigVGAN`, and both run on one random mel.

    Returns:
        dict: ``model`` (ours), ``torch_model`` (NVIDIA's), ``mel`` (``(N, num_mels, frames)``, numpy),
        ``ours`` and ``theirs`` (audio ``(N, samples)``, numpy) and ``max_abs_difference``.
    """
    import mlx.core as mx
    import numpy as np
    import torch

    from .model import BigVGAN

    torch_model = randomize(torch_generator(config, weight_norm=weight_norm), seed=seed)
    mel = torch.randn(batch, config.num_mels, frames, generator=torch.Generator().manual_seed(seed + 1))
    with torch.no_grad():
        theirs = torch_model(mel)[:, 0].numpy()
    model = BigVGAN(config, backend=backend).load_torch_state_dict(torch_model.state_dict())
    ours = np.array(model(mx.array(mel.numpy().transpose(0, 2, 1))))
    return dict(model=model, torch_model=torch_model, mel=mel.numpy(), ours=ours, theirs=theirs,
                max_abs_difference=float(np.abs(ours - theirs).max()))
