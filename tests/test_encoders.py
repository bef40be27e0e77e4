"""faceseal.encoders: photos in, dlib encodings out, on the real sample photos and real dlib."""

from __future__ import annotations

import io
import os
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray
from PIL import ExifTags, Image

from faceseal.encoders import (
    MODEL_ID,
    DlibResNetEncoder,
    FaceBox,
    is_image_file,
    load_image,
)
from faceseal.errors import (
    ImageTooLarge,
    ImageUnreadable,
    InvalidInput,
    MultipleFacesFound,
    NoFaceFound,
)

from .bad_inputs import png_claiming

PROJECT_ROOT = Path(__file__).resolve().parents[1]
TOLERANCE = 0.6  # the usual dlib threshold: same person below, different people above

Encode = Callable[[str], NDArray[np.float64]]


@pytest.fixture(scope="module")
def encoder(session_encoder: DlibResNetEncoder) -> DlibResNetEncoder:
    return session_encoder


def distance(a: NDArray[np.float64], b: NDArray[np.float64]) -> float:
    return float(np.linalg.norm(a - b))


def image_bytes(image: Image.Image, fmt: str, **options: object) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **options)
    return buf.getvalue()


# --- identity ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "obama-1.jpg",
        "obama-2.jpg",
        "obama-3.jpg",
        "obama-small.jpg",
        "biden-1.jpg",
        "biden-2.jpg",
        "rgba-32bit.png",
    ],
)
def test_encoding_is_128_float64(encoding_of: Encode, name: str) -> None:
    encoding = encoding_of(name)
    assert encoding.dtype == np.float64
    assert encoding.shape == (128,)
    assert encoding.flags.c_contiguous
    assert np.isfinite(encoding).all()


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("obama-1.jpg", "obama-2.jpg"),
        ("obama-1.jpg", "obama-3.jpg"),
        ("obama-1.jpg", "obama-small.jpg"),
        ("biden-1.jpg", "biden-2.jpg"),
        # the RGBA PNG is obama-2 with an alpha channel: converted to RGB it must still match
        ("obama-1.jpg", "rgba-32bit.png"),
    ],
)
def test_same_person_is_close(encoding_of: Encode, a: str, b: str) -> None:
    assert distance(encoding_of(a), encoding_of(b)) < TOLERANCE


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("obama-1.jpg", "biden-1.jpg"),
        ("obama-1.jpg", "biden-2.jpg"),
        ("obama-2.jpg", "biden-1.jpg"),
        ("obama-3.jpg", "biden-2.jpg"),
    ],
)
def test_different_people_are_far(encoding_of: Encode, a: str, b: str) -> None:
    assert distance(encoding_of(a), encoding_of(b)) > TOLERANCE


def test_encoding_is_deterministic(
    encoder: DlibResNetEncoder, encoding_of: Encode, faces_dir: Path
) -> None:
    again = encoder.encode_photo((faces_dir / "obama-small.jpg").read_bytes())
    np.testing.assert_array_equal(again, encoding_of("obama-small.jpg"))


def test_encoder_describes_its_model(encoder: DlibResNetEncoder) -> None:
    assert (encoder.model_id, encoder.dimension, encoder.dtype) == (MODEL_ID, 128, "float64")
    assert MODEL_ID == "dlib-resnet-v1"


# --- several faces -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def two_people(faces_dir: Path) -> NDArray[np.uint8]:
    return load_image(faces_dir / "two-people.jpg")


def test_two_faces_need_a_choice(encoder: DlibResNetEncoder, faces_dir: Path) -> None:
    with pytest.raises(MultipleFacesFound) as caught:
        encoder.encode_photo(faces_dir / "two-people.jpg")
    assert caught.value.count == 2
    assert "2 faces" in str(caught.value)
    assert "--face N" in str(caught.value)


