"""Autotuning: ``backend="auto"`` measured per call signature instead of reasoned.

Off by default. Turned on by :func:`set_autotune` or ``MLX_DECONV_AUTOTUNE=1``
(``MLX_DECONV_AUTOTUNE=train`` times forward + backward). Then the first call
of each :class:`Signature` runs every backend usable on its stream on random
data of the call's shape, keeps the fastest by median time after a warm-up,
and remembers it in memory and on disk. Every backend computes the same values
to rounding, so tuning changes speed, never results.

MLX does not tell a function whether it is being differentiated, so the
timed pass is chosen by the user: forward only (default) or forward +
backward (``set_autotune(True, backward=True)``, for training).

Apart from this module: the disk cache (one JSON file per device context,
shared safely between processes) in :mod:`mlx_deconv.tuning.cache`, how the
backends are timed in :mod:`mlx_deconv.tuning.measure`, and the ``tune``
command that prints the choices in :mod:`mlx_deconv.tuning.command`.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional

import mlx.core as mx

from .cache import (  # noqa: F401  (AutotuneCacheWarning, cache_dir: part of this module's face)
    AutotuneCacheWarning,
    Signature,
    TuningCache,
    cache_dir,
    device_context,
    file_name,
)
from .measure import Timer, median_timer, timed_calls
from ..runtime.devices import cpu_blas
from ..geometry.records import dilated_kernel_size, full_length

ENV_AUTOTUNE = "MLX_DECONV_AUTOTUNE"
OPS = ("conv_transpose1d", "conv1d")

#: Longer signals share one choice and are timed at this length: past it every backend runs in the
#: same steady blocks, and timing MLX's naive CPU loop on a minute of audio would take minutes.
TUNE_MAX_LENGTH = 1 << 15


# ``os.environ`` keeps its values in a dict under encoded keys: reading that dict is the same lookup
# ``os.environ.get`` makes, without the five Python frames that were a short call's largest overhead.
# ``ENV_KEY not in ENVIRON`` is True only when the variable is surely unset (where ``os.environ`` keeps no
# such dict, ENVIRON holds the key, so the test always says "read the variable").
ENVIRON = getattr(os.environ, "_data", None)
ENV_KEY = os.environ.encodekey(ENV_AUTOTUNE) if ENVIRON is not None else ENV_AUTOTUNE
if ENVIRON is None:
    ENVIRON = {ENV_KEY: None}


def _env_mode() -> Optional[str]:
    if ENV_KEY not in ENVIRON:  # unset: nearly every call
        return None
    value = os.environ.get(ENV_AUTOTUNE, "").strip().lower()
    if value in ("", "0", "false", "no", "off"):
        return None
    return "train" if value in ("train", "backward") else "forward"


_override: Optional[str] = None  # "forward", "train", "off", or None: follow the environment


def set_autotune(enabled: bool = True, *, backward: bool = False) -> None:
    """Turns autotuning of ``backend="auto"`` on or off for this process (overrides ``MLX_DECONV_AUTOTUNE``).

    Args:
        enabled (bool): time the backends on each new signature. Default: ``True``.
        backward (bool): time forward + backward (training) instead of the
            forward pass. Default: ``False``.
    """
    global _override
    for name, value in (("enabled", enabled), ("backward", backward)):
        if not isinstance(value, bool):
            raise TypeError(f"set_autotune: {name} must be True or False, got {value!r}")
    _override = ("train" if backward else "forward") if enabled else "off"


def autotune_off() -> bool:
    """True when autotuning is off, as :func:`autotune_mode` says, in the fewest steps: the ops' hot path asks it."""
    if _override is not None:
        return _override == "off"
    return ENV_KEY not in ENVIRON or _env_mode() is None


def autotune_mode() -> Optional[str]:
    """``"forward"`` or ``"train"`` when autotuning is on, else ``None``."""
    if _override is not None:
        return None if _override == "off" else _override
    return _env_mode()


def length_bucket(n: int) -> int:
    """The power of two at or above ``n``: lengths sharing it share a tuned choice."""
    return 1 << max(0, int(n) - 1).bit_length()


def _sides(geom) -> tuple:
    """``(left, right)``: the transposed op's crops (right < 0 extends), or ``conv1d``'s zero pads."""
    if hasattr(geom, "crop"):
        return geom.crop, geom.full_length - geom.crop - geom.output_length
    return geom.pad_left, geom.pad_right


