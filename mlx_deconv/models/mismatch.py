"""Which ``config.json`` key does not fit a checkpoint: read off the checkpoint's own tensors.

A HiFi-GAN or BigVGAN state dict carries most of its generator's shape: ``conv_pre``'s weight is
``(upsample_initial_channel, num_mels, 7)``; ``ups.i`` (BigVGAN: ``ups.i.0``) has one
``upsample_kernel_sizes`` entry per layer; ``resblocks.j`` holds ``convs1``/``convs2`` (resblock
``"1"``) or ``convs`` (``"2"``), one conv per dilation, with ``resblock_kernel_sizes[j % n]`` taps;
BigVGAN's activations have ``act.beta`` only for ``snakebeta``, and ``conv_post`` a bias only with
``use_bias_at_final``. When loading fails, :func:`explain_mismatch` compares those values with the
config's and names every key that differs, with the value the checkpoint needs. The strides
(``upsample_rates``), the dilations' values and ``snake_logscale`` are not in the tensors: they are
named only when their count is.
"""

from __future__ import annotations

import re
from typing import Dict, List, Optional, Tuple

from ..nn.interop import read_torch_state_dict


class _Text(str):
    """A description of the value that fits (for values the tensors do not hold), shown without quotes."""


def _show(value) -> str:
    return str(value) if isinstance(value, _Text) else repr(value)


class ConfigMismatch(ValueError):
    """A checkpoint that does not fit the config, with the config keys that differ.

    Attributes:
        keys (dict): each differing config key -> ``(the config's value, the value the checkpoint needs)``.
    """

    def __init__(self, message: str, keys: Dict[str, Tuple[object, object]]):
        super().__init__(message)
        self.keys = keys


def _weight_shape(state_dict, prefix: str, transposed: bool) -> Optional[Tuple[int, ...]]:
    """The PyTorch-layout weight shape of the conv under ``prefix`` (weight norm or not), or None."""
    if not any(k.startswith(prefix) for k in state_dict):
        return None
    try:
        return read_torch_state_dict(state_dict, prefix, transposed).weight_shape
    except (ValueError, TypeError):
        return None


def _indices(state_dict, pattern: str) -> List[int]:
    """The sorted integers ``i`` of the keys that start with ``pattern.format(i)``-like text (``pattern`` a regex)."""
    found = set()
    for key in state_dict:
        match = re.match(pattern, key)
        if match:
            found.add(int(match.group(1)))
    return sorted(found)


def checkpoint_values(state_dict, kind: str) -> Dict[str, object]:
    """The config values a generator state dict's tensors tell (a key is absent when they do not).

    Args:
        state_dict: names to tensors, as :meth:`HiFiGAN.load_torch_state_dict` takes them.
        kind (str): ``"hifigan"`` or ``"bigvgan"`` (BigVGAN's upsampling layers sit at ``ups.i.0``).

    Returns:
        dict: some of ``num_mels``, ``upsample_initial_channel``, ``upsample_kernel_sizes``,
        ``upsample_layers`` (their count), ``resblock``, ``resblock_kernel_sizes``,
        ``dilation_counts`` (convs per block), ``activation`` and ``use_bias_at_final`` (BigVGAN).
    """
    out: Dict[str, object] = {}
    pre = _weight_shape(state_dict, "conv_pre.", transposed=False)
    if pre is not None:
        out["upsample_initial_channel"], out["num_mels"] = pre[0], pre[1]
    up_prefix = "ups.{}.0." if kind == "bigvgan" else "ups.{}."
    ups = _indices(state_dict, r"ups\.(\d+)\.")
    if ups and ups == list(range(len(ups))):
        out["upsample_layers"] = len(ups)
        shapes = [_weight_shape(state_dict, up_prefix.format(i), transposed=True) for i in ups]
        if all(s is not None for s in shapes):
            out["upsample_kernel_sizes"] = [s[2] for s in shapes]
            if pre is None:
                out["upsample_initial_channel"] = shapes[0][0]
    blocks = _indices(state_dict, r"resblocks\.(\d+)\.")
    if blocks and blocks == list(range(len(blocks))):
        kinds = {("1" if any(k.startswith(f"resblocks.{j}.convs1.") for k in state_dict) else
                  "2" if any(k.startswith(f"resblocks.{j}.convs.") for k in state_dict) else None) for j in blocks}
        if len(kinds) == 1 and None not in kinds:
            resblock = kinds.pop()
            out["resblock"] = resblock
            name = "convs1" if resblock == "1" else "convs"
            stages = out.get("upsample_layers")
            if stages and len(blocks) % stages == 0:
                per_stage = len(blocks) // stages
                kernels, counts = [], []
                for j in range(per_stage):
                    convs = _indices(state_dict, rf"resblocks\.{j}\.{name}\.(\d+)\.")
                    shape = _weight_shape(state_dict, f"resblocks.{j}.{name}.0.", transposed=False)
                    kernels.append(shape[2] if shape is not None else None)
                    counts.append(len(convs))
                if None not in kernels:
                    out["resblock_kernel_sizes"] = kernels
                out["dilation_counts"] = counts
    if kind == "bigvgan":
        if any(k.endswith(".act.beta") for k in state_dict):
            out["activation"] = "snakebeta"
        elif any(k.endswith(".act.alpha") for k in state_dict):
            out["activation"] = "snake"
        if "activation_post.act.alpha" in state_dict and "upsample_layers" in out and "upsample_initial_channel" not in out:
            last = int(getattr(state_dict["activation_post.act.alpha"], "size", 0) or 0)
            if last:
                out["upsample_initial_channel"] = last * 2 ** out["upsample_layers"]
        if _weight_shape(state_dict, "conv_post.", transposed=False) is not None:
            out["use_bias_at_final"] = "conv_post.bias" in state_dict
    return out


