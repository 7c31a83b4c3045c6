"""The optimized BLAS under MLX (mlx_deconv/runtime/blas.py), each case in a fresh process.

Which library serves ``cblas_sgemm`` is fixed when MLX's library loads, so
every case starts its own interpreter. No timings: speed belongs to ``bench``.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the BLAS swap is Linux-only")

PROBE = r"""
import json, sys, warnings
warnings.simplefilter("always")
caught = []
warnings.showwarning = lambda message, *a, **k: caught.append(str(message))
if "mlx-first" in sys.argv:
    import mlx.core
import mlx_deconv as md
import mlx.core as mx
import numpy as np
info = md.blas_info(measure=False)
rng = np.random.default_rng(0)
a = rng.standard_normal((96, 80)).astype(np.float32)
b = rng.standard_normal((80, 72)).astype(np.float32)
x = rng.standard_normal((1, 40, 16)).astype(np.float32)
w = rng.standard_normal((8, 4, 16)).astype(np.float32)
product = np.array(mx.array(a) @ mx.array(b))
y = np.array(md.conv_transpose1d(mx.array(x), mx.array(w), stride=2, padding=1, backend="gemm"))
info.update(product=product.tolist(), y=y.tolist(), warnings=caught)
print("RESULT" + json.dumps(info))
"""


def _probe(env_extra=None, *args):
    env = {k: v for k, v in os.environ.items() if k != "MLX_DECONV_BLAS"}
    env.update(env_extra or {})
    out = subprocess.run([sys.executable, "-c", PROBE, *args], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    line = next(l for l in out.stdout.splitlines() if l.startswith("RESULT"))
    return json.loads(line[len("RESULT"):])


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


def test_switched_off_keeps_mlx_own_blas():
    info = _probe({"MLX_DECONV_BLAS": "0"})
    assert info["loaded"] is None and not info["optimized"]
    assert _is_mlx_bundled(info["provider"]), info["provider"]
    assert any("MLX_DECONV_BLAS=0" in n for n in info["notes"])


@pytest.mark.skipif(not _optimized_available(), reason="no optimized BLAS (pip install '.[blas]', or a system OpenBLAS)")
def test_symbol_mlx_resolves_comes_from_the_loaded_library_and_results_agree():
    fast = _probe()
    assert fast["loaded"] and fast["optimized"], fast
    assert os.path.realpath(fast["provider"]) == os.path.realpath(fast["loaded"])
    assert not _is_mlx_bundled(fast["provider"])
    slow = _probe({"MLX_DECONV_BLAS": "0"})
    # Different BLAS, same products up to float32 rounding.
    np.testing.assert_allclose(fast["product"], slow["product"], rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(fast["y"], slow["y"], rtol=1e-5, atol=1e-4)
    assert not fast["warnings"]


@pytest.mark.skipif(not _wheel_available(), reason="no BLAS wheel installed (pip install '.[blas]')")
def test_explicit_path_is_used():
    from mlx_deconv.runtime import blas

    path = blas._wheel_candidates()[0]
    info = _probe({"MLX_DECONV_BLAS": path})
    assert os.path.realpath(info["provider"]) == os.path.realpath(path)


def test_missing_library_breaks_nothing_and_says_so(tmp_path):
    missing = str(tmp_path / "libnothing.so")
    info = _probe({"MLX_DECONV_BLAS": missing})
    assert info["loaded"] is None and not info["optimized"]
    assert _is_mlx_bundled(info["provider"])
    assert any(missing in n for n in info["notes"])
    assert len([w for w in info["warnings"] if "MLX_DECONV_BLAS" in w]) == 1


def test_library_that_is_no_blas_is_refused(tmp_path):
    import ctypes.util

    libm = ctypes.util.find_library("m")
    if libm is None:
        pytest.skip("no libm to stand in for a library without cblas_sgemm")
    info = _probe({"MLX_DECONV_BLAS": libm})
    assert info["loaded"] is None
    assert any("exports no cblas_sgemm" in n for n in info["notes"])


def test_library_in_a_folder_others_can_write_is_not_loaded(tmp_path):
    from mlx_deconv.runtime import blas

    folder = tmp_path / "open"
    folder.mkdir(mode=0o755)
    lib = folder / "libfake.so"
    lib.write_bytes(b"")
    os.chmod(lib, 0o644)
    assert blas._private_enough(str(lib))
    for mode in (0o777, 0o1777, 0o775):  # world-writable, sticky like /tmp, group-writable
        os.chmod(folder, mode)
        assert not blas._private_enough(str(lib)), oct(mode)
    os.chmod(folder, 0o755)
    os.chmod(lib, 0o664)
    assert not blas._private_enough(str(lib))
    os.chmod(lib, 0o644)
    # A link from a private folder to a library in an open one is judged by where it leads.
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    (private / "libfake.so").symlink_to(lib)
    os.chmod(folder, 0o777)
    assert not blas._private_enough(str(private / "libfake.so"))
    os.chmod(folder, 0o755)
    if hasattr(os, "getuid") and os.getuid() == 0:  # a library another user owns could be replaced by them
        os.chown(lib, 65534, -1)
        assert not blas._private_enough(str(lib))
        os.chown(lib, 0, -1)
    os.chmod(folder, 0o777)
    info = _probe({"MLX_DECONV_BLAS": str(lib)})
    assert info["loaded"] is None
    assert any("other users can write or own" in n for n in info["notes"])


@pytest.mark.skipif(not _optimized_available(), reason="no BLAS wheel installed (pip install '.[blas]')")
def test_mlx_imported_first_is_said_once():
    info = _probe(None, "mlx-first")
    assert info["loaded"] is None and _is_mlx_bundled(info["provider"])
    assert len([w for w in info["warnings"] if "imported before mlx_deconv" in w]) == 1


def test_user_thread_count_is_not_overridden():
    from mlx_deconv.runtime import blas

    class Handle:
        calls = []

        def MKL_Domain_Set_Num_Threads(self, n, domain):  # noqa: N802 (the library's name)
            self.calls.append((n.value, domain.value))
            return 1  # MKL's "the setting took"

    handle = Handle()
    old = {v: os.environ.pop(v, None) for v in blas.THREAD_VARIABLES}
    try:
        os.environ["OMP_NUM_THREADS"] = "1"
        assert blas._set_threads(handle) is None and Handle.calls == []
        del os.environ["OMP_NUM_THREADS"]
        assert blas._set_threads(handle) == 1 and Handle.calls == [(1, blas.MKL_DOMAIN_BLAS)]
    finally:
        for k, v in old.items():
            if v is not None:
                os.environ[k] = v
            else:
                os.environ.pop(k, None)


@pytest.mark.skipif(not _optimized_available(), reason="no BLAS wheel installed (pip install '.[blas]')")
def test_pytorch_keeps_its_threads():
    pytest.importorskip("torch")
    env = {k: v for k, v in os.environ.items() if k not in ("MLX_DECONV_BLAS",) + tuple(__import__("mlx_deconv.runtime.blas", fromlist=["THREAD_VARIABLES"]).THREAD_VARIABLES)}

    def torch_threads(first: str) -> int:
        code = f"{first}import torch; print('THREADS', torch.get_num_threads())"
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
        return int(next(l for l in out.stdout.splitlines() if l.startswith("THREADS")).split()[1])

    # Our one-thread BLAS setting is not PyTorch's: the same count as a process without mlx_deconv.
    assert torch_threads("import mlx_deconv; ") == torch_threads("")


def test_order_puts_the_system_openblas_before_mkl_on_other_vendors_cpus():
    from mlx_deconv.runtime import blas

    wheels = ["/v/lib/libmkl_rt.so.2", "/v/cmeel/libopenblas.so.0"]
    system = ["/usr/lib/libopenblas.so.0"]
    as_issued = [("wheel", wheels[0]), ("wheel", wheels[1]), ("system", system[0])]
    assert blas.order_candidates(wheels, system, "GenuineIntel") == as_issued
    assert blas.order_candidates(wheels, system, None) == as_issued  # unknown: the documented order
    assert blas.order_candidates(wheels, system, "AuthenticAMD") == [
        ("wheel", wheels[1]), ("system", system[0]), ("wheel", wheels[0])]
    assert blas.order_candidates([], system, "AuthenticAMD") == [("system", system[0])]


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
    assert len(notes) == 1 and "AuthenticAMD" in notes[0] and "libopenblas0-pthread" in notes[0]
    assert "AVX2" in notes[0]
    monkeypatch.delenv("OPENBLAS_CORETYPE")
    monkeypatch.setattr(blas, "cpu_vendor", lambda: "GenuineIntel")
    assert blas._advice("/v/lib/libmkl_rt.so.2") == [] and blas._advice("/usr/lib/libopenblas.so.0") == []


@pytest.mark.skipif(not _system_openblas(), reason="no system OpenBLAS (Debian: apt install libopenblas0-pthread)")
def test_system_openblas_by_soname_is_reported_as_the_file_it_resolved_to():
    info = _probe({"MLX_DECONV_BLAS": "libopenblas.so.0"})
    assert info["optimized"] and os.path.isabs(info["loaded"]), info
    assert os.path.realpath(info["provider"]) == info["loaded"]
    assert info["library"].startswith("OpenBLAS"), info["library"]
    slow = _probe({"MLX_DECONV_BLAS": "0"})
    np.testing.assert_allclose(info["product"], slow["product"], rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(info["y"], slow["y"], rtol=1e-5, atol=1e-4)
