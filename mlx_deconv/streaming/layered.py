"""Stateful streams of decoders built from known modules: each convolution keeps its own context.

A decoder that is a tree of ``mlx.nn.Sequential``, residual units (``x + block(x)``), convolutions and
pointwise activations can be streamed layer by layer: every convolution runs through its layer's own
stream (:mod:`mlx_deconv.nn.streaming`), pointwise modules run on each chunk as they are, and the
combinators of :mod:`mlx_deconv.nn.stream_combinators` line the branches up. Each sample is then
computed once, where overlap-save recomputes the whole window every step.

Which modules are known, by class:

- convolutions: this package's ``Conv1d``/``ConvTranspose1d``, ``mlx.nn``'s (run by this package's layer
  holding their arrays), and the weight-normed ``WNConv1d`` and ``WNConvTranspose1d`` of mlx-audio's DAC and
  SNAC (:data:`WEIGHT_NORMED`; folded into this package's layer). Every step reads each module's current
  arrays, so a stream follows weight updates (a weight-normed layer is folded again when its arrays change);
- pointwise: mlx-audio's ``Snake1d``, and ``mlx.nn``'s ``Tanh``, ``ReLU``, ``LeakyReLU``, ``GELU``, ``SiLU``,
  ``Sigmoid`` and ``Identity``;
- composite: ``mlx.nn.Sequential``, and mlx-audio's DAC and SNAC ``Decoder``, ``DecoderBlock`` and
  ``ResidualUnit`` (whose ``__call__`` is their ``Sequential`` alone, or ``x`` plus it).

A module tree made only of these is streamed with state by :func:`mlx_deconv.stream` (``method="auto"``
or ``"state"``), after one check stream has agreed with the decoder's whole output (the stream's own
check, run whatever ``verify`` says); anything else is recomputed.
"""

from __future__ import annotations

from typing import Callable, Optional, Tuple

import mlx.core as mx
import mlx.nn as nn

from ..nn.layers import Conv1d, ConvTranspose1d
from ..nn.stream_combinators import Chain, Residual

#: Modules that act on each time step alone, by class name (mlx.nn's and mlx-audio's).
POINTWISE = ("Snake1d", "Tanh", "ReLU", "LeakyReLU", "GELU", "SiLU", "Sigmoid", "Identity")
#: mlx-audio modules whose ``__call__`` is their ``Sequential`` attribute alone: class name -> attribute.
WRAPPERS = {"Decoder": "model", "DecoderBlock": "block"}
#: mlx-audio modules whose ``__call__`` is ``x + attribute(x)``: class name -> attribute.
RESIDUALS = {"ResidualUnit": "block"}


#: mlx-audio's weight-normed convolutions, by (module, class): ``(g, v) -> weight`` in MLX's layout, as each folds
#: it, and the layer's arguments that differ from its attributes' face value.
WEIGHT_NORMED = {
    ("mlx_audio.codec.models.descript.nn.layers", "WNConv1d"): (lambda g, v: g * v / _norm(v, 0), {}),
    ("mlx_audio.codec.models.descript.nn.layers", "WNConvTranspose1d"): (lambda g, v: g * v / _norm(v, 2), {}),
    ("mlx_audio.codec.models.snac.layers", "WNConv1d"): (lambda g, v: g * v / _norm(v, 0), {}),
    # SNAC keeps (C_in, K, C_out) and swaps it for MLX's op, and its call passes ``groups`` where
    # ``mx.conv_transpose1d`` takes ``output_padding``: its output is one sample longer per group count.
    ("mlx_audio.codec.models.snac.layers", "WNConvTranspose1d"): (
        lambda g, v: (g * v / _norm(v, 0)).swapaxes(0, 2), {"output_padding": lambda m: int(m.groups), "groups": 1}),
}


class Unsupported(ValueError):
    """A module the layered stream does not know (the message names it and its path)."""


def _norm(v: mx.array, keep: int) -> mx.array:
    axes = tuple(i for i in range(v.ndim) if i != keep)
    return mx.sqrt(mx.sum(mx.square(v), axis=axes, keepdims=True))