def test_faces_are_numbered_left_to_right(
    encoder: DlibResNetEncoder, two_people: NDArray[np.uint8]
) -> None:
    boxes = encoder.detect(two_people)
    assert len(boxes) == 2
    assert all(isinstance(box, FaceBox) for box in boxes)
    assert boxes[0].left < boxes[1].left
    height, width = two_people.shape[:2]
    for box in boxes:
        assert 0 <= box.left < box.right <= width
        assert 0 <= box.top < box.bottom <= height


def test_face_index_picks_each_person(
    encoder: DlibResNetEncoder, two_people: NDArray[np.uint8], encoding_of: Encode
) -> None:
    first, second = (encoder.encode(two_people, face_index=i) for i in (0, 1))
    assert distance(first, second) > TOLERANCE
    obama, biden = encoding_of("obama-1.jpg"), encoding_of("biden-1.jpg")
    pairs = {
        (distance(e, obama) < TOLERANCE, distance(e, biden) < TOLERANCE) for e in (first, second)
    }
    assert pairs == {(True, False), (False, True)}


def test_encode_all_detects_once_and_equals_each_index(
    encoder: DlibResNetEncoder, two_people: NDArray[np.uint8], monkeypatch: pytest.MonkeyPatch
) -> None:
    one_by_one = [encoder.encode(two_people, face_index=i) for i in (0, 1)]
    searches = 0
    detect = DlibResNetEncoder._detect

    def counted(self: DlibResNetEncoder, pixels: NDArray[np.uint8]) -> object:
        nonlocal searches
        searches += 1
        return detect(self, pixels)

    monkeypatch.setattr(DlibResNetEncoder, "_detect", counted)
    every = encoder.encode_all(two_people)
    assert searches == 1
    assert [face.box for face in every] == encoder.detect(two_people)
    for face, alone in zip(every, one_by_one, strict=True):
        np.testing.assert_array_equal(face.encoding, alone)
    assert "encoding" not in repr(every[0])  # an encoding is biometric data


def test_encode_all_without_a_face_is_empty(encoder: DlibResNetEncoder) -> None:
    assert encoder.encode_all(np.full((64, 64, 3), 128, dtype=np.uint8)) == []


def test_encode_photo_all_reads_the_file(encoder: DlibResNetEncoder, faces_dir: Path) -> None:
    every = encoder.encode_photo_all(faces_dir / "two-people.jpg")
    assert len(every) == 2


@pytest.mark.parametrize("face_index", [2, 17, -1])
def test_face_index_out_of_range(
    encoder: DlibResNetEncoder, two_people: NDArray[np.uint8], face_index: int
) -> None:
    with pytest.raises(InvalidInput) as caught:
        encoder.encode(two_people, face_index=face_index)
    assert type(caught.value) is InvalidInput


def test_face_index_zero_with_one_face(
    encoder: DlibResNetEncoder, encoding_of: Encode, faces_dir: Path
) -> None:
    chosen = encoder.encode_photo(faces_dir / "obama-small.jpg", face_index=0)
    np.testing.assert_array_equal(chosen, encoding_of("obama-small.jpg"))


# --- image modes and orientation -----------------------------------------------------------------


def test_greyscale_photo_still_matches(
    encoder: DlibResNetEncoder, encoding_of: Encode, faces_dir: Path
) -> None:
    grey = Image.open(faces_dir / "obama-1.jpg").convert("L")
    data = image_bytes(grey, "PNG")
    assert Image.open(io.BytesIO(data)).mode == "L"
    assert distance(encoder.encode_photo(data), encoding_of("obama-1.jpg")) < TOLERANCE


