"""The default face encoder: dlib's HOG face detector, a landmark predictor and the ResNet model
that maps an aligned face to 128 float64 values (the model ``face_recognition`` uses).

Nothing heavy happens at import: dlib is imported, and the model files of the
``face_recognition_models`` package are loaded, on first use, once per process and *lane*, and
shared by every :class:`DlibResNetEncoder`. dlib's Python objects are not documented as
thread-safe, so each call into them holds a lane: its own copy of the models, used by one thread
at a time, handed out first come, first served (:mod:`faceseal.encoders.fair_lock`). dlib
releases the interpreter lock while it works, so with two lanes (the default on two cores or more;
``FACESEAL_DLIB_LANES`` sets it, 1 to 8) two photos are worked on at once, and a flood of photos
that keeps one lane busy leaves the other free for everyone else.

Faces are numbered from 0 in reading order of their boxes: by left edge, then top edge (then
bottom, right), so the index of a face in a given photo is stable from run to run.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from faceseal.encoders.deadline import holding_lane
from faceseal.encoders.detect_scale import (
    DEFAULT_MAX_DETECT_PIXELS,
    detection_view,
    to_original,
)
from faceseal.encoders.fair_lock import FairLanes
from faceseal.encoders.images import (
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_PIXELS,
    INSTALL_HINT,
    ImageSource,
    load_image,
)
from faceseal.encoders.validation import validate_encoding
from faceseal.errors import EncoderUnavailable, InvalidInput, MultipleFacesFound, NoFaceFound

__all__ = [
    "DIMENSION",
    "DTYPE",
    "LARGEST",
    "MODEL_ID",
    "DlibResNetEncoder",
    "EncodedFace",
    "FaceBox",
    "FaceChoice",
    "Landmarks",
    "check_encoder_settings",
]

MODEL_ID = "dlib-resnet-v1"
DIMENSION = 128
DTYPE = "float64"

Landmarks = Literal["5", "68"]

#: Which face of a photo to encode: None (the photo must hold exactly one), its index in reading
#: order, or ``"largest"`` (the biggest box, so a bystander in the background does not count).
LARGEST = "largest"
FaceChoice = int | Literal["largest"] | None

#: Bounds of the constructor options. Each upsampling step doubles both sides of the image
#: searched, so memory and time grow fourfold per step.
MAX_UPSAMPLE = 3
MAX_NUM_JITTERS = 100

_MODELS_PACKAGE = "face_recognition_models"
_PREDICTOR_FILES: dict[str, str] = {
    "5": "shape_predictor_5_face_landmarks.dat",
    "68": "shape_predictor_68_face_landmarks.dat",
}
_RECOGNITION_FILE = "dlib_face_recognition_resnet_model_v1.dat"
_DETECTOR = "hog-frontal-face-detector"

_log = logging.getLogger(__name__)

LANES_ENV = "FACESEAL_DLIB_LANES"
MAX_LANES = 8

_load_lock = threading.Lock()
_lanes: FairLanes | None = None  # made on first use, from LANES_ENV
_loaded: dict[tuple[str, int], Any] = {}


@dataclass(frozen=True, slots=True)
class FaceBox:
    """Where a face is, in pixels of the upright image, clipped to the image.

    Same convention as ``face_recognition.face_locations``: (top, right, bottom, left).
    """

    top: int
    right: int
    bottom: int
    left: int

    @property
    def area(self) -> int:
        return max(self.bottom - self.top, 0) * max(self.right - self.left, 0)


@dataclass(frozen=True, slots=True)
class EncodedFace:
    """One face of a photo: where it is, and its 128-d encoding."""

    box: FaceBox
    encoding: NDArray[np.float64] = field(repr=False)  # an encoding is biometric data


@dataclass(frozen=True, slots=True)
class _Face:
    box: FaceBox
    rect: Any  # the dlib.rectangle the landmarks are predicted from (unclipped, as dlib gave it)


class DlibResNetEncoder:
    """Photo -> 128-d float64 face encoding with dlib (model id ``dlib-resnet-v1``).

    ``upsample`` (0..3) enlarges the image that many times before detection to find smaller
    faces; ``num_jitters`` (1..100) averages the encoding over that many jittered crops (slower,
    slightly more stable); ``landmarks`` picks the 5-point (default, as ``face_recognition``'s
    "small" model) or the 68-point predictor used to align the face. ``max_pixels`` and
    ``max_bytes`` are the photo limits :meth:`encode_photo` applies unless given others (a
    service lowers them: see :func:`~faceseal.encoders.images.load_image`).
    ``max_detect_pixels`` bounds the pixels the detector searches: a larger photo is searched
    downscaled and encoded from the original (see :mod:`~faceseal.encoders.detect_scale`; None
    searches every photo at full size).
    """

    def __init__(
        self, *, upsample: int = 1, num_jitters: int = 1, landmarks: Landmarks = "5",
        max_pixels: int = DEFAULT_MAX_PIXELS, max_bytes: int = DEFAULT_MAX_BYTES,
        max_detect_pixels: int | None = DEFAULT_MAX_DETECT_PIXELS,
    ) -> None:
        check_encoder_settings(upsample=upsample, num_jitters=num_jitters, landmarks=landmarks)
        _check_limit("max_pixels", max_pixels)
        _check_limit("max_bytes", max_bytes)
        if max_detect_pixels is not None:
            _check_limit("max_detect_pixels", max_detect_pixels)
        self._upsample = upsample
        self._num_jitters = num_jitters
        self._landmarks: Landmarks = landmarks
        self._max_pixels = max_pixels
        self._max_bytes = max_bytes
        self._max_detect_pixels = max_detect_pixels

    def __repr__(self) -> str:
        return (
            f"DlibResNetEncoder(upsample={self._upsample}, num_jitters={self._num_jitters}, "
            f"landmarks={self._landmarks!r})"
        )

    @property
    def model_id(self) -> str:
        return MODEL_ID

    @property
    def encoding_settings(self) -> dict[str, object]:
        """The settings that change the encoding itself (not only which faces are found)."""
        return {"num_jitters": self._num_jitters, "landmarks": self._landmarks}

    @property
    def dimension(self) -> int:
        return DIMENSION

    @property
    def dtype(self) -> str:
        return DTYPE

    def load(self) -> None:
        """Load the models of every lane now rather than on first use (to fail fast, or to warm
        up a server)."""
        for lane in range(dlib_lanes().count):
            self._load_lane(lane)

    def _load_lane(self, lane: int) -> None:
        self._detector(lane)
        self._predictor(lane)
        self._recognizer(lane)

    def detect(self, image: NDArray[np.uint8]) -> list[FaceBox]:
        """Find the faces in an RGB ``uint8`` image ``(H, W, 3)``, in face-index order."""
        return [face.box for face in self._detect(_check_image(image))]

    def encode(
        self, image: NDArray[np.uint8], *, face_index: FaceChoice = None, label: str | None = None
    ) -> NDArray[np.float64]:
        """Encode the one face of an RGB ``uint8`` image, or the face ``face_index`` picks (an
        index, or ``"largest"``).

        The image goes through the detector once, whatever the number of faces, and only the
        chosen face is aligned and encoded. Raises :class:`~faceseal.errors.NoFaceFound` when
        there is no face, :class:`~faceseal.errors.MultipleFacesFound` when there are several and
        ``face_index`` is None, and :class:`~faceseal.errors.InvalidInput` when ``face_index`` is
        out of range; each message starts with ``label`` (a file name) when one is given.
        """
        _check_face_index(face_index)
        pixels = _check_image(image)
        faces = self._detect(pixels)
        chosen = _choose(faces, face_index, label)
        return self._describe(pixels, faces[chosen].rect, chosen, len(faces))

    def encode_all(self, image: NDArray[np.uint8]) -> list[EncodedFace]:
        """Encode every face of an RGB ``uint8`` image, in face-index order (an empty list when
        there is none).

        One detection pass for the whole image, then one alignment and descriptor per face:
        a group photo costs one search, as in ``face_recognition.face_encodings``, not one per
        face as calling :meth:`encode` with each index would.
        """
        pixels = _check_image(image)
        faces = self._detect(pixels)
        return [
            EncodedFace(face.box, self._describe(pixels, face.rect, index, len(faces)))
            for index, face in enumerate(faces)
        ]

    def encode_photo_all(
        self, source: ImageSource, *, max_pixels: int | None = None, max_bytes: int | None = None
    ) -> list[EncodedFace]:
        """Load a photo (see :meth:`encode_photo` for the limits) and :meth:`encode_all` of it."""
        self._load_lane(0)  # one lane's models (0.3 s); others load theirs on first use
        image = load_image(
            source,
            max_pixels=self._max_pixels if max_pixels is None else max_pixels,
            max_bytes=self._max_bytes if max_bytes is None else max_bytes,
        )
        return self.encode_all(image)

    def encode_photo(
        self,
        source: ImageSource,
        *,
        face_index: FaceChoice = None,
        max_pixels: int | None = None,
        max_bytes: int | None = None,
    ) -> NDArray[np.float64]:
        """Load a photo (path or bytes, see :func:`~faceseal.encoders.images.load_image`) and
        :meth:`encode` it. The limits default to the encoder's (see the class)."""
        _check_face_index(face_index)
        self._load_lane(0)  # a missing dlib is reported before the photo is decoded
        image = load_image(
            source,
            max_pixels=self._max_pixels if max_pixels is None else max_pixels,
            max_bytes=self._max_bytes if max_bytes is None else max_bytes,
        )
        label = None if isinstance(source, bytes) else Path(source).name
        return self.encode(image, face_index=face_index, label=label)

    def _detect(self, pixels: NDArray[np.uint8]) -> list[_Face]:
        started = time.perf_counter()
        searched, factor = detection_view(pixels, self._max_detect_pixels)
        with holding_lane(dlib_lanes()) as lane:  # no longer than the request's time limit allows
            rects = list(self._detector(lane)(searched, self._upsample))
        if factor != 1.0:
            rectangle = _import_dlib().rectangle
            rects = [rectangle(*to_original(r.left(), r.top(), r.right(), r.bottom(), factor))
                     for r in rects]
        height, width = pixels.shape[:2]
        faces = sorted((_Face(_to_box(r, height, width), r) for r in rects), key=_reading_order)
        _log.debug(
            "detected %d face(s) in a %dx%d image (searched at 1/%.2f) in %.3f s",
            len(faces),
            width,
            height,
            factor,
            time.perf_counter() - started,
        )
        return faces

    def _describe(
        self, pixels: NDArray[np.uint8], rect: Any, index: int, count: int
    ) -> NDArray[np.float64]:
        started = time.perf_counter()
        with holding_lane(dlib_lanes()) as lane:
            shape = self._predictor(lane)(pixels, rect)
            descriptor = self._recognizer(lane).compute_face_descriptor(pixels, shape,
                                                                        self._num_jitters)
        encoding = validate_encoding(np.array(descriptor, dtype=np.float64), expected_dim=DIMENSION)
        _log.debug("encoded face %d of %d in %.3f s", index, count, time.perf_counter() - started)
        return encoding.astype(np.float64, copy=False)

    def _detector(self, lane: int) -> Any:
        return _shared(_DETECTOR, lane, lambda: _import_dlib().get_frontal_face_detector())

    def _predictor(self, lane: int) -> Any:
        filename = _PREDICTOR_FILES[self._landmarks]
        return _shared(filename, lane, lambda: _load_model_file("shape_predictor", filename))

    def _recognizer(self, lane: int) -> Any:
        return _shared(
            _RECOGNITION_FILE, lane,
            lambda: _load_model_file("face_recognition_model_v1", _RECOGNITION_FILE),
        )


