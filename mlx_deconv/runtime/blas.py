"""An optimized CBLAS under MLX's CPU matmul on Linux.

MLX's Linux wheel links a reference BLAS that it bundles: one thread, a few
GFLOP/s. MLX calls ``cblas_sgemm`` by name, and the dynamic loader looks a
name up in the process's global scope before a library's own dependencies,
so an optimized CBLAS loaded globally (``RTLD_GLOBAL``) *before* MLX's shared
library serves every MLX matmul. :func:`load` does that when the package is
imported; after ``import mlx.core`` it is too late, and it says so once.

Where the library comes from, first found first:
    1. ``MLX_DECONV_BLAS=/path/to/lib.so`` (``MLX_DECONV_BLAS=0`` turns all of this off);
    2. a wheel in the environment that exports an unprefixed ``cblas_sgemm``
       (``pip install "mlx-deconv[blas]"`` brings Intel MKL's);
    3. the system's OpenBLAS (Debian and Ubuntu: ``libopenblas0-pthread``).
On a CPU that is not Intel's, MKL runs its AVX2 kernels, not its AVX-512 ones, so
there the system OpenBLAS is tried before MKL.

On macOS MLX multiplies with Accelerate and nothing is loaded. A library
that is missing or fails to load changes nothing: MLX keeps its own BLAS.
"""

from __future__ import annotations

import ctypes
import os
import stat
import sys
import time
import warnings
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

