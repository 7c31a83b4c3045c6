"""Whether another local user could change what a path holds: the one test before a library is loaded, a
compiled file run or a cache read.

A check of the path alone is not enough: whoever may write a folder above it can rename that folder's
entries, and swap the path's target between the check and the use. So every folder up to ``/`` is
checked, on the path with its symbolic links resolved: each must belong to this user or to root, and
none may be writable by group or others, except a folder with the sticky bit (``/tmp``), where
others cannot rename or replace what they do not own. The path itself must be writable by its
owner only. A symbolic link is followed again by every later use, so each link met on the way
(links to links included, the path followed one name at a time as the system follows it) must belong to
this user or root and sit in a folder that passes the same test: its owner may point it elsewhere after
the check.

Writable by the group counts as writable by others, except for this user's private group (named as
the user, holding no one else, no one else's primary group: the scheme Debian and Ubuntu give every
user, whose umask 002 makes folders group-writable).
"""

from __future__ import annotations

import functools
import os
import stat
from typing import Optional, Tuple


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
    written = os.fspath(path)
    if not os.path.isabs(written):  # joined, not normalised: "link/.." is the link's target's parent
        written = os.path.join(os.getcwd(), written)
    reason, resolved = _resolved(written, uid)
    if reason is not None:
        return reason
    return _folders_up(resolved, uid, itself=True)


def why_not_own(path) -> Optional[str]:
    """:func:`why_untrusted`'s reason, or first that ``path`` is not this user's own (root's included): what a
    private folder of this user's must pass. None when it passes."""
    if hasattr(os, "getuid"):
        owner = os.stat(path).st_uid
        if owner != os.getuid():
            return f"{path} belongs to another user (uid {owner})"
    return why_untrusted(path)


#: Links followed in one path at most, as the kernel's limit (ELOOP).
MAX_LINKS = 40


def _resolved(path: str, uid: int) -> Tuple[Optional[str], Optional[str]]:
    """``(reason, None)``, or ``(None, path resolved)``: ``path`` (absolute) followed one name at a time, as the
    system does, each link met (links to links too) this user's or root's and in a folder that passes
    :func:`_folders_up`, since its owner, or whoever may write that folder, can point it elsewhere later."""
    current, pending, links = os.sep, [part for part in path.split(os.sep) if part], 0
    while pending:
        name = pending.pop(0)
        if name == ".":
            continue
        if name == "..":  # current holds no link, so its parent is the one the system takes
            current = os.path.dirname(current)
            continue
        candidate = os.path.join(current, name)
        try:
            info = os.lstat(candidate)
        except OSError as err:
            return f"{candidate} cannot be read ({err.strerror or err})", None
        if not stat.S_ISLNK(info.st_mode):
            current = candidate
            continue
        links += 1
        if links > MAX_LINKS:
            return f"{path} passes through more than {MAX_LINKS} links", None
        if info.st_uid not in (uid, 0):
            return f"{candidate} is a link that belongs to another user (uid {info.st_uid})", None
        reason = _folders_up(current, uid, itself=False)
        if reason is not None:
            return reason, None
        target = os.readlink(candidate)
        if os.path.isabs(target):
            current = os.sep
        pending = [part for part in target.split(os.sep) if part] + pending
    return None, current


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
