"""MLX's folder of compiled CPU kernels, made private at import: MLX loads any library it finds there.

On a CPU stream, ``mx.compile`` (which this package uses for most calls) builds each fused kernel into a
shared library in ``<temp>/mlx/<MLX version>/cpu`` and, when a library of that kernel's name is already
there, loads it without compiling anything. ``<temp>`` is the C++ library's temporary folder: ``$TMPDIR``
(else ``$TMP``, ``$TEMP``, ``$TEMPDIR``), else ``/tmp``, which every local user shares on Linux. Whoever
makes ``/tmp/mlx`` first owns it, and a library they put there runs in the next process that fuses a
kernel of that name.

So at import (:func:`secure`) the package makes the missing folders of that path itself, mode 0700, and
checks the kernel folder and every folder and link on the way to it (:func:`~.trust.why_untrusted`). If
another user owns one or may write it (or the folder is relative, or not writable), MLX is sent elsewhere: ``TMPDIR`` is set, for this process and the processes it
starts, to a private folder in the package's cache folder, with a warning naming the folder at fault.
macOS gives each user a private ``$TMPDIR``, so nothing changes there.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Mapping, MutableMapping, Optional

from .cache_folder import private_folder
from .trust import why_untrusted

#: The variables the C++ library's ``temp_directory_path`` reads, in its order (libstdc++ and libc++).
TEMP_VARIABLES = ("TMPDIR", "TMP", "TEMP", "TEMPDIR")


class KernelFolderWarning(UserWarning):
    """MLX's folder of compiled CPU kernels could not be trusted, and MLX was sent elsewhere."""


def temp_directory(environ: Mapping[str, str]) -> Optional[Path]:
    """The folder ``std::filesystem::temp_directory_path()`` gives: the first of :data:`TEMP_VARIABLES` set,
    else ``/tmp``; None for an empty one, which the C++ library refuses (so MLX's compile fails)."""
    for name in TEMP_VARIABLES:
        value = environ.get(name)
        if value is not None:
            return Path(value) if value else None  # Path("") would be the working folder
    return Path("/tmp")


def kernel_folder(temp: Path, mlx_version: str) -> Path:
    """Where MLX compiles and looks up its CPU kernels: ``<temp>/mlx/<MLX version>/cpu``."""
    return temp / "mlx" / mlx_version / "cpu"


def _made_private(temp: Path, folder: Path) -> Optional[str]:
    """Makes the missing folders from ``temp`` down to ``folder`` (mode 0700), and says why another user could
    change ``folder``, or None."""
    part = temp
    for name in folder.relative_to(temp).parts:
        part = part / name
        try:
            part.mkdir(mode=0o700)
        except FileExistsError:
            pass  # made before (by MLX, by us or by another user): judged below
        except OSError as err:
            return f"{part} cannot be made ({err.strerror or err})"
    reason = why_untrusted(folder)
    if reason is None and not os.access(folder, os.W_OK | os.X_OK):  # MLX could not compile into it
        reason = f"{folder} cannot be written by this user"
    return reason


def secure(environ: Optional[MutableMapping[str, str]] = None, mlx_version: Optional[str] = None) -> Optional[Path]:
    """Sends MLX's compiled CPU kernels to a private folder when its own is one another local user could change.

    Args:
        environ: the environment MLX reads (``os.environ``, the default; tests pass their own).
        mlx_version (str, optional): the MLX version in the folder's name. Default: ``mx.__version__``.

    Returns:
        Path or None: the folder ``TMPDIR`` was set to, or None where MLX's own folder can be trusted (or there is
        nothing to check: no owners on this system, or no temporary folder).
    """
    environ = os.environ if environ is None else environ
    if not hasattr(os, "getuid"):  # Windows: no owners and modes to read here
        return None
    if mlx_version is None:
        import mlx.core as mx  # not at import: runtime.blas loads before mlx.core

        mlx_version = mx.__version__
    temp = temp_directory(environ)
    if temp is None or not os.path.isdir(temp):  # none, or not ours to see: MLX's compile fails there
        return None
    folder = kernel_folder(temp, mlx_version)
    if not folder.is_absolute():  # MLX resolves it again at each compile, from wherever the process is then
        reason = f"{folder} is relative to the working folder"
    else:
        reason = _made_private(temp, folder)
    if reason is None:
        return None
    try:
        private = private_folder("tmp")
    except OSError as err:
        import mlx.core as mx

        mx.disable_compile()
        warnings.warn(f"MLX's folder of compiled CPU kernels {folder} cannot be trusted ({reason}), and neither can "
                      f"a private one ({err}): mx.compile is disabled for this process, so that no kernel library "
                      f"another user could have put there is loaded", KernelFolderWarning, stacklevel=3)
        return None
    environ["TMPDIR"] = str(private)
    warnings.warn(f"MLX's folder of compiled CPU kernels {folder} cannot be trusted: {reason}. MLX loads any library "
                  f"it finds there, so this process's TMPDIR is now {private}, where MLX compiles its kernels instead "
                  f"(if the folder at fault is yours, removing it lets the package make it again, private)",
                  KernelFolderWarning, stacklevel=3)
    return private
