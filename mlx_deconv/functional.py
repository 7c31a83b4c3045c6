"""``conv_transpose1d``: validate, normalise, pick a backend, run it.

The first three depend only on shapes and arguments: they happen once per
call signature, and what runs is compiled (``mx.compile``) unless the signal
is long, so a decoder's repeated calls cost a dictionary lookup in Python.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Callable, List, Optional, Sequence, Union

import mlx.core as mx

from . import backends
from .devices import StreamLike, resolve_stream
from .geometry import Padding, conv_geometry
from .interop import torch_to_mlx_weight

FLOAT_DTYPES = (mx.float32, mx.float16, mx.bfloat16)
IntOrTuple = Union[int, Sequence[int]]
#: Prepared calls kept per thread, one per signature (shapes, arguments, backend, stream).
PREPARED_CALLS = 256
#: Calls with at most this many output elements are compiled. Larger ones are
#: left to MLX's graph as built: tracing and fusing a long signal's thousands of
#: blocks cost more than the Python it saves (a 120 s HiFi-GAN stack: 18.8 s
#: compiled, 14.7 s not).
COMPILE_MAX_OUTPUT = 1 << 24
# Prepared calls are per thread: MLX's default stream and compile cache are per thread, and a
# compiled function shared between threads aborts the process at exit (see compiling.py). A
# thread's calls are freed, with the GIL, when it ends.
_LOCAL = threading.local()


def _prepared_calls() -> "OrderedDict[tuple, Callable[..., mx.array]]":
    try:
        return _LOCAL.calls
    except AttributeError:
        _LOCAL.calls = OrderedDict()
        return _LOCAL.calls


def _as_array(name: str, value) -> mx.array:
    if not isinstance(value, mx.array):
        try:
            value = mx.array(value)
        except (TypeError, ValueError) as err:
            raise TypeError(f"{name} must be an mx.array or array-like, got {type(value).__name__}") from err
    if value.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be float32, float16 or bfloat16, got dtype {value.dtype}")
    return value


def available_backends(stream: StreamLike = None) -> List[str]:
    """Names of the backends usable on a stream.

    Args:
        stream: ``None`` (default stream), ``"cpu"``, ``"gpu"``, an
            ``mx.Device`` or an ``mx.Stream``.

    Returns:
        list[str]: e.g. ``["builtin", "gemm"]``.
    """
    return backends.available_backends(resolve_stream(stream))


def conv_transpose1d(
    x: mx.array,
    weight: mx.array,
    bias: Optional[mx.array] = None,
    stride: IntOrTuple = 1,
    padding: Padding = 0,
    output_padding: Optional[IntOrTuple] = None,
    dilation: IntOrTuple = 1,
    groups: int = 1,
    *,
    data_format: str = "NLC",
    weight_format: str = "mlx",
    output_size: Optional[int] = None,
    backend: str = "auto",
    stream: StreamLike = None,
) -> mx.array:
    """1-D transposed convolution ("deconvolution") over a multi-channel signal.

    ``y[n, l*stride + k*dilation - left, co] += x[n, l, ci] * w[co, k, ci]``
    within each group, then cropped or extended as ``padding`` says.

    Args:
        x (array): ``(N, L, C_in)`` for ``"NLC"``, ``(N, C_in, L)`` for
            ``"NCL"``; a 2-D input is one unbatched signal.
        weight (array): ``(C_out, K, C_in/groups)`` for ``weight_format="mlx"``,
            ``(C_in, C_out/groups, K)`` for ``"torch"``.
        bias (array, optional): ``(C_out,)``. Default: ``None``.
        stride (int): upsampling factor. Default: ``1``.
        padding: ``int`` (both sides), ``(left, right)``, ``"valid"``,
            ``"same"`` (Keras' lengths and alignment) or ``"causal"`` (``L*stride``
            samples, all cropping on the right). Default: ``0``.
        output_padding (int, optional): samples added on the right, below
            ``max(stride, dilation)``. ``None`` means 0, or Keras' inference
            for ``"valid"``/``"same"``. Default: ``None``.
        dilation (int): spacing between kernel taps. Default: ``1``.
        groups (int): blocked connections between input and output channels.
            Default: ``1``.
        data_format (str): ``"NLC"`` or ``"NCL"``. Default: ``"NLC"``.
        weight_format (str): ``"mlx"`` or ``"torch"``. Default: ``"mlx"``.
        output_size (int, optional): the wanted output length; the output
            padding that gives it is chosen (PyTorch's ``output_size``).
        backend (str): ``"auto"``, ``"builtin"``, ``"gemm"``, ``"winograd"`` or
            ``"metal"`` (Metal GPU streams only). Default: ``"auto"``.
        stream: ``None``, ``"cpu"``, ``"gpu"``, an ``mx.Device`` or an ``mx.Stream``.

    Returns:
        array: ``(N, L_out, C_out)`` (or ``(N, C_out, L_out)``; unbatched for an
        unbatched input) in the dtype of ``x``, where
        ``L_out = (L-1)*stride - left - right + dilation*(K-1) + 1``.
    """
    x = _as_array("x", x)
    weight = _as_array("weight", weight)
    if bias is not None:
        bias = _as_array("bias", bias)
    stream = resolve_stream(stream)
    args = dict(stride=stride, padding=padding, output_padding=output_padding, dilation=dilation, groups=groups,
                data_format=data_format, weight_format=weight_format, output_size=output_size, backend=backend)
    # What preparing depends on (compiled functions retrace for a new dtype themselves).
    # Streams compare by device and index but hash by identity: their text is the key.
    key = (x.shape, weight.shape, None if bias is None else bias.shape, tuple(args.items()), repr(stream))
    calls = _prepared_calls()
    try:
        call = calls.pop(key, None)
    except TypeError:  # an unhashable argument (a list as padding): prepared afresh each call
        key, call = None, None
    if call is None:
        call = _prepare(x.shape, weight.shape, None if bias is None else bias.shape, stream, **args)
    if key is not None:
        calls[key] = call  # most recently used last
        if len(calls) > PREPARED_CALLS:
            del calls[next(iter(calls))]
    return call(x, weight) if bias is None else call(x, weight, bias)


def _prepare(x_shape, weight_shape, bias_shape, stream: mx.Stream, *, data_format: str, weight_format: str,
             backend: str, **args) -> Callable[..., mx.array]:
    """Validates a call signature and returns the function computing it, compiled when small.

    Python's share of a small layer's time was large: building the depthwise-up
    layer's graph took 0.1 ms of its 0.4 ms here (0.4 ms of 0.8 ms when the
    caches are cold, as in the benchmark), against 0.014 ms compiled.
    """
    geom, batched = conv_geometry(x_shape, weight_shape, bias_shape=bias_shape, data_format=data_format,
                                  weight_format=weight_format, **args)
    name = backends.resolve_backend(backend, geom, stream)
    run = backends.BACKENDS[name]

    def call(x, weight, bias=None):
        with mx.stream(stream):
            if not batched:
                x = x[None]
            if data_format == "NCL":
                x = x.transpose(0, 2, 1)
            if weight_format == "torch":
                weight = torch_to_mlx_weight(weight, geom.groups)
            weight = weight.astype(x.dtype)
            if bias is not None:
                bias = bias.astype(x.dtype)
            y = run(x, weight, bias, geom)
            if data_format == "NCL":
                y = y.transpose(0, 2, 1)
            if not batched:
                y = mx.squeeze(y, axis=0)  # y[0] would gather a copy
        return y

    # The metal backend launches its own kernel, left out of MLX's tracing.
    small = geom.batch * geom.output_length * geom.out_channels <= COMPILE_MAX_OUTPUT
    return mx.compile(call) if small and name != "metal" else call
