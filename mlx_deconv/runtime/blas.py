"""An optimized BLAS under MLX's CPU matmul on Linux, whatever was imported first.

One concept in one module (about 700 lines): choosing, checking, installing and reporting the BLAS
under MLX are one decision whose steps share their state and their refusals; the ELF reading that writes
the slots is apart, in :mod:`.jump_slots`.

MLX's Linux wheel multiplies with the reference BLAS it bundles (one thread, a
few GFLOP/s). ``libmlx.so`` calls ``cblas_sgemm`` (and ``cblas_dgemm``,
``cblas_cgemm``) through jump slots that the loader filled when ``mlx.core``
was imported. :func:`load` opens an optimized library privately
(``RTLD_LOCAL``), checks it, and writes the address of its function into each
slot (:mod:`.jump_slots`), so it works after ``mlx.core``, ``mlx.nn`` or
``mlx_audio`` were imported, and it works for a library whose symbols are
prefixed (``scipy_cblas_sgemm``). Only ``libmlx.so``'s slots change: nothing
enters the process's global symbol scope.

It leaves the process alone, with one warning, when ``libmlx.so`` is not a
build it recognises: no jump slot for ``cblas_sgemm``, or a slot that does not
hold the bundled library's ``cblas_sgemm``. It never changes a result: a
library is called through ctypes and checked before any slot points at it,
and MLX's own matmul is checked after; on a difference beyond rounding the
slots are restored.

Where the library comes from, first found first (docs/blas.md gives the measured reasons):
    1. ``MLX_DECONV_BLAS=/path/to/lib.so`` (``MLX_DECONV_BLAS=0`` turns all of this off);
    2. on an Intel CPU, Intel MKL from the ``[mkl]`` extra;
    3. ``scipy-openblas32`` (a dependency on Linux x86-64), then cmeel's OpenBLAS wheel;
    4. the system's OpenBLAS (Debian and Ubuntu: ``libopenblas0-pthread``);
    5. on other CPUs, MKL (it runs its AVX2 kernels there, not its AVX-512 ones).

On macOS MLX multiplies with Accelerate and nothing is done.
"""

from __future__ import annotations

import ctypes
import itertools
import os
import sys
import threading
import time
import warnings
from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Optional, Tuple

from .trust import why_untrusted

#: Environment switch: a library path or soname, or ``0`` to leave MLX's own BLAS alone.
ENV = "MLX_DECONV_BLAS"
#: The CBLAS functions ``libmlx.so`` imports (``nm -D --undefined-only``, mlx-cpu 0.32.4), with the
#: dtype MLX multiplies with each. Its LAPACK imports (``sgesdd_``, ...) are left to the bundled LAPACK.
SYMBOLS: Tuple[Tuple[str, str], ...] = (("cblas_sgemm", "float32"), ("cblas_dgemm", "float64"),
                                        ("cblas_cgemm", "complex64"))
