"""Runs the Metal kernel on a CPU, from the exact source MLX generates for it.

No Mac is needed: inside ``mx.export_function`` tracing, a
``mx.fast.metal_kernel`` call with ``verbose=True`` makes MLX print the full
Metal source it would compile on a Mac (signature, address spaces, template
instantiation). That text is captured at the file-descriptor level, compiled
with the system C++ compiler against ``metal/emulator_shim.h``, and run over
every thread of the same grid the backend launches, on the same input
buffers, into output buffers poisoned with NaN so an unwritten element shows.

The kernel uses neither threadgroup memory, barriers nor SIMD-group
functions; :func:`compile_kernel` refuses source that does, rather than run
such a kernel thread by thread and call it verified.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

import mlx.core as mx
import numpy as np

from .. import metal
from ...geometry.records import Geometry
from ...runtime.cache_folder import private_folder
from ...runtime.trust import why_not_own, why_untrusted
from ...version import __version__

SHIM_FILE = "emulator_shim.h"
_UNSUPPORTED = ("threadgroup_barrier", "simd_", "atomic_", "threadgroup ")
_GRID_ATTRIBUTES = ("thread_position_in_grid", "thread_position_in_threadgroup",
                    "threadgroup_position_in_grid", "threads_per_threadgroup", "threads_per_grid")
_DTYPES = {mx.float32: ("float", np.float32), mx.float16: ("float16_t", np.uint16),
           mx.bfloat16: ("bfloat16_t", np.uint16), mx.int32: ("int", np.int32)}


def compiler() -> Optional[str]:
    """The C++ compiler the emulator uses, or None."""
    return os.environ.get("CXX") or shutil.which("g++") or shutil.which("clang++")


@contextlib.contextmanager
def _captured_fd1(box: List[str]):
    """Collects what C++ (not just Python) writes to file descriptor 1."""
    sys.stdout.flush()
    saved = os.dup(1)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 1)
        try:
            yield
        finally:
            sys.stdout.flush()
            os.dup2(saved, 1)
            os.close(saved)
            tmp.seek(0)
            box.append(tmp.read().decode())


@dataclass
class Parameter:
    name: str
    kind: str  # "buffer" or the Metal attribute name
    ctype: str = ""  # element type of a buffer


@dataclass
class GeneratedKernel:
    source: str  # the complete Metal source MLX generated
    instance: str  # e.g. custom_kernel_x<float, 2, ...>
    parameters: List[Parameter]


def capture_call(kernel, call: dict) -> GeneratedKernel:
    """The Metal source MLX generates when ``kernel`` (an ``mx.fast.metal_kernel``) is launched with
    ``call`` (its keyword arguments: inputs, template, grid, threadgroup, output shapes and dtypes)."""
    box: List[str] = []

    def launch(*arrays):
        return kernel(**dict(call, inputs=list(arrays)), verbose=True)

    path = os.path.join(tempfile.mkdtemp(prefix="mlx_deconv_capture_"), "kernel.mlxfn")
    try:
        with _captured_fd1(box):
            mx.export_function(path, launch, *call["inputs"])
    finally:
        shutil.rmtree(os.path.dirname(path), ignore_errors=True)
    return parse(box[0])


def capture(x: mx.array, weight: mx.array, bias: Optional[mx.array], geom: Geometry) -> GeneratedKernel:
    """The Metal source MLX generates for the metal backend's launch on these arguments."""
    return capture_call(metal.kernel(), metal.kernel_arguments(x, weight, bias, geom))


def parse(printed: str) -> GeneratedKernel:
    """Splits MLX's verbose print into source, instantiated function and parameters."""
    fenced = re.search(r"```\n(.*?)\n```", printed, re.S)
    if not fenced:
        raise RuntimeError(f"no generated Metal source in MLX's output: {printed[:500]!r}")
    source = fenced.group(1)
    instance = re.search(r"decltype\((\w+<[^;]*>)\)\s+\w+<", source)
    if not instance:
        raise RuntimeError("no explicit instantiation line in the generated source")
    signature = re.search(r"\[\[kernel\]\]\s+void\s+\w+\((.*?)\)\s*\{", source, re.S).group(1)
    parameters = []
    for text in signature.split(",\n"):
        text = " ".join(text.split())
        buffer = re.match(r"(?:const )?(?:device|constant) (\w+)\* (\w+) \[\[buffer\(\d+\)\]\]", text)
        attribute = re.match(r"\w+ (\w+) \[\[(\w+)\]\]", text)
        if buffer:
            parameters.append(Parameter(buffer.group(2), "buffer", buffer.group(1)))
        elif attribute and attribute.group(2) in _GRID_ATTRIBUTES:
            parameters.append(Parameter(attribute.group(1), attribute.group(2)))
        else:
            raise RuntimeError(f"the emulator does not know the kernel parameter {text!r}")
    return GeneratedKernel(source, instance.group(1), parameters)


