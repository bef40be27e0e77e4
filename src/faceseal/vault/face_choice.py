"""Which face to encode in each photo of an enrolment: one choice for all, and per-file ones.

On the command line ``--face`` takes ``N`` (face N, 0-based from the left), ``largest``, or
``FILE=N`` / ``FILE=largest`` for one photo of a folder (FILE is the file name, without its
folder). A per-file choice wins over the general one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from faceseal.encoders.dlib_resnet import LARGEST, FaceChoice
from faceseal.errors import InvalidInput

__all__ = ["FaceChoices", "parse_face_choice", "parse_face_options"]


@dataclass(frozen=True)
class FaceChoices:
    """A general face choice and per-file overrides (keyed by file name)."""

    default: FaceChoice = None
    per_file: Mapping[str, FaceChoice] = field(default_factory=dict)

    def for_source(self, name: str) -> FaceChoice:
        return self.per_file.get(name, self.default)

    def check_names(self, names: set[str]) -> None:
        """Refuse a per-file choice naming no source: a typo would otherwise pass unnoticed."""
        unknown = sorted(set(self.per_file) - names)
        if unknown:
            raise InvalidInput(f"--face names {', '.join(unknown)}, which is not among the "
                               "photos to enroll")


def parse_face_choice(text: str) -> FaceChoice:
    """``largest`` or a whole number from 0."""
    value = text.strip().lower()
    if value == LARGEST:
        return "largest"
    if value.isdigit():
        return int(value)
    raise InvalidInput(f"--face {text!r}: expected a face number (0, 1, ... from the left), "
                       "'largest', or FILE=N")


def parse_face_options(values: Iterable[str]) -> FaceChoices:
    """The repeated ``--face`` options of one command."""
    default: FaceChoice = None
    per_file: dict[str, FaceChoice] = {}
    for text in values:
        name, sep, choice = text.rpartition("=")
        if sep:
            if not name or name in per_file:
                raise InvalidInput(f"--face {text!r}: give each file once, as FILE=N")
            per_file[name] = parse_face_choice(choice)
        elif default is not None:
            raise InvalidInput("--face without FILE= can be given only once")
        else:
            default = parse_face_choice(choice)
    return FaceChoices(default, per_file)
