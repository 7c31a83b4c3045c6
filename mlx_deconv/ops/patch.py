"""``patch_mlx()``: route ``mx.conv1d`` and ``mx.conv_transpose1d`` to this package, for every caller.

One concept (about 400 lines): the functions put on ``mlx.core``, the state that puts them there
and takes them back, and the statistics of what they did. Besides the two convolutions, ``mx.vmap``
and ``mx.compile`` are wrapped: a function they trace with ``vmap`` or ``shapeless=True`` calls MLX's own
convolutions, since those transformations cannot go through the package's graphs.

An existing MLX model (mlx-audio's vocoders and codecs, a port of one's own) reaches its 1-D
convolutions through the names ``mlx.core.conv1d`` and ``mlx.core.conv_transpose1d``, looked up
when each call runs: ``mx.conv1d(...)`` in a hand-written weight-norm layer, and ``mlx.nn.Conv1d``
/ ``mlx.nn.ConvTranspose1d``, whose ``__call__`` does the same. :func:`patch_mlx` puts two
functions under those names, with MLX's signatures and MLX's meaning, which run each call
through :func:`mlx_deconv.conv1d` / :func:`mlx_deconv.conv_transpose1d` (``backend="auto"``)
when the package computes it exactly as MLX does, and through MLX's own function otherwise.

What "exactly as MLX does" covers: a 3-D input and a 3-D weight of one float dtype (float32,
float16, bfloat16), plain ``int`` arguments in the ranges both accept, and ``stream`` None, an
``mx.Stream``, an ``mx.ThreadLocalStream``, an ``mx.Device`` or ``mx.cpu``/``mx.gpu``. Everything else (2-D, 4-D and 5-D
convolutions, float64, mixed dtypes, integer inputs, negative paddings, a transposed padding
past ``dilation*(K-1)``, non-int arguments, wrong shapes) goes to MLX's function unchanged,
so it returns what MLX returns or raises what MLX raises. MLX's quirks are kept:
``conv_transpose1d``'s sixth positional argument is ``output_padding`` (mlx-audio's DAC and
SNAC layers pass ``groups`` there and get MLX's longer outputs), and ``output_padding`` may be
as large as MLX allows, not only below ``stride`` as in PyTorch.

The patch is process-wide (it assigns four attributes of the ``mlx.core`` module), guarded by a
lock, idempotent, and undone by :func:`unpatch_mlx`, which puts back the very objects it
replaced. What it cannot reach: a function object stored before patching (``from mlx.core
import conv1d``, or Kokoro's iSTFTNet, which keeps ``mx.conv1d`` as an argument stored at
construction). Calls made from inside this package's own backends go to MLX's function
directly (a per-thread guard), so they never loop back.
"""

from __future__ import annotations

import contextlib
import os
import threading
import warnings
from dataclasses import dataclass
from typing import Callable, Dict, Iterator, Optional, Tuple

import mlx.core as mx

from ..backends import backend_names
from ..geometry.call import Call
from ..runtime.devices import resolve_stream
from ..tuning.tuner import autotune_off
from . import functional as _functional

_ARRAY = mx.array

#: The convolutions routed to the package.
ROUTED = ("conv1d", "conv_transpose1d")
#: MLX's transformations whose tracing the package's graphs cannot go through: ``mx.vmap`` (MLX has no batching
#: rule for the strided views and write ordering of the package's blocks) and ``mx.compile(..., shapeless=True)``
#: (their slices have fixed shapes). Patched, they trace the functions given to them with the convolutions on
#: MLX's own functions.
TRANSFORMS = ("vmap", "compile")
#: The names patched on ``mlx.core``, in this order.
NAMES = ROUTED + TRANSFORMS
#: The float dtypes the package computes in (others go to MLX).
_DTYPES = (mx.float32, mx.float16, mx.bfloat16)
#: MLX's arguments are C++ ints: larger ones go to MLX, which refuses them its own way.
_INT_MAX = 2**31 - 1
#: The ``stream`` arguments both MLX and the package take (a string, which only the package takes, goes to MLX).
_STREAM_TYPES = tuple(t for t in (mx.Stream, mx.Device, mx.DeviceType, getattr(mx, "ThreadLocalStream", None)) if t)