#: Without this one nothing is done.
REQUIRED = "cblas_sgemm"
#: Symbol prefixes a candidate library may export the CBLAS functions under.
PREFIXES: Tuple[str, ...] = ("", "scipy_")
#: Wheels that carry a CBLAS: (distribution, importable package or None, file name prefix, symbol prefix).
#: cmeel's OpenBLAS loads only where a ``libgfortran.so.5`` is installed; where it is not, the next is tried.
WHEELS: Tuple[Tuple[str, Optional[str], str, str], ...] = (
    ("mkl", None, "libmkl_rt.so", ""),
    ("scipy-openblas32", "scipy_openblas32", "libscipy_openblas", "scipy_"),
    ("cmeel-openblas", None, "libopenblas.so", ""),
)
#: System OpenBLAS, by soname, looked for in the system's own library folders only: the loader's
#: search path would also read ``LD_LIBRARY_PATH``, whose empty entries mean the current folder.
SYSTEM: Tuple[str, ...] = ("libopenblas.so.0", "libopenblas.so")
#: Thread-count variables a user may set; when one is, we set no count ourselves.
THREAD_VARIABLES: Tuple[str, ...] = ("MKL_NUM_THREADS", "MKL_DOMAIN_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                     "OMP_NUM_THREADS")
#: ``MKL_DOMAIN_BLAS`` of mkl_types.h.
MKL_DOMAIN_BLAS = 1
#: cblas.h's enums.
_ROW_MAJOR, _NO_TRANS, _TRANS = 101, 111, 112


@dataclass
class _Candidate:
    origin: str  # "MLX_DECONV_BLAS", "wheel" or "system"
    path: str  # a file, or a soname given in the environment
    prefix: Optional[str] = None  # symbol prefix; None: found out once loaded


@dataclass
class _Target:
    """``libmlx.so``'s jump slots and what they held before we wrote them."""

    path: str
    slots: Dict[str, object]  # symbol -> jump_slots.JumpSlot
    original: Dict[str, int]  # symbol -> the bundled library's function address
    bundled: str  # the bundled BLAS's file


@dataclass
class _State:
    attempted: bool = False
    loaded: Optional[str] = None  # path of the library whose functions the slots hold
    handle: Optional[ctypes.CDLL] = None  # kept for the process's life: the slots point into it
    patched: Dict[str, str] = field(default_factory=dict)  # slot -> the library's symbol written into it
    notes: List[str] = field(default_factory=list)  # why nothing was done, or what went wrong
    threads: Optional[int] = None  # BLAS threads we set, or None when left alone
    library: Optional[str] = None  # the library's own account of itself: version, kernels
    target: Optional[_Target] = None
    warned: bool = False


_STATE = _State()
_LOCK = threading.Lock()


def _symbol(handle: ctypes.CDLL, name: str) -> Optional[int]:
    """The address of ``name`` in the library ``handle``, or None."""
    try:
        return ctypes.cast(getattr(handle, name), ctypes.c_void_p).value
    except AttributeError:
        return None


def _prefix_of(handle: ctypes.CDLL) -> Optional[str]:
    """The prefix under which ``handle`` exports ``cblas_sgemm``, or None when it exports none."""
    for prefix in PREFIXES:
        if _symbol(handle, prefix + REQUIRED) is not None:
            return prefix
    return None


def _wheel_candidate(dist: str) -> Optional[_Candidate]:
    """The CBLAS library the installed wheel ``dist`` (a name of :data:`WHEELS`) carries, or None."""
    from importlib import util

    _, package, file_prefix, symbol_prefix = next(w for w in WHEELS if w[0] == dist)
    if package is not None:  # the package's own folder: cheaper than importing importlib.metadata
        spec = util.find_spec(package)
        for folder in list(spec.submodule_search_locations or []) if spec else []:
            lib = os.path.join(folder, "lib")
            names = sorted(n for n in os.listdir(lib) if n.startswith(file_prefix)) if os.path.isdir(lib) else []
            if names:
                return _Candidate("wheel", os.path.realpath(os.path.join(lib, names[0])), symbol_prefix)
        return None
    from importlib import metadata

    try:
        files = metadata.files(dist) or []
    except metadata.PackageNotFoundError:
        return None
    for f in files:
        if f.name.startswith(file_prefix):
            return _Candidate("wheel", os.path.realpath(str(f.locate())), symbol_prefix)
    return None


def _wheel_candidates() -> List[_Candidate]:
    """The CBLAS libraries that installed wheels carry, in :data:`WHEELS`' order."""
    return [c for c in (_wheel_candidate(w[0]) for w in WHEELS) if c is not None]


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


def order_sources(vendor: Optional[str]) -> List[str]:
    """The order in which the sources of a library are tried: wheels by name (:data:`WHEELS`), and ``"system"``.

    MKL goes first on an Intel CPU; elsewhere last, since it runs its AVX2
    kernels, not its AVX-512 ones, on other vendors' CPUs, and
    scipy-openblas32 measured as fast or faster there (docs/blas.md). Among
    the rest, wheels go before the system's OpenBLAS.

    Args:
        vendor: :func:`cpu_vendor`.

    Returns:
        list of str: e.g. ``["scipy-openblas32", "cmeel-openblas", "system", "mkl"]``.
    """
    others = [w[0] for w in WHEELS if w[0] != "mkl"] + ["system"]
    return ["mkl"] + others if vendor == "GenuineIntel" else others + ["mkl"]


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


def _candidates() -> Iterator[_Candidate]:
    """The libraries to try, in order, each source looked for only when reached (MKL's costs an import)."""
    chosen = os.environ.get(ENV, "").strip()
    if chosen:
        yield _Candidate(ENV, chosen)
        return
    for source in order_sources(cpu_vendor()):
        if source == "system":
            yield from (_Candidate("system", path, "") for path in system_openblas())
        else:
            found = _wheel_candidate(source)
            if found is not None:
                yield found


def _set_threads(handle: ctypes.CDLL, prefix: str = "") -> Optional[int]:
    """One thread per matmul, unless the user chose a count in the environment.

    The gemm backend already spreads a call's blocks over one CPU stream per
    core; BLAS threads on top of those compete for the same cores and lose
    more to synchronising small matmuls than they win (docs/performance.md).
    """
    if any(v in os.environ for v in THREAD_VARIABLES):
        return None
    # MKL: the BLAS domain only, so that MKL's other domains keep their own counts.
    domain_setter = getattr(handle, "MKL_Domain_Set_Num_Threads", None)
    if domain_setter is not None:  # returns 1 when the setting took
        return 1 if domain_setter(ctypes.c_int(1), ctypes.c_int(MKL_DOMAIN_BLAS)) == 1 else None
    setter = getattr(handle, prefix + "openblas_set_num_threads", None)
    if setter is not None:
        setter(ctypes.c_int(1))
        return 1
    return None


def _describe(handle: ctypes.CDLL, prefix: str = "") -> Optional[str]:
    """The loaded library's version and kernels, as it reports them (OpenBLAS and MKL), or None."""
    config = getattr(handle, prefix + "openblas_get_config", None)
    if config is not None:
        config.restype = ctypes.c_char_p
        core = getattr(handle, prefix + "openblas_get_corename", None)
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


def _abi_problem(handle: ctypes.CDLL, description: Optional[str]) -> Optional[str]:
    """Why the library's CBLAS would not take MLX's 32-bit integers, or None.

    MLX passes ``int`` sizes (LP64). An OpenBLAS built with 64-bit integers says
    ``USE64BITINT`` in its configuration; MKL's single library switches to 64-bit
    integers when ``MKL_INTERFACE_LAYER`` asks for ILP64.
    """
    if description and "USE64BITINT" in description:
        return "it is built with 64-bit integers (USE64BITINT); MLX passes 32-bit ones"
    if getattr(handle, "MKL_Set_Interface_Layer", None) is not None and \
            "ILP64" in os.environ.get("MKL_INTERFACE_LAYER", "").upper():
        return "MKL_INTERFACE_LAYER asks for 64-bit integers; MLX passes 32-bit ones"
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
        notes.append(f"MKL runs its AVX2 kernels, not its AVX-512 ones, on this {vendor} CPU; scipy-openblas32 "
                     "(a dependency of mlx-deconv on Linux x86-64) measured as fast or faster and is chosen first "
                     "when installed")
    return notes


# --- the checks: a result beyond rounding of the reference is refused ---------------------------------------------


def _unit_roundoff(dtype: str) -> float:
    return 2.0 ** -53 if dtype == "float64" else 2.0 ** -24


def _operands(dtype: str, m: int, n: int, k: int, seed: int):
    """Two small random matrices of ``dtype`` (numpy), exactly representable in it."""
    import numpy as np

    rng = np.random.default_rng(seed)
    a, b = rng.standard_normal((m, k)), rng.standard_normal((k, n))
    if dtype == "complex64":
        a = a + 1j * rng.standard_normal((m, k))
        b = b + 1j * rng.standard_normal((k, n))
    return a.astype(dtype), b.astype(dtype)


def _within_rounding(product, a, b, dtype: str) -> bool:
    """True when ``product`` is ``a @ b`` up to the rounding any correct BLAS may make.

    The bound is the classical one for a dot product of length K, with room for
    a complex product's own rounding: ``|C - AB| <= 2 (K + 2) u |A||B|``, u the
    unit roundoff of ``dtype``, the reference computed in float64 (complex128).
    """
    import numpy as np

    wide = np.complex128 if dtype == "complex64" else np.float64
    exact = a.astype(wide) @ b.astype(wide)
    scale = np.abs(a).astype(np.float64) @ np.abs(b).astype(np.float64)
    bound = 2 * (a.shape[1] + 2) * _unit_roundoff(dtype) * scale
    return bool(np.all(np.isfinite(product)) and np.all(np.abs(product.astype(wide) - exact) <= bound))


#: (M, N, K, transpose A, transpose B): odd sizes, and both operands transposed once.
_CHECK_CASES: Tuple[Tuple[int, int, int, bool, bool], ...] = ((37, 29, 45, False, False), (19, 33, 27, True, True))


def _check_through_ctypes(function: int, symbol: str, dtype: str) -> Optional[str]:
    """Calls the library's ``function`` (a CBLAS ``?gemm``) directly; None when it is right, else what was wrong."""
    import numpy as np

    scalar = {"float32": ctypes.c_float, "float64": ctypes.c_double}.get(dtype)
    pointer = ctypes.c_void_p
    integer = ctypes.c_int
    if scalar is None:  # cgemm: alpha and beta by address
        prototype = ctypes.CFUNCTYPE(None, integer, integer, integer, integer, integer, integer, pointer, pointer,
                                     integer, pointer, integer, pointer, pointer, integer)
    else:
        prototype = ctypes.CFUNCTYPE(None, integer, integer, integer, integer, integer, integer, scalar, pointer,
                                     integer, pointer, integer, scalar, pointer, integer)
    gemm = prototype(function)
    for seed, (m, n, k, trans_a, trans_b) in enumerate(_CHECK_CASES):
        a, b = _operands(dtype, m, n, k, seed)
        stored_a = np.ascontiguousarray(a.T if trans_a else a)  # row-major storage of op(A)'s operand
        stored_b = np.ascontiguousarray(b.T if trans_b else b)
        c = np.full((m, n), np.nan, dtype=dtype)  # beta = 0 must overwrite, NaN included
        lda, ldb = stored_a.shape[1], stored_b.shape[1]
        args = (_ROW_MAJOR, _TRANS if trans_a else _NO_TRANS, _TRANS if trans_b else _NO_TRANS, m, n, k)
        if scalar is None:
            one, zero = np.array(1, dtype), np.array(0, dtype)
            gemm(*args, one.ctypes.data, stored_a.ctypes.data, lda, stored_b.ctypes.data, ldb, zero.ctypes.data,
                 c.ctypes.data, n)
        else:
            gemm(*args, 1.0, stored_a.ctypes.data, lda, stored_b.ctypes.data, ldb, 0.0, c.ctypes.data, n)
        if not _within_rounding(c, a, b, dtype):
            return f"{symbol} called directly gave a product beyond {dtype} rounding ({m}x{k} @ {k}x{n})"
    return None


def _check_through_mlx(dtypes: List[str]) -> Optional[str]:
    """MLX's own CPU matmul in each of ``dtypes``; None when every product is right, else what was wrong."""
    import mlx.core as mx
    import numpy as np

    with mx.stream(mx.cpu):
        for dtype in dtypes:
            for seed, (m, n, k, trans_a, trans_b) in enumerate(_CHECK_CASES):
                a, b = _operands(dtype, m, n, k, seed)
                # A transposed view reaches the BLAS as a transpose flag, not a copy.
                kind = getattr(mx, dtype)  # a float64 ndarray would otherwise become float32
                x = mx.array(np.ascontiguousarray(a.T), dtype=kind).T if trans_a else mx.array(a, dtype=kind)
                y = mx.array(np.ascontiguousarray(b.T), dtype=kind).T if trans_b else mx.array(b, dtype=kind)
                product = np.array(x @ y)
                if not _within_rounding(product, a, b, dtype):
                    return f"MLX's {dtype} matmul gave a product beyond rounding ({m}x{k} @ {k}x{n})"
    return None


# --- libmlx.so's jump slots -----------------------------------------------------------------------------------------


class _WrongResult(RuntimeError):
    """A library gave a product beyond rounding."""


class _LeftAlone(Exception):
    """MLX's slots are not ours to write; the message says why.

    Args:
        message (str): why.
        recognised (bool): True when the build is one we know but its ``cblas_sgemm`` is another
            optimized library's already (``LD_PRELOAD``): a note then, not a warning.
    """

    def __init__(self, message: str, recognised: bool = False):
        super().__init__(message)
        self.recognised = recognised


def _find_target(library: str = "libmlx.so") -> _Target:
    """``libmlx.so``'s jump slots for :data:`SYMBOLS`, checked to hold its bundled BLAS's functions.

    Args:
        library (str): the file name of MLX's library among those loaded.

    Raises:
        _LeftAlone: when MLX is not a build this recognises; the message says which check failed.
    """
    from . import jump_slots

    loaded = jump_slots.find_loaded(library)
    if loaded is None:
        raise _LeftAlone(f"no single {library} is loaded in this process")
    try:
        facts, slots = jump_slots.slots_of(loaded, [s for s, _ in SYMBOLS])
    except (OSError, jump_slots.ElfError) as err:
        raise _LeftAlone(f"{library} could not be read: {err}") from None
    if REQUIRED not in slots:
        raise _LeftAlone(f"{loaded.path} has no jump slot for {REQUIRED}")
    bundled_names = [n for n in facts.needed if n.startswith("libblas")]
    if not bundled_names:
        raise _LeftAlone(f"{loaded.path} needs no bundled libblas (it needs {', '.join(facts.needed)})")
    target = _Target(os.path.realpath(loaded.path), {}, {}, "")
    for symbol, slot in slots.items():
        value = jump_slots.read_slot(slot)
        path, name, address = jump_slots.symbol_at(value)
        if path is not None and os.path.basename(path) in bundled_names and name == symbol and address == value:
            target.slots[symbol], target.original[symbol], target.bundled = slot, value, path
        elif symbol == REQUIRED and path is not None and name == symbol and address == value:
            raise _LeftAlone(f"MLX's {symbol} is already {path}'s (loaded before MLX, e.g. by LD_PRELOAD); "
                             "left as it is", recognised=True)
        elif symbol == REQUIRED:
            if path == target.path:
                held = f"an address inside {library} itself (lazy binding, not yet resolved)"
            else:
                held = f"{name or 'an unnamed address'} of {path}" if path else f"0x{value:x}, in no loaded library"
            raise _LeftAlone(f"{library}'s {symbol} slot holds {held}, not {symbol} of its bundled "
                             f"{bundled_names[0]}")
    return target


def _target() -> _Target:
    if _STATE.target is None:
        _STATE.target = _find_target()
    return _STATE.target


def _write(target: _Target, addresses: Dict[str, int]) -> None:
    from . import jump_slots

    for symbol, address in addresses.items():
        jump_slots.write_slot(target.slots[symbol], address)


def _install(candidate: _Candidate, target: _Target) -> None:
    """Opens ``candidate``, checks it, points the slots at it and checks MLX's matmul; on any failure, as it was.

    Raises:
        RuntimeError: what failed; the slots then hold the bundled functions.
    """
    path = candidate.path
    if os.sep in path:
        reason = why_untrusted(path)
        if reason is not None:
            raise RuntimeError(f"skipped: {reason}")
        path = os.path.realpath(path)  # the checked file, not whatever a link in the path points to later
    try:
        # Nothing enters the global scope. ctypes never unloads a library, so one a slot pointed at
        # (even briefly, then refused) stays mapped for a call still inside it.
        handle = ctypes.CDLL(path, mode=os.RTLD_LOCAL | os.RTLD_NOW)
    except OSError as err:
        raise RuntimeError(str(err)) from None
    prefix = candidate.prefix if candidate.prefix is not None else _prefix_of(handle)
    if prefix is None or _symbol(handle, prefix + REQUIRED) is None:
        raise RuntimeError(f"exports no {' or '.join(p + REQUIRED for p in PREFIXES)}")
    description = _describe(handle, prefix)
    problem = _abi_problem(handle, description)
    if problem:
        raise RuntimeError(problem)
    addresses = {s: _symbol(handle, prefix + s) for s in target.slots}
    addresses = {s: a for s, a in addresses.items() if a}
    dtypes = dict(SYMBOLS)
    for symbol, address in addresses.items():
        wrong = _check_through_ctypes(address, prefix + symbol, dtypes[symbol])
        if wrong:
            raise _WrongResult(wrong)
    threads = _set_threads(handle, prefix)
    with _LOCK:
        try:
            _write(target, addresses)
            wrong = _check_through_mlx([dtypes[s] for s in addresses])
        except Exception as err:  # mprotect refused, or MLX raised: as it was, and on to the next library
            _write(target, {s: target.original[s] for s in addresses})
            raise RuntimeError(f"{type(err).__name__}: {err}; the slots hold MLX's own BLAS again") from err
        except BaseException:
            _write(target, {s: target.original[s] for s in addresses})
            raise
        if wrong:
            _write(target, {s: target.original[s] for s in addresses})
            raise _WrongResult(f"{wrong}; the slots hold MLX's own BLAS again")
        from . import jump_slots

        _STATE.loaded = jump_slots.symbol_at(addresses[REQUIRED])[0] or os.path.realpath(path)
        _STATE.handle, _STATE.threads, _STATE.library = handle, threads, description
        _STATE.patched = {s: prefix + s for s in addresses}
    _STATE.notes.extend(_advice(_STATE.loaded))


def _warn(message: str) -> None:
    if not _STATE.warned:
        _STATE.warned = True
        warnings.warn(f"mlx_deconv: {message}", RuntimeWarning, stacklevel=4)


def load() -> Optional[str]:
    """Puts an optimized BLAS under MLX's CPU matmul, once per process, whatever was imported before.

    Returns:
        str or None: the file of the library MLX's ``cblas_sgemm`` slot now
        points into, or None when MLX keeps its own BLAS (not Linux, switched
        off, none found, a build not recognised, or every library refused).
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
    import mlx.core  # noqa: F401  (maps libmlx.so, whose slots are written)

    candidates = _candidates()
    first = next(candidates, None)
    if first is None:
        _STATE.notes.append("no optimized BLAS found (pip install scipy-openblas32, or mlx-deconv[mkl])")
        return None
    try:
        target = _target()
    except _LeftAlone as why:
        _STATE.notes.append(f"MLX left alone: {why}")
        if why.recognised:
            return None
        _warn(f"MLX's CPU matmul keeps its own BLAS: {why}. This MLX build is not one mlx_deconv recognises; "
              f"{ENV}=0 silences this.")
        return None
    refused_by_a_check = []
    for candidate in itertools.chain([first], candidates):
        try:
            _install(candidate, target)
            return _STATE.loaded
        except RuntimeError as why:
            _STATE.notes.append(f"{candidate.origin} {candidate.path}: {why}")
            if isinstance(why, _WrongResult):
                refused_by_a_check.append(f"{candidate.path}: {why}")
    if refused_by_a_check or os.environ.get(ENV, "").strip():
        _warn(f"MLX keeps its own BLAS; {'; '.join(refused_by_a_check or _STATE.notes)}")
    return None


def restore() -> None:
    """Points MLX's slots back at its bundled BLAS (a no-op when nothing was written).

    For a process that wants MLX's own BLAS back after :func:`load`; the
    optimized library stays mapped, so a call already inside it finishes.
    """
    with _LOCK:
        if not _STATE.patched or _STATE.target is None:
            return
        _write(_STATE.target, {s: _STATE.target.original[s] for s in _STATE.patched})
        _STATE.notes.append(f"restored: MLX's own BLAS again (was {_STATE.loaded})")
        _STATE.loaded, _STATE.patched, _STATE.threads, _STATE.library = None, {}, None, None


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


def sgemm_provider() -> Optional[str]:
    """The file of the function MLX's ``cblas_sgemm`` jump slot points to now (``dladdr`` of its target).

    Returns:
        str or None: a path; None where it cannot be told (not Linux, or MLX
        is not a build whose slot can be read).
    """
    if not sys.platform.startswith("linux"):
        return None
    import mlx.core  # noqa: F401  (MLX's library must be mapped to be found)

    from . import jump_slots

    slot = _STATE.target.slots.get(REQUIRED) if _STATE.target is not None else None
    if slot is None:
        loaded = jump_slots.find_loaded("libmlx.so")
        try:
            slot = jump_slots.slots_of(loaded, [REQUIRED])[1].get(REQUIRED) if loaded else None
        except (OSError, jump_slots.ElfError):
            slot = None
    return jump_slots.symbol_at(jump_slots.read_slot(slot))[0] if slot is not None else None


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
        dict: ``provider`` (the file whose function MLX's ``cblas_sgemm`` slot
        points to, or None where that cannot be told), ``optimized`` (True
        when it is a library we put there), ``loaded`` (that library, or None),
        ``patched`` (each slot written -> the library's symbol in it),
        ``library`` (its version and kernels as it reports them, or None),
        ``threads`` (BLAS threads we set, None when left to the library or the
        environment), ``notes`` (why nothing was done, or what failed) and,
        when measured, ``matmul_gflops``.
    """
    provider = sgemm_provider()
    loaded = _STATE.loaded
    optimized = bool(loaded and provider and os.path.realpath(provider) == os.path.realpath(loaded))
    out: Dict[str, object] = dict(provider=provider, optimized=optimized, loaded=loaded, patched=dict(_STATE.patched),
                                  library=_STATE.library if optimized else None, threads=_STATE.threads,
                                  notes=list(_STATE.notes))
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
    """True when this process's MLX CPU matmul runs on a library :func:`load` put there."""
    return _STATE.loaded is not None
