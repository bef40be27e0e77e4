"""Folder enrolment as users do it (issue #15): every bad photo named, all-or-nothing versus
--skip-bad, per-photo face choice, one detection pass per photo, and warnings about photos that
look like another person or repeat a template."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from faceseal.encoders import DlibResNetEncoder
from faceseal.errors import BadSources, InvalidInput, MultipleFacesFound, NoFaceFound
from faceseal.vault import Vault
from faceseal.vault.face_choice import parse_face_options

from .bad_inputs import grey_jpeg, npy_bytes
from .conftest import CliVault, EncodingOf

BAD = ("nobody.jpg", "two-people.jpg", "broken.jpg")


def _good_photos(faces_dir: Path, folder: Path) -> list[str]:
    """15 distinct photos of one person: three originals, mirrored and rescaled (smaller than
    the originals, so that the test spends less time in the detector)."""
    names = []
    for source in ("obama-1.jpg", "obama-2.jpg", "obama-3.jpg"):
        with Image.open(faces_dir / source) as opened:
            image = opened.convert("RGB")
        base = image.resize((image.width * 400 // max(image.size),
                             image.height * 400 // max(image.size)))
        for variant, width in enumerate((400, 380, 360, 340, 320)):
            picture = base.resize((width, base.height * width // base.width))
            if variant % 2:
                picture = ImageOps.mirror(picture)
            name = f"{Path(source).stem}-{variant}.jpg"
            picture.save(folder / name, "JPEG", quality=90)
            names.append(name)
    return names


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory: pytest.TempPathFactory, faces_dir: Path) -> Path:
    folder = tmp_path_factory.mktemp("photos") / "obama"
    folder.mkdir()
    assert len(_good_photos(faces_dir, folder)) == 15
    (folder / "nobody.jpg").write_bytes(grey_jpeg())
    shutil.copy(faces_dir / "two-people.jpg", folder / "two-people.jpg")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return folder


def _json(result: object) -> dict[str, object]:
    return json.loads(result.stdout)  # type: ignore[attr-defined,no-any-return]


def _templates(vault: CliVault) -> int:
    listed = _json(vault.invoke("subjects", "--json"))["subjects"]
    return sum(s["templates"] for s in listed)  # type: ignore[attr-defined]


@pytest.mark.slow
def test_folder_with_bad_photos(cli_vault: CliVault, photo_folder: Path) -> None:
    refused = cli_vault.invoke("enroll", "--subject", "obama", str(photo_folder), "--json")
    assert refused.returncode == 2
    for name in BAD:
        assert name in refused.stderr
    error = _json(refused)["error"]
    assert error["code"] == "bad_sources"  # type: ignore[index]
    assert {p["source"] for p in error["problems"]} == set(BAD)  # type: ignore[index]
    assert {p["code"] for p in error["problems"]} == {  # type: ignore[index]
        "no_face", "multiple_faces", "image_unreadable"}
    assert "--skip-bad" in refused.stderr
    assert _templates(cli_vault) == 0  # all or nothing: nothing enrolled

    skipped = cli_vault.invoke("enroll", "--subject", "obama", str(photo_folder), "--skip-bad",
                               "--json")
    assert skipped.returncode == 0, skipped.stderr
    document = _json(skipped)
    assert document["mode"] == "skip-bad"
    assert len(document["template_ids"]) == 15  # type: ignore[arg-type]
    assert {s["source"] for s in document["skipped"]} == set(BAD)  # type: ignore[attr-defined]
    assert not [w for w in document["warnings"]  # type: ignore[attr-defined]
                if w["code"] == "far_from_subject"]
    assert _templates(cli_vault) == 15

    human = cli_vault.invoke("enroll", "--subject", "other", str(photo_folder), "--skip-bad")
    assert human.returncode == 0, human.stderr
    assert "Enrolled 15 template(s)" in human.stdout
    assert "skipped 3 bad source(s)" in human.stdout
    for name in BAD:
        assert f"skipped {name}:" in human.stdout


@pytest.mark.slow
def test_face_largest_enrolls_the_larger_face(cli_vault: CliVault, faces_dir: Path,
                                              tmp_path: Path,
                                              session_encoder: DlibResNetEncoder) -> None:
    photo = faces_dir / "two-people.jpg"
    from faceseal.encoders import load_image

    boxes = session_encoder.detect(load_image(photo))
    areas = [(b.bottom - b.top) * (b.right - b.left) for b in boxes]
    assert len(boxes) == 2
    assert areas[0] != areas[1]
    larger = int(np.argmax(areas))
    probe = tmp_path / "larger.npy"
    probe.write_bytes(npy_bytes(session_encoder.encode_photo(photo, face_index=larger)))
    other = tmp_path / "smaller.npy"
    other.write_bytes(npy_bytes(session_encoder.encode_photo(photo, face_index=1 - larger)))

    enrolled = cli_vault.invoke("enroll", "--subject", "pair", str(photo), "--face", "largest")
    assert enrolled.returncode == 0, enrolled.stderr
    same = _json(cli_vault.invoke("verify", "--subject", "pair", str(probe), "--json"))
    assert same["distance"] < 1e-6  # type: ignore[operator]
    assert _json(cli_vault.invoke("verify", "--subject", "pair", str(other), "--json"))[
        "distance"] > 0.6  # type: ignore[operator]


def test_per_file_face_choice(vault: Vault, faces_dir: Path, tmp_path: Path,
                              encoding_of: EncodingOf,
                              session_encoder: DlibResNetEncoder) -> None:
    folder = tmp_path / "mixed"
    folder.mkdir()
    shutil.copy(faces_dir / "two-people.jpg", folder / "group.jpg")
    shutil.copy(faces_dir / "obama-small.jpg", folder / "single.jpg")
    with pytest.raises(MultipleFacesFound, match=r"^group\.jpg: found 2 faces"):
        vault.enroll("a", [folder])
    result = vault.enroll("a", [folder], face_index=parse_face_options(["group.jpg=1"]))
    assert result.sources == ["group.jpg", "single.jpg"]
    expected = session_encoder.encode_photo(faces_dir / "two-people.jpg", face_index=1)
    assert vault.verify("a", expected).distance < 1e-6
    with pytest.raises(InvalidInput, match=r"typo\.jpg"):
        vault.enroll("a", [folder], face_index=parse_face_options(["typo.jpg=1"]))


def test_single_bad_photo_named(vault: Vault, faces_dir: Path, tmp_path: Path) -> None:
    nobody = tmp_path / "blank.jpg"
    nobody.write_bytes(grey_jpeg())
    with pytest.raises(NoFaceFound, match=r"^blank\.jpg: no face found"):
        vault.enroll("a", [faces_dir / "obama-small.jpg", nobody])
    with pytest.raises(BadSources, match="none of the 1 sources"):
        vault.enroll("a", [nobody], skip_bad=True)
    assert vault.subjects() == []


def test_one_detection_pass_per_photo(faces_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    encoder = DlibResNetEncoder()
    encoder.load()
    calls: list[int] = []
    real = encoder._detect

    def counting(pixels: object) -> object:
        calls.append(1)
        return real(pixels)  # type: ignore[arg-type]

    monkeypatch.setattr(encoder, "_detect", counting)
    for choice in (None, 0, "largest"):
        calls.clear()
        photo = faces_dir / ("obama-small.jpg" if choice is None else "two-people.jpg")
        encoder.encode_photo(photo, face_index=choice)  # type: ignore[arg-type]
        assert len(calls) == 1


def test_warnings_for_another_person_and_duplicates(vault: Vault,
                                                    encoding_of: EncodingOf) -> None:
    first = vault.enroll("obama", [encoding_of("obama-1.jpg"), encoding_of("obama-2.jpg")])
    assert first.warnings == []
    mixed = vault.enroll("obama", [encoding_of("biden-1.jpg"), encoding_of("obama-1.jpg")])
    codes = {(w["source"], w["code"]) for w in mixed.warnings}
    assert ("array", "far_from_subject") in codes
    assert ("array", "duplicate") in codes
    assert len(mixed.template_ids) == 2  # warnings, not refusals
    fresh = vault.enroll("pair", [encoding_of("obama-3.jpg"), encoding_of("obama-3.jpg")])
    assert [w["code"] for w in fresh.warnings] == ["duplicate"]


def test_several_uploads_are_numbered(vault: Vault, faces_dir: Path) -> None:
    good = (faces_dir / "obama-small.jpg").read_bytes()
    with pytest.raises(BadSources) as caught:
        vault.enroll("a", [good, grey_jpeg(), b"not an image"])
    assert [p["source"] for p in caught.value.problems] == ["uploaded photo 2", "uploaded photo 3"]
    assert "2 of 3 sources cannot be enrolled" in str(caught.value)
    assert vault.enroll("a", [good]).sources == ["uploaded photo"]