_LOCK = threading.RLock()
#: What each name held before :func:`patch_mlx` replaced it (MLX's function), kept after unpatching
#: so that a call in flight in another thread still finds it.
_SAVED: Dict[str, Callable] = {}


class _Guards(threading.local):
    """Per thread: ``active`` while this module runs the package, so a nested ``mx.conv*`` call (the ``builtin``
    backend's) goes straight to MLX's function; ``mlx_ops``, the depth of functions traced by ``mx.vmap`` or a
    shapeless ``mx.compile``. Both exist from the start: every patched call reads them."""

    def __init__(self):
        self.active = False
        self.mlx_ops = 0


_LOCAL = _Guards()
#: Open :func:`patched_mlx` blocks, whether :func:`patch_mlx` was called outside them, and the backend
#: every routed call asks for (``patch_mlx(backend=...)``).
_STATE = {"contexts": 0, "explicit": False, "generation": 0, "backend": "auto"}
#: Environment switch: ``1`` raises a failure of the package on a routed call instead of handing the
#: call to MLX (the test suite sets it; read only when a failure happens).
ENV_STRICT = "MLX_DECONV_PATCH_STRICT"
#: What the patched functions did with each call, per op: ``package`` (the package computed it),
#: ``mlx_op`` (the package would run MLX's op with the caller's arguments: MLX's function ran it),
#: ``refused`` (the package's checks refused it: MLX's function decided), ``passed`` (a kind of call the
#: package does not take: 2-D or 4-D, float64, a string stream, a call traced by mx.vmap or a shapeless mx.compile,
#: ...), ``failed`` (the package failed while
#: computing it: MLX's function computed it, and a warning said so).
_COUNTS = {op: dict.fromkeys(("package", "mlx_op", "refused", "passed", "failed"), 0)
           for op in ("conv1d", "conv_transpose1d")}


class PatchFailureWarning(RuntimeWarning):
    """The package failed on a call ``patch_mlx()`` routed to it; MLX's own function computed it instead."""


def statistics() -> Dict[str, Dict[str, int]]:
    """What the patched functions did since the process started, per op.

    Returns:
        dict: per op (``"conv1d"``, ``"conv_transpose1d"``), the count of calls ``package`` (computed by the
        package, counted once they ran), ``mlx_op`` (on MLX's op, as the package would have run it),
        ``refused`` (by the package's checks), ``passed`` (kinds the package does not take) and ``failed``
        (the package failed; each warned with :class:`PatchFailureWarning`).
    """
    return {op: dict(counts) for op, counts in _COUNTS.items()}


@dataclass(frozen=True)
class PatchRecord:
    """What :func:`patch_mlx` or :func:`unpatch_mlx` did.

    Attributes:
        names (tuple[str, ...]): the ``mlx.core`` names patched after the call
            (``("conv1d", "conv_transpose1d", "vmap", "compile")``, or ``()`` once unpatched).
        changed (tuple[str, ...]): the names this call assigned: ``()`` when it
            found them as it left them (patching twice, unpatching twice).
        skipped (tuple[str, ...]): for :func:`unpatch_mlx`, names that something
            else replaced after the patch; they are left alone, not restored.
    """

    names: Tuple[str, ...]
    changed: Tuple[str, ...]
    skipped: Tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.names)


def original(name: str) -> Callable:
    """MLX's own function of a patched name, patched or not.

    Args:
        name (str): one of :data:`NAMES` (``"conv1d"``, ``"conv_transpose1d"``, ``"vmap"``, ``"compile"``).

    Returns:
        The function ``mlx.core.<name>`` held before :func:`patch_mlx` (the current one when
        never patched).

    Raises:
        ValueError: for another name.
    """
    if name not in NAMES:
        raise ValueError(f"name must be one of {NAMES}, got {name!r}")
    saved = _SAVED.get(name)
    return saved if saved is not None else getattr(mx, name)