def _driver(kernel: GeneratedKernel) -> str:
    """A main() that loads the buffers, runs every thread of the grid and saves the outputs."""
    lines = ['#include <cstdio>', '#include <cstdlib>', '#include <vector>', "",
             "static std::vector<char> load(const char* path, size_t bytes) {",
             "    std::vector<char> data(bytes);",
             "    FILE* f = std::fopen(path, \"rb\");",
             "    if (!f || std::fread(data.data(), 1, bytes, f) != bytes) { std::perror(path); std::exit(2); }",
             "    std::fclose(f);",
             "    return data;",
             "}", "",
             "int main(int argc, char** argv) {",
             "    // argv: per buffer: path bytes; then the output paths; then grid xyz and threadgroup xyz",
             "    int a = 1;"]
    buffers = [p for p in kernel.parameters if p.kind == "buffer"]
    for i, p in enumerate(buffers):
        lines.append(f"    const char* path{i} = argv[a++]; size_t bytes{i} = std::strtoull(argv[a++], nullptr, 10);")
        lines.append(f"    std::vector<char> b{i} = load(path{i}, bytes{i});")
    lines.append("    uint grid[3], group[3];")
    lines.append("    for (int i = 0; i < 3; ++i) grid[i] = uint(std::atoi(argv[a++]));")
    lines.append("    for (int i = 0; i < 3; ++i) group[i] = uint(std::atoi(argv[a++]));")
    lines.append("    for (uint gz = 0; gz < grid[2]; gz += group[2])")
    lines.append("    for (uint gy = 0; gy < grid[1]; gy += group[1])")
    lines.append("    for (uint gx = 0; gx < grid[0]; gx += group[0])")
    lines.append("    for (uint z = gz; z < gz + group[2] && z < grid[2]; ++z)")
    lines.append("    for (uint y = gy; y < gy + group[1] && y < grid[1]; ++y)")
    lines.append("    for (uint x = gx; x < gx + group[0] && x < grid[0]; ++x) {")
    values = {
        "thread_position_in_grid": "uint3{x, y, z}",
        "thread_position_in_threadgroup": "uint3{x - gx, y - gy, z - gz}",
        "threadgroup_position_in_grid": "uint3{gx / group[0], gy / group[1], gz / group[2]}",
        "threads_per_threadgroup": "uint3{group[0], group[1], group[2]}",
        "threads_per_grid": "uint3{grid[0], grid[1], grid[2]}",
    }
    arguments = []
    for p in kernel.parameters:
        if p.kind == "buffer":
            arguments.append(f"reinterpret_cast<{p.ctype}*>(b{buffers.index(p)}.data())")
        else:
            arguments.append(values[p.kind])
    lines.append(f"        {kernel.instance}({', '.join(arguments)});")
    lines.append("    }")
    lines.append("    // Every buffer is written back; the caller reads the outputs.")
    for i in range(len(buffers)):
        lines.append(f"    {{ FILE* f = std::fopen(path{i}, \"wb\"); std::fwrite(b{i}.data(), 1, bytes{i}, f); std::fclose(f); }}")
    lines.append("    return 0;")
    lines.append("}")
    return "\n".join(lines)


def shim_path() -> Path:
    here = Path(__file__).resolve().parents[2]  # the package root (backends/metal/emulator.py)
    for folder in (here / "metal", here.parent / "metal"):
        if (folder / SHIM_FILE).is_file():
            return folder / SHIM_FILE
    raise FileNotFoundError(f"{SHIM_FILE} not found next to the kernel source")


def cache_dir() -> Path:
    """The private folder compiled kernels are cached in, created if missing.

    ``<cache folder>/<version>/emulator``, the cache folder being the package's
    (:func:`~mlx_deconv.runtime.cache_folder.cache_dir`: ``$MLX_DECONV_CACHE_DIR``, else
    ``$XDG_CACHE_HOME/mlx_deconv``, else ``~/.cache/mlx_deconv``); missing folders are made with mode 0700.
    The version in the path keeps builds of different releases apart.

    Returns:
        Path: the folder.

    Raises:
        PermissionError: if the folder or one above it belongs to another user or other users may write
            to it: an executable found there could have been planted.
    """
    try:
        return private_folder(__version__, "emulator")
    except PermissionError as err:
        raise PermissionError(f"the emulator cache cannot be trusted: {err}; a compiled kernel found there "
                              f"could have been planted") from err


