"""Weight layouts of other frameworks, and PyTorch import/export for the layers.

Layouts of a 1-D convolution weight with ``G`` groups:

* transposed (``ConvTranspose1d``): MLX ``(C_out, K, C_in/G)``, PyTorch ``(C_in, C_out/G, K)``;
* direct (``Conv1d``): MLX ``(C_out, K, C_in/G)``, PyTorch ``(C_out, C_in/G, K)``.

Keras' ``Conv1DTranspose`` kernel is ``(K, C_out, C_in)`` (no groups).

State dicts may hold numpy arrays, torch tensors or anything with
``__array__``; torch is needed only when a ``torch.nn`` module itself is passed
(and then it is already imported by the caller). The layout functions work on
``mx.array`` and ``numpy.ndarray`` alike (only ``reshape`` and ``transpose``),
so gradients flow through them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

import mlx.core as mx
import numpy as np

from . import weight_norm as wn
from ..geometry.torch_layout import from_torch_layout, mlx_to_torch_weight, to_torch_layout, torch_to_mlx_weight  # noqa: F401 (re-exported)


def keras_to_mlx_weight(kernel):
    """Keras ``Conv1DTranspose`` kernel ``(K, C_out, C_in)`` -> MLX ``(C_out, K, C_in)``."""
    return kernel.transpose(1, 0, 2)


def mlx_to_keras_weight(weight):
    """MLX ``(C_out, K, C_in)`` -> Keras ``(K, C_out, C_in)``."""
    return weight.transpose(1, 0, 2)


def to_numpy(value) -> np.ndarray:
    """A numpy array from a numpy array, a torch tensor (any device, bfloat16 too) or anything with ``__array__``."""
    if hasattr(value, "detach"):  # torch.Tensor, without importing torch
        value = value.detach().cpu()
        if str(value.dtype) == "torch.bfloat16":
            value = value.float()
        return value.numpy()
    if hasattr(value, "numpy") and not isinstance(value, np.ndarray):
        return np.asarray(value.numpy())
    return np.asarray(value)


@dataclass
class TorchWeights:
    """One PyTorch convolution's tensors, weight norm recognised (all in PyTorch's layout)."""

    weight: Optional[np.ndarray]  # plain weight
    g: Optional[np.ndarray]  # weight norm magnitude
    v: Optional[np.ndarray]  # weight norm direction
    dim: Optional[int]  # weight norm dim (None: one norm for the whole weight)
    bias: Optional[np.ndarray]

    @property
    def weight_shape(self) -> Tuple[int, ...]:
        return tuple((self.v if self.g is not None else self.weight).shape)


_WEIGHT_NORM_KEYS = (("weight_g", "weight_v"), ("parametrizations.weight.original0", "parametrizations.weight.original1"))


def check_state_dict(state_dict) -> None:
    """A state dict: a mapping of tensor names (strings) to tensors.

    Raises:
        TypeError: naming what is not.
    """
    if not hasattr(state_dict, "items"):
        raise TypeError(f"state_dict must be a mapping of names to tensors, got {type(state_dict).__name__}")
    for key in state_dict:
        if not isinstance(key, str):
            raise TypeError(f"state_dict keys must be strings (tensor names), got {key!r}")


def _real(name: str, value) -> np.ndarray:
    """``value`` as a numpy array of real numbers.

    Raises:
        ValueError: naming the tensor, for complex, boolean or non-numeric values.
    """
    array = to_numpy(value)
    if array.dtype == bool or not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise ValueError(f"{name} holds {array.dtype}, not real numbers")
    return array


def _check_one_form(keys: Dict[str, object], prefix: str) -> None:
    """One weight form under ``prefix`` (``weight``, or one weight-norm pair, whole) and a bias: a tensor of another
    name, a second form or half a pair would be left unread.

    Raises:
        ValueError: naming the keys.
    """
    forms = [("weight",)] + [pair for pair in _WEIGHT_NORM_KEYS]
    known = {name for form in forms for name in form} | {"bias"}
    unknown = sorted(set(keys) - known)
    if unknown:
        raise ValueError(f"unknown tensors under {prefix!r}: {[prefix + k for k in unknown]} (a convolution holds "
                         f"'weight', or a weight-norm pair, and 'bias')")
    present = [form for form in forms if any(name in keys for name in form)]
    halves = [form for form in present if not all(name in keys for name in form)]
    if halves:
        raise ValueError(f"half a weight-norm pair under {prefix!r}: {[prefix + n for n in halves[0] if n in keys]} "
                         f"without {[prefix + n for n in halves[0] if n not in keys]}")
    if len(present) > 1:
        raise ValueError(f"two weight forms under {prefix!r}: {[prefix + n for form in present for n in form]}; "
                         f"a convolution holds one")


def _layout(transposed: bool) -> str:
    return "(C_in, C_out/groups, K)" if transposed else "(C_out, C_in/groups, K)"


def read_torch_state_dict(state_dict: Dict[str, object], prefix: str = "", transposed: bool = True,
                          dim: Optional[int] = -1) -> TorchWeights:
    """Finds a convolution's tensors under ``prefix``: ``weight``, legacy or parametrized weight norm, ``bias``.

    Args:
        state_dict: a mapping of names to tensors (numpy, torch or array-like).
        prefix (str): e.g. ``"ups.0."``. Default: ``""``.
        transposed (bool): a ``ConvTranspose1d`` (default) or a ``Conv1d`` weight; only the messages differ.
        dim: the weight norm ``dim`` when known (from the module); ``-1`` (default) reads it off ``g``'s shape.

    Raises:
        ValueError: naming the keys found when no weight is there, or a weight that is not 3-D.
    """
    check_state_dict(state_dict)
    keys = {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}
    kind = "transposed-conv" if transposed else "conv"
    _check_one_form(keys, prefix)
    keys = {name: _real(prefix + name, value) for name, value in keys.items()}
    bias = keys.get("bias")
    for g_key, v_key in _WEIGHT_NORM_KEYS:
        if g_key in keys and v_key in keys:
            g, v = to_numpy(keys[g_key]), to_numpy(keys[v_key])
            if v.ndim != 3:
                raise ValueError(f"{prefix}{v_key} must be 3-D {_layout(transposed)}, got shape {v.shape}")
            if dim != -1:
                found = dim
            elif g.ndim == 0 or g.size == 1 and v.size > 1 and g.ndim != 3:
                found = None
            else:
                sized = [a for a in range(g.ndim) if g.shape[a] != 1]
                # g of shape (1, 1, 1): a dim whose axis of v has one entry (each such dim computes one weight).
                ones = [a for a in range(v.ndim) if v.shape[a] == 1]
                found = sized[0] if sized else (ones[0] if ones else 0)
            return TorchWeights(None, g, v, found, bias)
    if "weight" not in keys:
        raise ValueError(
            f"no {kind} weight under prefix {prefix!r}: expected 'weight', 'weight_g'/'weight_v' or "
            f"'parametrizations.weight.original0/1', found {sorted(keys)}"
        )
    weight = to_numpy(keys["weight"])
    if weight.ndim != 3:
        raise ValueError(f"{prefix}weight must be 3-D {_layout(transposed)}, got shape {weight.shape}")
    return TorchWeights(weight, None, None, None, bias)


# -- torch.nn modules ----------------------------------------------------------------------------
def is_torch_module(obj) -> bool:
    """True for a ``torch.nn.Module`` (checked without importing torch)."""
    return any(f"{c.__module__}.{c.__name__}" == "torch.nn.modules.module.Module" for c in type(obj).__mro__)


def _weight_norm_dim(module) -> Optional[int]:
    """The ``dim`` a module's weight norm was made with (-1 when it has none or it cannot be told).

    PyTorch stores ``dim=None`` as ``-1`` and then takes one norm over the whole weight.
    """
    parametrizations = getattr(module, "parametrizations", None)
    if parametrizations is not None and "weight" in parametrizations:
        for p in parametrizations["weight"]:
            if hasattr(p, "dim"):
                return None if p.dim == -1 else p.dim
    for hook in getattr(module, "_forward_pre_hooks", {}).values():
        if type(hook).__name__ == "WeightNorm" and getattr(hook, "name", None) == "weight":
            return None if hook.dim == -1 else hook.dim
    return -1


def torch_module_arguments(module, transposed: bool) -> Tuple[Dict[str, Any], TorchWeights]:
    """A PyTorch ``ConvTranspose1d``/``Conv1d`` module's geometry as layer arguments, and its tensors.

    Raises:
        TypeError: for a module of another kind.
        ValueError: for a ``padding_mode`` other than ``"zeros"`` or a padding the layer cannot express.
    """
    wanted = "ConvTranspose1d" if transposed else "Conv1d"
    if not (hasattr(module, "kernel_size") and hasattr(module, "transposed") and hasattr(module, "padding_mode")
            and bool(module.transposed) == transposed and len(module.kernel_size) == 1):
        raise TypeError(f"module must be a torch.nn.{wanted} (or a state dict), got {type(module).__name__}")
    if module.padding_mode != "zeros":
        raise ValueError(
            f"padding_mode={module.padding_mode!r} of {type(module).__name__} is not supported: "
            f"only 'zeros' padding has an equivalent here"
        )
    padding = module.padding
    if isinstance(padding, str):
        if transposed or padding not in ("same", "valid"):
            raise ValueError(f"padding={padding!r} of {type(module).__name__} has no equivalent here")
        # PyTorch's "same" needs stride 1, where its split (the smaller half on the left) is Keras'.
    else:
        padding = int(padding[0])
    kwargs: Dict[str, Any] = dict(stride=int(module.stride[0]), padding=padding, dilation=int(module.dilation[0]),
                                  groups=int(module.groups))
    if transposed:
        kwargs["output_padding"] = int(module.output_padding[0])
    tensors = read_torch_state_dict(module.state_dict(), transposed=transposed, dim=_weight_norm_dim(module))
    return kwargs, tensors


# -- the layers' import and export ----------------------------------------------------------------
def layer_from_torch(cls, module_or_state_dict, prefix: str, geometry: Dict[str, Any], data_format: str,
                     layer_kwargs: Dict[str, Any]):
    """A ``cls`` layer (``ConvTranspose1d`` or ``Conv1d``) from a PyTorch module or a state dict.

    A module gives its own geometry (``geometry`` must then be all ``None``); with a
    state dict, ``geometry``'s ``None`` entries take PyTorch's defaults.
    """
    transposed = cls._transposed
    if is_torch_module(module_or_state_dict):
        given = {k: v for k, v in geometry.items() if v is not None}
        if given:
            raise ValueError(f"{sorted(given)} come from the module itself; pass them only with a state dict")
        geometry, tensors = torch_module_arguments(module_or_state_dict, transposed)
    else:
        defaults = dict(stride=1, padding=0, dilation=1, groups=1, output_padding=0)
        geometry = {k: defaults[k] if v is None else v for k, v in geometry.items()}
        tensors = read_torch_state_dict(module_or_state_dict, prefix, transposed)
    groups = geometry["groups"]
    shape = tensors.weight_shape
    if transposed:
        in_channels, out_channels, kernel_size = shape[0], shape[1] * groups, shape[2]
    else:
        in_channels, out_channels, kernel_size = shape[1] * groups, shape[0], shape[2]
    layer = cls(in_channels, out_channels, kernel_size, **geometry, bias=tensors.bias is not None,
                data_format=data_format, weight_norm=tensors.g is not None, weight_norm_dim=tensors.dim, **layer_kwargs)
    load_torch_weights(layer, tensors)
    return layer


def load_torch_weights(layer, tensors: TorchWeights) -> None:
    """Sets a layer's parameters from PyTorch tensors, converting weight norm either way.

    Every new parameter is computed and checked first; the layer changes only when all are valid.

    Raises:
        ValueError: naming the tensor whose shape does not fit the layer.
    """

    c = layer.config
    expected = c.torch_weight_shape
    if tensors.weight_shape != expected:
        raise ValueError(f"state dict weight has PyTorch shape {tensors.weight_shape}, this layer needs {expected}")
    has_bias = "bias" in layer
    if (tensors.bias is not None) != has_bias:
        raise ValueError(f"state dict {'has' if tensors.bias is not None else 'lacks'} a bias, this layer "
                         f"{'has' if has_bias else 'has none'}")
    new: Dict[str, mx.array] = {}
    if tensors.bias is not None:
        if tensors.bias.size != c.out_channels:
            raise ValueError(f"state dict bias has shape {tensors.bias.shape}, this layer needs ({c.out_channels},)")
        new["bias"] = mx.array(tensors.bias).reshape(c.out_channels).astype(layer.bias.dtype)
    v = from_torch_layout(mx.array(tensors.v if tensors.g is not None else tensors.weight), c.groups, c.transposed)
    if tensors.g is not None:
        wanted_g = wn.g_shape(tensors.weight_shape, tensors.dim)
        if tensors.g.size != int(np.prod(wanted_g)):
            raise ValueError(f"state dict weight norm g has shape {tensors.g.shape}, expected {wanted_g} for dim={tensors.dim}")
        g = mx.array(tensors.g).reshape(wanted_g)
        if layer.uses_weight_norm and tensors.dim == c.weight_norm_dim:
            new["weight_g"], new["weight_v"] = g, v
        elif layer.uses_weight_norm:
            w = wn.combine(g, v, c.groups, tensors.dim, c.transposed)
            new["weight_g"], new["weight_v"] = wn.split(w, c.groups, c.weight_norm_dim, c.transposed)
        else:
            new["weight"] = wn.combine(g, v, c.groups, tensors.dim, c.transposed)
    elif layer.uses_weight_norm:
        new["weight_g"], new["weight_v"] = wn.split(v, c.groups, c.weight_norm_dim, c.transposed)
    else:
        new["weight"] = v
    # PyTorch's layout arrives as a transposed view; stored so, every call would copy it again
    new = {name: mx.contiguous(value) for name, value in new.items()}
    mx.eval(new)  # any failure happens here, before the layer changes
    for name, value in new.items():
        setattr(layer, name, value)


def torch_state_dict(layer, style: str = "parametrizations") -> Dict[str, np.ndarray]:
    """A layer's tensors as a PyTorch state dict of numpy arrays (PyTorch's layout and names).

    Args:
        layer: a ``ConvTranspose1d`` or ``Conv1d``.
        style (str): for a weight-normed layer, ``"parametrizations"`` or ``"legacy"``.
    """
    if style not in ("parametrizations", "legacy"):
        raise ValueError(f"style must be 'parametrizations' or 'legacy', got {style!r}")
    c = layer.config
    out: Dict[str, np.ndarray] = {}
    if layer.uses_weight_norm:
        keys = _WEIGHT_NORM_KEYS[1] if style == "parametrizations" else _WEIGHT_NORM_KEYS[0]
        out[keys[0]] = np.array(layer.weight_g)
        out[keys[1]] = np.array(to_torch_layout(layer.weight_v, c.groups, c.transposed))
    else:
        out["weight"] = np.array(to_torch_layout(layer.weight, c.groups, c.transposed))
    if "bias" in layer:
        out["bias"] = np.array(layer.bias)
    return out