def is_patched() -> Tuple[str, ...]:
    """The names of ``mlx.core`` that hold this module's functions now.

    Returns:
        tuple[str, ...]: e.g. ``("conv1d", "conv_transpose1d", "vmap", "compile")``; ``()`` when not patched.
    """
    return tuple(name for name in NAMES if getattr(mx, name) is _WRAPPERS[name])


def status() -> str:
    """One line for ``python -m mlx_deconv info``: which ``mx`` functions run on this package."""
    names = is_patched()
    if not names:
        return "no (mlx_deconv.patch_mlx() routes mx.conv1d and mx.conv_transpose1d here)"
    routed = [n for n in names if n in ROUTED]
    return (", ".join(f"mx.{n}" for n in routed) + " -> mlx_deconv"
            + ("; mx.vmap and shapeless mx.compile trace them on MLX's own" if set(TRANSFORMS) <= set(names) else ""))


def _assign_all() -> Tuple[str, ...]:
    changed = []
    for name in NAMES:
        current = getattr(mx, name)
        if current is _WRAPPERS[name]:
            continue
        _SAVED[name] = current
        setattr(mx, name, _WRAPPERS[name])
        changed.append(name)
    return tuple(changed)


def _restore_all() -> Tuple[Tuple[str, ...], Tuple[str, ...]]:
    changed, skipped = [], []
    for name in NAMES:
        current = getattr(mx, name)
        if current is _WRAPPERS[name]:
            setattr(mx, name, _SAVED[name])
            changed.append(name)
        elif name in _SAVED and current is not _SAVED[name]:
            skipped.append(name)  # replaced by someone else since: theirs now
    return tuple(changed), tuple(skipped)


def _check_backend(backend) -> str:
    names = sorted(set(backend_names("conv1d")) | set(backend_names("conv_transpose1d")))
    if not isinstance(backend, str) or (backend != "auto" and backend not in names):
        raise ValueError(f"backend must be 'auto' or one of {names}, got {backend!r}")
    return backend


def patch_mlx(backend: str = "auto") -> PatchRecord:
    """Routes ``mlx.core.conv1d`` and ``mlx.core.conv_transpose1d`` through this package.

    Every later call of ``mx.conv1d`` / ``mx.conv_transpose1d`` (from any module, any
    thread, and from ``mlx.nn.Conv1d`` and ``mlx.nn.ConvTranspose1d``, which look the
    functions up at each call) returns what MLX's own would, in the same shape and dtype
    and equal to float32 rounding, computed by :func:`mlx_deconv.conv1d` /
    :func:`mlx_deconv.conv_transpose1d` with ``backend="auto"`` where they compute it the
    same, and by MLX's functions otherwise (see the module's docstring).

    Prints nothing. Calling it again changes nothing but the backend. Call it before building the
    model when the model stores the function object itself (see ``docs/patching.md``).

    Args:
        backend (str): the backend routed calls ask for: ``"auto"`` (default), or a name such as
            ``"gemm"`` to run every call the package takes on it (a call that backend cannot run on its
            stream goes to MLX's function).

    Returns:
        PatchRecord: ``names`` patched now, ``changed`` by this call (``()`` if it already was).
    """
    backend = _check_backend(backend)
    with _LOCK:
        _STATE["explicit"] = True
        _STATE["backend"] = backend
        changed = _assign_all()
        return PatchRecord(names=is_patched(), changed=changed)


def unpatch_mlx() -> PatchRecord:
    """Puts back the functions :func:`patch_mlx` replaced (the same objects: ``mx.conv1d is`` MLX's again).

    Restores at once, also inside open :func:`patched_mlx` blocks (whose exits then change
    nothing). A name that something else replaced after the patch is left as it is, and
    named in ``skipped``. Calling it when not patched changes nothing.

    Returns:
        PatchRecord: ``names`` still patched (``()``), ``changed`` by this call, ``skipped``.
    """
    with _LOCK:
        _STATE.update(explicit=False, contexts=0, generation=_STATE["generation"] + 1, backend="auto")
        changed, skipped = _restore_all()
        return PatchRecord(names=is_patched(), changed=changed, skipped=skipped)


