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

The disk cache is one JSON file per device context (device kind and name,
platform, MLX version, package version) in :func:`cache_dir`. Writes merge
with what other processes wrote, under an advisory lock, into a temporary
file renamed over the old one. A corrupt or foreign file is ignored with one
warning and rewritten; a directory other users can write to is not trusted
(memory only).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
import warnings
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Mapping, Optional

import mlx.core as mx

from .devices import cpu_blas

ENV_AUTOTUNE = "MLX_DECONV_AUTOTUNE"
ENV_CACHE_DIR = "MLX_DECONV_CACHE_DIR"
FORMAT = "mlx_deconv-autotune-1"
OPS = ("conv_transpose1d", "conv1d")
#: After the first timed run, a backend this many times slower than the fastest is not timed again:
#: MLX's naive CPU loop can take seconds where the best takes milliseconds.
DROP_FACTOR = 4.0

#: Longer signals share one choice and are timed at this length: past it every backend runs in the
#: same steady blocks, and timing MLX's naive CPU loop on a minute of audio would take minutes.
TUNE_MAX_LENGTH = 1 << 15

#: ``{name: seconds}`` for ``{name: zero-argument function returning what to evaluate}``.
Timer = Callable[[Mapping[str, Callable[[], object]]], Dict[str, float]]


class AutotuneCacheWarning(UserWarning):
    """A cache file or directory was unusable; tuning continues in memory."""


def _env_mode() -> Optional[str]:
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


def autotune_mode() -> Optional[str]:
    """``"forward"`` or ``"train"`` when autotuning is on, else ``None``."""
    if _override is not None:
        return None if _override == "off" else _override
    return _env_mode()


def cache_dir() -> Path:
    """``$MLX_DECONV_CACHE_DIR``, else ``$XDG_CACHE_HOME/mlx_deconv``, else ``~/.cache/mlx_deconv``."""
    if os.environ.get(ENV_CACHE_DIR):
        return Path(os.environ[ENV_CACHE_DIR]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "mlx_deconv"


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


def device_context(stream: mx.Stream) -> Dict[str, str]:
    """What a tuned choice is only valid for: device kind and name, platform, MLX and package versions."""
    from . import __version__  # late: this module is imported while the package initialises

    device = stream.device
    if device.type == mx.DeviceType.cpu:
        kind = "cpu"
    else:
        kind = "metal" if mx.metal.is_available() else "gpu"
    try:
        info = mx.device_info(device)
    except Exception:  # older MLX: the name is a refinement, the kind and platform still separate devices
        info = {}
    # The CPU's BLAS moves matmul rates 20x: a choice made behind one is not valid behind another.
    return dict(format=FORMAT, kind=kind, name=str(info.get("device_name", "")),
                architecture=str(info.get("architecture", platform.machine())), platform=sys.platform,
                blas=cpu_blas(stream) or "", mlx=mx.__version__, mlx_deconv=__version__)


@dataclass(frozen=True)
class Signature:
    """What a tuned choice is reused for. ``batch`` and ``length`` are power-of-two buckets."""

    op: str
    in_channels: int
    out_channels: int
    kernel_size: int
    stride: int
    dilation: int
    groups: int
    padding: str
    dtype: str
    batch: int
    length: int
    mode: str
    device: str

    def key(self) -> str:
        """The text that keys this signature within one device's cache file."""
        return (f"{self.op} {self.dtype} N{self.batch} L{self.length} C{self.in_channels}->{self.out_channels} "
                f"K{self.kernel_size} s{self.stride} d{self.dilation} g{self.groups} {self.padding} {self.mode}")


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
    span = geom.dilation * (geom.kernel_size - 1) + 1
    if hasattr(geom, "crop"):  # transposed: the same crops of a shorter full output
        right = geom.full_length - geom.crop - geom.output_length
        out = (length - 1) * geom.stride + span - geom.crop - right
    else:  # direct: the same zero pads around a shorter input
        out = (length + geom.pad_left + geom.pad_right - span) // geom.stride + 1
    return replace(geom, length=length, output_length=out)


def median_timer(fns: Mapping[str, Callable[[], object]], warmup: int = 1, repeat: int = 5,
                 clock: Callable[[], float] = time.perf_counter) -> Dict[str, float]:
    """Median seconds of each function after ``warmup`` untimed runs, timed round-robin.

    A function that raises is left out; one :data:`DROP_FACTOR` times slower
    than the fastest after the first timed round is not timed again.
    """
    live = []
    for name, fn in fns.items():
        try:
            for _ in range(warmup):
                mx.eval(fn())
            live.append(name)
        except Exception:  # a backend that cannot run this call is simply not a candidate
            continue
    times: Dict[str, List[float]] = {name: [] for name in live}
    for rnd in range(repeat):
        for name in live:
            start = clock()
            mx.eval(fns[name]())
            times[name].append(clock() - start)
        if rnd == 0 and live:
            best = min(times[n][0] for n in live)
            live = [n for n in live if times[n][0] <= DROP_FACTOR * best]
    return {name: statistics.median(t) for name, t in times.items() if t}


@contextlib.contextmanager
def _file_lock(path: Path, timeout: float = 30.0) -> Iterator[bool]:
    """An exclusive advisory lock on ``path``; yields False if it could not be had in time.

    POSIX: ``fcntl.flock``. Windows: ``msvcrt.locking``. Elsewhere: the lock
    file's exclusive creation, broken when older than ``timeout``.
    """
    deadline = time.monotonic() + timeout
    try:
        import fcntl
    except ImportError:
        fcntl = None
    if fcntl is not None:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        yield False
                        return
                    time.sleep(0.01)
            try:
                yield True
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)
        return
    try:
        import msvcrt
    except ImportError:
        msvcrt = None
    if msvcrt is not None:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            while True:
                try:
                    msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        yield False
                        return
                    time.sleep(0.01)
            try:
                yield True
            finally:
                os.lseek(fd, 0, os.SEEK_SET)
                msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
        finally:
            os.close(fd)
        return
    while True:
        try:
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
            break
        except FileExistsError:
            with contextlib.suppress(OSError):
                if time.time() - os.path.getmtime(path) > timeout:
                    os.unlink(path)  # left by a process that died holding it
                    continue
            if time.monotonic() > deadline:
                yield False
                return
            time.sleep(0.01)
    try:
        yield True
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)


