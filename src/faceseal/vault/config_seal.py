"""Authenticated configuration: ``vault.json`` is trusted only as far as the key side signed it.

``vault.json`` sits in the vault directory beside the template database, where anyone who can
write the database can usually write it too; raising a model's threshold would make any face
match. So every setting in it is signed: the key directory's audit state keeps a signed copy
(``settings.vault_config``: the settings as canonical JSON and a MAC under the row subkey of the
audit key, see :mod:`faceseal.audit.integrity`). Opening a vault compares the file with that copy
and refuses, naming each setting that differs, when they do not agree.

Only faceseal changes the signed copy: when a vault is created, when keys move to another
provider (the new copy is staged as ``vault_config_pending`` before the file is switched, so a
crash between the two leaves a file that still matches one signed copy), and when an admin saves
the configuration with :meth:`~faceseal.vault.Vault.save_config`.
"""

from __future__ import annotations

import json
from dataclasses import MISSING, asdict, fields
from typing import Any

from faceseal.audit.integrity import RowAuthenticator
from faceseal.audit.state import AuditState
from faceseal.errors import IntegrityFailure
from faceseal.vault.config import CONFIG_FILE, VaultConfig

SETTING = "vault_config"
PENDING_SETTING = "vault_config_pending"
DOMAIN = b"vault-config"


def _settings(config: VaultConfig) -> dict[str, Any]:
    # Through JSON so that the file's spelling and the in-memory values compare alike.
    loaded: dict[str, Any] = json.loads(json.dumps(asdict(config)))
    return loaded


def _canonical(settings: dict[str, Any]) -> bytes:
    return json.dumps(settings, sort_keys=True, separators=(",", ":")).encode()


def _signed(config: VaultConfig, auth: RowAuthenticator) -> str:
    settings = _settings(config)
    return json.dumps({"config": settings,
                       "mac": auth.sign(DOMAIN, _canonical(settings)).hex()})


def seal_config(config: VaultConfig, state: AuditState, auth: RowAuthenticator, *,
                pending: bool = False) -> None:
    """Sign ``config`` into the key side (as the pending copy while a key migration switches
    files)."""
    state.set_setting(PENDING_SETTING if pending else SETTING, _signed(config, auth))
    if not pending:
        # A stale pending copy would let an old file be accepted again later.
        state.set_setting(PENDING_SETTING, "")


def _open(state: AuditState, auth: RowAuthenticator, key: str) -> dict[str, Any] | None:
    text = state.setting(key)
    if not text:
        return None
    try:
        document = json.loads(text)
        settings, mac = document["config"], bytes.fromhex(document["mac"])
    except (ValueError, KeyError, TypeError):
        raise IntegrityFailure("the signed copy of the vault configuration in the key "
                               "directory is unreadable") from None
    if not isinstance(settings, dict) or not auth.verifies(DOMAIN, _canonical(settings), mac):
        raise IntegrityFailure("the signed copy of the vault configuration in the key "
                               "directory fails its MAC: the key directory was tampered with")
    return settings


def _with_later_defaults(signed: dict[str, Any]) -> dict[str, Any]:
    """The signed settings, with each setting added to faceseal after they were signed at its
    default: an older vault's copy does not name it, and its file then holds the default."""
    filled = dict(signed)
    for spec in fields(VaultConfig):
        if spec.name not in filled and spec.default is not MISSING:
            filled[spec.name] = json.loads(json.dumps(spec.default))
    return filled


def _differences(signed: dict[str, Any], current: dict[str, Any]) -> list[str]:
    return [f"{name} (signed {signed.get(name)!r}, file {current.get(name)!r})"
            for name in sorted(set(signed) | set(current))
            if signed.get(name) != current.get(name)]


def signed_config(state: AuditState, auth: RowAuthenticator) -> dict[str, Any]:
    """The settings as last signed (empty for a vault that predates signing)."""
    opened = _open(state, auth, SETTING)
    return {} if opened is None else _with_later_defaults(opened)


def check_config(config: VaultConfig, state: AuditState, auth: RowAuthenticator) -> None:
    """Refuse a ``vault.json`` that differs from the signed copy, naming what changed."""
    current = _settings(config)
    opened = _open(state, auth, SETTING)
    if opened is None:
        raise IntegrityFailure(
            f"{CONFIG_FILE} has no signed copy in the key directory: this vault predates "
            "authenticated configuration; run `faceseal migrate` with an admin's key")
    signed = _with_later_defaults(opened)
    if signed == current:
        return
    pending = _open(state, auth, PENDING_SETTING)
    if pending is not None and _with_later_defaults(pending) == current:
        # A key migration switched the file and stopped before promoting its signed copy.
        state.set_setting(SETTING, state.setting(PENDING_SETTING) or "")
        state.set_setting(PENDING_SETTING, "")
        return
    raise IntegrityFailure(
        f"{CONFIG_FILE} was changed outside faceseal: {'; '.join(_differences(signed, current))}."
        f" Restore the file, or have an admin save the intended settings with "
        "Vault.save_config")