@contextlib.contextmanager
def patched_mlx(backend: Optional[str] = None) -> Iterator[PatchRecord]:
    """``with patched_mlx():`` — patched inside the block, as before it afterwards.

    Blocks nest and may be open in several threads at once: the patch stays while any is
    open, or when :func:`patch_mlx` was called. The patch is process-wide, so calls from
    other threads during the block are routed too (and compute the same values).

    Args:
        backend (str, optional): as :func:`patch_mlx` takes it, for the block (the backend before it is
            put back when the block closes); ``None`` keeps the one in force. Default: ``None``.

    Yields:
        PatchRecord: as :func:`patch_mlx` returns it.
    """
    backend = None if backend is None else _check_backend(backend)
    with _LOCK:
        _STATE["contexts"] += 1
        generation = _STATE["generation"]
        before = _STATE["backend"]
        _STATE["backend"] = before if backend is None else backend
        changed = _assign_all()
        record = PatchRecord(names=is_patched(), changed=changed)
    try:
        yield record
    finally:
        with _LOCK:
            if _STATE["generation"] == generation:  # no unpatch_mlx() since: ours to close
                _STATE["backend"] = before
                _STATE["contexts"] -= 1
                if not _STATE["contexts"] and not _STATE["explicit"]:
                    _restore_all()


# -- the two functions put on mlx.core --------------------------------------------------------

def _plain_int(value, minimum: int) -> bool:
    return type(value) is int and minimum <= value <= _INT_MAX


def _routable(input, weight, stream) -> bool:
    """True when the arrays and stream are of the kinds the package takes exactly as MLX does."""
    if type(input) is not mx.array or type(weight) is not mx.array:
        return False
    if input.ndim != 3 or weight.ndim != 3 or input.dtype != weight.dtype or input.dtype not in _DTYPES:
        return False
    return stream is None or isinstance(stream, _STREAM_TYPES)


def _decide(call: Call, stream, same_as_mlx: bool = True) -> Tuple[str, Optional[Callable]]:
    """What to do with a routable ``call``: ``("package", run)``, or ``("refused", None)`` when the package's
    validation or choice raises, or ``("mlx_op", None)`` when the package would run MLX's op with the caller's
    arguments anyway (``builtin`` where ``same_as_mlx``)."""
    _LOCAL.active = True
    try:
        entry = _functional.prepared(call, stream)
    except (ValueError, TypeError):  # a refusal of the package's own checks: MLX decides, its way
        return "refused", None
    finally:
        _LOCAL.active = False
    if same_as_mlx and entry.backend.name == "builtin":
        return "mlx_op", None
    return "package", entry.run


def _apply(op: str, run: Callable, input, weight) -> Optional[mx.array]:
    """``run(input, weight)``, counted as the package's, or None where it fails: then MLX's function computes the
    call (counted, warned about once, and raised instead under ``MLX_DECONV_PATCH_STRICT=1``)."""
    counts = _COUNTS[op]
    _LOCAL.active = True
    try:
        y = run(input, weight)
    except Exception as err:  # noqa: BLE001  (a bug of the package's: never a silent fall-back)
        counts["failed"] += 1
        if os.environ.get(ENV_STRICT, "") not in ("", "0"):
            raise
        warnings.warn(f"mlx_deconv failed on a patched mx.{op} call ({type(err).__name__}: {err}); "
                      f"MLX's own function computed it. Please report this.", PatchFailureWarning, stacklevel=3)
        return None
    finally:
        _LOCAL.active = False
    counts["package"] += 1
    return y