def _check_private(path: Path) -> None:
    """Refuses a cache folder, or a compiled file in it, that another user could change: theirs, writable by
    others, or under a folder they may write (:func:`~mlx_deconv.runtime.trust.why_untrusted`)."""
    reason = why_not_own(path) if path.is_dir() else why_untrusted(path)
    if reason is not None:
        raise PermissionError(f"the emulator cache {path} cannot be trusted: {reason}; a compiled kernel found there "
                              f"could have been planted")


def compile_kernel(kernel: GeneratedKernel, workdir: Optional[str] = None) -> str:
    """Compiles the generated source with the shim and a driver; returns the executable's path (cached).

    Args:
        kernel: the source MLX generated, from :func:`capture`.
        workdir: where the executable is cached; default :func:`cache_dir`.
            It must be private to the user: a compiled file found there is run.

    Returns:
        str: the path of the executable.
    """
    cxx = compiler()
    if cxx is None:
        raise RuntimeError("no C++ compiler (g++ or clang++) on this machine")
    for word in _UNSUPPORTED:
        if word in kernel.source:
            raise NotImplementedError(f"the kernel uses {word.strip()!r}: this emulator runs threads one by one")
    shim = shim_path().read_text()
    program = f"{shim}\n// ---- MLX-generated Metal source ----\n{kernel.source}\n// ---- driver ----\n{_driver(kernel)}\n"
    digest = hashlib.sha256(program.encode()).hexdigest()[:16]
    if workdir is None:
        workdir = cache_dir()
    else:
        workdir = Path(workdir)
        workdir.mkdir(mode=0o700, parents=True, exist_ok=True)
        _check_private(workdir)
    exe = workdir / f"kernel_{digest}"
    if not exe.exists():
        # Built under a unique name and renamed into place: concurrent processes never see half a file.
        with tempfile.TemporaryDirectory(dir=workdir) as build:
            src = Path(build) / "kernel.cpp"
            src.write_text(program)
            result = subprocess.run([cxx, "-std=c++17", "-O1", "-Wno-attributes", "-o", str(Path(build) / "kernel"),
                                     str(src)], capture_output=True, text=True, errors="replace")
            if result.returncode:
                raise RuntimeError(f"the generated Metal source did not compile:\n{result.stderr[-4000:]}")
            os.replace(Path(build) / "kernel", exe)
    _check_private(exe)
    return str(exe)


def _to_bytes(array: mx.array) -> bytes:
    ctype, view = _DTYPES[array.dtype]
    if array.dtype in (mx.float16, mx.bfloat16):
        array = array.view(mx.uint16)
    return np.ascontiguousarray(np.array(array), dtype=view).tobytes()


def run_call(kernel, call: dict) -> mx.array:
    """The first output of ``kernel(**call)``, computed by emulating the generated kernel on the CPU:
    the same inputs, template, grid and threadgroup as the launch on a GPU."""
    generated = capture_call(kernel, call)
    exe = compile_kernel(generated)
    out_shape, out_dtype = call["output_shapes"][0], call["output_dtypes"][0]
    workdir = tempfile.mkdtemp(prefix="mlx_deconv_run_")
    try:
        argv = [exe]
        buffers = [p for p in generated.parameters if p.kind == "buffer"]
        arrays = list(call["inputs"])
        for i, p in enumerate(buffers):
            path = os.path.join(workdir, f"{p.name}.bin")
            if i < len(arrays):
                data = _to_bytes(mx.contiguous(arrays[i]))
            else:  # an output: poisoned, so an element the kernel never writes stays NaN
                data = b"\xff" * (int(np.prod(out_shape)) * out_dtype.size)
            Path(path).write_bytes(data)
            argv += [path, str(len(data))]
        argv += [str(n) for n in call["grid"]] + [str(n) for n in call["threadgroup"]]
        result = subprocess.run(argv, capture_output=True, text=True, errors="replace")
        if result.returncode:
            raise RuntimeError(f"the emulated kernel failed: {result.stderr[-2000:]}")
        raw = np.frombuffer(Path(os.path.join(workdir, f"{buffers[-1].name}.bin")).read_bytes(), dtype=_DTYPES[out_dtype][1])
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    out = mx.array(raw.reshape(out_shape))
    return out.view(out_dtype) if out_dtype in (mx.float16, mx.bfloat16) else out


def run(x: mx.array, weight: mx.array, bias: Optional[mx.array], geom: Geometry) -> mx.array:
    """The metal backend's output, computed by emulating its kernel on the CPU.

    Takes the backend's own arguments (NLC ``x``, MLX-layout ``weight``) and
    launches exactly what the backend would (:func:`mlx_deconv.backends.metal.kernel_arguments`).
    """
    return run_call(metal.kernel(), metal.kernel_arguments(x, weight, bias, geom))
