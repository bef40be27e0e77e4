"""Photos are told by their bytes, not their names (issue #15): GIF (first frame), JPEGs named
.jfif/.jpe or without extension, in folders too; other files are still refused or left alone."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from faceseal.encoders import DlibResNetEncoder, load_image
from faceseal.errors import InvalidInput
from faceseal.vault import Vault

from .conftest import EncodingOf


@pytest.mark.parametrize("name", ["photo.jfif", "photo.jpe", "photo", "photo.dat"])
def test_jpeg_under_any_name(vault: Vault, faces_dir: Path, tmp_path: Path,
                             encoding_of: EncodingOf, name: str) -> None:
    renamed = tmp_path / name
    shutil.copy(faces_dir / "obama-small.jpg", renamed)
    result = vault.enroll("a", [renamed])
    assert result.sources == [name]
    assert vault.verify("a", encoding_of("obama-small.jpg")).distance < 1e-9


def test_gif_first_frame(faces_dir: Path, tmp_path: Path,
                         session_encoder: DlibResNetEncoder) -> None:
    with Image.open(faces_dir / "obama-small.jpg") as opened:
        face = opened.convert("RGB")
    blank = Image.new("RGB", face.size, (0, 0, 0))
    animated = tmp_path / "animated.gif"
    face.save(animated, "GIF", save_all=True, append_images=[blank], duration=100)
    with Image.open(animated) as check:
        assert check.n_frames == 2
    pixels = load_image(animated)
    assert pixels.shape == (face.height, face.width, 3)
    # The palette costs a little precision; the person is still the same, clearly.
    distance = np.linalg.norm(session_encoder.encode_photo(animated)
                              - session_encoder.encode_photo(faces_dir / "obama-small.jpg"))
    assert distance < 0.3


def test_folder_takes_photos_by_content(vault: Vault, faces_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "f"
    folder.mkdir()
    shutil.copy(faces_dir / "obama-small.jpg", folder / "IMG_0001")
    (folder / "notes.txt").write_text("taken in 2020\n")
    (folder / "sidecar.xmp").write_bytes(b"<x:xmpmeta/>")
    buffer = io.BytesIO()
    with Image.open(faces_dir / "obama-small.jpg") as opened:
        opened.convert("RGB").save(buffer, "PNG")
    (folder / "png-named.jpeg").write_bytes(buffer.getvalue())  # a PNG with a JPEG's name
    result = vault.enroll("a", [folder])
    assert result.sources == ["IMG_0001", "png-named.jpeg"]


def test_named_file_that_is_no_photo(vault: Vault, tmp_path: Path) -> None:
    text = tmp_path / "notes"
    text.write_text("not a photo\n")
    with pytest.raises(InvalidInput, match="notes: not a photo"):
        vault.enroll("a", [text])