def test_exif_orientation_is_applied(
    encoder: DlibResNetEncoder, encoding_of: Encode, faces_dir: Path
) -> None:
    upright = Image.open(faces_dir / "obama-2.jpg")
    # Pixels stored turned a quarter left; Orientation 6 tells viewers to turn them right back.
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6
    data = image_bytes(upright.transpose(Image.Transpose.ROTATE_90), "JPEG", quality=95, exif=exif)

    loaded = load_image(data)
    assert loaded.shape == (upright.height, upright.width, 3)
    assert distance(encoder.encode(loaded), encoding_of("obama-2.jpg")) < TOLERANCE

    # Ignoring the tag leaves the face sideways: the frontal detector misses it, or what it
    # finds is not the same face.
    sideways = np.array(Image.open(io.BytesIO(data)).convert("RGB"))
    assert sideways.shape == (upright.width, upright.height, 3)
    try:
        wrong = encoder.encode(sideways)
    except NoFaceFound:
        return
    assert distance(wrong, encoding_of("obama-2.jpg")) >= TOLERANCE


def _noise(size: int) -> Image.Image:
    rng = np.random.default_rng(1234)
    return Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))


@pytest.mark.parametrize(
    "image",
    [Image.new("RGB", (300, 300), (128, 128, 128)), _noise(300)],
    ids=["uniform-grey", "noise"],
)
def test_no_face(encoder: DlibResNetEncoder, image: Image.Image) -> None:
    with pytest.raises(NoFaceFound):
        encoder.encode_photo(image_bytes(image, "JPEG"))


def _palette_image(colour: tuple[int, int, int]) -> Image.Image:
    image = Image.new("P", (5, 6), 0)
    image.putpalette(list(colour) + [0, 0, 0] * 255)
    return image


def _sixteen_bit_grey() -> Image.Image:
    return Image.fromarray(np.full((6, 5), 40000, dtype=np.uint16))


@pytest.mark.parametrize(
    ("image", "fmt", "expected_pixel"),
    [
        (Image.new("RGBA", (5, 6), (10, 20, 30, 0)), "PNG", (10, 20, 30)),  # alpha dropped
        (Image.new("LA", (5, 6), (77, 128)), "PNG", (77, 77, 77)),
        (Image.new("L", (5, 6), 77), "PNG", (77, 77, 77)),
        (Image.new("1", (5, 6), 1), "PNG", (255, 255, 255)),
        (_palette_image((10, 200, 30)), "PNG", (10, 200, 30)),
        (Image.new("CMYK", (5, 6), (0, 0, 0, 0)), "JPEG", (255, 255, 255)),
        (_sixteen_bit_grey(), "PNG", (156, 156, 156)),  # 40000 >> 8, not clipped to white
        (Image.new("RGB", (5, 6), (10, 200, 30)), "BMP", (10, 200, 30)),
        (Image.new("RGB", (5, 6), (10, 200, 30)), "TIFF", (10, 200, 30)),
        (Image.new("RGB", (5, 6), (10, 200, 30)), "WEBP", None),  # lossy: shape only
    ],
    ids=["RGBA", "LA", "L", "1", "P", "CMYK", "I;16", "BMP", "TIFF", "WEBP"],
)
def test_every_mode_becomes_rgb(
    image: Image.Image, fmt: str, expected_pixel: tuple[int, int, int] | None
) -> None:
    pixels = load_image(image_bytes(image, fmt))
    assert pixels.dtype == np.uint8
    assert pixels.shape == (6, 5, 3)
    assert pixels.flags.c_contiguous
    assert pixels.flags.writeable
    if expected_pixel is not None:
        assert tuple(pixels[0, 0]) == expected_pixel


# --- refused photos ------------------------------------------------------------------------------


