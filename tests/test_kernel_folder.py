"""MLX's folder of compiled CPU kernels (mlx_deconv/runtime/kernel_folder.py): a library planted there by
another user is never loaded once the package is imported, and a private folder is left as it is."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import textwrap
import warnings

import mlx.core as mx
import pytest

from mlx_deconv.runtime import kernel_folder, trust
from mlx_deconv.runtime.kernel_folder import KernelFolderWarning, secure, temp_directory

POSIX = hasattr(os, "getuid")
needs_posix = pytest.mark.skipif(not POSIX, reason="owners and modes are POSIX")

# One fused kernel, compiled on the CPU stream; prints the .so files MLX made or found.
KERNEL = textwrap.dedent("""
    import os, sys
    if sys.argv[1] == "package":
        import mlx_deconv  # noqa: F401
    import mlx.core as mx
    f = mx.compile(lambda a, b: (a * b + a) * 0.5)
    with mx.stream(mx.cpu):
        y = f(mx.ones((4, 8)), mx.full((4, 8), 2.0))
    try:
        print("VALUE", y.sum().item())
    except Exception as err:  # a planted library without the kernel's function: MLX says so
        print("FAILED", type(err).__name__)
""")


def _run(tmpdir, cache, first):
    env = dict(os.environ, TMPDIR=str(tmpdir), MLX_DECONV_CACHE_DIR=str(cache))
    out = subprocess.run([sys.executable, "-c", KERNEL, first], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return out


def _libraries(folder):
    return sorted(p.name for p in folder.glob("lib*.so")) if folder.is_dir() else []


def test_temp_directory_follows_the_cxx_library():
    assert temp_directory({}) == temp_directory({"HOME": "/h"}) == kernel_folder.Path("/tmp")
    assert temp_directory({"TEMP": "/c", "TMP": "/b"}) == kernel_folder.Path("/b")
    assert temp_directory({"TEMPDIR": "/d", "TMPDIR": "/a", "TMP": "/b"}) == kernel_folder.Path("/a")
    assert temp_directory({"TMPDIR": "", "TMP": "/b"}) is None  # refused by the C++ library, not the working folder


@needs_posix
def test_an_empty_temp_variable_makes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    env = {"TMPDIR": ""}
    assert secure(env, mlx_version="9.9.9") is None
    assert list(tmp_path.iterdir()) == [] and env == {"TMPDIR": ""}


@needs_posix
def test_a_private_folder_is_made_and_kept(tmp_path):
    os.chmod(tmp_path, 0o700)
    env = {"TMPDIR": str(tmp_path)}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert secure(env, mlx_version="9.9.9") is None
    folder = tmp_path / "mlx" / "9.9.9" / "cpu"
    for part in (folder.parents[1], folder.parents[0], folder):
        assert stat.S_IMODE(part.stat().st_mode) & 0o077 == 0, part  # made by the package, not by MLX's umask
    assert env == {"TMPDIR": str(tmp_path)}


@needs_posix
@pytest.mark.parametrize("mode", [0o777, 0o775])
def test_a_folder_others_may_write_sends_mlx_elsewhere(tmp_path, mode, monkeypatch):
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o1777)  # as /tmp
    (shared / "mlx").mkdir()
    os.chmod(shared / "mlx", mode)  # made first, open to others: its contents may be anyone's
    monkeypatch.setenv("MLX_DECONV_CACHE_DIR", str(tmp_path / "cache"))  # where the private folder goes
    monkeypatch.setattr(trust, "_is_private_group", lambda uid, gid: False)  # the group holds other users
    env = {"TMPDIR": str(shared)}
    with pytest.warns(KernelFolderWarning, match="is writable by other users"):
        private = secure(env, mlx_version="9.9.9")
    assert private == tmp_path / "cache" / "tmp" and env["TMPDIR"] == str(private)
    assert stat.S_IMODE(private.stat().st_mode) == 0o700
    assert stat.S_IMODE((shared / "mlx").stat().st_mode) == mode  # another's folder is not touched


@needs_posix
@pytest.mark.parametrize("case", ["relative", "not writable", "another's link"])
def test_other_folders_mlx_cannot_safely_use(tmp_path, monkeypatch, case):
    monkeypatch.setenv("MLX_DECONV_CACHE_DIR", "cache")  # relative: TMPDIR is still set to an absolute folder
    monkeypatch.chdir(tmp_path)
    os.chmod(tmp_path, 0o700)
    env = {"TMPDIR": str(tmp_path)}
    if case == "relative":
        (tmp_path / "rel").mkdir()
        env["TMPDIR"] = "rel"
        match = "is relative to the working folder"
    elif case == "not writable":  # root may write anything: the answer is given
        monkeypatch.setattr(os, "access", lambda path, mode: False)
        match = "cannot be written by this user"
    else:
        if os.getuid() != 0:
            pytest.skip("making another user's link needs root")
        mine = tmp_path / "mine"
        mine.mkdir(mode=0o700)
        (tmp_path / "mlx").symlink_to(mine)
        os.lchown(tmp_path / "mlx", 65534, 65534)  # theirs: they may point it at their own folder later
        match = "is a link that belongs to another user"
    with pytest.warns(KernelFolderWarning, match=match):
        private = secure(env, mlx_version="9.9.9")
    assert private == tmp_path / "cache" / "tmp" and env["TMPDIR"] == str(private) and private.is_absolute()


@needs_posix
def test_no_private_folder_disables_compile(tmp_path, monkeypatch):
    shared = tmp_path / "shared"
    (shared / "mlx").mkdir(parents=True)
    os.chmod(shared / "mlx", 0o777)
    calls = []
    monkeypatch.setattr(mx, "disable_compile", lambda: calls.append("disabled"))

    def refuse(*parts):
        raise PermissionError("/home/x/.cache is writable by other users")
    monkeypatch.setattr(kernel_folder, "private_folder", refuse)
    env = {"TMPDIR": str(shared)}
    with pytest.warns(KernelFolderWarning, match="mx.compile is disabled"):
        assert secure(env, mlx_version="9.9.9") is None
    assert calls == ["disabled"] and env == {"TMPDIR": str(shared)}


@needs_posix
@pytest.mark.skipif(shutil.which("g++") is None, reason="MLX compiles CPU kernels with g++")
def test_a_planted_kernel_library_is_not_loaded(tmp_path):
    """Another user's /tmp/mlx holding a library named as a kernel MLX fuses: MLX alone loads it (so the plant
    works), with the package imported first it is never loaded, and the kernel is compiled privately."""
    clean = tmp_path / "clean"
    clean.mkdir(mode=0o700)
    out = _run(clean, tmp_path / "unused", "mlx")
    assert "VALUE 48.0" in out.stdout, out.stdout
    made = next((clean / "mlx").iterdir()) / "cpu"
    names = _libraries(made)
    assert names, "MLX compiled no CPU kernel"
    version = made.parent.name

    marker = tmp_path / "planted-code-ran"
    source = tmp_path / "planted.c"
    source.write_text('#include <stdio.h>\n__attribute__((constructor)) static void planted(void) {\n'
                      f'  FILE* f = fopen("{marker}", "w"); if (f) fclose(f);\n}}\n')
    shared = tmp_path / "shared"
    planted = shared / "mlx" / version / "cpu"
    planted.mkdir(parents=True)
    for name in names:
        subprocess.run(["g++", "-shared", "-fPIC", "-x", "c", str(source), "-o", str(planted / name)], check=True)
    for folder in (planted, planted.parent, planted.parent.parent):
        os.chmod(folder, 0o777)
        if os.getuid() == 0:
            os.chown(folder, 65534, 65534)  # another user's, as they would leave it
    os.chmod(shared, 0o1777)

    out = _run(shared, tmp_path / "cache", "package")
    assert not marker.exists(), "the planted library was loaded with the package imported"
    assert "VALUE 48.0" in out.stdout, out.stdout + out.stderr
    assert "KernelFolderWarning" in out.stderr and str(shared / "mlx") in out.stderr
    assert _libraries(tmp_path / "cache" / "tmp" / "mlx" / version / "cpu") == names  # compiled privately

    _run(shared, tmp_path / "cache", "mlx")  # the control: MLX alone loads what it finds
    assert marker.exists(), "the planted library was not loaded by MLX alone: this test shows nothing"


@needs_posix
def test_a_temp_folder_this_user_cannot_see_raises_nothing(tmp_path, monkeypatch):
    """Another user's TMPDIR (after ``su``) under their private home: stat raises EACCES, and import must not."""
    locked = str(tmp_path / "locked")
    real_stat = os.stat

    def stat_(path, *args, **kwargs):
        if os.fspath(path).startswith(locked):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_stat(path, *args, **kwargs)
    monkeypatch.setattr(os, "stat", stat_)
    env = {"TMPDIR": f"{locked}/tmp"}
    assert secure(env, mlx_version="9.9.9") is None and env == {"TMPDIR": f"{locked}/tmp"}