def _layer_of(module, path: str):
    """``(layer, sync)``: this package's layer computing what ``module`` computes, and a function that brings the
    module's current arrays into it (None: the layer is the module); ``(None, None)`` for a module that is not a
    convolution.

    Raises:
        Unsupported: for an ``mlx.nn`` convolution with arguments this package's layers do not take.
    """
    if isinstance(module, (Conv1d, ConvTranspose1d)):
        return module, None
    name = type(module).__name__
    if isinstance(module, (nn.Conv1d, nn.ConvTranspose1d)):
        from ..nn.convert import replacement

        layer = replacement(module)  # a new layer holding the same arrays
        if layer is None:
            raise Unsupported(f"{path} ({name}) has arguments this package's layers do not take")

        def sync():  # MLX's updates replace arrays: take the module's current ones
            layer.weight = module.weight
            if "bias" in module:
                layer.bias = module.bias
        return layer, sync
    known = WEIGHT_NORMED.get((type(module).__module__, name))
    if known is None:
        return None, None
    fold, overrides = known
    transposed = name == "WNConvTranspose1d"
    weight = fold(module.weight_g, module.weight_v)  # as the module folds it, in MLX's layout
    c_out, k = int(weight.shape[0]), int(weight.shape[1])
    groups = overrides.get("groups", int(getattr(module, "groups", 1)))
    c_in = int(weight.shape[2]) * groups
    has_bias = getattr(module, "bias", None) is not None
    extra = {"output_padding": overrides["output_padding"](module)} if "output_padding" in overrides else {}
    kind = ConvTranspose1d if transposed else Conv1d
    layer = kind(c_in, c_out, k, stride=int(module.stride), padding=int(module.padding),
                 dilation=int(module.dilation), groups=groups, bias=has_bias, **extra)
    folded = [module.weight_g, module.weight_v]

    def sync():  # folded again only when the module holds other arrays than last time
        g, v = module.weight_g, module.weight_v
        if g is not folded[0] or v is not folded[1]:
            layer.weight, folded[:] = fold(g, v), [g, v]
        if has_bias:
            layer.bias = module.bias
    layer.update({"weight": weight, **({"bias": module.bias} if has_bias else {})})
    return layer, sync


def _part(module, path: str):
    """A stream (or a pointwise function) for ``module``, and its hop (output samples per input sample)."""
    name = type(module).__name__
    layer, sync = _layer_of(module, path)
    if layer is not None:
        c = layer.config
        if c.data_format != "NLC":
            raise Unsupported(f"{path} ({name}) takes data_format={c.data_format!r}; the layered stream takes NLC")
        hop = c.stride if isinstance(layer, ConvTranspose1d) else 1
        if isinstance(layer, Conv1d) and c.stride != 1:
            raise Unsupported(f"{path} ({name}) has stride {c.stride}: a decoder's layers upsample")
        return _Layer(layer, sync), hop
    if name in POINTWISE:
        return module, 1
    if isinstance(module, nn.Sequential):
        return _chain(module.layers, path)
    if name in WRAPPERS and type(module).__module__.startswith("mlx_audio."):
        inner = getattr(module, WRAPPERS[name], None)
        if isinstance(inner, nn.Sequential):
            return _chain(inner.layers, f"{path}.{WRAPPERS[name]}")
    if name in RESIDUALS and type(module).__module__.startswith("mlx_audio."):
        inner = getattr(module, RESIDUALS[name], None)
        if isinstance(inner, nn.Sequential):
            branch, hop = _chain(inner.layers, f"{path}.{RESIDUALS[name]}")
            if hop != 1:
                raise Unsupported(f"{path} ({name}) adds a branch that changes the rate")
            return Residual(branch), 1
    raise Unsupported(f"{path} ({name}) is not a module the layered stream knows")


def _chain(modules, path: str):
    parts, hop = [], 1
    for i, m in enumerate(modules):
        part, h = _part(m, f"{path}.{i}")
        parts.append(part)
        hop *= h
    return Chain(parts), hop


class _Layer:
    """A layer's stream, made anew for each stream (a layer may appear once in the tree)."""

    def __init__(self, layer, sync=None):
        self.layer, self.sync = layer, sync


class _Synced:
    """A layer's stream whose layer takes the module's current arrays before each step."""

    def __init__(self, stream, sync):
        self.stream, self.sync = stream, sync

    def step(self, x):
        self.sync()
        return self.stream.step(x)

    def flush(self):
        self.sync()
        return self.stream.flush()


def _fresh(part):
    """A new stream of a planned tree: layer streams start empty, combinators hold new queues."""
    if isinstance(part, _Layer):
        stream = part.layer.streaming()
        return stream if part.sync is None else _Synced(stream, part.sync)
    if isinstance(part, Chain):
        return Chain([_fresh(p) for p in part.parts])
    if isinstance(part, Residual):
        return Residual(_fresh(part.branch))
    return part


def plan(fn) -> Tuple[Optional[Callable[[], Chain]], int, str]:
    """``(make, hop, why not)``: a maker of new layered streams of ``fn`` and its hop, or ``(None, 0, reason)``."""
    if not isinstance(fn, nn.Module):
        return None, 0, f"{type(fn).__name__} is not an mlx.nn.Module"
    try:
        tree, hop = _part(fn, type(fn).__name__)
    except Unsupported as err:
        return None, 0, str(err)
    return (lambda: _fresh(tree)), hop, ""
