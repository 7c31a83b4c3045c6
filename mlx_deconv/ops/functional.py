"""``conv_transpose1d`` and ``conv1d``: the first step of a call's way (call -> geometry -> choice -> backend -> array).

Each call becomes a :class:`~mlx_deconv.geometry.call.Call` record; the first call of a record is
validated into its geometry, handed to :func:`mlx_deconv.choice.choose` and wrapped around the chosen
backend's run (layouts in and out; compiled with ``mx.compile`` unless the signal is long), or, in MLX's own
layouts, the backend's run bound to the call where its record has ``bind`` (``builtin``). That
prepared call is kept per thread under the record, so a decoder's repeated calls cost a dictionary
lookup in Python. ``patch_mlx`` looks its calls up in the same table (and keeps its decisions in this
module's per-thread tables, so that :func:`forget_prepared_calls` forgets them too).

A repeated call with plain arguments (ints and strings, MLX float arrays, no stream or an ``mx.Stream``, no
autotuning) skips even the record: its run is kept in a second, flat table per thread and stream,
found before anything else is built (:func:`_hot_table`).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Callable, List, NamedTuple, Optional, Sequence, Union

import mlx.core as mx

from ..backends import available_backends as _available_backends, check_op
from ..backends.builtin import MLX_CONV1D, MLX_CONV_TRANSPOSE1D
from ..backends.record import Backend
from ..choice import choose
from ..geometry.call import Call
from ..geometry.records import Padding, padding_follows_length
from ..geometry.torch_layout import from_torch_layout
from ..geometry.validation import geometry_of
from ..runtime.compiling import COMPILE_MAX_OUTPUT
from ..runtime.devices import StreamLike, resolve_stream
from ..tuning import tuner as _tuner
from ..tuning.tuner import ENV_KEY as _ENV_KEY, ENVIRON as _ENVIRON, autotune_mode, autotune_off, generation

FLOAT_DTYPES = (mx.float32, mx.float16, mx.bfloat16)
IntOrTuple = Union[int, Sequence[int]]
#: Prepared calls kept per thread, one per :class:`~mlx_deconv.geometry.call.Call`.
PREPARED_CALLS = 256
#: Streams per thread whose hot tables are kept (:func:`_hot_table`).
HOT_STREAMS = 8
#: Equal to no stream (``stream == None`` raises in MLX's bindings).
_NO_STREAM = object()


class _ThreadTables(threading.local):
    """A thread's tables. Prepared calls are per thread: MLX's default stream and compile cache are per
    thread, and a compiled function shared between threads aborts the process at exit (see compiling.py).
    A thread's calls are freed, with the GIL, when it ends. Every attribute exists from the start, so the
    ops' hot path reads them without a guard."""

    def __init__(self):
        self.calls: "OrderedDict[Call, Prepared]" = OrderedDict()
        self.hot_tables: dict = {}  # stream text -> hot table, for calls on the default stream
        # The hot table of ``hot_stream``, the default stream last seen. A Stream compared with None raises, so
        # until a stream is seen these hold an object no stream equals.
        self.hot: Optional[dict] = None
        self.hot_stream: object = _NO_STREAM
        self.stream_tables: dict = {}  # mx.Stream object -> hot table, for calls passing a stream
        self.stream: object = _NO_STREAM  # the stream last written as text, and its text
        self.stream_text: Optional[str] = None
        self.patched: dict = {}  # the patched mx.conv1d / mx.conv_transpose1d's decisions (ops/patch.py)


_LOCAL = _ThreadTables()


class Prepared(NamedTuple):
    """A call signature's prepared form: the backend chosen, and the function computing the call."""

    backend: Backend
    run: Callable[..., mx.array]


def _prepared_calls() -> "OrderedDict[Call, Prepared]":
    return _LOCAL.calls


