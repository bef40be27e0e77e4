"""Directories faceseal creates are 0700 whatever the umask; planted links and foreign
directories on the way to the keys or the vault are refused.

The attacks: under ``umask 000`` the parents faceseal made used to be 0777, so another local user
could rename the vault or key directory away and substitute their own; and an administrator running
faceseal as root with ``--keyring-dir`` pointing at a symlink another user planted had the keyring
written wherever that link pointed.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from faceseal.errors import KeyringError
from faceseal.keys.files import check_safe_dir, ensure_private_dir
from faceseal.vault import Vault

from .conftest import make_vault

OTHER_UID = 65534  # nobody


def _init(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    def umask_000() -> None:
        os.umask(0)

    return subprocess.run([sys.executable, "-m", "faceseal", "init", *args], capture_output=True,
                          text=True, env=env, preexec_fn=umask_000, timeout=300,
                          check=False)


def _modes(root: Path) -> dict[str, int]:
    found = {}
    for path in [root, *root.rglob("*")]:
        found[str(path.relative_to(root.parent))] = stat.S_IMODE(path.lstat().st_mode)
    return found


def test_init_under_umask_000_makes_every_directory_0700(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir(mode=0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XDG_", "FACESEAL_"))}
    env["HOME"] = str(home)
    done = _init([], env)  # the platform defaults: ~/.local/share and ~/.config
    assert done.returncode == 0, done.stderr
    modes = _modes(home)
    directories = {p: m for p, m in modes.items()
                   if (tmp_path / p).is_dir() and p != "home"}
    assert any(p.endswith("/vault") for p in directories)
    assert any("/keyrings/" in p for p in directories)
    assert directories
    assert {p: m for p, m in directories.items() if m != 0o700} == {}
    files = {p: m for p, m in modes.items() if (tmp_path / p).is_file()}
    assert files
    assert {p: m for p, m in files.items() if m & 0o077} == {}


def test_explicit_deep_directories_are_0700_too(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FACESEAL_")}
    done = _init(["--vault", str(tmp_path / "a" / "b" / "vault"),
                  "--keyring-dir", str(tmp_path / "c" / "d" / "keys")], env)
    assert done.returncode == 0, done.stderr
    for top in ("a", "c"):
        bad = {p: m for p, m in _modes(tmp_path / top).items()
               if (tmp_path / p).is_dir() and m != 0o700}
        assert bad == {}


@pytest.mark.skipif(os.geteuid() != 0, reason="planting a link as another user needs root")
def test_a_keyring_dir_through_another_users_link_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.mkdir(mode=0o700)
    link = tmp_path / "keys"
    link.symlink_to(target)
    os.lchown(link, OTHER_UID, OTHER_UID)
    with pytest.raises(KeyringError, match="symbolic link owned by user id 65534"):
        Vault.create(tmp_path / "vault", keyring_dir=link)
    assert list(target.iterdir()) == []
    assert stat.S_IMODE(target.stat().st_mode) == 0o700

    env = {k: v for k, v in os.environ.items() if not k.startswith("FACESEAL_")}
    done = _init(["--vault", str(tmp_path / "vault2"), "--keyring-dir", str(link)], env)
    assert done.returncode != 0
    assert "symbolic link" in done.stderr
    assert list(target.iterdir()) == []


@pytest.mark.skipif(os.geteuid() != 0, reason="planting a link as another user needs root")
def test_a_link_planted_in_a_parent_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.mkdir(mode=0o700)
    parent = tmp_path / "parent"
    parent.symlink_to(target)
    os.lchown(parent, OTHER_UID, OTHER_UID)
    with pytest.raises(KeyringError, match="symbolic link"):
        ensure_private_dir(parent / "keys")
    assert not (target / "keys").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="another user's directory needs root to make")
def test_opening_a_vault_whose_key_dir_was_swapped_for_a_planted_link_is_refused(
        tmp_path: Path) -> None:
    home, keys = tmp_path / "vault", tmp_path / "keys"
    make_vault(home, keys).close()
    moved = tmp_path / "attacker-copy"
    keys.rename(moved)
    keys.symlink_to(moved)
    os.lchown(keys, OTHER_UID, OTHER_UID)
    with pytest.raises(KeyringError, match="symbolic link"):
        Vault.open(home)
    os.unlink(keys)
    keys.symlink_to(moved)  # the same link made by the user running faceseal: accepted
    Vault.open(home).close()


@pytest.mark.skipif(os.geteuid() != 0, reason="another user's directory needs root to make")
def test_a_directory_owned_by_another_user_is_refused(tmp_path: Path) -> None:
    foreign = tmp_path / "foreign"
    foreign.mkdir(mode=0o700)
    os.chown(foreign, OTHER_UID, OTHER_UID)
    with pytest.raises(KeyringError, match="owned by user id 65534"):
        ensure_private_dir(foreign)
    assert stat.S_IMODE(foreign.stat().st_mode) == 0o700
    with pytest.raises(KeyringError, match="owned by user id 65534"):
        Vault.create(tmp_path / "vault", keyring_dir=foreign)


def test_a_world_writable_parent_without_sticky_bit_is_refused(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    with pytest.raises(KeyringError, match="writable by every user"):
        check_safe_dir(shared / "keys", must_exist=False)
    shared.chmod(0o1777)  # sticky, like /tmp: others cannot rename our entries
    assert check_safe_dir(shared / "keys", must_exist=False) == (shared / "keys").resolve()


def test_own_links_are_followed(tmp_path: Path) -> None:
    real = tmp_path / "real"
    link = tmp_path / "link"
    link.symlink_to(real)
    assert ensure_private_dir(link / "keys") == (real / "keys").resolve()
    assert stat.S_IMODE((real / "keys").stat().st_mode) == 0o700


def test_a_link_loop_is_refused_clearly(tmp_path: Path) -> None:
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    with pytest.raises(KeyringError, match="too many symbolic links"):
        ensure_private_dir(tmp_path / "a" / "keys")