def padding_class(geom) -> str:
    """Which sides are cropped (transposed op) or padded (``conv1d``): ``"none"``, ``"symmetric"``,
    ``"right"`` (the transposed op's causal form), ``"left"`` (``conv1d``'s causal form), ``"extend"``
    (the transposed op's output padding past a left crop) or ``"asymmetric"``."""
    left, right = _sides(geom)
    if left == right:
        return "none" if left == 0 else "symmetric"
    if left == 0:
        return "right"
    if right == 0:
        return "left"
    return "extend" if (left < 0) != (right < 0) else "asymmetric"


def signature(op: str, geom, stream: mx.Stream, dtype, mode: str = "forward") -> Signature:
    """The signature of a call of ``op`` (``"conv_transpose1d"`` or ``"conv1d"``) on ``geom``."""
    if op not in OPS:
        raise ValueError(f"op must be one of {OPS}, got {op!r}")
    if mode not in ("forward", "train"):
        raise ValueError(f"mode must be 'forward' or 'train', got {mode!r}")
    return Signature(op, geom.in_channels, geom.out_channels, geom.kernel_size, geom.stride, geom.dilation,
                     geom.groups, padding_class(geom), str(dtype).rsplit(".", 1)[-1], length_bucket(geom.batch),
                     length_bucket(min(geom.length, TUNE_MAX_LENGTH)), mode, str(stream.device))


def timing_geometry(geom):
    """``geom`` with its length cut to :data:`TUNE_MAX_LENGTH`, the same crops or pads (what is timed)."""
    if geom.length <= TUNE_MAX_LENGTH:
        return geom
    length = TUNE_MAX_LENGTH
    left, right = _sides(geom)
    if hasattr(geom, "crop"):  # transposed: the same crops of a shorter full output
        out = full_length(length, geom.kernel_size, geom.stride, geom.dilation) - left - right
    else:  # direct: the same zero pads around a shorter input
        out = (length + left + right - dilated_kernel_size(geom.kernel_size, geom.dilation)) // geom.stride + 1
    return replace(geom, length=length, output_length=out)