def _corrupt_inputs(faces_dir: Path) -> dict[str, bytes]:
    jpeg = (faces_dir / "obama-1.jpg").read_bytes()
    return {
        "truncated-jpeg": jpeg[: len(jpeg) // 3],
        "random-bytes": np.random.default_rng(7).bytes(5000),
        "empty": b"",
        "text": b"this is not a photo\n" * 10,
        "jpeg-magic-then-garbage": b"\xff\xd8\xff\xe0" + bytes(200),
        # a real image, in a format outside the allow-list
        "pcx": image_bytes(Image.new("RGB", (8, 8)), "PCX"),
    }


@pytest.mark.parametrize(
    "case",
    ["truncated-jpeg", "random-bytes", "empty", "text", "jpeg-magic-then-garbage", "pcx"],
)
def test_unreadable_photo(faces_dir: Path, case: str) -> None:
    with pytest.raises(ImageUnreadable):
        load_image(_corrupt_inputs(faces_dir)[case])


def test_missing_photo_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(ImageUnreadable) as caught:
        load_image(tmp_path / "nobody.jpg")
    assert "nobody.jpg" in str(caught.value)
    assert str(tmp_path) not in str(caught.value)


def _jpeg_claiming(width: int, height: int) -> bytes:
    data = bytearray(image_bytes(Image.new("RGB", (16, 16)), "JPEG"))
    sof = data.index(b"\xff\xc0")  # baseline frame header: marker, length, precision, H, W
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    # Cut a few bytes into the scan, so that decoding (were it tried) fails as truncated.
    sos = data.index(b"\xff\xda")
    (length,) = struct.unpack(">H", data[sos + 2 : sos + 4])
    return bytes(data[: sos + 2 + length + 4])


HUGE_HEADERS = {
    # beyond Pillow's own bomb limit as well as ours
    "png-30000x30000": png_claiming(30000, 30000),
    "jpeg-30000x30000": _jpeg_claiming(30000, 30000),
    # under Pillow's limit (~89 Mpx) but over faceseal's 40 Mpx default: only our check fires
    "png-8000x8000": png_claiming(8000, 8000),
    "jpeg-8000x6000": _jpeg_claiming(8000, 6000),
}


@pytest.mark.parametrize("case", sorted(HUGE_HEADERS))
@pytest.mark.parametrize("pillow_limit", ["default", "disabled"])
def test_huge_header_refused_before_decoding(
    monkeypatch: pytest.MonkeyPatch, case: str, pillow_limit: str
) -> None:
    if pillow_limit == "disabled":
        # Prove faceseal does not lean on Pillow's process-wide limit.
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    before = Image.MAX_IMAGE_PIXELS
    started = time.perf_counter()
    # The data behind each header is a few truncated bytes: had the pixels been decoded before
    # the size check, the error would be ImageUnreadable, not ImageTooLarge.
    with pytest.raises(ImageTooLarge):
        load_image(HUGE_HEADERS[case])
    assert time.perf_counter() - started < 2.0
    assert before == Image.MAX_IMAGE_PIXELS


@pytest.mark.parametrize("make", [png_claiming, _jpeg_claiming], ids=["png", "jpeg"])
def test_crafted_headers_are_undecodable(make: Callable[[int, int], bytes]) -> None:
    # The premise of the test above: within the limits, these files fail only when decoded.
    with pytest.raises(ImageUnreadable):
        load_image(make(100, 100))


def test_pixel_limit_is_a_parameter(faces_dir: Path) -> None:
    photo = faces_dir / "obama-small.jpg"  # 320x240
    assert load_image(photo, max_pixels=320 * 240).shape == (240, 320, 3)
    with pytest.raises(ImageTooLarge, match="320x240"):
        load_image(photo, max_pixels=320 * 240 - 1)


@pytest.mark.parametrize("as_path", [True, False], ids=["path", "bytes"])
def test_byte_limit(faces_dir: Path, as_path: bool) -> None:
    photo = faces_dir / "obama-small.jpg"
    size = photo.stat().st_size
    source: Path | bytes = photo if as_path else photo.read_bytes()
    assert load_image(source, max_bytes=size).shape == (240, 320, 3)
    with pytest.raises(ImageTooLarge):
        load_image(source, max_bytes=size - 1)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("a.jpg", True),
        ("a.JPEG", True),
        ("a.png", True),
        ("a.webp", True),
        ("a.Bmp", True),
        ("a.tif", True),
        ("a.TIFF", True),
        ("a.gif", True),
        ("a.jfif", True),
        ("a.JPE", True),
        ("a.npy", False),
        ("jpg", False),
        ("a.jpg.txt", False),
    ],
)
def test_is_image_file(name: str, expected: bool) -> None:
    assert is_image_file(Path(name)) is expected