def _hot_key(op: str, input, weight, stream, arguments: tuple) -> Optional[tuple]:
    """The key under which a thread keeps what it decided for a call (``_decide``, or ``"passed"``), so that a
    repeated call of a decoder costs one lookup; None for a call that takes the full way each time (non-int
    arguments, a stream of another kind than None or ``mx.Stream``, autotuning on).

    The key holds all a decision depends on: the op, the shapes and dtypes, the arguments, the stream (the
    default one by its text, since MLX hands out a new object for it each time) and the backend asked for."""
    if type(input) is not _ARRAY or type(weight) is not _ARRAY or not autotune_off():
        return None
    for value in arguments:
        if type(value) is not int:
            return None
    if stream is None:
        where = _functional.stream_text(mx.default_stream(mx.default_device()))
    elif type(stream) is mx.Stream:
        where = stream  # hashed by identity and compared by value: another object for it misses, never mismatches
    else:
        return None
    return (op, input.shape, weight.shape, input.dtype, weight.dtype, arguments, where, _STATE["backend"])


def _remember(key: Optional[tuple], decision: Tuple[str, Optional[Callable]]) -> None:
    if key is not None:
        table = _functional._LOCAL.patched
        if len(table) >= _functional.PREPARED_CALLS:
            table.clear()
        table[key] = decision


def _call(op: str, input, weight, stride, padding, output_padding, dilation, groups, stream):
    """The call record of a routed call (``NLC``, MLX's weight layout), and its resolved stream."""
    resolved = resolve_stream(stream)
    backend = _STATE["backend"]
    call = Call(op, input.shape, weight.shape, None, input.dtype, stride, padding, output_padding, dilation, groups,
                "NLC", "mlx", None, backend, _functional.stream_text(resolved), _functional.tuning_state(backend))
    return call, resolved


def _on_mlx_ops(fun):
    """``fun``, whose convolutions run on MLX's own functions while it runs in this thread (traced by a
    transformation the package's graphs cannot go through)."""
    def traced(*args, **kwargs):
        depth = _LOCAL.mlx_ops
        _LOCAL.mlx_ops = depth + 1
        try:
            return fun(*args, **kwargs)
        finally:
            _LOCAL.mlx_ops = depth
    traced.__wrapped__ = fun
    traced.__doc__ = getattr(fun, "__doc__", None)
    return traced


def _vmap(fun, in_axes=0, out_axes=0):
    return _SAVED.get("vmap", _MLX["vmap"])(_on_mlx_ops(fun), in_axes=in_axes, out_axes=out_axes)


def _compile(fun, inputs=None, outputs=None, shapeless=False):
    return _SAVED.get("compile", _MLX["compile"])(_on_mlx_ops(fun) if shapeless else fun, inputs=inputs,
                                                 outputs=outputs, shapeless=shapeless)


def _on_mlx(op: str) -> bool:
    """Whether a call goes straight to MLX's function: the package's own call of MLX's op, or a call traced by
    ``mx.vmap`` or a shapeless ``mx.compile`` (counted as ``passed``)."""
    if _LOCAL.active:
        return True
    if _LOCAL.mlx_ops:
        _COUNTS[op]["passed"] += 1
        return True
    return False


# The two functions below repeat their hot lines rather than share a helper: one shared routing function
# (one more frame, MLX's arguments passed as *args) made a short patched call's Python 7 -> 11 us (2026-12-07).
def conv1d(input, weight, /, stride=1, padding=0, dilation=1, groups=1, *, stream=None):
    mlx = _SAVED.get("conv1d", _MLX["conv1d"])
    if (_LOCAL.active or _LOCAL.mlx_ops) and _on_mlx("conv1d"):
        return mlx(input, weight, stride, padding, dilation, groups, stream=stream)
    key = _hot_key("conv1d", input, weight, stream, (stride, padding, dilation, groups))
    decision = None if key is None else _functional._LOCAL.patched.get(key)
    if decision is None:
        if (_routable(input, weight, stream) and _plain_int(stride, 1) and _plain_int(padding, 0)
                and _plain_int(dilation, 1) and _plain_int(groups, 1)):
            call, resolved = _call("conv1d", input, weight, stride, padding, None, dilation, groups, stream)
            decision = _decide(call, resolved)
        else:
            decision = ("passed", None)
        _remember(key, decision)
    counter, run = decision
    if run is None:  # MLX's function computes it: nothing else to do (short calls' time is this path's)
        _COUNTS["conv1d"][counter] += 1
        return mlx(input, weight, stride, padding, dilation, groups, stream=stream)
    y = _apply("conv1d", run, input, weight)
    if y is None:
        return mlx(input, weight, stride, padding, dilation, groups, stream=stream)
    return y