def _private_dir(path: Path, create: bool = False) -> bool:
    """True when ``path`` is safe to read and write: ours and not writable by others.

    ``create``: make it first (mode 0700) if missing; else a missing one is False.
    """
    try:
        if create:
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = path.stat()
    except OSError:
        return False
    if hasattr(os, "getuid") and (st.st_uid != os.getuid() or st.st_mode & 0o022):
        return False
    return True


def _valid_entry(entry) -> bool:
    """An entry as :meth:`Tuner.choose` writes it (a hand-edited or foreign one is dropped)."""
    if not isinstance(entry, dict) or not isinstance(entry.get("choice"), str) or not isinstance(entry.get("rule"), str):
        return False
    seconds, sig = entry.get("seconds"), entry.get("signature")
    if not isinstance(seconds, dict) or not all(isinstance(v, (int, float)) for v in seconds.values()):
        return False
    try:
        Signature(**sig)
    except TypeError:
        return False
    return True


class Tuner:
    """Tuned choices in memory and on disk, one timing per signature.

    Args:
        directory (path, optional): the cache directory; ``None`` means
            :func:`cache_dir` at each use, ``False`` keeps choices in memory only.
        timer (callable, optional): ``timer({name: fn}) -> {name: seconds}``.
            Default: :func:`median_timer`.
    """

    def __init__(self, directory=None, timer: Optional[Timer] = None):
        self.directory = directory
        self.timer = timer or median_timer
        self.stats = dict(timed=0, memory_hits=0, disk_hits=0)
        self._tables: Dict[str, Dict[str, dict]] = {}  # context file name -> signature key -> entry
        self._lock = threading.RLock()  # the tables, and one timing at a time: two at once would skew both
        self._warned: set = set()
        self.met: Optional[List[dict]] = None  # when a list, every entry looked up is appended (``tune --model``)

    def _dir(self) -> Optional[Path]:
        if self.directory is False:
            return None
        return Path(self.directory).expanduser() if self.directory is not None else cache_dir()

    @staticmethod
    def file_name(context: Mapping[str, str]) -> str:
        digest = hashlib.sha256(json.dumps(context, sort_keys=True).encode()).hexdigest()[:16]
        return f"autotune-{context['kind']}-{digest}.json"

    def _warn(self, what: str, message: str) -> None:
        if what not in self._warned:
            self._warned.add(what)
            warnings.warn(message, AutotuneCacheWarning, stacklevel=4)

    def _read(self, path: Path, context: Mapping[str, str], warn: bool = True) -> Dict[str, dict]:
        """The entries of a cache file; ``{}`` (and one warning per file) when it is missing, corrupt or foreign."""
        try:
            with open(path, "rb") as f:
                data = json.loads(f.read().decode("utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as err:
            if warn:
                self._warn(str(path), f"mlx_deconv autotune: ignoring unreadable cache {path} ({err}); it will be rebuilt")
            return {}
        entries = data.get("entries") if isinstance(data, dict) else None
        if not isinstance(entries, dict) or data.get("context") != dict(context):
            if warn:
                self._warn(str(path), f"mlx_deconv autotune: ignoring cache {path}: not this device's, MLX's "
                                      f"or package version's tuning file; it will be rebuilt")
            return {}
        return {k: e for k, e in entries.items() if _valid_entry(e)}

    def _table(self, context: Mapping[str, str]) -> Dict[str, dict]:
        """This context's entries, read from disk the first time."""
        name = self.file_name(context)
        if name not in self._tables:
            folder = self._dir()
            entries = {}
            if folder is not None and folder.exists():
                if _private_dir(folder):
                    entries = self._read(folder / name, context)
                else:
                    self._warn(str(folder), f"mlx_deconv autotune: {folder} cannot be created or other users can "
                                            f"write to it; tuned choices are kept in memory only")
            self._tables[name] = entries
        return self._tables[name]

    def _save(self, context: Mapping[str, str], key: str, entry: dict) -> None:
        """Merges ``entry`` into the file under the lock and replaces it atomically; memory only on failure."""
        folder = self._dir()
        if folder is None or not _private_dir(folder, create=True):
            if folder is not None:
                self._warn(str(folder), f"mlx_deconv autotune: {folder} cannot be created or other users can "
                                        f"write to it; tuned choices are kept in memory only")
            return
        path = folder / self.file_name(context)
        try:
            with _file_lock(path.with_suffix(".lock")) as locked:
                if not locked:
                    return  # another process holds it too long: this entry stays in memory
                entries = self._read(path, context, warn=False)
                entries[key] = entry
                fd, tmp = tempfile.mkstemp(dir=folder, prefix=".autotune-", suffix=".tmp")
                try:
                    with os.fdopen(fd, "w", encoding="utf-8") as f:
                        json.dump(dict(context=dict(context), entries=entries), f, indent=1, sort_keys=True)
                        f.flush()
                        os.fsync(f.fileno())
                    os.replace(tmp, path)
                except BaseException:
                    with contextlib.suppress(OSError):
                        os.unlink(tmp)
                    raise
        except OSError as err:
            if err.errno not in (errno.ENOSPC, errno.EACCES, errno.EROFS, errno.EPERM):
                self._warn("write " + str(path), f"mlx_deconv autotune: could not write {path} ({err})")

    def lookup(self, sig: Signature, context: Mapping[str, str]) -> Optional[dict]:
        """The cached entry of ``sig``, or None."""
        with self._lock:
            return self._table(context).get(sig.key())

    def choose(self, sig: Signature, context: Mapping[str, str], names: List[str], rule: str,
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
            entry = self._choose(sig, context, names, rule, make_fns)
            if self.met is not None:
                self.met.append(entry)
            return entry

    def _choose(self, sig: Signature, context: Mapping[str, str], names: List[str], rule: str, make_fns) -> dict:
        key = sig.key()
        loaded = self.file_name(context) in self._tables
        entry = self._table(context).get(key)
        if entry is not None and entry["choice"] in names:
            self.stats["memory_hits" if loaded else "disk_hits"] += 1
            return entry
        folder = self._dir()
        if folder is not None and loaded and _private_dir(folder):
            # Another process may have tuned it since this one read the file.
            entry = self._read(folder / self.file_name(context), context, warn=False).get(key)
            if entry is not None and entry["choice"] in names:
                self._tables[self.file_name(context)][key] = entry
                self.stats["disk_hits"] += 1
                return entry
        fns = {n: f for n, f in make_fns().items() if n in names}
        seconds = {n: float(s) for n, s in self.timer(fns).items() if n in fns}
        self.stats["timed"] += 1
        choice = min(seconds, key=seconds.get) if seconds else rule
        entry = dict(choice=choice, rule=rule, seconds=seconds, signature=asdict(sig),
                     tuned=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        self._table(context)[key] = entry
        self._save(context, key, entry)
        return entry

    def clear(self) -> List[Path]:
        """Forgets every choice in memory and deletes this directory's tuning files; returns them."""
        global _generation
        with self._lock:
            self._tables.clear()
            _generation += 1
            folder = self._dir()
            removed = []
            if folder is not None and folder.is_dir():
                for path in sorted([*folder.glob("autotune-*"), *folder.glob(".autotune-*.tmp")]):
                    with contextlib.suppress(OSError):
                        path.unlink()
                        removed.append(path)
            return removed


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


def _timed_calls(op: str, geom, stream: mx.Stream, dtype, mode: str,
                 runners: Mapping[str, Callable]) -> Dict[str, Callable[[], object]]:
    """Random data of the call's shape and, per backend, a function computing the op (or its gradients) on it."""
    kx, kw = mx.random.split(mx.random.key(0))
    with mx.stream(stream):
        x = mx.random.normal((geom.batch, geom.length, geom.in_channels), key=kx).astype(dtype)
        w = mx.random.normal((geom.out_channels, geom.kernel_size, geom.in_channels // geom.groups),
                             key=kw).astype(dtype)
        mx.eval(x, w)
    fns = {}
    for name, run in runners.items():
        def forward(x, w, run=run):
            with mx.stream(stream):
                return run(x, w)
        if mode == "train":
            grad = mx.grad(lambda x, w, f=forward: f(x, w).astype(mx.float32).sum(), argnums=(0, 1))
            fns[name] = lambda grad=grad: grad(x, w)
        else:
            fns[name] = lambda f=forward: f(x, w)
    return fns


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
    return _tuner.choose(sig, device_context(stream), list(names), rule,
                         lambda: _timed_calls(op, timing_geometry(geom), stream, dtype, mode, runners))


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
    return [rule, f"autotune: {state}; {count} tuned signature(s) for this device in {_tuner._dir()}"]


def runners(geom, stream: mx.Stream, names: List[str]) -> Dict[str, Callable]:
    """``{name: fn(x, w) -> y}`` for the backends ``names``, compiled as ``functional`` compiles a real call."""
    from . import backends, functional  # late: functional imports this module

    op = backends.op_of(geom)
    small = geom.batch * geom.output_length * geom.out_channels <= functional.COMPILE_MAX_OUTPUT
    found = {}
    for name in names:
        record = backends.BACKENDS[name]

        def call(x, w, run=record.run(op)):
            with mx.stream(stream):
                return run(x, w, None, geom)
        found[name] = mx.compile(call) if small and record.compilable else call
    return found


def tuned_backend(geom, stream: mx.Stream, dtype=mx.float32, backward: bool = False) -> dict:
    """The tuned entry for one call, timing it now unless it is cached (``bench``'s "tuned" column).

    Args:
        geom: a :class:`~mlx_deconv.geometry.Geometry` (``conv_transpose1d``) or
            :class:`~mlx_deconv.geometry.Conv1dGeometry` (``conv1d``).
        stream (mx.Stream): where it runs.
        dtype: the input's dtype. Default: ``mx.float32``.
        backward (bool): time forward + backward. Default: ``False``.

    Returns:
        dict: ``choice`` (the tuned backend), ``rule`` (what the rule picks),
        ``seconds`` (median per timed backend), ``signature``.
    """
    from . import backends

    names = backends.usable_backends(geom, stream)
    mode = "train" if backward else "forward"
    try:
        rule = backends.resolve_backend("auto", geom, stream)
    except ValueError:  # the rule names a backend without this op's path yet: the first one with it
        rule = names[0]
    if len(names) == 1:  # nothing to choose between: no timing, nothing to remember
        return dict(choice=names[0], rule=rule, seconds={},
                    signature=asdict(signature(backends.op_of(geom), geom, stream, dtype, mode)))
    return tune(backends.op_of(geom), geom, stream, dtype, names=names, rule=rule,
                runners=runners(timing_geometry(geom), stream, names), mode=mode)


def speedup(entry: dict) -> Optional[float]:
    """How many times faster the tuned choice ran than the rule's, or None if the rule's was not timed."""
    seconds = entry["seconds"]
    if entry["rule"] not in seconds or entry["choice"] not in seconds:
        return None
    return seconds[entry["rule"]] / seconds[entry["choice"]]


def table(entries: List[dict]) -> str:
    """A Markdown table of tuned entries: signature, the rule's choice, the tuned one, times, speed-up."""
    names = sorted({n for e in entries for n in e["seconds"]}, key=lambda n: ("builtin", "gemm", "winograd",
                                                                              "metal").index(n)
                   if n in ("builtin", "gemm", "winograd", "metal") else 9)
    head = ["signature", "rule", "tuned"] + [f"{n} ms" for n in names] + ["tuned / rule speed-up"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for e in entries:
        sig = Signature(**e["signature"]).key() if isinstance(e.get("signature"), dict) else "?"
        up = speedup(e)
        cells = [sig, e["rule"], e["choice"]]
        cells += [f"{e['seconds'][n] * 1e3:.2f}" if n in e["seconds"] else "—" for n in names]
        cells.append("—" if up is None else f"{up:.2f}x")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _hifigan_v1():
    """HiFi-GAN V1's generator (random weights): the shapes are what tuning needs."""
    from .hifigan import HiFiGAN, HiFiGANConfig

    return HiFiGAN(HiFiGANConfig(resblock="1", upsample_rates=(8, 8, 2, 2), upsample_kernel_sizes=(16, 16, 4, 4),
                                 upsample_initial_channel=512, resblock_kernel_sizes=(3, 7, 11),
                                 resblock_dilation_sizes=((1, 3, 5),) * 3))


#: ``tune --model NAME``: a factory and a sample input shape (N, frames, mel bands) per name.
MODELS = {"hifigan": (_hifigan_v1, (1, 100, 80))}


def _model(spec: str):
    """``hifigan`` or ``pkg.mod:fn`` -> ``fn()``, an ``mlx.nn.Module``."""
    import importlib

    if spec in MODELS:
        return MODELS[spec][0]()
    module, _, attr = spec.partition(":")
    if not module or not attr:
        raise ValueError(f"--model must be one of {sorted(MODELS)} or 'package.module:factory', got {spec!r}")
    factory = getattr(importlib.import_module(module), attr, None)
    if not callable(factory):
        raise ValueError(f"--model {spec!r}: {attr!r} is not a callable in {module}")
    return factory()


def tune_model(model, sample: mx.array, backward: bool = False) -> List[dict]:
    """Runs ``model(sample)`` (and its gradients if ``backward``) with autotuning on; returns the entries met."""
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


def main(args) -> None:
    """``python -m mlx_deconv tune``: tune the bench shapes or a model's layers and print the table."""
    from .devices import resolve_stream

    if args.clear:
        removed = _tuner.clear()
        folder = _tuner._dir()
        print(f"removed {len(removed)} file(s) from {folder}" if removed else f"nothing to remove in {folder}")
        return
    stream = resolve_stream(args.stream)
    dtype = getattr(mx, args.dtype)
    if args.model:
        if args.input_shape:
            try:
                shape = tuple(int(v) for v in args.input_shape.split(","))
            except ValueError:
                raise SystemExit(f"--input-shape must be integers separated by commas, got {args.input_shape!r}")
        elif args.model in MODELS:
            shape = MODELS[args.model][1]
        else:
            raise SystemExit("tune --model needs --input-shape, e.g. --input-shape 1,100,80")
        device = mx.default_device()
        mx.set_default_device(stream.device)  # the model's layers run on the default stream
        try:
            entries = tune_model(_model(args.model), mx.random.normal(shape).astype(dtype), args.backward)
        finally:
            mx.set_default_device(device)
        what = f"the conv layers of {args.model} on an input of shape {shape}"
    else:
        from . import bench
        from .validation import conv_geometry

        shapes = bench.SHAPES if not args.shapes else [s for s in bench.SHAPES if s.name in args.shapes]
        if not shapes:
            raise SystemExit(f"--shapes: none of {args.shapes} is one of {[s.name for s in bench.SHAPES]}")
        entries = []
        for s in shapes:
            geom, _ = conv_geometry((s.batch, s.length, s.in_channels),
                                    (s.out_channels, s.kernel_size, s.in_channels // s.groups), **s.kwargs())
            entries.append(tuned_backend(geom, stream, dtype, args.backward))
            print(f"tuned {s.name}", file=sys.stderr)
        what = "the bench shapes"
    kind = "forward+backward" if args.backward else "forward"
    print(f"\nautotuned {what}, {kind}, {args.dtype}, {stream}; cache {_tuner._dir()}\n")
    print(table(entries) if entries else "no conv_transpose1d/conv1d call with backend='auto' was met")
