"""Whether another local user could change what a path holds: the one test before a library is loaded, a
compiled file run or a cache read.

A check of the path alone is not enough: whoever may write a folder above it can rename that folder's
entries, and swap the path's target between the check and the use. So every folder up to ``/`` is
checked, on the path with its symbolic links resolved: each must belong to this user or to root, and
none may be writable by group or others, except a folder with the sticky bit (``/tmp``), where
others cannot rename or replace what they do not own. The path itself must be writable by its
owner only.
"""

from __future__ import annotations

import os
import stat
from typing import Optional


def why_untrusted(path) -> Optional[str]:
    """Why another local user could change ``path`` or what it resolves to, or None when none could.

    Args:
        path: a file or folder that exists.

    Returns:
        str or None: the reason, naming the path at fault (missing, owned by another user, or writable by
        others); None where only this user and root can change it.
    """
    if not hasattr(os, "getuid"):  # Windows: no owners and modes to read here
        return None
    uid = os.getuid()
    current = os.path.realpath(os.fspath(path))
    itself = True
    while True:
        try:
            info = os.lstat(current)
        except OSError as err:
            return f"{current} cannot be read ({err.strerror or err})"
        if info.st_uid not in (uid, 0):
            return f"{current} belongs to another user (uid {info.st_uid})"
        writable = info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
        sticky = stat.S_ISDIR(info.st_mode) and info.st_mode & stat.S_ISVTX
        if writable and (itself or not sticky):
            return f"{current} is writable by other users (mode {info.st_mode & 0o7777:o})"
        parent = os.path.dirname(current)
        if parent == current:
            return None
        current, itself = parent, False