# --- encoder API contract ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "image",
    [
        np.zeros((10, 10), dtype=np.uint8),
        np.zeros((10, 10, 4), dtype=np.uint8),
        np.zeros((10, 10, 3), dtype=np.float64),
        np.zeros((0, 10, 3), dtype=np.uint8),
        [[[0, 0, 0]]],
    ],
    ids=["2-D", "4-channels", "float", "empty", "list"],
)
def test_encode_refuses_non_rgb_arrays(encoder: DlibResNetEncoder, image: object) -> None:
    with pytest.raises(InvalidInput):
        encoder.encode(image)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "options",
    [
        {"upsample": -1},
        {"upsample": 4},
        {"num_jitters": 0},
        {"num_jitters": 101},
        {"landmarks": "7"},
        {"upsample": True},
    ],
)
def test_constructor_options_are_checked(options: dict[str, object]) -> None:
    with pytest.raises(InvalidInput):
        DlibResNetEncoder(**options)  # type: ignore[arg-type]


def test_68_point_landmarks_agree(encoding_of: Encode, faces_dir: Path) -> None:
    encoder68 = DlibResNetEncoder(landmarks="68")
    encoding = encoder68.encode_photo(faces_dir / "obama-small.jpg")
    assert distance(encoding, encoding_of("obama-small.jpg")) < TOLERANCE
    assert distance(encoding, encoding_of("biden-1.jpg")) > TOLERANCE


def test_shared_encoder_across_threads(
    encoder: DlibResNetEncoder, encoding_of: Encode, faces_dir: Path
) -> None:
    image = load_image(faces_dir / "obama-small.jpg")
    results: list[NDArray[np.float64]] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            results.append(encoder.encode(image))
        except BaseException as exc:  # re-raised in the main thread's assertion
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    for result in results:
        np.testing.assert_array_equal(result, encoding_of("obama-small.jpg"))


def test_debug_log_carries_no_encoding_values(
    encoder: DlibResNetEncoder, faces_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level("DEBUG", logger="faceseal"):
        encoding = encoder.encode_photo(faces_dir / "obama-small.jpg")
    assert "encoded face 0 of 1" in caplog.text
    for value in encoding[:16]:
        assert f"{abs(value):.6f}"[2:] not in caplog.text


# --- optional dependencies -----------------------------------------------------------------------


def run_python(code: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT / "src")}
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_import_is_light() -> None:
    out = run_python(
        "import sys, faceseal.encoders as enc\n"
        "enc.DlibResNetEncoder(landmarks='68')\n"
        "heavy = ('dlib', '_dlib_pybind11', 'PIL', 'face_recognition_models')\n"
        "print(sorted(name for name in heavy if name in sys.modules))"
    )
    assert out == "[]"


@pytest.mark.parametrize(
    ("blocked", "call"),
    [
        ("dlib", "DlibResNetEncoder().load()"),
        ("face_recognition_models", "DlibResNetEncoder().load()"),
        ("PIL", "load_image(b'not needed')"),
    ],
)
def test_missing_extra_says_how_to_install(blocked: str, call: str) -> None:
    # None in sys.modules makes the import fail as if the package were not installed.
    out = run_python(
        f"import sys\nsys.modules[{blocked!r}] = None\n"
        "from faceseal.encoders import DlibResNetEncoder, load_image\n"
        "from faceseal.errors import EncoderUnavailable\n"
        f"try:\n    {call}\nexcept EncoderUnavailable as exc:\n    print('refused:', exc)\n"
    )
    assert out.startswith("refused:")
    assert "pip install 'faceseal[faces]'" in out
