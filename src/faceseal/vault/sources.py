"""Turning what callers hand in (photos, folders, .npy/.json files, arrays) into encodings.

Everything is read and validated before anything is written. Every source is read even after one
fails, so that the caller learns about all bad files at once, each named; then an enrolment
either takes all of its sources or none (the default), or, with ``skip_bad``, the good ones, and
the bad ones are listed in its result.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import numpy as np
import numpy.typing as npt

from faceseal.encoders import (
    DlibResNetEncoder,
    is_encoding_file,
    is_image_file,
    load_encodings_file,
    validate_encoding,
)
from faceseal.encoders.dlib_resnet import FaceChoice
from faceseal.errors import BadSources, InvalidInput
from faceseal.matching.models import ModelSpec
from faceseal.vault.face_choice import FaceChoices

Encoding = npt.NDArray[np.floating]
#: A photo path, a folder, an encodings file, photo bytes, or an encoding array / list of floats.
Source = Union[str, "os.PathLike[str]", bytes, npt.NDArray[Any], Sequence[float]]
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class ReadEncoding:
    """One encoding read from a source, and the model that produced it."""

    label: str
    model_id: str
    encoding: Encoding

    def __repr__(self) -> str:
        return f"ReadEncoding(label={self.label!r}, model={self.model_id!r}, encoding=<redacted>)"


@dataclass(frozen=True)
class SkippedSource:
    """A source that could not be read, and why (a message that names it)."""

    source: str
    code: str
    reason: str

    def to_dict(self) -> dict[str, str]:
        return {"source": self.source, "code": self.code, "reason": self.reason}


@dataclass(frozen=True)
class ReadBatch:
    """What an enrolment read: the encodings, and the sources skipped with ``skip_bad``."""

    encodings: list[ReadEncoding]
    skipped: list[SkippedSource] = field(default_factory=list)


class SourceReader:
    """Reads encodings for one vault (its model registry and its encoder)."""

    def __init__(
        self,
        models: dict[str, ModelSpec],
        encoder: Callable[[], DlibResNetEncoder] = DlibResNetEncoder,
        *,
        face_index: FaceChoice | FaceChoices = None,
    ) -> None:
        self._models = models
        self._encoder_factory = encoder
        self._encoder: DlibResNetEncoder | None = None
        self._faces = (face_index if isinstance(face_index, FaceChoices)
                       else FaceChoices(default=face_index))

    def _photo_encoder(self) -> DlibResNetEncoder:
        if self._encoder is None:
            self._encoder = self._encoder_factory()
        return self._encoder

    def read_all(
        self, sources: Sequence[Source], model: ModelSpec, progress: Progress | None = None
    ) -> list[ReadEncoding]:
        """Every encoding in ``sources`` (folders expanded), for enrolment under ``model``; all
        or nothing."""
        return self.read_batch(sources, model, progress).encodings

    def read_batch(
        self, sources: Sequence[Source], model: ModelSpec, progress: Progress | None = None,
        *, skip_bad: bool = False,
    ) -> ReadBatch:
        """Read every source (folders expanded), going on after a bad one.

        One bad source: its own error is raised (its message names it). Several:
        :class:`~faceseal.errors.BadSources` lists them all. With ``skip_bad`` the bad ones are
        returned as skipped instead, unless no source at all was good.
        """
        items = [item for source in sources for item in _expand(source)]
        if not items:
            raise InvalidInput("nothing to enroll: no photos or encoding files were given")
        labels = _labels(items)
        self._faces.check_names(set(labels))
        encodings: list[ReadEncoding] = []
        failures: list[tuple[SkippedSource, InvalidInput]] = []
        for done, (item, label) in enumerate(zip(items, labels, strict=True), start=1):
            try:
                encodings.extend(self._read_one(item, model, label))
            except InvalidInput as error:
                failures.append((_skipped(label, error), error))
            if progress is not None:
                progress(done, len(items))
        skipped = [f[0] for f in failures]
        if failures and (not skip_bad or not encodings):
            if len(failures) == 1 and not skip_bad:
                raise failures[0][1]
            raise BadSources(len(items), [s.to_dict() for s in skipped], skip_bad=skip_bad)
        return ReadBatch(encodings, skipped)

    def read_probe(self, probe: Source, model: ModelSpec) -> ReadEncoding:
        """Exactly one encoding for a verify or identify probe."""
        items = _expand(probe)
        if len(items) != 1:
            raise InvalidInput("a probe must be one photo, one encoding file or one encoding")
        found = self._read_one(items[0], model)
        if len(found) != 1:
            raise InvalidInput(f"{found[0].label if found else 'probe'}: a probe must hold "
                               f"exactly one encoding, found {len(found)}")
        return found[0]

    def _read_one(self, item: Source, model: ModelSpec,
                  label: str = "uploaded photo") -> list[ReadEncoding]:
        if isinstance(item, bytes):
            return [self._from_photo(label, item, model)]
        if isinstance(item, (str, os.PathLike)):
            path = Path(item)
            if is_encoding_file(path):
                return [
                    ReadEncoding(path.name, model.model_id, encoding)
                    for encoding in load_encodings_file(path, expected_dim=model.dimension)
                ]
            if is_image_file(path, sniff=True):
                return [self._from_photo(path.name, path, model)]
            raise InvalidInput(
                f"{path.name}: not a photo (JPEG, PNG, WebP, BMP, TIFF or GIF) or an encodings "
                f"file (.npy .json)"
            )
        array = np.asarray(item) if not isinstance(item, np.ndarray) else item
        if array.ndim == 2:
            return [
                ReadEncoding(f"array row {i}", model.model_id,
                             validate_encoding(row, expected_dim=model.dimension))
                for i, row in enumerate(array)
            ]
        if not isinstance(item, np.ndarray) and array.dtype.kind in "iu":
            array = array.astype(np.float64)  # a plain list of ints is a list of numbers
        return [ReadEncoding("array", model.model_id,
                             validate_encoding(array, expected_dim=model.dimension))]

    def _from_photo(self, label: str, photo: Path | bytes, model: ModelSpec) -> ReadEncoding:
        encoder = self._photo_encoder()
        if model.model_id != encoder.model_id:
            raise InvalidInput(
                f"{label}: photos are encoded with {encoder.model_id}, but the model "
                f"{model.model_id} was asked for; pass encodings for other models"
            )
        encoding = encoder.encode_photo(photo, face_index=self._faces.for_source(label))
        return ReadEncoding(label, encoder.model_id, validate_encoding(encoding))


def needs_encoder(source: Source) -> bool:
    """Whether reading ``source`` means running the face encoder (seconds), rather than parsing
    an encoding (microseconds): photo bytes, or a path that is not an encodings file."""
    if isinstance(source, bytes):
        return True
    return isinstance(source, (str, os.PathLike)) and not is_encoding_file(source)


def _labels(items: Sequence[Source]) -> list[str]:
    """How each source is named in results and errors: its file name; uploads are numbered
    (from 1) when there are several, so that an error says which one."""
    uploads = sum(1 for item in items if isinstance(item, bytes))
    labels: list[str] = []
    number = 0
    for item in items:
        if isinstance(item, bytes):
            number += 1
            labels.append(f"uploaded photo {number}" if uploads > 1 else "uploaded photo")
        elif isinstance(item, (str, os.PathLike)):
            labels.append(Path(item).name)
        else:
            labels.append("array")
    return labels


def _skipped(label: str, error: InvalidInput) -> SkippedSource:
    reason = str(error)
    if not reason.startswith(label):
        reason = f"{label}: {reason}"
    return SkippedSource(label, error.code, reason)


def _expand(source: Source) -> list[Source]:
    """A folder becomes its photos and encoding files (sorted, not recursive, hidden skipped).

    A photo is known by its name or, failing that, by its first bytes, so that a JPEG saved
    without extension is enrolled; other files (notes, sidecars) are left alone."""
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if path.is_dir():
            return [
                child for child in sorted(path.iterdir())
                if child.is_file() and not child.name.startswith(".")
                and (is_encoding_file(child) or is_image_file(child, sniff=True))
            ]
        if not path.exists():
            raise InvalidInput(f"{path.name}: no such file or folder")
    return [source]
