"""The optimized BLAS under MLX (mlx_deconv/runtime/blas.py), each case in a fresh process.

What serves MLX's ``cblas_sgemm`` is whatever its jump slot in ``libmlx.so``
points to, so every case that writes it starts its own interpreter, and the
answer is read back with ``dladdr`` on the slot's target. Products are checked
against float64 NumPy. No timings: speed belongs to ``bench`` and docs/blas.md.
"""

import ctypes.util
import importlib.util
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the BLAS swap is Linux-only")

PROBE = r"""
import json, os, sys, warnings
warnings.simplefilter("always")
caught = []
warnings.showwarning = lambda message, *a, **k: caught.append(str(message))
first = sys.argv[1]
if first == "mlx.core":
    import mlx.core
elif first == "mlx.nn":
    import mlx.nn
elif first == "mlx_audio":
    import mlx_audio.codec  # noqa: F401  (imports mlx.core, mlx.nn)
import mlx.core as mx
import numpy as np
simulate = sys.argv[2] if len(sys.argv) > 2 else ""
if simulate:
    # Import with the switch off, then run load() again on a simulated case.
    chosen = os.environ.get("MLX_DECONV_BLAS")
    os.environ["MLX_DECONV_BLAS"] = "0"
    import mlx_deconv as md
    from mlx_deconv.runtime import blas, jump_slots
    if chosen is None:
        del os.environ["MLX_DECONV_BLAS"]
    else:
        os.environ["MLX_DECONV_BLAS"] = chosen
    blas._STATE = blas._State()
    real_find_target = blas._find_target
    if simulate == "no-relocation":  # a library that has no jump slot for cblas_sgemm stands in for libmlx.so
        blas._find_target = lambda library="libmlx.so": real_find_target("libstdc++.so.6")
    elif simulate == "foreign-slot":  # the slot holds another function than the bundled cblas_sgemm
        target = real_find_target()
        slot = target.slots["cblas_sgemm"]
        jump_slots.write_slot(slot, target.original["cblas_dgemm"])
    elif simulate == "no-direct-check":  # only the check through MLX's matmul guards
        blas._check_through_ctypes = lambda *args: None
    blas.load()
    if simulate == "foreign-slot":
        held = jump_slots.symbol_at(jump_slots.read_slot(slot))[1]
        jump_slots.write_slot(slot, target.original["cblas_sgemm"])  # before any float32 matmul
        caught.append("SLOT HELD " + str(held))
else:
    import mlx_deconv as md
info = md.blas_info(measure=False)
rng = np.random.default_rng(0)
a = rng.standard_normal((96, 80)).astype(np.float32)
b = rng.standard_normal((80, 72)).astype(np.float32)
with mx.stream(mx.cpu):
    product = np.array(mx.array(a) @ mx.array(b))
    transposed = np.array(mx.array(np.ascontiguousarray(a.T)).T @ mx.array(b))
x = rng.standard_normal((1, 40, 16)).astype(np.float32)
w = rng.standard_normal((8, 4, 16)).astype(np.float32)
y = np.array(md.conv_transpose1d(mx.array(x), mx.array(w), stride=2, padding=1, backend="gemm", stream=mx.cpu))
info.update(a=a.tolist(), b=b.tolist(), product=product.tolist(), transposed=transposed.tolist(),
            x=x.tolist(), w=w.tolist(), y=y.tolist(), warnings=caught)
print("RESULT" + json.dumps(info))
"""