class Tuner:
    """Tuned choices in memory and on disk, one timing per signature.

    Args:
        directory (path, optional): the cache directory; ``None`` means
            :func:`cache_dir` at each use, ``False`` keeps choices in memory only.
        timer (callable, optional): ``timer({name: fn}) -> {name: seconds}``.
            Default: :func:`median_timer`.
    """

    file_name = staticmethod(file_name)  # the tables in memory are keyed as the files on disk

    def __init__(self, directory=None, timer: Optional[Timer] = None):
        self.files = TuningCache(directory)
        self.timer = timer or median_timer
        self.stats = dict(timed=0, memory_hits=0, disk_hits=0)
        self._tables: Dict[str, Dict[str, dict]] = {}  # context file name -> signature key -> entry
        self._lock = threading.RLock()  # the tables, and one timing at a time: two at once would skew both
        self.met: Optional[List[dict]] = None  # when a list, every entry looked up is appended (``tune --model``)

    def _table(self, context: Mapping[str, str]) -> Dict[str, dict]:
        """This context's entries, read from disk the first time."""
        name = file_name(context)
        if name not in self._tables:
            self._tables[name] = self.files.load(context)
        return self._tables[name]

    def lookup(self, sig: Signature, context: Mapping[str, str]) -> Optional[dict]:
        """The cached entry of ``sig``, or None."""
        with self._lock:
            return self._table(context).get(sig.key())

    def measured(self, sig: Signature, context: Mapping[str, str], names: List[str], rule: str,
               make_fns: Callable[[], Mapping[str, Callable[[], object]]]) -> dict:
        """The entry for ``sig``: from memory, else from disk, else timed now and saved.

        Args:
            names: the backends usable for this call; a cached choice outside them is retimed.
            rule: the backend the rule picks, kept in the entry for comparison.
            make_fns: builds ``{name: fn}`` to time; called only on a miss.

        Returns:
            dict: ``choice`` (a name), ``rule`` and ``seconds`` per timed backend.
        """
        with self._lock:
            entry = self._measured(sig, context, names, rule, make_fns)
            if self.met is not None:
                self.met.append(entry)
            return entry

    def _measured(self, sig: Signature, context: Mapping[str, str], names: List[str], rule: str, make_fns) -> dict:
        key = sig.key()
        loaded = file_name(context) in self._tables
        entry = self._table(context).get(key)
        if entry is not None and entry["choice"] in names:
            self.stats["memory_hits" if loaded else "disk_hits"] += 1
            return entry
        if loaded:
            # Another process may have tuned it since this one read the file.
            entry = self.files.reread(context).get(key)
            if entry is not None and entry["choice"] in names:
                self._tables[file_name(context)][key] = entry
                self.stats["disk_hits"] += 1
                return entry
        fns = {n: f for n, f in make_fns().items() if n in names}
        seconds = {n: float(s) for n, s in self.timer(fns).items() if n in fns}
        self.stats["timed"] += 1
        choice = min(seconds, key=seconds.get) if seconds else rule
        entry = dict(choice=choice, rule=rule, seconds=seconds, signature=asdict(sig),
                     tuned=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        self._table(context)[key] = entry
        self.files.save(context, key, entry)
        return entry

    def clear(self) -> List[Path]:
        """Forgets every choice in memory and deletes this directory's tuning files; returns them."""
        global _generation
        with self._lock:
            self._tables.clear()
            _generation += 1
            return self.files.remove()


_tuner = Tuner()
_generation = 0  # bumped when choices may change under calls already prepared with them


def tuner() -> Tuner:
    """The process's tuner."""
    return _tuner


def generation() -> int:
    """Changes whenever the tuner is replaced or cleared: part of ``functional``'s prepared-call key."""
    return _generation


def use_tuner(new: Tuner) -> Tuner:
    """Replaces the process's tuner (tests: a private directory, an injected timer); returns the old one."""
    global _tuner, _generation
    old, _tuner = _tuner, new
    _generation += 1
    return old


def tune(op: str, geom, stream: mx.Stream, dtype, *, names: List[str], rule: str,
         runners: Mapping[str, Callable], mode: str = "forward") -> dict:
    """The tuned entry for one call; times the backends the first time its signature is met.

    Args:
        op: ``"conv_transpose1d"`` or ``"conv1d"``.
        geom: the call's geometry (batch, length, channels, kernel_size, stride, dilation, groups, crops).
        stream: where it runs; dtype: the input's dtype.
        names: the backends usable for this call; rule: the one the rule picks.
        runners: ``{name: fn(x, w) -> y}`` on NLC input and MLX-layout weight (compiled as the real
            call is), computing :func:`timing_geometry` of ``geom``: what is timed.
        mode: ``"forward"`` or ``"train"`` (forward + gradients w.r.t. input and weight).

    Returns:
        dict: ``choice``, ``rule``, ``seconds`` per timed backend, ``signature``.
    """
    sig = signature(op, geom, stream, dtype, mode)
    return _tuner.measured(sig, device_context(stream), list(names), rule,
                         lambda: timed_calls(op, timing_geometry(geom), stream, dtype, mode, runners))


def describe(stream: mx.Stream) -> List[str]:
    """Lines for ``info``: whether the rule was measured on this stream's kind of device, and the tuning state."""
    blas = cpu_blas(stream)
    if blas in ("reference", "optimized"):
        which = "MLX's reference BLAS" if blas == "reference" else "the optimized BLAS mlx_deconv loads"
        rule = f"auto rule: measured on this kind of stream (Linux CPU, {which})"
    else:
        rule = ("auto rule: reasoned, never measured on this kind of stream; "
                "`python -m mlx_deconv tune` measures it (or MLX_DECONV_AUTOTUNE=1)")
    mode = autotune_mode()
    with _tuner._lock:
        count = len(_tuner._table(device_context(stream)))
    state = {None: "off", "forward": "on (forward)", "train": "on (forward+backward)"}[mode]
    return [rule, f"autotune: {state}; {count} tuned signature(s) for this device in {_tuner.files.folder()}"]


def tune_model(model, sample: mx.array, backward: bool = False) -> List[dict]:
    """Runs ``model(sample)`` (and its gradients if ``backward``) with autotuning on; returns the entries met.

    It switches autotuning on for the whole process while it runs (restoring the setting after) and collects
    the entries on the process's tuner, so it is not for concurrent use: calls from other threads in the
    meantime are tuned too, and their entries may be counted as this model's.

    Args:
        model: a callable (usually an ``mlx.nn.Module``) whose ``backend="auto"`` conv layers get tuned.
        sample (array): an input of the shape to tune for.
        backward (bool): also tune the gradients' calls (and time each backend forward plus backward).

    Returns:
        list(dict): one tuning entry per distinct call signature met (its choice, the rule, the timings).
    """
    global _override
    old_override = _override
    met: List[dict] = []
    _tuner.met = met
    set_autotune(True, backward=backward)
    try:
        if backward:
            import mlx.nn as nn

            loss = nn.value_and_grad(model, lambda m, x: m(x).astype(mx.float32).sum())
            mx.eval(loss(model, sample))
        else:
            mx.eval(model(sample))
    finally:
        _override = old_override
        _tuner.met = None
    unique = {Signature(**e["signature"]).key(): e for e in met}
    return list(unique.values())