def forget_prepared_calls() -> None:
    """Empties the calling thread's tables of prepared calls (the record-keyed one and the hot one), so the
    next calls are validated and chosen afresh."""
    _prepared_calls().clear()
    for table in _LOCAL.hot_tables.values():
        table.clear()
    _LOCAL.stream_tables.clear()
    _LOCAL.patched.clear()


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
        op (str): ``"conv_transpose1d"``, ``"conv1d"`` or ``"anti_aliased_activation"``.
            Default: ``"conv_transpose1d"``.

    Returns:
        list[str]: e.g. ``["builtin", "gemm"]``.
    """
    return _available_backends(resolve_stream(stream), check_op(op))


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
    # Inline in both ops, not a helper: every Python call in front of MLX's op shows in a short call's time
    # (autotuning is surely off when its variable is unset and nothing overrides it; else autotune_off() says).
    table = None
    if (type(x) is _ARRAY and type(weight) is _ARRAY and type(stride) is int and type(dilation) is int
            and type(groups) is int and type(padding) in _HOT_PADDING and type(data_format) is str
            and type(weight_format) is str and type(backend) is str and type(output_padding) in _NONE_OR_INT
            and type(output_size) in _NONE_OR_INT
            and (_ENV_KEY not in _ENVIRON and _tuner._override is None or autotune_off())):
        if stream is None:
            local = _LOCAL
            table = local.hot if mx.default_stream(mx.default_device()) == local.hot_stream else _hot_table()
        elif type(stream) is _STREAM:
            table = _LOCAL.stream_tables.get(stream) or _stream_table(stream)
    if table is not None:
        key = ("conv_transpose1d", x.dtype, weight.dtype, x.shape, weight.shape, stride, padding, output_padding,
               dilation, groups, data_format, weight_format, output_size, backend)
        if bias is None:
            run = table.get(key)
            if run is MLX_CONV_TRANSPOSE1D:
                return run(x, weight, stride, padding, dilation, 0, groups, stream=stream)
            if run is not None:
                return run(x, weight)
        elif type(bias) is _ARRAY:
            key += (bias.dtype, bias.shape)
            run = table.get(key)
            if run is MLX_CONV_TRANSPOSE1D:
                return mx.add(run(x, weight, stride, padding, dilation, 0, groups, stream=stream), bias, stream=stream)
            if run is not None:
                return run(x, weight, bias)
        else:
            table = None
    x, weight, bias = checked_arrays(x, weight, bias)
    stream = resolve_stream(stream)
    call = _new_call(Call, ("conv_transpose1d", x.shape, weight.shape, None if bias is None else bias.shape, x.dtype,
                            stride, padding, output_padding, dilation, groups, data_format, weight_format, output_size,
                            backend, stream_text(stream), tuning_state(backend)))
    run = prepared(call, stream).run
    if table is not None:
        plain = output_padding in (None, 0) and output_size is None  # MLX's output_padding 0: the call's own
        _keep_hot(table, key, run, bias is not None, MLX_CONV_TRANSPOSE1D,
                  (stride, padding, dilation, 0, groups) if plain else None)
    return run(x, weight) if bias is None else run(x, weight, bias)


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
            outputs, the smaller half of the padding on the left; with a stride above
            1 the padding depends on ``L``, so a shapeless ``mx.compile`` refuses it) or
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
    # Inline in both ops, not a helper: every Python call in front of MLX's op shows in a short call's time
    # (autotuning is surely off when its variable is unset and nothing overrides it; else autotune_off() says).
    table = None
    if (type(x) is _ARRAY and type(weight) is _ARRAY and type(stride) is int and type(dilation) is int
            and type(groups) is int and type(padding) in _HOT_PADDING and type(data_format) is str
            and type(weight_format) is str and type(backend) is str
            and (_ENV_KEY not in _ENVIRON and _tuner._override is None or autotune_off())):
        if stream is None:
            local = _LOCAL
            table = local.hot if mx.default_stream(mx.default_device()) == local.hot_stream else _hot_table()
        elif type(stream) is _STREAM:
            table = _LOCAL.stream_tables.get(stream) or _stream_table(stream)
    if table is not None:
        key = ("conv1d", x.dtype, weight.dtype, x.shape, weight.shape, stride, padding, dilation, groups, data_format,
               weight_format, backend)
        if bias is None:
            run = table.get(key)
            if run is MLX_CONV1D:
                return run(x, weight, stride, padding, dilation, groups, stream=stream)
            if run is not None:
                return run(x, weight)
        elif type(bias) is _ARRAY:
            key += (bias.dtype, bias.shape)
            run = table.get(key)
            if run is MLX_CONV1D:
                return mx.add(run(x, weight, stride, padding, dilation, groups, stream=stream), bias, stream=stream)
            if run is not None:
                return run(x, weight, bias)
        else:
            table = None
    x, weight, bias = checked_arrays(x, weight, bias)
    stream = resolve_stream(stream)
    call = _new_call(Call, ("conv1d", x.shape, weight.shape, None if bias is None else bias.shape, x.dtype, stride,
                            padding, None, dilation, groups, data_format, weight_format, None, backend,
                            stream_text(stream), tuning_state(backend)))
    run = prepared(call, stream).run
    if table is not None:
        _keep_hot(table, key, run, bias is not None, MLX_CONV1D, (stride, padding, dilation, groups))
    return run(x, weight) if bias is None else run(x, weight, bias)


#: Argument types a key holds as they are: equal values of these types are the same argument.
_PLAIN_TYPES = frozenset((int, str, type(None)))
#: The argument fields of a Call, by index (the shapes, dtype and stream are plain by construction).
_ARGUMENTS = range(Call._fields.index("stride"), Call._fields.index("backend") + 1)
# A Call built without the named tuple's Python-level __new__: the ops build one per call.
_new_call = tuple.__new__
_ARRAY = mx.array
_STREAM = mx.Stream
_FLOATS = frozenset(FLOAT_DTYPES)
#: Argument types the hot path takes as they are (an int is never equal to a str; 1.0 and True are not these types).
_HOT_PADDING = frozenset((int, str))
_NONE_OR_INT = frozenset((int, type(None)))


def _hot_table() -> dict:
    """The calling thread's flat table of runs for its default stream (``key -> run``).

    The hot path of the ops: a short call's time was mostly the Python before MLX's op (figures:
    docs/performance-history.md), so a repeated call with plain arguments is one tuple and one lookup.
    """
    local = _LOCAL
    stream = mx.default_stream(mx.default_device())
    if stream == local.hot_stream:
        return local.hot
    tables = local.hot_tables
    if len(tables) >= HOT_STREAMS:  # a thread that makes streams as it goes (one per request) keeps a bounded few
        tables.clear()
    local.hot = table = tables.setdefault(stream_text(stream), {})
    local.hot_stream = stream
    return table


def _stream_table(stream: mx.Stream) -> dict:
    """The calling thread's flat table of runs for calls passing ``stream`` (an ``mx.Stream``) themselves.

    Keyed by the stream object: streams hash by identity and compare by value, so another object for the
    same stream misses and takes the full path, and no key ever finds another stream's run.
    """
    tables = _LOCAL.stream_tables
    table = tables.get(stream)
    if table is None:
        if len(tables) >= HOT_STREAMS:  # a new object per call (``stream=mx.default_stream(...)``) evicts only its like
            del tables[next(iter(tables))]
        table = tables[stream] = {}
    return table


def _keep_hot(table: dict, key: tuple, run, with_bias: bool, mlx_op, own_arguments: Optional[tuple]) -> None:
    """Keeps ``run`` under ``key`` (``(op, x dtype, weight dtype, ...)``, then ``(bias dtype, bias shape)`` with a
    bias) when the call's arrays were MLX float arrays (none cast on the way in), so the key's dtypes are the
    run's; a full table starts over (its runs stay in the prepared table).

    Where the run is ``mlx_op`` alone with ``own_arguments``, the call's own arguments in MLX's order (see
    ``builtin.bind``), ``mlx_op`` itself is kept: the op calls it with its arguments, one Python frame fewer."""
    bias_dtype = key[-2] if with_bias else None
    if key[1] in _FLOATS and key[2] in _FLOATS and (bias_dtype is None or bias_dtype in _FLOATS):
        if len(table) >= PREPARED_CALLS:
            table.clear()
        if key[1] == key[2] and (bias_dtype is None or bias_dtype == key[1]):  # no cast to make: the bound op itself
            run = getattr(run, "same_dtype", run)
            if own_arguments is not None and getattr(run, "mlx_arguments", None) == own_arguments:
                run = mlx_op
        table[key] = run


def stream_text(stream: mx.Stream) -> str:
    """``repr(stream)``, the :class:`Call`'s ``stream`` field, remembered per thread for the last stream seen
    (streams compare by device and index; comparing costs a fifth of writing the text)."""
    local = _LOCAL
    if stream == local.stream:
        return local.stream_text
    local.stream_text = text = repr(stream)
    local.stream = stream
    return text


def _typed(value):
    """``value`` as a key part that tells types apart: ``1.0 == True == 1`` and they hash alike, so a key of
    values alone would hand ``dilation=1.0`` the call prepared (and checked) for ``1``."""
    kind = type(value)
    if kind in _PLAIN_TYPES:
        return value
    if kind is tuple or kind is list:
        return (kind, tuple(_typed(v) for v in value))
    return (kind, value)


def _plain(call: Call) -> bool:
    """True when every argument is a plain int, str or None (nearly every call): then ``call`` is its own key."""
    return _PLAIN_TYPES.issuperset(map(type, call[_ARGUMENTS.start:_ARGUMENTS.stop]))


def key_of(call: Call) -> Call:
    """``call`` itself when every argument is a plain int, str or None (nearly every call), else a copy whose
    arguments carry their types."""
    if _plain(call):
        return call
    return call._replace(**{Call._fields[i]: _typed(call[i]) for i in _ARGUMENTS})


def checked_arrays(x, weight, bias):
    """``(x, weight, bias)`` as MLX arrays of a float dtype the ops compute in (float64 cast to float32)."""
    if type(x) is not mx.array or x.dtype not in FLOAT_DTYPES:
        x = as_float_array("x", x)
    if type(weight) is not mx.array or weight.dtype not in FLOAT_DTYPES:
        weight = as_float_array("weight", weight)
    if bias is not None:
        bias = as_float_array("bias", bias)
    return x, weight, bias


def tuning_state(backend) -> Optional[tuple]:
    """A call's ``tuning`` field: None unless ``"auto"`` runs with autotuning on, where the choice also
    depends on the timed pass and the tuner's state."""
    if backend != "auto":
        return None
    mode = autotune_mode()
    return None if mode is None else (mode, generation())