def _probe(env_extra=None, first="mlx_deconv", simulate=""):
    env = {k: v for k, v in os.environ.items() if k != "MLX_DECONV_BLAS"}
    env.update(env_extra or {})
    args = [sys.executable, "-c", PROBE, first] + ([simulate] if simulate else [])
    out = subprocess.run(args, env=env, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr
    line = next(l for l in out.stdout.splitlines() if l.startswith("RESULT"))
    return json.loads(line[len("RESULT"):])


def _assert_products_right(info):
    """MLX's float32 products and a gemm-backend convolution, against float64 NumPy from the definition."""
    import reference

    a, b = np.array(info["a"]), np.array(info["b"])
    exact = a @ b
    bound = 2 * (a.shape[1] + 2) * 2.0 ** -24 * (np.abs(a) @ np.abs(b))  # float32 rounding of a K-term sum
    for name in ("product", "transposed"):
        assert np.all(np.abs(np.array(info[name]) - exact) <= bound), name
    x, w = np.array(info["x"]), np.array(info["w"])
    expected = reference.conv_transpose1d(x, w, stride=2, left=1, right=1)
    np.testing.assert_allclose(info["y"], expected, rtol=1e-5, atol=1e-5)


def _optimized_available() -> bool:
    from mlx_deconv.runtime import blas

    return bool(blas._wheel_candidates()) or bool(blas.system_openblas())


def _wheel_available() -> bool:
    from mlx_deconv.runtime import blas

    return bool(blas._wheel_candidates())


def _system_openblas() -> bool:
    from mlx_deconv.runtime import blas

    return bool(blas.system_openblas())


def _is_mlx_bundled(path) -> bool:
    return path is not None and "mlx" in path and os.path.basename(path).startswith("libblas")


needs_optimized = pytest.mark.skipif(not _optimized_available(),
                                     reason="no optimized BLAS (pip install scipy-openblas32, or a system OpenBLAS)")


@needs_optimized
@pytest.mark.parametrize("first", ["mlx_deconv", "mlx.core", "mlx.nn"])
def test_the_fast_library_serves_sgemm_whatever_was_imported_first(first):
    info = _probe(first=first)
    assert info["optimized"] and info["loaded"], info["notes"]
    # dladdr on the slot's target: the library we loaded, not MLX's bundled one.
    assert os.path.realpath(info["provider"]) == os.path.realpath(info["loaded"])
    assert not _is_mlx_bundled(info["provider"])
    assert info["patched"]["cblas_sgemm"].endswith("cblas_sgemm")
    _assert_products_right(info)
    assert not info["warnings"], info["warnings"]


@needs_optimized
def test_mlx_audio_imported_first():
    if importlib.util.find_spec("mlx_audio") is None:
        pytest.skip("mlx-audio is not installed")
    info = _probe(first="mlx_audio")
    assert info["optimized"] and os.path.realpath(info["provider"]) == os.path.realpath(info["loaded"])
    _assert_products_right(info)
    assert not info["warnings"], info["warnings"]


@pytest.mark.parametrize("first", ["mlx_deconv", "mlx.core"])
def test_switched_off_keeps_mlx_own_blas(first):
    info = _probe({"MLX_DECONV_BLAS": "0"}, first=first)
    assert info["loaded"] is None and not info["optimized"] and info["patched"] == {}
    assert _is_mlx_bundled(info["provider"]), info["provider"]
    assert any("MLX_DECONV_BLAS=0" in n for n in info["notes"])
    _assert_products_right(info)
    assert not info["warnings"]


@needs_optimized
def test_a_library_without_the_relocation_is_left_alone_with_one_warning():
    info = _probe(first="mlx.core", simulate="no-relocation")
    assert info["loaded"] is None and not info["optimized"] and info["patched"] == {}
    assert _is_mlx_bundled(info["provider"])
    said = [w for w in info["warnings"] if "not one mlx_deconv recognises" in w]
    assert len(said) == 1 and "no jump slot for cblas_sgemm" in said[0], info["warnings"]
    _assert_products_right(info)


@needs_optimized
def test_a_slot_that_holds_another_function_is_left_alone_with_one_warning():
    info = _probe(first="mlx.core", simulate="foreign-slot")
    assert info["loaded"] is None and info["patched"] == {}
    said = [w for w in info["warnings"] if "not one mlx_deconv recognises" in w]
    assert len(said) == 1 and "holds cblas_dgemm" in said[0], info["warnings"]
    assert "SLOT HELD cblas_dgemm" in info["warnings"]  # left as it was found
    _assert_products_right(info)


def _compile_wrong_blas(folder) -> str:
    """A CBLAS whose sgemm is right to 1e-3 only: a library that must be refused."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        pytest.skip("no C compiler to build a wrong BLAS")
    source = folder / "wrong.c"
    source.write_text(r"""
void cblas_sgemm(int order, int ta, int tb, int m, int n, int k, float alpha, const float *a, int lda,
                 const float *b, int ldb, float beta, float *c, int ldc) {
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) {
            double s = 0;
            for (int p = 0; p < k; p++)
                s += (double)(ta == 111 ? a[i * lda + p] : a[p * lda + i]) *
                     (double)(tb == 111 ? b[p * ldb + j] : b[j * ldb + p]);
            c[i * ldc + j] = (float)(alpha * s * 1.001);  /* 0.1% off: far beyond float32 rounding */
        }
}
""")
    library = folder / "libwrongblas.so"
    subprocess.run([compiler, "-shared", "-fPIC", "-O1", "-o", str(library), str(source)], check=True)
    os.chmod(folder, 0o755)
    return str(library)


def test_a_wrong_library_is_refused_before_any_slot_points_at_it(tmp_path):
    library = _compile_wrong_blas(tmp_path)
    info = _probe({"MLX_DECONV_BLAS": library}, first="mlx.core")
    assert info["loaded"] is None and info["patched"] == {} and _is_mlx_bundled(info["provider"])
    assert any("cblas_sgemm called directly gave a product beyond float32 rounding" in n for n in info["notes"])
    assert len([w for w in info["warnings"] if "MLX keeps its own BLAS" in w]) == 1
    _assert_products_right(info)


def test_a_wrong_library_that_passes_the_direct_check_is_taken_out_again(tmp_path):
    library = _compile_wrong_blas(tmp_path)
    info = _probe({"MLX_DECONV_BLAS": library}, first="mlx.core", simulate="no-direct-check")
    assert info["loaded"] is None and info["patched"] == {}
    assert _is_mlx_bundled(info["provider"]), info["provider"]  # the slot holds MLX's own again
    assert any("MLX's float32 matmul gave a product beyond rounding" in n and "MLX's own BLAS again" in n
               for n in info["notes"]), info["notes"]
    _assert_products_right(info)


@pytest.mark.skipif(not _wheel_available(), reason="no BLAS wheel installed (pip install scipy-openblas32)")
def test_explicit_path_is_used():
    from mlx_deconv.runtime import blas

    for candidate in blas._wheel_candidates():
        info = _probe({"MLX_DECONV_BLAS": candidate.path}, first="mlx.core")
        assert os.path.realpath(info["provider"]) == os.path.realpath(candidate.path), info["notes"]
        _assert_products_right(info)


def test_missing_library_breaks_nothing_and_says_so(tmp_path):
    missing = str(tmp_path / "libnothing.so")
    info = _probe({"MLX_DECONV_BLAS": missing})
    assert info["loaded"] is None and not info["optimized"]
    assert _is_mlx_bundled(info["provider"])
    assert any(missing in n for n in info["notes"])
    assert len([w for w in info["warnings"] if "MLX keeps its own BLAS" in w]) == 1


def test_library_that_is_no_blas_is_refused():
    libm = ctypes.util.find_library("m")
    if libm is None:
        pytest.skip("no libm to stand in for a library without cblas_sgemm")
    info = _probe({"MLX_DECONV_BLAS": libm})
    assert info["loaded"] is None
    assert any("exports no cblas_sgemm or scipy_cblas_sgemm" in n for n in info["notes"])


def test_library_in_a_folder_others_can_write_is_not_loaded(tmp_path, monkeypatch):
    from mlx_deconv.runtime import trust
    from mlx_deconv.runtime.trust import why_untrusted

    monkeypatch.setattr(trust, "_is_private_group", lambda uid, gid: False)  # the group holds other users

    os.chmod(tmp_path, 0o700)
    folder = tmp_path / "open"
    folder.mkdir(mode=0o755)
    lib = folder / "libfake.so"
    lib.write_bytes(b"")
    os.chmod(lib, 0o644)
    assert why_untrusted(lib) is None
    for mode in (0o777, 0o775):  # world-writable, group-writable: its own folder
        os.chmod(folder, mode)
        assert "is writable by other users" in why_untrusted(lib), oct(mode)
    os.chmod(folder, 0o1777)  # sticky, as /tmp: others may add files but not rename or replace this one
    assert why_untrusted(lib) is None
    os.chmod(folder, 0o755)
    os.chmod(lib, 0o664)
    assert "is writable by other users" in why_untrusted(lib)
    os.chmod(lib, 0o644)
    # A link from a private folder to a library in an open one is judged by where it leads.
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    (private / "libfake.so").symlink_to(lib)
    os.chmod(folder, 0o777)
    assert why_untrusted(private / "libfake.so") is not None
    os.chmod(folder, 0o755)
    # A folder further up that others may write: they could rename the private folder away and put theirs there.
    os.chmod(tmp_path, 0o777)
    assert f"{os.path.realpath(tmp_path)} is writable by other users" in why_untrusted(lib)
    os.chmod(tmp_path, 0o700)
    if hasattr(os, "getuid") and os.getuid() == 0:  # a library another user owns could be replaced by them
        os.chown(lib, 65534, -1)
        assert "belongs to another user" in why_untrusted(lib)
        os.chown(lib, 0, -1)
        os.chown(tmp_path, 65534, -1)  # and so could a folder above it that they own
        assert "belongs to another user" in why_untrusted(lib)
        os.chown(tmp_path, 0, -1)
    os.chmod(folder, 0o777)
    info = _probe({"MLX_DECONV_BLAS": str(lib)})
    assert info["loaded"] is None
    assert any("skipped:" in n and "is writable by other users" in n for n in info["notes"])


def test_user_thread_count_is_not_overridden():
    from mlx_deconv.runtime import blas

    class Handle:
        calls = []

        def MKL_Domain_Set_Num_Threads(self, n, domain):  # noqa: N802 (the library's name)
            self.calls.append((n.value, domain.value))
            return 1  # MKL's "the setting took"

    class OpenBLAS:
        calls = []

        def scipy_openblas_set_num_threads(self, n):
            self.calls.append(n.value)

    old = {v: os.environ.pop(v, None) for v in blas.THREAD_VARIABLES}
    try:
        os.environ["OMP_NUM_THREADS"] = "1"
        assert blas._set_threads(Handle()) is None and Handle.calls == []
        assert blas._set_threads(OpenBLAS(), "scipy_") is None and OpenBLAS.calls == []
        del os.environ["OMP_NUM_THREADS"]
        assert blas._set_threads(Handle()) == 1 and Handle.calls == [(1, blas.MKL_DOMAIN_BLAS)]
        assert blas._set_threads(OpenBLAS(), "scipy_") == 1 and OpenBLAS.calls == [1]  # the prefixed setter
    finally:
        for k, v in old.items():
            if v is not None:
                os.environ[k] = v
            else:
                os.environ.pop(k, None)


@needs_optimized
def test_pytorch_keeps_its_threads():
    pytest.importorskip("torch")
    from mlx_deconv.runtime import blas

    env = {k: v for k, v in os.environ.items() if k not in ("MLX_DECONV_BLAS",) + blas.THREAD_VARIABLES}

    def torch_threads(first: str) -> int:
        code = f"{first}import torch; print('THREADS', torch.get_num_threads())"
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
        return int(next(l for l in out.stdout.splitlines() if l.startswith("THREADS")).split()[1])

    # Our one-thread BLAS setting is not PyTorch's: the same count as a process without mlx_deconv.
    assert torch_threads("import mlx_deconv; ") == torch_threads("")


def test_order_puts_mkl_first_on_intel_only():
    from mlx_deconv.runtime import blas

    assert blas.order_sources("GenuineIntel") == ["mkl", "scipy-openblas32", "cmeel-openblas", "system"]
    for vendor in ("AuthenticAMD", None):
        assert blas.order_sources(vendor) == ["scipy-openblas32", "cmeel-openblas", "system", "mkl"]


def test_mkl_is_not_looked_for_before_its_turn(monkeypatch):
    """On a CPU that is not Intel's the first library found is tried before MKL's wheel is even looked up."""
    from mlx_deconv.runtime import blas

    looked = []
    monkeypatch.delenv("MLX_DECONV_BLAS", raising=False)
    monkeypatch.setattr(blas, "cpu_vendor", lambda: "AuthenticAMD")
    monkeypatch.setattr(blas, "system_openblas", lambda: ["/usr/lib/libopenblas.so.0"])
    monkeypatch.setattr(blas, "_wheel_candidate", lambda dist: looked.append(dist) or (
        blas._Candidate("wheel", f"/v/{dist}.so", "") if dist in ("mkl", "scipy-openblas32") else None))
    candidates = blas._candidates()
    assert next(candidates).path == "/v/scipy-openblas32.so" and looked == ["scipy-openblas32"]
    assert [c.path for c in candidates] == ["/usr/lib/libopenblas.so.0", "/v/mkl.so"]
    assert looked == ["scipy-openblas32", "cmeel-openblas", "mkl"]
    monkeypatch.setattr(blas, "cpu_vendor", lambda: "GenuineIntel")
    assert [c.path for c in blas._candidates()] == ["/v/mkl.so", "/v/scipy-openblas32.so", "/usr/lib/libopenblas.so.0"]


def test_scipy_openblas_wheel_is_found_with_its_prefix():
    if importlib.util.find_spec("scipy_openblas32") is None:
        pytest.skip("scipy-openblas32 is not installed")
    from mlx_deconv.runtime import blas

    found = [c for c in blas._wheel_candidates() if "scipy_openblas" in c.path]
    assert len(found) == 1 and found[0].prefix == "scipy_" and os.path.isfile(found[0].path)


def test_system_openblas_is_looked_for_in_system_folders_only(tmp_path, monkeypatch):
    """Not through LD_LIBRARY_PATH, where an empty entry is the current folder."""
    from mlx_deconv.runtime import blas

    (tmp_path / "libopenblas.so.0").write_bytes(b"")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LD_LIBRARY_PATH", f":{tmp_path}")
    assert all(os.path.dirname(p) in blas.system_library_folders() for p in blas.system_openblas())
    monkeypatch.setattr(blas, "system_library_folders", lambda: [str(tmp_path)])
    assert blas.system_openblas() == [str(tmp_path / "libopenblas.so.0")]


def test_advice_names_what_a_user_can_change(monkeypatch):
    from mlx_deconv.runtime import blas

    monkeypatch.setenv("OPENBLAS_CORETYPE", "Haswell")
    monkeypatch.setattr(blas, "cpu_vendor", lambda: "AuthenticAMD")
    notes = blas._advice("/usr/lib/libopenblasp-r0.3.21.so")
    assert len(notes) == 1 and "OPENBLAS_CORETYPE=Haswell" in notes[0]
    assert blas._advice("/opt/blis/libblis.so.4") == []  # OPENBLAS_CORETYPE means nothing to another library
    notes = blas._advice("/v/lib/libmkl_rt.so.2")
    assert len(notes) == 1 and "AuthenticAMD" in notes[0] and "scipy-openblas32" in notes[0]
    assert "AVX2" in notes[0]
    monkeypatch.delenv("OPENBLAS_CORETYPE")
    monkeypatch.setattr(blas, "cpu_vendor", lambda: "GenuineIntel")
    assert blas._advice("/v/lib/libmkl_rt.so.2") == [] and blas._advice("/usr/lib/libopenblas.so.0") == []


def test_an_ilp64_library_is_refused(monkeypatch):
    from mlx_deconv.runtime import blas

    assert "64-bit integers" in blas._abi_problem(object(), "OpenBLAS 0.3.30 USE64BITINT DYNAMIC_ARCH Haswell")
    assert blas._abi_problem(object(), "OpenBLAS 0.3.34 DYNAMIC_ARCH Haswell") is None

    class MKL:
        def MKL_Set_Interface_Layer(self, layer):  # noqa: N802 (the library's name)
            return layer

    monkeypatch.setenv("MKL_INTERFACE_LAYER", "ILP64")
    assert "MKL_INTERFACE_LAYER" in blas._abi_problem(MKL(), None)
    monkeypatch.setenv("MKL_INTERFACE_LAYER", "LP64")
    assert blas._abi_problem(MKL(), None) is None


def test_jump_slots_of_libmlx_are_read_from_its_dynamic_section():
    import mlx.core  # noqa: F401

    from mlx_deconv.runtime import jump_slots

    loaded = jump_slots.find_loaded("libmlx.so")
    assert loaded is not None
    facts, slots = jump_slots.slots_of(loaded, ["cblas_sgemm", "cblas_dgemm", "no_such_function"])
    assert set(slots) == {"cblas_sgemm", "cblas_dgemm"}
    assert any(n.startswith("libblas") for n in facts.needed)
    for symbol, slot in slots.items():
        # The slot holds that very function, as the loader bound it (or as load() rewrote it).
        _, name, address = jump_slots.symbol_at(jump_slots.read_slot(slot))
        assert name is not None and name.endswith(symbol) and address == jump_slots.read_slot(slot)
    with pytest.raises(jump_slots.ElfError, match="not an ELF file"):
        jump_slots.read_jump_slots(__file__, ["cblas_sgemm"])


@pytest.mark.skipif(not _system_openblas(), reason="no system OpenBLAS (Debian: apt install libopenblas0-pthread)")
def test_system_openblas_by_soname_is_reported_as_the_file_it_resolved_to():
    info = _probe({"MLX_DECONV_BLAS": "libopenblas.so.0"}, first="mlx.core")
    assert info["optimized"] and os.path.isabs(info["loaded"]), info
    assert os.path.realpath(info["provider"]) == info["loaded"]
    assert info["library"].startswith("OpenBLAS"), info["library"]
    _assert_products_right(info)


def test_a_slot_on_a_read_only_page_is_written_and_the_page_made_read_only_again():
    """The RELRO case: libmlx.so's slots are writable today, but a build with BIND_NOW would have them read-only."""
    import ctypes
    import mmap

    from mlx_deconv.runtime import jump_slots

    page = mmap.mmap(-1, mmap.PAGESIZE)
    cell = ctypes.c_void_p.from_buffer(page, 64)
    address = ctypes.addressof(cell)
    cell.value = 0x1234
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    start = address - address % mmap.PAGESIZE
    assert libc.mprotect(start, mmap.PAGESIZE, jump_slots.PROT_READ) == 0
    try:
        assert jump_slots.page_protection(address) == jump_slots.PROT_READ
        slot = jump_slots.JumpSlot("cblas_sgemm", address, read_only=True)
        jump_slots.write_slot(slot, 0x5678)
        assert jump_slots.read_slot(slot) == 0x5678
        assert jump_slots.page_protection(address) == jump_slots.PROT_READ  # as it was found
    finally:
        libc.mprotect(start, mmap.PAGESIZE, jump_slots.PROT_READ | jump_slots.PROT_WRITE)
        del cell
        page.close()
