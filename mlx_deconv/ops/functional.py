"""``conv_transpose1d`` and ``conv1d``: validate, normalise, pick a backend, run it.

The first three depend only on shapes and arguments: they happen once per
call signature, and what runs is compiled (``mx.compile``) unless the signal
is long, so a decoder's repeated calls cost a dictionary lookup in Python.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Callable, List, Optional, Sequence, Tuple, Union

import mlx.core as mx

from ..tuning import tuner as autotune
from .. import backends
from ..runtime.compiling import COMPILE_MAX_OUTPUT
from ..runtime.devices import StreamLike, resolve_stream
from ..geometry.records import Padding
from ..geometry.torch_layout import from_torch_layout
from ..geometry.validation import conv1d_geometry, conv_geometry

FLOAT_DTYPES = (mx.float32, mx.float16, mx.bfloat16)
IntOrTuple = Union[int, Sequence[int]]
#: Prepared calls kept per thread, one per signature (shapes, arguments, backend, stream).
PREPARED_CALLS = 256
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


def as_float_array(name: str, value) -> mx.array:
    """An MLX array of a float dtype the ops compute in.

    float64 gets one rule whether it comes from numpy or MLX: it is computed in
    float32 (MLX turns numpy float64 into float32 on its own, and Metal has no
    float64), so ``mx.float64`` is cast too, on the CPU where it can live.
    """
    if not isinstance(value, mx.array):
        try:
            value = mx.array(value)
        except (TypeError, ValueError) as err:
            raise TypeError(f"{name} must be an mx.array or array-like, got {type(value).__name__}") from err
    if value.dtype == mx.float64:
        value = value.astype(mx.float32, stream=mx.cpu)
    if value.dtype not in FLOAT_DTYPES:
        raise TypeError(
            f"{name} must be float32, float16 or bfloat16 (float64 is computed in float32), "
            f"got dtype {value.dtype}; cast it with {name}.astype(mx.float32)"
        )
    return value


def available_backends(stream: StreamLike = None, op: str = "conv_transpose1d") -> List[str]:
    """Names of the backends usable on a stream.

    Args:
        stream: ``None`` (default stream), ``"cpu"``, ``"gpu"``, ``mx.cpu``/``mx.gpu``, an
            ``mx.Device``, an ``mx.Stream`` or an ``mx.ThreadLocalStream`` (the calling thread's stream of it).
        op (str): ``"conv_transpose1d"`` or ``"conv1d"``. Default: ``"conv_transpose1d"``.

    Returns:
        list[str]: e.g. ``["builtin", "gemm"]``.
    """
    if op not in backends.OPS:
        raise ValueError(f"op must be one of {backends.OPS}, got {op!r}")
    return backends.available_backends(resolve_stream(stream), op)


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
            ``"NCL"``; a 2-D input is one unbatched signal. float32, float16
            or bfloat16; float64 (numpy or MLX) is computed in float32.
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
        stream: ``None`` (default stream), ``"cpu"``, ``"gpu"``, ``mx.cpu``/``mx.gpu``, an ``mx.Device``,
            an ``mx.Stream`` or an ``mx.ThreadLocalStream`` (the calling thread's stream of it).

    Returns:
        array: ``(N, L_out, C_out)`` (or ``(N, C_out, L_out)``; unbatched for an
        unbatched input) in the dtype of ``x`` (float32 for float64 input), where
        ``L_out = (L-1)*stride - left - right + dilation*(K-1) + 1``.
    """
    args = dict(stride=stride, padding=padding, output_padding=output_padding, dilation=dilation, groups=groups,
                data_format=data_format, weight_format=weight_format, output_size=output_size, backend=backend)
    return _prepared_call("conv_transpose1d", x, weight, bias, stream, args)


def conv1d(
    x: mx.array,
    weight: mx.array,
    bias: Optional[mx.array] = None,
    stride: IntOrTuple = 1,
    padding: Padding = 0,
    dilation: IntOrTuple = 1,
    groups: int = 1,
    *,
    data_format: str = "NLC",
    weight_format: str = "mlx",
    backend: str = "auto",
    stream: StreamLike = None,
) -> mx.array:
    """1-D convolution (cross-correlation, as in PyTorch and MLX) over a multi-channel signal.

    ``y[n, t, co] = sum_{k, ci} x[n, t*stride + k*dilation - left, ci] * w[co, k, ci]``
    within each group, with ``x`` zero outside ``[0, L)``. It is the adjoint of
    :func:`conv_transpose1d`: ``conv1d(y, w)`` is the input gradient of
    ``conv_transpose1d(., w)`` for the same stride, dilation and groups.

    Args:
        x (array): ``(N, L, C_in)`` for ``"NLC"``, ``(N, C_in, L)`` for
            ``"NCL"``; a 2-D input is one unbatched signal. float32, float16
            or bfloat16; float64 (numpy or MLX) is computed in float32.
        weight (array): ``(C_out, K, C_in/groups)`` for ``weight_format="mlx"``
            (as ``mx.conv1d`` takes it), ``(C_out, C_in/groups, K)`` for ``"torch"``.
        bias (array, optional): ``(C_out,)``. Default: ``None``.
        stride (int): step between outputs. Default: ``1``.
        padding: zeros around the input: ``int`` (both sides), ``(left, right)``,
            ``"valid"`` (none), ``"same"`` (TensorFlow/Keras: ``ceil(L/stride)``
            outputs, the smaller half of the padding on the left) or
            ``"causal"`` (``dilation*(K-1)`` on the left). Default: ``0``.
        dilation (int): spacing between kernel taps. Default: ``1``.
        groups (int): blocked connections between input and output channels;
            ``groups = C_in = C_out`` is depthwise. Default: ``1``.
        data_format (str): ``"NLC"`` or ``"NCL"``. Default: ``"NLC"``.
        weight_format (str): ``"mlx"`` or ``"torch"``. Default: ``"mlx"``.
        backend (str): ``"auto"`` or a name from
            ``available_backends(stream, op="conv1d")``. Default: ``"auto"``.
        stream: ``None`` (default stream), ``"cpu"``, ``"gpu"``, ``mx.cpu``/``mx.gpu``, an ``mx.Device``,
            an ``mx.Stream`` or an ``mx.ThreadLocalStream`` (the calling thread's stream of it).

    Returns:
        array: ``(N, L_out, C_out)`` (or ``(N, C_out, L_out)``; unbatched for an
        unbatched input) in the dtype of ``x`` (float32 for float64 input), where
        ``L_out = floor((L + left + right - dilation*(K-1) - 1) / stride) + 1``
        (see :func:`mlx_deconv.conv1d_output_length`).
    """
    args = dict(stride=stride, padding=padding, dilation=dilation, groups=groups,
                data_format=data_format, weight_format=weight_format, backend=backend)
    return _prepared_call("conv1d", x, weight, bias, stream, args)


def _typed(value):
    """``value`` as a cache key part that tells types apart: ``1.0 == True == 1`` and they hash alike,
    so a key of values alone would hand ``dilation=1.0`` the call prepared (and checked) for ``1``.
    Plain ints, strings and None (nearly every call) stay as they are."""
    kind = type(value)
    if kind is int or kind is str or value is None:
        return value
    if kind is tuple or kind is list:
        return (kind, tuple(_typed(v) for v in value))
    return (kind, value)


#: Argument types a key may hold as they are: equal values of these types are the same argument.
_PLAIN_TYPES = frozenset((int, str, type(None)))


def _arguments_key(args: dict) -> tuple:
    """The arguments' part of a prepared call's key (a short call's key costs about as much as MLX's op)."""
    values = tuple(args.values())
    if _PLAIN_TYPES.issuperset(map(type, values)):
        return values
    return tuple(_typed(v) for v in values)


def _prepared_call(op: str, x, weight, bias, stream: StreamLike, args: dict) -> mx.array:
    """Checks the arrays, then runs the prepared call of this signature (preparing it once)."""
    _, call, x, weight, bias = prepared(op, x, weight, bias, stream, args)
    return call(x, weight) if bias is None else call(x, weight, bias)


def prepared(op: str, x, weight, bias, stream: StreamLike, args: dict):
    """The prepared call of a signature, preparing it once per thread.

    Args:
        op (str): ``"conv_transpose1d"`` or ``"conv1d"``.
        x, weight, bias: the call's arrays (checked and, for float64, cast here).
        stream: as the ops take it.
        args (dict): the op's other arguments, in the op's own order, ``backend`` last.

    Returns:
        tuple: ``(backend, call, x, weight, bias)``: the backend the call runs on, the function,
        and the checked arrays to pass it (``call(x, weight)`` or ``call(x, weight, bias)``).
    """
    if type(x) is not mx.array or x.dtype not in FLOAT_DTYPES:
        x = as_float_array("x", x)
    if type(weight) is not mx.array or weight.dtype not in FLOAT_DTYPES:
        weight = as_float_array("weight", weight)
    if bias is not None:
        bias = as_float_array("bias", bias)
    stream = resolve_stream(stream)
    # What preparing depends on (compiled functions retrace for a new dtype themselves). The
    # arguments come in one order per op (the op's own dict). Streams compare by device and
    # index but hash by identity: their text is the key.
    key = (op, x.shape, weight.shape, None if bias is None else bias.shape, _arguments_key(args), repr(stream))
    # With autotuning on, "auto" depends on the dtype, the timed pass and the tuner's state too.
    tuning = autotune.autotune_mode() if args["backend"] == "auto" else None
    if tuning is not None:
        key += (str(x.dtype), tuning, autotune.generation())
    calls = _prepared_calls()
    try:
        entry = calls.pop(key, None)
    except TypeError:  # an unhashable argument (a numpy array as stride): on to prepare, whose checks name it
        key, entry = None, None
    if entry is None:
        entry = _prepare(op, x.shape, weight.shape, None if bias is None else bias.shape, stream,
                         tuned=None if tuning is None else (x.dtype, tuning), **args)
        if key is not None and tuning is None and entry[0] != args["backend"]:
            # "auto" runs the very call its choice runs when asked by name: one compiled function, not two.
            named = key[:4] + (key[4][:-1] + (entry[0],),) + key[5:]
            entry = calls.setdefault(named, entry)
    if key is not None:
        calls[key] = entry  # most recently used last
        while len(calls) > PREPARED_CALLS:  # ("auto" may have added its choice's entry too)
            del calls[next(iter(calls))]
    return entry[0], entry[1], x, weight, bias


def _resolve(backend: str, geom, stream: mx.Stream, tuned) -> str:
    """The backend of a call: the rule's, or with autotuning on (``tuned = (dtype, mode)``) the fastest measured."""
    if tuned is None:
        return backends.resolve_backend(backend, geom, stream)
    dtype, mode = tuned
    return autotune.tuned_backend(geom, stream, dtype, backward=mode == "train")["choice"]


#: How each op validates its arguments into a geometry.
_GEOMETRY = {"conv_transpose1d": conv_geometry, "conv1d": conv1d_geometry}


def _prepare(op: str, x_shape, weight_shape, bias_shape, stream: mx.Stream, *, data_format: str,
             weight_format: str, backend: str, tuned=None, **args) -> Tuple[str, Callable[..., mx.array]]:
    """Validates a call signature of ``op``; returns the backend it runs on and the function computing it."""
    geom, batched = _GEOMETRY[op](x_shape, weight_shape, bias_shape=bias_shape, data_format=data_format,
                                  weight_format=weight_format, **args)
    name = _resolve(backend, geom, stream, tuned)
    transposed = op == "conv_transpose1d"
    to_mlx = (lambda w: from_torch_layout(w, geom.groups, transposed)) if weight_format == "torch" else None
    record = backends.BACKENDS[name]
    return name, _wrap(record.run(op), geom, batched, data_format, to_mlx, stream, compile=record.compilable)


def _wrap(run, geom, batched: bool, data_format: str, to_mlx, stream: mx.Stream, compile: bool):
    """The call around a backend: layouts in, backend, layouts out; compiled when small.

    Compiled, because building the graph in Python was a large share of a small
    layer's time (figures: docs/performance.md).
    """
    if geom.batch == 0:  # an empty batch: an empty output (the matmul paths cannot reshape empty blocks)
        run = lambda x, weight, bias, geom: mx.zeros((0, geom.output_length, geom.out_channels), x.dtype)  # noqa: E731

    def call(x, weight, bias=None):
        with mx.stream(stream):
            if not batched:
                x = x[None]
            if data_format == "NCL":
                x = x.transpose(0, 2, 1)
            if to_mlx is not None:
                weight = to_mlx(weight)
            weight = weight.astype(x.dtype)
            if bias is not None:
                bias = bias.astype(x.dtype)
            y = run(x, weight, bias, geom)
            if data_format == "NCL":
                y = y.transpose(0, 2, 1)
            if not batched:
                y = mx.squeeze(y, axis=0)  # y[0] would gather a copy
        return y

    small = geom.batch * geom.output_length * geom.out_channels <= COMPILE_MAX_OUTPUT
    return mx.compile(call) if small and compile else call
