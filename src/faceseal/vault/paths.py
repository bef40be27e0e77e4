"""Where a vault and its keys live by default.

The template database goes to the platform *data* directory, the keyring to the platform *config*
directory, one keyring directory per vault: two different trees, so that backing up or copying
one does not carry the other. ``FACESEAL_HOME`` and ``FACESEAL_KEYRING_DIR`` override them.
"""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

APP_NAME = "faceseal"
HOME_ENV = "FACESEAL_HOME"
KEYRING_DIR_ENV = "FACESEAL_KEYRING_DIR"
PASSPHRASE_ENV = "FACESEAL_PASSPHRASE"  # noqa: S105 - the variable's name, not a secret


def default_home() -> Path:
    """The vault directory: ``$FACESEAL_HOME`` or ``<user data dir>/faceseal/vault``."""
    configured = os.environ.get(HOME_ENV)
    if configured:
        return Path(configured).expanduser()
    return Path(platformdirs.user_data_dir(APP_NAME)) / "vault"


def default_keyring_dir(vault_id: str) -> Path:
    """The keyring directory: ``$FACESEAL_KEYRING_DIR``, else
    ``<user config dir>/faceseal/keyrings/<vault id>``."""
    configured = os.environ.get(KEYRING_DIR_ENV)
    if configured:
        return Path(configured).expanduser()
    return Path(platformdirs.user_config_dir(APP_NAME)) / "keyrings" / vault_id