#: Environment switch: a library path, or ``0`` to leave MLX's own BLAS alone.
ENV = "MLX_DECONV_BLAS"
#: Wheels whose libraries export unprefixed CBLAS symbols: (distribution, file name prefix). cmeel's
#: OpenBLAS loads only where a ``libgfortran.so.5`` is installed; where it is not, the next is tried.
WHEELS: Tuple[Tuple[str, str], ...] = (("mkl", "libmkl_rt.so"), ("cmeel-openblas", "libopenblas.so"))
#: System OpenBLAS, by soname, looked for in the system's own library folders only: the loader's
#: search path would also read ``LD_LIBRARY_PATH``, whose empty entries mean the current folder.
SYSTEM: Tuple[str, ...] = ("libopenblas.so.0", "libopenblas.so")
#: Thread-count variables a user may set; when one is, we set no count ourselves.
THREAD_VARIABLES: Tuple[str, ...] = ("MKL_NUM_THREADS", "MKL_DOMAIN_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                     "OMP_NUM_THREADS")
#: ``MKL_DOMAIN_BLAS`` of mkl_types.h.
MKL_DOMAIN_BLAS = 1


@dataclass
class _State:
    attempted: bool = False
    loaded: Optional[str] = None  # path of the library we loaded
    handle: Optional[ctypes.CDLL] = None
    notes: List[str] = field(default_factory=list)  # why nothing was loaded, or what went wrong
    too_late: bool = False
    threads: Optional[int] = None  # BLAS threads we set, or None when left alone
    library: Optional[str] = None  # the library's own account of itself: version, kernels


_STATE = _State()


def _private_enough(path: str) -> bool:
    """True when neither the library ``path`` resolves to nor its folder could be swapped by another local user.

    Both must belong to this user or to root, and neither may be writable by group or others
    (a sticky folder such as ``/tmp`` lets another user own, and so replace, a file in it).
    """
    real = os.path.realpath(path)
    uid = os.getuid() if hasattr(os, "getuid") else None
    for p in (real, os.path.dirname(real)):
        try:
            info = os.stat(p)
        except OSError:
            return False
        if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            return False
        if uid is not None and info.st_uid not in (uid, 0):
            return False
    return True


def _exports_sgemm(handle: ctypes.CDLL) -> bool:
    try:
        handle.cblas_sgemm
    except AttributeError:
        return False
    return True


def _wheel_candidates() -> List[str]:
    """Paths of CBLAS libraries that installed wheels carry."""
    from importlib import metadata

    found = []
    for dist, prefix in WHEELS:
        try:
            files = metadata.files(dist) or []
        except metadata.PackageNotFoundError:
            continue
        for f in files:
            if f.name.startswith(prefix):
                found.append(os.path.realpath(str(f.locate())))
                break
    return found


def cpu_vendor() -> Optional[str]:
    """The CPU's vendor, as Linux reports it.

    Returns:
        str or None: ``"GenuineIntel"``, ``"AuthenticAMD"``, ...; None where
        ``/proc/cpuinfo`` has no ``vendor_id`` (not Linux, or an ARM CPU).
    """
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("vendor_id"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def _is_mkl(path: str) -> bool:
    return "mkl" in os.path.basename(path)


def _is_openblas(path: str) -> bool:
    return "openblas" in os.path.basename(path)


def order_candidates(wheels: List[str], system: List[str], vendor: Optional[str]) -> List[Tuple[str, str]]:
    """The order in which libraries are tried: wheels, then the system's OpenBLAS.

    MKL picks its kernels by CPU vendor and runs its AVX2 ones, not its AVX-512
    ones, on other vendors' CPUs (docs/performance.md), so there the system
    OpenBLAS goes before MKL.

    Args:
        wheels: paths of the libraries wheels carry.
        system: paths of the system's OpenBLAS.
        vendor: :func:`cpu_vendor`.

    Returns:
        list: ``(origin, path)``, origin ``"wheel"`` or ``"system"``.
    """
    wheel_items = [("wheel", p) for p in wheels]
    system_items = [("system", p) for p in system]
    if vendor is not None and vendor != "GenuineIntel":
        mkl = [c for c in wheel_items if _is_mkl(c[1])]
        return [c for c in wheel_items if not _is_mkl(c[1])] + system_items + mkl
    return wheel_items + system_items


def system_library_folders() -> List[str]:
    """The folders the system installs shared libraries in (Debian's multiarch folder first)."""
    import sysconfig

    multiarch = sysconfig.get_config_var("MULTIARCH") or ""
    folders = [f"/usr/lib/{multiarch}", f"/lib/{multiarch}"] if multiarch else []
    return folders + ["/usr/lib64", "/lib64", "/usr/lib", "/lib", "/usr/local/lib"]


def system_openblas() -> List[str]:
    """Paths of the system's OpenBLAS, found by soname in :func:`system_library_folders` (a few ``stat`` calls)."""
    found, seen = [], set()
    for folder in system_library_folders():
        for soname in SYSTEM:
            path = os.path.join(folder, soname)
            if os.path.isfile(path) and os.path.realpath(path) not in seen:  # one file, several links to it
                seen.add(os.path.realpath(path))
                found.append(path)
    return found


def _candidates() -> List[Tuple[str, str]]:
    """``(origin, path or soname)`` in the order they are tried."""
    chosen = os.environ.get(ENV, "").strip()
    if chosen:
        return [(f"{ENV}", chosen)]
    return order_candidates(_wheel_candidates(), system_openblas(), cpu_vendor())


def _set_threads(handle: ctypes.CDLL) -> Optional[int]:
    """One thread per matmul, unless the user chose a count in the environment.

    The gemm backend already spreads a call's blocks over one CPU stream per
    core; BLAS threads on top of those compete for the same cores and lose
    more to synchronising small matmuls than they win (docs/performance.md).
    """
    if any(v in os.environ for v in THREAD_VARIABLES):
        return None
    # MKL: the BLAS domain only. PyTorch sizes its own thread pool from mkl_get_max_threads(),
    # which resolves to this library once it is global: a global count of 1 would make it single-threaded.
    domain_setter = getattr(handle, "MKL_Domain_Set_Num_Threads", None)
    if domain_setter is not None:  # returns 1 when the setting took
        return 1 if domain_setter(ctypes.c_int(1), ctypes.c_int(MKL_DOMAIN_BLAS)) == 1 else None
    setter = getattr(handle, "openblas_set_num_threads", None)
    if setter is not None:
        setter(ctypes.c_int(1))
        return 1
    return None


def _describe(handle: ctypes.CDLL) -> Optional[str]:
    """The loaded library's version and kernels, as it reports them (OpenBLAS and MKL), or None."""
    config = getattr(handle, "openblas_get_config", None)
    if config is not None:
        config.restype = ctypes.c_char_p
        core = getattr(handle, "openblas_get_corename", None)
        text = (config() or b"").decode(errors="replace").strip()
        if core is not None:
            core.restype = ctypes.c_char_p
            name = (core() or b"?").decode(errors="replace")
            text += "" if name.lower() in text.lower() else f" (kernels: {name})"
        return text
    version = getattr(handle, "MKL_Get_Version_String", None)
    if version is not None:
        buffer = ctypes.create_string_buffer(256)
        version(buffer, ctypes.c_int(len(buffer)))
        return buffer.value.decode(errors="replace").strip()
    return None


def _advice(path: str) -> List[str]:
    """Notes a user can act on about the library just loaded.

    Args:
        path: the library's file.

    Returns:
        list of str: an ``OPENBLAS_CORETYPE`` that overrides OpenBLAS's own choice of
        kernels, and MKL on a CPU that is not Intel's.
    """
    notes = []
    forced = os.environ.get("OPENBLAS_CORETYPE", "").strip()
    if forced and _is_openblas(path):
        notes.append(f"OPENBLAS_CORETYPE={forced} in the environment chooses OpenBLAS's kernels; "
                     "unset it to let OpenBLAS detect this CPU")
    vendor = cpu_vendor()
    if _is_mkl(path) and vendor not in (None, "GenuineIntel"):
        notes.append(f"MKL runs its AVX2 kernels, not its AVX-512 ones, on this {vendor} CPU; a system OpenBLAS "
                     "(Debian/Ubuntu: apt install libopenblas0-pthread) may be faster here and is loaded first when present")
    return notes


def threads() -> Optional[int]:
    """BLAS threads per matmul of the loaded library, as set here or read from the environment; None if unknown."""
    if _STATE.loaded is None:
        return None
    if _STATE.threads is not None:
        return _STATE.threads
    own = ("OPENBLAS_NUM_THREADS",) if _is_openblas(_STATE.loaded) else ("MKL_NUM_THREADS",)
    for name in own + ("OMP_NUM_THREADS",):  # the library's own variable first, then OpenMP's
        value = os.environ.get(name, "").strip()
        if value.isdigit():
            return int(value)
    return None


def load() -> Optional[str]:
    """Loads an optimized CBLAS into the global scope before MLX, once per process.

    Returns:
        str or None: the path of the library loaded, or None when MLX keeps
        its own BLAS (macOS, switched off, none found, or MLX imported first).
    """
    if _STATE.attempted:
        return _STATE.loaded
    _STATE.attempted = True
    if not sys.platform.startswith("linux"):
        _STATE.notes.append("not Linux: MLX uses its platform BLAS (Accelerate on macOS)")
        return None
    if os.environ.get(ENV, "").strip() == "0":
        _STATE.notes.append(f"{ENV}=0: switched off")
        return None
    if "mlx.core" in sys.modules:
        _STATE.too_late = True
        _STATE.notes.append("mlx.core was imported before mlx_deconv: its BLAS was already bound")
        return None
    for origin, path in _candidates():
        if os.sep in path and not _private_enough(path):
            _STATE.notes.append(f"{origin} {path}: skipped, other users can write or own it or its folder")
            continue
        try:
            handle = ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
        except OSError as err:
            _STATE.notes.append(f"{origin} {path}: {err}")
            continue
        if not _exports_sgemm(handle):
            _STATE.notes.append(f"{origin} {path}: exports no cblas_sgemm")
            continue
        # A soname (given in the environment) is named by the file it resolved to.
        address = ctypes.cast(handle.cblas_sgemm, ctypes.c_void_p).value
        _STATE.loaded, _STATE.handle = _file_of(address) or (os.path.realpath(path) if os.sep in path else path), handle
        _STATE.threads = _set_threads(handle)
        _STATE.library = _describe(handle)
        _STATE.notes.extend(_advice(_STATE.loaded))
        return _STATE.loaded
    if os.environ.get(ENV, "").strip():
        warnings.warn(f"{ENV}={os.environ[ENV]!r} could not be used ({'; '.join(_STATE.notes)}); "
                      f"MLX keeps its own BLAS", RuntimeWarning, stacklevel=3)
    return None


class _DlInfo(ctypes.Structure):
    _fields_ = [("dli_fname", ctypes.c_char_p), ("dli_fbase", ctypes.c_void_p),
                ("dli_sname", ctypes.c_char_p), ("dli_saddr", ctypes.c_void_p)]


def _file_of(address: Optional[int]) -> Optional[str]:
    """The real path of the mapped file that holds ``address``, or None where that cannot be told."""
    if not address:
        return None
    info = _DlInfo()
    try:
        dladdr = ctypes.CDLL(None).dladdr  # in libc from glibc 2.34, in libdl before
    except (AttributeError, OSError):
        return None
    dladdr.argtypes = [ctypes.c_void_p, ctypes.POINTER(_DlInfo)]
    if dladdr(address, ctypes.byref(info)) and info.dli_fname:
        return os.path.realpath(info.dli_fname.decode())
    return None


def sgemm_provider() -> Optional[str]:
    """The file of the ``cblas_sgemm`` that MLX calls, as the process's symbol scope resolves it.

    Returns:
        str or None: a path; None where it cannot be told (not Linux, or no
        ``cblas_sgemm`` in the global scope and no MLX BLAS found in the
        process's mappings).
    """
    if not sys.platform.startswith("linux"):
        return None
    import mlx.core  # noqa: F401  (MLX's libraries must be mapped to be found)

    try:
        address = ctypes.cast(ctypes.CDLL(None).cblas_sgemm, ctypes.c_void_p).value
    except AttributeError:
        address = None
    found = _file_of(address)
    if found is not None:
        return found
    # Nothing global: MLX binds the BLAS its wheel bundles, a dependency of its own library.
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                path = line.split()[-1]
                if "/mlx" in path and os.path.basename(path).startswith("libblas"):
                    return path
    except OSError:
        pass
    return None


def matmul_rate(size: Tuple[int, int, int] = (2048, 512, 2048), repeat: int = 5) -> float:
    """MLX's CPU matmul rate in GFLOP/s, the median of ``repeat`` runs after one warm-up."""
    import mlx.core as mx

    m, k, n = size
    with mx.stream(mx.cpu):
        a, b = mx.random.normal((m, k)), mx.random.normal((k, n))
        mx.eval(a, b)
        mx.eval(a @ b)
        times = []
        for _ in range(repeat):
            start = time.perf_counter()
            mx.eval(a @ b)
            times.append(time.perf_counter() - start)
    return 2 * m * k * n / sorted(times)[len(times) // 2] / 1e9


def blas_info(measure: bool = True) -> Dict[str, object]:
    """What serves MLX's CPU matmul in this process.

    Args:
        measure (bool): also time MLX's matmul (a fraction of a second).
            Default: ``True``.

    Returns:
        dict: ``provider`` (the file whose ``cblas_sgemm`` MLX calls, resolved
        from the symbol scope, or None where that cannot be told),
        ``optimized`` (True when it is a library we loaded), ``loaded`` (what
        :func:`load` loaded, or None), ``library`` (its version and kernels as
        it reports them, or None), ``threads`` (BLAS threads we set, None
        when left to the library or the environment), ``notes`` (why nothing
        was loaded, or what failed) and, when measured, ``matmul_gflops``.
    """
    provider = sgemm_provider()
    loaded = _STATE.loaded
    optimized = bool(loaded and provider and os.path.realpath(provider) == os.path.realpath(loaded))
    out: Dict[str, object] = dict(provider=provider, optimized=optimized, loaded=loaded,
                                  library=_STATE.library if optimized else None, threads=_STATE.threads, notes=list(_STATE.notes))
    if measure:
        out["matmul_gflops"] = round(matmul_rate(), 1)
    return out


def identity() -> str:
    """What a measurement behind the loaded library is valid for.

    Returns:
        str: the library's file name, version and kernels, and its threads per
        matmul; ``""`` when none is loaded.
    """
    if _STATE.loaded is None:
        return ""
    return f"{os.path.basename(_STATE.loaded)} [{_STATE.library or '?'}] threads={threads()}"


def optimized() -> bool:
    """True when this process's MLX CPU matmul runs on a library :func:`load` loaded."""
    return _STATE.loaded is not None


def warn_if_too_late() -> None:
    """One warning, when MLX came first on Linux and an optimized BLAS was to be had."""
    if not _STATE.too_late or os.environ.get(ENV, "").strip() == "0":
        return
    if not _wheel_candidates() and not os.environ.get(ENV) and not system_openblas():
        return  # nothing we could have loaded: no noise
    warnings.warn(
        "mlx_deconv: mlx.core was imported before mlx_deconv, so MLX's CPU matmul keeps the reference "
        "BLAS its wheel bundles (its matmuls measured 2-23x slower). Import mlx_deconv first, or start Python with "
        f"{ENV}=0 to silence this.", RuntimeWarning, stacklevel=3)
