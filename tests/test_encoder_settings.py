"""The photo encoder's settings belong to the vault: signed in vault.json, used for every
template and probe, and a differently built encoder (or a later change once templates exist) is
refused, because its encodings would not compare with the enrolled ones."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from faceseal.encoders import DlibResNetEncoder
from faceseal.errors import IntegrityFailure, InvalidInput
from faceseal.vault import Vault
from faceseal.vault.config import CONFIG_FILE
from faceseal.vault.config_seal import DOMAIN, SETTING

from .conftest import invoke_cli, make_vault, reopen_vault, vault_keys


@pytest.fixture(scope="module")
def obama_68(faces_dir: Path) -> np.ndarray:
    return DlibResNetEncoder(landmarks="68", upsample=0).encode_photo(faces_dir / "obama-1.jpg")


def test_a_vault_encodes_with_its_own_settings(
    tmp_path: Path, faces_dir: Path, obama_68: np.ndarray, encoding_of: Any,
) -> None:
    built: list[dict[str, object]] = []

    def factory(**settings: Any) -> DlibResNetEncoder:
        built.append(settings)
        return DlibResNetEncoder(**settings)

    make_vault(tmp_path / "v", tmp_path / "k",
               encoder_settings={"landmarks": "68", "upsample": 0}).close()
    with reopen_vault(tmp_path / "v", encoder_factory=factory) as vault:
        vault.enroll("obama", [faces_dir / "obama-1.jpg"])
        assert built == [{"upsample": 0, "num_jitters": 1, "landmarks": "68"}]
        # The template is the encoding with the vault's settings, not with the defaults.
        assert vault.verify("obama", obama_68).distance == 0.0
        five = vault.verify("obama", encoding_of("obama-1.jpg")).distance
        assert five is not None
        assert five > 0.0
    saved = json.loads((tmp_path / "v" / CONFIG_FILE).read_text())
    assert saved["encoder_landmarks"] == "68"


def test_an_encoder_built_otherwise_is_refused(tmp_path: Path, faces_dir: Path) -> None:
    make_vault(tmp_path / "v", tmp_path / "k", encoder_settings={"landmarks": "68"}).close()

    def ignores_the_vault(**_: Any) -> DlibResNetEncoder:
        return DlibResNetEncoder()  # 5-point landmarks

    with reopen_vault(tmp_path / "v", encoder_factory=ignores_the_vault) as vault:
        with pytest.raises(InvalidInput, match="would not compare"):
            vault.enroll("obama", [faces_dir / "obama-1.jpg"])
        assert vault.subjects() == []


@pytest.mark.parametrize("settings", [{"upsample": 9}, {"num_jitters": 0},
                                      {"landmarks": "7"}, {"model": "x"}])
def test_bad_settings_create_nothing(tmp_path: Path, settings: dict[str, object]) -> None:
    with pytest.raises(InvalidInput):
        Vault.create(tmp_path / "v", keyring_dir=tmp_path / "k", encoder_settings=settings)
    assert not (tmp_path / "v" / CONFIG_FILE).exists()


def test_editing_the_file_is_refused(tmp_path: Path) -> None:
    make_vault(tmp_path / "v", tmp_path / "k").close()
    path = tmp_path / "v" / CONFIG_FILE
    document = json.loads(path.read_text())
    document["encoder_landmarks"] = "68"
    path.write_text(json.dumps(document))
    with pytest.raises(IntegrityFailure, match="encoder_landmarks"):
        reopen_vault(tmp_path / "v")


def test_a_copy_signed_before_the_settings_existed_still_opens(tmp_path: Path) -> None:
    """Vaults signed by an earlier faceseal name no encoder setting: they mean the defaults."""
    with make_vault(tmp_path / "v", tmp_path / "k") as vault:
        state, auth = vault._audit_state, vault._guard.seal.authenticator
        document = json.loads(state.setting(SETTING) or "")
        older = {k: v for k, v in document["config"].items() if not k.startswith("encoder_")}
        canonical = json.dumps(older, sort_keys=True, separators=(",", ":")).encode()
        state.set_setting(SETTING, json.dumps(
            {"config": older, "mac": auth.sign(DOMAIN, canonical).hex()}))
    with reopen_vault(tmp_path / "v") as reopened:
        assert reopened.config.encoder_settings()["landmarks"] == "5"


def test_changing_how_encodings_are_made_needs_an_empty_vault(
    tmp_path: Path, encoding_of: Any,
) -> None:
    make_vault(tmp_path / "v", tmp_path / "k").close()
    with Vault.open(tmp_path / "v", api_key=vault_keys(tmp_path / "v").admin) as admin:
        admin.config.set_encoder({"upsample": 2})
        admin.save_config()  # detection only: allowed
        admin.config.set_encoder({"landmarks": "68"})
        admin.save_config()  # still empty: allowed
    with reopen_vault(tmp_path / "v") as vault:
        assert vault.config.encoder_settings() == {"upsample": 1, "num_jitters": 1,
                                                   "landmarks": "68"}
        vault.enroll("obama", [encoding_of("obama-1.jpg")])
    with Vault.open(tmp_path / "v", api_key=vault_keys(tmp_path / "v").admin) as admin:
        admin.config.set_encoder({"num_jitters": 3, "landmarks": "68"})
        with pytest.raises(InvalidInput, match="num_jitters cannot change"):
            admin.save_config()
    with reopen_vault(tmp_path / "v") as vault:
        assert vault.config.encoder_settings()["num_jitters"] == 1


def test_init_takes_the_settings(tmp_path: Path) -> None:
    env = {"FACESEAL_HOME": str(tmp_path / "v"), "FACESEAL_KEYRING_DIR": str(tmp_path / "k")}
    made = invoke_cli("init", "--json", "--landmarks", "68", "--jitters", "2", env=env)
    assert made.returncode == 0, made.stderr
    assert json.loads(made.stdout)["encoder"] == {"upsample": 1, "num_jitters": 2,
                                                  "landmarks": "68"}
    refused = invoke_cli("init", "--landmarks", "7", env={
        "FACESEAL_HOME": str(tmp_path / "w"), "FACESEAL_KEYRING_DIR": str(tmp_path / "k2")})
    assert refused.returncode == 2
    assert not (tmp_path / "w" / CONFIG_FILE).exists()
