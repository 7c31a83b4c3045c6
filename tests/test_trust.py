"""runtime/trust.py beyond what test_blas.py covers: links on the path as written, and a user's private group."""

from __future__ import annotations

import os
import sys
import types

import pytest

from mlx_deconv.runtime import trust
from mlx_deconv.runtime.trust import why_untrusted

pytestmark = pytest.mark.skipif(not hasattr(os, "getuid"), reason="owners and modes are POSIX")
ROOT = hasattr(os, "getuid") and os.getuid() == 0


@pytest.fixture
def private(tmp_path):
    os.chmod(tmp_path, 0o700)
    target = tmp_path / "mine"
    target.mkdir(mode=0o700)
    return tmp_path, target


def test_a_link_in_a_folder_others_may_write_is_refused(private):
    tmp_path, target = private
    open_folder = tmp_path / "open"
    open_folder.mkdir()
    (open_folder / "link").symlink_to(target)
    os.chmod(open_folder, 0o755)
    assert why_untrusted(open_folder / "link") is None
    os.chmod(open_folder, 0o777)  # anyone may point the link elsewhere after the check
    assert "is writable by other users" in why_untrusted(open_folder / "link")
    os.chmod(open_folder, 0o1777)  # as /tmp: only the link's owner may replace it
    assert why_untrusted(open_folder / "link") is None


@pytest.mark.skipif(not ROOT, reason="making another user's link needs root")
def test_another_users_link_to_a_private_folder_is_refused(private):
    tmp_path, target = private
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o1777)
    link = shared / "mlx"
    link.symlink_to(target)
    (target / "below").mkdir(mode=0o700)
    assert why_untrusted(link) is None and why_untrusted(link / "below") is None  # our own link
    os.lchown(link, 65534, 65534)  # theirs: they may swap it for a link to their own folder at any time
    assert "is a link that belongs to another user" in why_untrusted(link)
    assert "is a link that belongs to another user" in why_untrusted(link / "below")

def test_group_writable_is_refused_unless_the_group_is_private(private, monkeypatch):
    tmp_path, target = private
    os.chmod(target, 0o770)
    monkeypatch.setattr(trust, "_is_private_group", lambda uid, gid: False)
    assert "is writable by other users" in why_untrusted(target)
    monkeypatch.setattr(trust, "_is_private_group", lambda uid, gid: True)
    assert why_untrusted(target) is None
    os.chmod(target, 0o772)  # writable by everyone: no group makes that private
    assert "is writable by other users" in why_untrusted(target)


def _accounts(monkeypatch, users, groups):
    fake_pwd = types.ModuleType("pwd")
    fake_pwd.getpwuid = lambda uid: next(u for u in users if u.pw_uid == uid)
    fake_pwd.getpwall = lambda: list(users)
    fake_grp = types.ModuleType("grp")
    fake_grp.getgrgid = lambda gid: next(g for g in groups if g.gr_gid == gid)
    monkeypatch.setitem(sys.modules, "pwd", fake_pwd)
    monkeypatch.setitem(sys.modules, "grp", fake_grp)
    trust._is_private_group.cache_clear()


@pytest.mark.parametrize("case, private_group", [
    ("alone", True),
    ("a member", False),
    ("another's primary group", False),
    ("named otherwise", False),
    ("not the user's group", False),
])
def test_what_makes_a_private_group(monkeypatch, case, private_group):
    u = types.SimpleNamespace
    alice = u(pw_name="alice", pw_uid=1000, pw_gid=1000)
    bob = u(pw_name="bob", pw_uid=1001, pw_gid=1001)
    group = u(gr_name="alice", gr_gid=1000, gr_mem=[])
    users = [alice, bob]
    gid = 1000
    if case == "a member":
        group.gr_mem = ["bob"]
    elif case == "another's primary group":
        bob.pw_gid = 1000
    elif case == "named otherwise":
        group.gr_name = "staff"
    elif case == "not the user's group":
        gid = 1001
    groups = [group, u(gr_name="bob", gr_gid=1001, gr_mem=[])]
    _accounts(monkeypatch, users, groups)
    try:
        assert trust._is_private_group(1000, gid) is private_group
    finally:
        trust._is_private_group.cache_clear()


def test_a_link_met_through_another_link_is_checked_too(private):
    tmp_path, target = private
    mine, open_folder = tmp_path / "home", tmp_path / "open"
    mine.mkdir(mode=0o700)
    open_folder.mkdir()
    (open_folder / "b").symlink_to(target)  # in a folder anyone may write: anyone may repoint it
    (mine / "a").symlink_to(open_folder / "b")
    (mine / "c").symlink_to(str(open_folder / "b") + "/")
    (target / "sub").mkdir(mode=0o700)
    os.chmod(open_folder, 0o755)
    assert why_untrusted(mine / "a") is None and why_untrusted(mine / "c" / "sub") is None
    os.chmod(open_folder, 0o777)
    assert "is writable by other users" in why_untrusted(mine / "a")
    assert "is writable by other users" in why_untrusted(mine / "c" / "sub")
    if ROOT:  # another user's link in a sticky folder: theirs to repoint
        os.chmod(open_folder, 0o1777)
        assert why_untrusted(mine / "a") is None
        os.lchown(open_folder / "b", 65534, 65534)
        assert "is a link that belongs to another user" in why_untrusted(mine / "a")


def test_dot_dot_after_a_link_is_the_targets_parent(private):
    tmp_path, target = private
    open_folder = tmp_path / "open"
    (open_folder / "theirs").mkdir(parents=True)
    (open_folder / "x").mkdir()
    os.chmod(open_folder, 0o777)  # x sits in a folder anyone may write
    (target / "x").mkdir(mode=0o700)  # what "target/l/../x" would be if ".." were taken as text
    (target / "l").symlink_to(open_folder / "theirs")
    assert why_untrusted(target / "x") is None
    assert "is writable by other users" in why_untrusted(f"{target}/l/../x")


def test_a_loop_of_links_ends(private):
    tmp_path, target = private
    (target / "one").symlink_to(target / "two")
    (target / "two").symlink_to(target / "one")
    assert why_untrusted(target / "one") is not None