def prepared(call: Call, stream: mx.Stream) -> Prepared:
    """The prepared form of ``call``, preparing it once per thread.

    Args:
        call (Call): the call; its ``stream`` field is ``repr(stream)``.
        stream (mx.Stream): the resolved stream it runs on.

    Returns:
        Prepared: the backend chosen and the function to call as ``run(x, weight)`` or ``run(x, weight, bias)``
        with the checked arrays.

    Raises:
        ValueError, TypeError: from validation or the choice, naming the argument and its value.
    """
    calls = _prepared_calls()
    plain = _plain(call)
    if plain:  # the call is its own key
        entry = calls.get(call)
        if entry is not None:  # a decoder's repeated call: most recently used last, nothing else
            calls.move_to_end(call)
            return entry
    try:
        key = call if plain else key_of(call)
        entry = calls.pop(key, None)
    except TypeError:  # an unhashable argument (a numpy array as stride): on to prepare, whose checks name it
        key, entry = None, None
    if entry is None:
        entry = _prepare(call, stream)
        if key is not None and call.tuning is None and entry.backend.name != call.backend:
            # "auto" runs the very call its choice runs when asked by name: one compiled function, not two.
            entry = calls.setdefault(key._replace(backend=entry.backend.name), entry)
    if key is not None:
        calls[key] = entry  # most recently used last
        while len(calls) > PREPARED_CALLS:  # ("auto" may have added its choice's entry too)
            del calls[next(iter(calls))]
    return entry


