"""The vault end to end with real photos and the real dlib encoder."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from faceseal.errors import InvalidInput, NotFound
from faceseal.vault import Vault

from .conftest import EncodingOf, make_vault, random_encodings, reopen_vault


@pytest.fixture(scope="module")
def obama_vault(tmp_path_factory: pytest.TempPathFactory, faces_dir: Path) -> Iterator[Vault]:
    root = tmp_path_factory.mktemp("faces")
    with make_vault(root / "vault", root / "keys") as vault:
        vault.enroll("obama", [faces_dir / "obama-1.jpg"])
        vault.enroll("biden", [faces_dir / "biden-1.jpg"])
        yield vault


@pytest.mark.parametrize("photo", ["obama-2.jpg", "obama-3.jpg"])
def test_genuine_photos_verify(obama_vault: Vault, faces_dir: Path, photo: str) -> None:
    result = obama_vault.verify("obama", faces_dir / photo)
    assert result.match
    assert result.distance < 0.6
    assert result.threshold == 0.6


@pytest.mark.parametrize("photo", ["biden-1.jpg", "biden-2.jpg"])
def test_impostor_photos_are_rejected(obama_vault: Vault, faces_dir: Path, photo: str) -> None:
    result = obama_vault.verify("obama", faces_dir / photo)
    assert not result.match
    assert result.distance > 0.6


def test_identify_ranks_the_right_subject_first(obama_vault: Vault, faces_dir: Path) -> None:
    result = obama_vault.identify(faces_dir / "obama-2.jpg", top_k=2)
    assert [c.subject_id for c in result.candidates] == ["obama", "biden"]
    assert result.best is not None
    assert result.best.subject_id == "obama"
    assert result.candidates[0].distance < 0.6 < result.candidates[1].distance


def test_photo_with_two_faces_needs_a_choice(obama_vault: Vault, faces_dir: Path) -> None:
    with pytest.raises(InvalidInput, match="2 faces"):
        obama_vault.identify(faces_dir / "two-people.jpg")
    picked = {obama_vault.identify(faces_dir / "two-people.jpg", face_index=i).candidates[0]
              .subject_id for i in (0, 1)}
    assert picked == {"obama", "biden"}


def test_threshold_is_overridable(obama_vault: Vault, faces_dir: Path) -> None:
    strict = obama_vault.verify("obama", faces_dir / "obama-2.jpg", threshold=0.1)
    assert not strict.match
    assert strict.threshold == 0.1
    with pytest.raises(InvalidInput):
        obama_vault.verify("obama", faces_dir / "obama-2.jpg", threshold=float("nan"))


def test_gallery_follows_enrol_and_erase(vault: Vault, encoding_of: EncodingOf) -> None:
    vault.enroll("obama", [encoding_of("obama-1.jpg")])
    assert vault.identify(encoding_of("obama-2.jpg")).best is not None  # gallery now loaded
    vault.enroll("biden", [encoding_of("biden-1.jpg")])
    best = vault.identify(encoding_of("biden-2.jpg")).best
    assert best is not None
    assert best.subject_id == "biden"
    vault.erase("obama")
    result = vault.identify(encoding_of("obama-2.jpg"))
    assert [c.subject_id for c in result.candidates] == ["biden"]
    assert result.best is None
    with pytest.raises(NotFound):
        vault.verify("obama", encoding_of("obama-2.jpg"))


def test_closest_template_decides_verify(vault: Vault, encoding_of: EncodingOf) -> None:
    vault.enroll("obama", [encoding_of("biden-1.jpg"), encoding_of("obama-1.jpg")])
    result = vault.verify("obama", encoding_of("obama-2.jpg"))
    expected = np.linalg.norm(encoding_of("obama-1.jpg") - encoding_of("obama-2.jpg"))
    assert result.match
    assert result.distance == pytest.approx(float(expected), abs=1e-12)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_encodings_round_trip_through_the_vault(vault_dirs: tuple[Path, Path], dtype: str) -> None:
    home, keys = vault_dirs
    encodings = random_encodings(20, dtype=dtype, seed=3)
    with make_vault(home, keys) as vault:
        vault.enroll("s", list(encodings))
    with reopen_vault(home) as vault:
        for row in encodings:
            result = vault.verify("s", row)
            assert result.distance == 0.0
            assert result.match


def test_512_dimension_model(vault_dirs: tuple[Path, Path]) -> None:
    home, keys = vault_dirs
    with make_vault(home, keys) as vault:
        vault.config.extra_models.append(
            {"model_id": "arcface-512", "dimension": 512, "metric": "cosine", "threshold": 0.4})
        vault.save_config()
    with reopen_vault(home) as vault:
        gallery = random_encodings(3, dim=512, dtype="float32", seed=9)
        for i, row in enumerate(gallery):
            vault.enroll(f"p{i}", [row], model="arcface-512")
        found = vault.identify(gallery[1] + 0.001, model="arcface-512", top_k=3)
        assert found.best is not None
        assert found.best.subject_id == "p1"
        with pytest.raises(InvalidInput, match="dimension"):
            vault.enroll("x", [random_encodings(1)[0]], model="arcface-512")