def check_encoder_settings(*, upsample: object, num_jitters: object, landmarks: object) -> None:
    """Refuse encoder settings out of their bounds (:class:`~faceseal.errors.InvalidInput`)."""
    _check_option("upsample", upsample, 0, MAX_UPSAMPLE)
    _check_option("num_jitters", num_jitters, 1, MAX_NUM_JITTERS)
    if landmarks not in _PREDICTOR_FILES:
        raise InvalidInput('landmarks must be "5" or "68"')


def _check_option(name: str, value: object, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidInput(f"{name} must be an integer from {low} to {high}")


def _check_limit(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidInput(f"{name} must be a positive whole number")


def _check_face_index(face_index: FaceChoice) -> None:
    if face_index is None or face_index == LARGEST:
        return
    if isinstance(face_index, bool) or not isinstance(face_index, int) or face_index < 0:
        raise InvalidInput(
            'the face choice must be "largest" or a whole number from 0 (faces count from 0)'
        )


def _check_image(image: object) -> NDArray[np.uint8]:
    if (
        not isinstance(image, np.ndarray)
        or image.dtype != np.uint8
        or image.ndim != 3
        or image.shape[2] != 3
        or image.shape[0] < 1
        or image.shape[1] < 1
    ):
        raise InvalidInput("the image must be an RGB uint8 array of shape (height, width, 3)")
    # dlib needs one contiguous buffer; slices and transposed views are not.
    return np.ascontiguousarray(image)


def _choose(faces: list[_Face], face_index: FaceChoice, label: str | None) -> int:
    prefix = f"{label}: " if label else ""
    count = len(faces)
    if count == 0:
        raise NoFaceFound(f"{prefix}no face found in the photo")
    if face_index == LARGEST:
        # max() keeps the first of equal areas: the leftmost, as the reading order goes.
        return max(range(count), key=lambda i: faces[i].box.area)
    if face_index is None:
        if count > 1:
            raise MultipleFacesFound(
                f"{prefix}found {count} faces in the photo; pick one with --face N (face_index "
                f"over HTTP), N from 0 to {count - 1} counted from the left, or --face largest",
                count,
            )
        return 0
    assert isinstance(face_index, int)
    if face_index >= count:
        raise InvalidInput(
            f"{prefix}face index {face_index} is out of range: the photo has {count} face(s), "
            f"numbered 0 to {count - 1} from the left"
        )
    return face_index


def _to_box(rect: Any, height: int, width: int) -> FaceBox:
    return FaceBox(
        top=max(int(rect.top()), 0),
        right=min(int(rect.right()), width),
        bottom=min(int(rect.bottom()), height),
        left=max(int(rect.left()), 0),
    )


def _reading_order(face: _Face) -> tuple[int, int, int, int]:
    box = face.box
    return (box.left, box.top, box.bottom, box.right)


def dlib_lanes() -> FairLanes:
    """The process's lanes (made on first use: ``FACESEAL_DLIB_LANES``, else two when the
    machine has two cores or more)."""
    global _lanes  # noqa: PLW0603 - one set of lanes per process
    with _load_lock:
        if _lanes is None:
            _lanes = FairLanes(_lane_count())
        return _lanes


def _lane_count() -> int:
    raw = os.environ.get(LANES_ENV, "").strip()
    if not raw:
        return min(2, os.cpu_count() or 1)
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_LANES:
        raise InvalidInput(f"{LANES_ENV} must be a whole number from 1 to {MAX_LANES}")
    return int(raw)


def _shared(name: str, lane: int, factory: Callable[[], Any]) -> Any:
    """Return lane ``lane``'s instance of a dlib model, creating it on first use."""
    with _load_lock:
        if (name, lane) not in _loaded:
            started = time.perf_counter()
            _loaded[name, lane] = factory()
            _log.debug("loaded %s (lane %d) in %.2f s", name, lane,
                       time.perf_counter() - started)
        return _loaded[name, lane]


def _import_dlib() -> Any:
    try:
        import dlib  # noqa: PLC0415  # lazy: dlib is an optional extra and slow to import
    except ImportError:
        raise EncoderUnavailable(
            f"the face encoder needs dlib, which is not installed; run: {INSTALL_HINT}"
        ) from None
    return dlib


def _load_model_file(constructor: str, filename: str) -> Any:
    dlib = _import_dlib()
    path = _model_path(filename)
    try:
        return getattr(dlib, constructor)(str(path))
    except RuntimeError:
        # dlib's deserialisation error for a truncated or foreign file.
        raise EncoderUnavailable(
            f"cannot load the model file {filename}; reinstall it: {INSTALL_HINT}"
        ) from None


def _model_path(filename: str) -> Path:
    # find_spec, not import: the package's __init__ imports the deprecated pkg_resources just to
    # compute these same paths.
    try:
        spec = importlib.util.find_spec(_MODELS_PACKAGE)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise EncoderUnavailable(
            f"the face encoder needs the {_MODELS_PACKAGE} package, which is not installed; "
            f"run: {INSTALL_HINT}"
        )
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "models" / filename
        if candidate.is_file():
            return candidate
    raise EncoderUnavailable(
        f"the model file {filename} is missing from {_MODELS_PACKAGE}; reinstall it: {INSTALL_HINT}"
    )