def _padded(run: Callable, right: int, stream) -> Callable:
    """``run``, its output extended by ``right`` zeros: past what the package's output_padding takes (MLX allows
    any), zeros of our own."""
    def call(input, weight):
        return mx.pad(run(input, weight), [(0, 0), (0, right), (0, 0)], stream=stream)
    return call


def conv_transpose1d(input, weight, /, stride=1, padding=0, dilation=1, output_padding=0, groups=1, *, stream=None):
    mlx = _SAVED.get("conv_transpose1d", _MLX["conv_transpose1d"])
    if (_LOCAL.active or _LOCAL.mlx_ops) and _on_mlx("conv_transpose1d"):
        return mlx(input, weight, stride, padding, dilation, output_padding, groups, stream=stream)
    key = _hot_key("conv_transpose1d", input, weight, stream, (stride, padding, dilation, output_padding, groups))
    decision = None if key is None else _functional._LOCAL.patched.get(key)
    if decision is None:
        if (_routable(input, weight, stream) and _plain_int(stride, 1) and _plain_int(padding, 0)
                and _plain_int(dilation, 1) and _plain_int(output_padding, 0) and _plain_int(groups, 1)
                and padding <= dilation * (weight.shape[1] - 1)
                and (input.shape[1] - 1) * stride + dilation * (weight.shape[1] - 1) + output_padding < _INT_MAX):
            # MLX's output: the full output cropped by `padding` on the left and `padding - output_padding`
            # on the right, extended with zeros past the full length when that is negative.
            right = padding - output_padding
            extend = -right if 0 < -right < max(stride, dilation) else None
            call, resolved = _call("conv_transpose1d", input, weight, stride, (padding, max(right, 0)), extend,
                                   dilation, groups, stream)
            # With output padding, builtin crops MLX's output itself: MLX's own gradient there can
            # come out in the wrong shape (tests/test_patch.py), so the package computes it.
            decision = _decide(call, resolved, same_as_mlx=output_padding == 0)
            if decision[1] is not None and -right >= max(stride, dilation):
                decision = (decision[0], _padded(decision[1], -right, stream))
        else:
            decision = ("passed", None)
        _remember(key, decision)
    counter, run = decision
    if run is None:  # MLX's function computes it: nothing else to do (short calls' time is this path's)
        _COUNTS["conv_transpose1d"][counter] += 1
        return mlx(input, weight, stride, padding, dilation, output_padding, groups, stream=stream)
    y = _apply("conv_transpose1d", run, input, weight)
    if y is None:
        return mlx(input, weight, stride, padding, dilation, output_padding, groups, stream=stream)
    return y


#: MLX's functions as this module found them at import (the fallback before any patch).
_MLX = {name: getattr(mx, name) for name in NAMES}
_WRAPPERS = {"conv1d": conv1d, "conv_transpose1d": conv_transpose1d, "vmap": _vmap, "compile": _compile}
for _name, _fn in _WRAPPERS.items():
    _what = (f"routed through :func:`mlx_deconv.{_name}`" if _name in ROUTED else
             "tracing with the convolutions on MLX's own functions" + (" when ``shapeless``" if _name == "compile" else ""))
    _fn.__doc__ = (
        f"MLX's ``mx.{_name}``, {_what}, by :func:`mlx_deconv.patch_mlx`.\n\n"
        f"    Same signature, results and errors as MLX's (below); ``mlx_deconv.unpatch_mlx()`` puts MLX's back.\n\n"
        + "\n".join("    " + line if line else "" for line in (_MLX[_name].__doc__ or "").splitlines())
    )