def differences(config, state_dict, kind: str) -> Dict[str, Tuple[object, object]]:
    """The config keys whose values differ from what the checkpoint's tensors need.

    Returns:
        dict: key -> ``(the config's value, the value that fits the checkpoint)``; the fitting value of
        ``upsample_rates`` and ``resblock_dilation_sizes`` is a description (their values are not stored).
    """
    found = checkpoint_values(state_dict, kind)
    out: Dict[str, Tuple[object, object]] = {}

    def compare(key, mine, theirs):
        if theirs is not None and theirs != mine:
            out[key] = (mine, theirs)

    compare("num_mels", config.num_mels, found.get("num_mels"))
    layers = found.get("upsample_layers")
    if layers is not None and layers != len(config.upsample_rates):
        out["upsample_rates"] = (list(config.upsample_rates),
                                 _Text(f"{layers} rates, one per upsampling layer (the rates are not in the tensors)"))
    compare("upsample_kernel_sizes", list(config.upsample_kernel_sizes), found.get("upsample_kernel_sizes"))
    compare("upsample_initial_channel", config.upsample_initial_channel, found.get("upsample_initial_channel"))
    compare("resblock", config.resblock, found.get("resblock"))
    compare("resblock_kernel_sizes", list(config.resblock_kernel_sizes), found.get("resblock_kernel_sizes"))
    counts = found.get("dilation_counts")
    if counts is not None and len(counts) == len(config.resblock_dilation_sizes) and counts != [
            len(ds) for ds in config.resblock_dilation_sizes]:
        out["resblock_dilation_sizes"] = ([list(ds) for ds in config.resblock_dilation_sizes],
                                          _Text(f"lists of {', '.join(map(str, counts))} dilations"))
    for key in ("activation", "use_bias_at_final"):
        if hasattr(config, key):
            compare(key, getattr(config, key), found.get(key))
    return out


def explain_mismatch(error: ValueError, config, state_dict, kind: str) -> ValueError:
    """``error`` (a failed load) with the config keys that do not fit the checkpoint, when its tensors tell.

    Returns:
        A :class:`ConfigMismatch` whose message is ``error``'s followed by each differing key, the
        config's value and the one that fits; ``error`` itself when no key can be named.
    """
    try:
        keys = differences(config, state_dict, kind)
    except Exception:  # noqa: BLE001 (a hint must never hide the error it explains)
        return error
    if not keys:
        return error
    said = "; ".join(f"{key} is {_show(mine)} in the config, the checkpoint needs {_show(theirs)}"
                     for key, (mine, theirs) in keys.items())
    return ConfigMismatch(f"{error}. The config does not fit this checkpoint: {said}", keys)
