"""Whether another local user could change what a path holds: the one test before a library is loaded, a
compiled file run or a cache read.

A check of the path alone is not enough: whoever may write a folder above it can rename that folder's
entries, and swap the path's target between the check and the use. So every folder up to ``/`` is
checked, on the path with its symbolic links resolved: each must belong to this user or to root, and
none may be writable by group or others, except a folder with the sticky bit (``/tmp``), where
others cannot rename or replace what they do not own. The path itself must be writable by its
owner only. A symbolic link on the path as written is followed by every later use, so each must
belong to this user or root, and sit in a folder that passes the same test: its owner may point it
elsewhere after the check.

Writable by the group counts as writable by others, except for this user's private group (named as
the user, holding no one else, no one else's primary group: the scheme Debian and Ubuntu give every
user, whose umask 002 makes folders group-writable).
"""

from __future__ import annotations

import functools
import os
import stat
from typing import Optional


def why_untrusted(path) -> Optional[str]:
    """Why another local user could change ``path`` or what it resolves to, or None when none could.

    Args:
        path: a file or folder that exists.

    Returns:
        str or None: the reason, naming the path at fault (missing, owned by another user, writable by
        others, or a link another user owns); None where only this user and root can change it.
    """
    if not hasattr(os, "getuid"):  # Windows: no owners and modes to read here
        return None
    uid = os.getuid()
    written = os.path.abspath(os.fspath(path))
    reason = _folders_up(os.path.realpath(written), uid, itself=True)
    if reason is not None:
        return reason
    # The links on the path as written: each is followed again at every use.
    current = written
    while True:
        parent = os.path.dirname(current)
        if parent == current:
            return None
        try:
            info = os.lstat(current)
        except OSError as err:
            return f"{current} cannot be read ({err.strerror or err})"
        if stat.S_ISLNK(info.st_mode):
            if info.st_uid not in (uid, 0):
                return f"{current} is a link that belongs to another user (uid {info.st_uid})"
            reason = _folders_up(os.path.realpath(parent), uid, itself=False)
            if reason is not None:
                return reason
        current = parent


def _folders_up(current: str, uid: int, itself: bool) -> Optional[str]:
    """Why another user could change ``current`` (a resolved path) or a folder above it, or None."""
    while True:
        try:
            info = os.lstat(current)
        except OSError as err:
            return f"{current} cannot be read ({err.strerror or err})"
        if info.st_uid not in (uid, 0):
            return f"{current} belongs to another user (uid {info.st_uid})"
        writable = info.st_mode & stat.S_IWOTH or (info.st_mode & stat.S_IWGRP and not _private_group(info, uid))
        sticky = stat.S_ISDIR(info.st_mode) and info.st_mode & stat.S_ISVTX
        if writable and (itself or not sticky):
            return f"{current} is writable by other users (mode {info.st_mode & 0o7777:o})"
        parent = os.path.dirname(current)
        if parent == current:
            return None
        current, itself = parent, False


def _private_group(info: os.stat_result, uid: int) -> bool:
    """Whether ``info``'s group is ``uid``'s own private group: ``uid``'s file, its primary group, named as the
    user and holding no other member."""
    return info.st_uid == uid and _is_private_group(uid, info.st_gid)


@functools.lru_cache(maxsize=8)
def _is_private_group(uid: int, gid: int) -> bool:
    try:
        import grp
        import pwd

        user = pwd.getpwuid(uid)
        group = grp.getgrgid(gid)
    except (ImportError, KeyError, OSError):
        return False
    if user.pw_gid != gid or group.gr_name != user.pw_name or not set(group.gr_mem) <= {user.pw_name}:
        return False
    try:  # nor anyone else's primary group
        return all(other.pw_gid != gid or other.pw_uid == uid for other in pwd.getpwall())
    except OSError:
        return False
