"""The package's folder on disk, and the private folders in it.

``$MLX_DECONV_CACHE_DIR``, else ``$XDG_CACHE_HOME/mlx_deconv``, else ``~/.cache/mlx_deconv``: the autotuning
files (:mod:`mlx_deconv.tuning.cache`), the Metal emulator's compiled kernels
(:mod:`mlx_deconv.backends.metal.emulator`) and MLX's compiled CPU kernels when the shared temporary folder
cannot be trusted (:mod:`.kernel_folder`).
"""

from __future__ import annotations

import os
from pathlib import Path

from .trust import why_not_own

ENV_CACHE_DIR = "MLX_DECONV_CACHE_DIR"


def cache_dir() -> Path:
    """``$MLX_DECONV_CACHE_DIR``, else ``$XDG_CACHE_HOME/mlx_deconv``, else ``~/.cache/mlx_deconv`` (also when
    ``XDG_CACHE_HOME`` is not absolute, which the XDG specification says to ignore)."""
    if os.environ.get(ENV_CACHE_DIR):
        return Path(os.environ[ENV_CACHE_DIR]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME", "")
    return (Path(base) if os.path.isabs(base) else Path(os.path.expanduser("~"), ".cache")) / "mlx_deconv"


def private_folder(*parts: str) -> Path:
    """``cache_dir() / parts...`` (absolute), each missing folder on the way made with mode 0700, checked as only
    this user's.

    Args:
        parts: the folders below :func:`cache_dir`.

    Returns:
        Path: the folder.

    Raises:
        PermissionError: when another local user could change it (theirs, writable by others, or under a
            folder they may write), naming the folder at fault; OSError when it cannot be made.
    """
    folder = Path(os.getcwd(), cache_dir()).joinpath(*parts)  # absolute, not normalised: ".." after a link is real
    missing = []
    for above in (folder, *folder.parents):
        if os.path.isdir(above):
            break
        missing.append(above)
    for part in reversed(missing):  # mode 0700, not what the umask gives (Path.mkdir's parents get that)
        part.mkdir(mode=0o700, exist_ok=True)
    reason = why_not_own(folder)
    if reason is not None:
        raise PermissionError(f"{folder} cannot be trusted: {reason}")
    return folder

