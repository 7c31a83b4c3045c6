"""The autotuning cache on disk: one JSON file of tuned entries per device context.

A file holds the entries tuned for one device context (device kind and name,
platform, BLAS library, MLX and package versions, the package's code:
:func:`device_context`), keyed by
:meth:`Signature.key`, in :func:`cache_dir`. Writes merge with what other
processes wrote, under an advisory lock, into a temporary file renamed over the
old one. A corrupt or foreign file is ignored with one warning and rewritten; a
directory other users can write to is not trusted (memory only).

:mod:`mlx_deconv.autotune` decides what to time and when; this module only
stores and reads its entries.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import json
import os
import platform
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Mapping, Optional

import mlx.core as mx

from ..runtime import blas
from ..version import __version__
from ..runtime.devices import cpu_blas
from ..runtime.cache_folder import cache_dir
from ..runtime.trust import why_not_own

FORMAT = "mlx_deconv-autotune-1"


class AutotuneCacheWarning(UserWarning):
    """A cache file or directory was unusable; tuning continues in memory."""


def device_context(stream: mx.Stream) -> Dict[str, str]:
    """What a tuned choice is only valid for: device kind and name, platform, MLX and package versions."""
    device = stream.device
    if device.type == mx.DeviceType.cpu:
        kind = "cpu"
    else:
        kind = "metal" if mx.metal.is_available() else "gpu"
    try:
        info = mx.device_info(device)
    except Exception:  # older MLX: the name is a refinement, the kind and platform still separate devices
        info = {}
    # The BLAS under MLX, down to the library and its kernels, sets the matmul rate (docs/performance.md):
    # a choice made behind one is not valid behind another. Nor is one timed on other code of ours.
    kind_of_blas = cpu_blas(stream) or ""
    return dict(format=FORMAT, kind=kind, name=str(info.get("device_name", "")),
                architecture=str(info.get("architecture", platform.machine())), platform=sys.platform,
                blas=kind_of_blas, blas_library=blas.identity() if kind_of_blas == "optimized" else "",
                mlx=mx.__version__, mlx_deconv=__version__, code=code_fingerprint())


@functools.lru_cache(maxsize=1)
def code_fingerprint() -> str:
    """The package's :func:`source_digest`, once per process: choices timed on other code are timed again."""
    return source_digest(Path(__file__).resolve().parent.parent)  # the whole package


def source_digest(root: Path) -> str:
    """A digest of the ``.py`` and ``.metal`` files under ``root``.

    Args:
        root: a folder.

    Returns:
        str: 16 hex digits of a SHA-256 over each file's relative path, length and content, in path order.
    """
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        if path.suffix in (".py", ".metal") and path.is_file():
            try:
                content = path.read_bytes()
            except OSError:  # unreadable: its name still counts
                content = b""
            digest.update(f"{path.relative_to(root)}\0{len(content)}\0".encode())
            digest.update(content)
    return digest.hexdigest()[:16]


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


def file_name(context: Mapping[str, str]) -> str:
    """The cache file of one device context (a digest of the whole context)."""
    digest = hashlib.sha256(json.dumps(context, sort_keys=True).encode()).hexdigest()[:16]
    return f"autotune-{context['kind']}-{digest}.json"


def _valid_entry(entry) -> bool:
    """An entry as :meth:`mlx_deconv.tuning.tuner.Tuner.measured` writes it (a hand-edited or foreign one is dropped)."""
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


def _retry(attempt, deadline: float) -> bool:
    """Calls ``attempt`` every 10 ms until it raises no OSError (True), or until ``deadline`` passes (False)."""
    while True:
        try:
            attempt()
            return True
        except OSError:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)


def _os_lock():
    """``(lock, unlock)`` of an open file's first byte with the OS's own advisory lock, or None without one."""
    try:
        import fcntl
    except ImportError:
        fcntl = None
    if fcntl is not None:  # POSIX
        return (lambda fd: fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB),
                lambda fd: fcntl.flock(fd, fcntl.LOCK_UN))
    try:
        import msvcrt
    except ImportError:
        return None

    def unlock(fd):
        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
    return lambda fd: msvcrt.locking(fd, msvcrt.LK_NBLCK, 1), unlock  # Windows


@contextlib.contextmanager
def _file_lock(path: Path, timeout: float = 30.0) -> Iterator[bool]:
    """An exclusive advisory lock on ``path``; yields False if it could not be had in time.

    POSIX: ``fcntl.flock``. Windows: ``msvcrt.locking``. Elsewhere: the lock
    file's exclusive creation, broken when older than ``timeout``.
    """
    deadline = time.monotonic() + timeout
    os_lock = _os_lock()
    if os_lock is not None:
        lock, unlock = os_lock
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            if not _retry(lambda: lock(fd), deadline):
                yield False
                return
            try:
                yield True
            finally:
                unlock(fd)
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
    """True when ``path`` is safe to read and write: ours, not writable by others, under no folder they may write.

    ``create``: make it first (mode 0700) if missing; else a missing one is False.
    """
    try:
        if create:
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
        return why_not_own(path) is None  # ours, and under no folder another user may write
    except OSError:  # missing, or not ours to see
        return False


class TuningCache:
    """The tuning files of one directory; warns once per unusable file or folder.

    Args:
        directory (path, optional): the folder; ``None`` means :func:`cache_dir`
            at each use, ``False`` none at all (nothing is read or written).
    """

    def __init__(self, directory=None):
        self.directory = directory
        self._warned: set = set()

    def folder(self) -> Optional[Path]:
        """The folder in use now, or None when there is none."""
        if self.directory is False:
            return None
        return Path(self.directory).expanduser() if self.directory is not None else cache_dir()

    def _warn(self, what: str, message: str) -> None:
        if what not in self._warned:
            self._warned.add(what)
            warnings.warn(message, AutotuneCacheWarning, stacklevel=4)

    def _warn_unsafe(self, folder: Path) -> None:
        self._warn(str(folder), f"mlx_deconv autotune: {folder} cannot be created or other users can "
                                f"write to it; tuned choices are kept in memory only")

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

    def load(self, context: Mapping[str, str]) -> Dict[str, dict]:
        """The entries stored for ``context``; ``{}`` (with one warning) from an unsafe folder or a bad file."""
        folder = self.folder()
        if folder is None or not folder.exists():
            return {}
        if not _private_dir(folder):
            self._warn_unsafe(folder)
            return {}
        return self._read(folder / file_name(context), context)

    def reread(self, context: Mapping[str, str]) -> Dict[str, dict]:
        """The entries on disk now (another process may have written since :meth:`load`), without warnings."""
        folder = self.folder()
        if folder is None or not _private_dir(folder):
            return {}
        return self._read(folder / file_name(context), context, warn=False)

    def save(self, context: Mapping[str, str], key: str, entry: dict) -> None:
        """Merges ``entry`` into the file under the lock and replaces it atomically; nothing on failure."""
        folder = self.folder()
        if folder is None or not _private_dir(folder, create=True):
            if folder is not None:
                self._warn_unsafe(folder)
            return
        path = folder / file_name(context)
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

    def remove(self) -> List[Path]:
        """Deletes this folder's tuning files (and stray temporary ones); returns those deleted.

        The ``.lock`` files stay: deleting one that another process holds would let a third lock a new
        file of the same name while the second still writes."""
        folder = self.folder()
        removed = []
        if folder is not None and folder.is_dir():
            for path in sorted([*folder.glob("autotune-*.json"), *folder.glob(".autotune-*.tmp")]):
                with contextlib.suppress(OSError):
                    path.unlink()
                    removed.append(path)
        return removed