def _prepare(call: Call, stream: mx.Stream) -> Prepared:
    """Validates ``call``, chooses its backend and wraps the backend's run."""
    geom, batched = geometry_of(call)
    backend = choose(geom, stream, call.backend, dtype=call.dtype,
                     tuning=None if call.tuning is None else call.tuning[0])
    transposed = call.op == "conv_transpose1d"
    to_mlx = (lambda w: from_torch_layout(w, geom.groups, transposed)) if call.weight_format == "torch" else None
    if backend.bind is not None and batched and call.data_format == "NLC" and to_mlx is None and geom.batch:
        run = _plain_layout(backend.bind(call.op, geom, stream), stream)
    else:
        run = _wrap(backend.run(call.op), geom, batched, call.data_format, to_mlx, stream, compile=backend.compilable)
    if not transposed and padding_follows_length(call.padding, geom.kernel_size, geom.stride, geom.dilation):
        run = _at_traced_length(run)
    return Prepared(backend, run)


@mx.custom_function
def _length_fixed(x: mx.array) -> mx.array:
    """``x``, through a node MLX cannot give a new shape: a shapeless ``mx.compile`` replaying it at another
    length raises ("CustomTransforms cannot infer output shapes") instead of computing with the traced padding."""
    return x


@_length_fixed.vjp
def _length_fixed_vjp(primals, cotangent, output):
    return cotangent


def _at_traced_length(run):
    """``run`` for a call whose padding depends on the input's length (``"same"`` with a stride): its graph is
    right at the length it was built for only, so its input goes through :func:`_length_fixed` first."""
    def call(x, weight, bias=None):
        return run(_length_fixed(x), weight, bias)
    return call


def _plain_layout(bound, stream: mx.Stream):
    """A bound backend in MLX's own layouts: only the dtype rule in front (every line here shows in a short call),
    its casts on the call's stream. Its attribute ``same_dtype`` is ``bound`` itself, for the hot table's calls
    whose arrays share one dtype."""
    def call(x, weight, bias=None):
        if weight.dtype != x.dtype:
            weight = weight.astype(x.dtype, stream=stream)
        if bias is not None and bias.dtype != x.dtype:
            bias = bias.astype(x.dtype, stream=stream)
        return bound(x, weight, bias)
    call.same_dtype = bound
    return call


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
