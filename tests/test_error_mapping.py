"""Every error class has a code, a family, an HTTP status and a CLI exit status that agree.

The classes are found by walking the hierarchy, so that a new error class that is not mapped in
``faceseal.http.problems.HTTP_STATUS`` and ``faceseal.cli.output.EXIT_CODES`` fails here.
"""

from __future__ import annotations

import re

import pytest

from faceseal import errors
from faceseal.cli.output import EXIT_CODES, exit_code_for
from faceseal.errors import FacesealError
from faceseal.http.problems import HTTP_STATUS, TITLES, status_for

from .conftest import PROJECT_ROOT

#: The documented meaning of each exit status (docs/cli.md).
EXIT_BAD_INPUT, EXIT_DENIED, EXIT_NOT_FOUND, EXIT_INTERNAL = 2, 3, 4, 5


def _faceseal_error_classes() -> list[type[FacesealError]]:
    """Every subclass of FacesealError that faceseal defines (the client's remote mixins are
    copies of these, made at run time, and are left out)."""
    found: list[type[FacesealError]] = []
    pending: list[type[FacesealError]] = [FacesealError]
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        if cls.__module__.startswith("faceseal.") and cls.__module__ != "faceseal.client":
            found.append(cls)
    return sorted(set(found), key=lambda c: c.__name__)


CLASSES = _faceseal_error_classes()


def test_the_walk_finds_the_whole_hierarchy() -> None:
    # Guards the walk itself: a broken walk would make the per-class checks vacuous.
    assert len(CLASSES) >= 30
    for name in ("KeyringError", "EncoderUnavailable", "DecryptionError", "BudgetExceeded",
                 "StorageMisconfigured", "RequestTooLarge"):
        assert getattr(errors, name) in CLASSES


@pytest.mark.parametrize("cls", CLASSES, ids=[c.__name__ for c in CLASSES])
def test_each_error_class_is_mapped_consistently(cls: type[FacesealError]) -> None:
    assert re.fullmatch(r"[a-z][a-z0-9_]*", cls.code), cls.code
    assert cls.family in ("user", "internal")
    # The family and the class's place in the hierarchy say the same thing.
    assert cls.family == ("user" if issubclass(cls, errors.UserError) else "internal")
    # Transport details belong to the edges, not to the error classes.
    assert not hasattr(cls, "http_status")
    assert not hasattr(cls, "exit_code")

    assert cls in HTTP_STATUS, f"{cls.__name__} has no HTTP status in http/problems.py"
    assert cls in EXIT_CODES, f"{cls.__name__} has no exit status in cli/output.py"
    status, exit_status = HTTP_STATUS[cls], EXIT_CODES[cls]
    assert status in TITLES
    assert (status_for(cls), exit_code_for(cls)) == (status, exit_status)
    if cls.family == "user":
        assert 400 <= status < 500
        assert exit_status in (EXIT_BAD_INPUT, EXIT_DENIED, EXIT_NOT_FOUND)
    else:
        assert 500 <= status < 600
        assert exit_status == EXIT_INTERNAL
    # The documented meanings of the exit statuses follow from the HTTP status.
    if status in (401, 403, 429):
        assert exit_status == EXIT_DENIED
    elif status == 404:
        assert exit_status == EXIT_NOT_FOUND
    elif cls.family == "user":
        assert exit_status == EXIT_BAD_INPUT


def test_codes_are_unique() -> None:
    codes = [cls.code for cls in CLASSES]
    assert len(codes) == len(set(codes)), sorted(c for c in codes if codes.count(c) > 1)


def test_the_tables_hold_nothing_but_error_classes() -> None:
    # A stale entry (a class renamed or removed) would show as a class outside the hierarchy.
    assert set(HTTP_STATUS) == set(CLASSES)
    assert set(EXIT_CODES) == set(CLASSES)


def test_key_custody_and_a_missing_encoder_are_internal() -> None:
    # A service's keyring or encoder is never the HTTP client's to fix (docs/http.md).
    for cls in (errors.KeyringError, errors.EncoderUnavailable):
        assert issubclass(cls, errors.InternalError)
        assert (status_for(cls()), exit_code_for(cls())) == (
            HTTP_STATUS[cls], EXIT_INTERNAL)
    assert status_for(errors.KeyringError) == 500
    assert status_for(errors.EncoderUnavailable) == 501


def test_errors_that_are_not_faceseals_are_internal() -> None:
    assert (status_for(ValueError("x")), exit_code_for(ValueError("x"))) == (500, EXIT_INTERNAL)


def test_the_documented_error_table_matches_the_code() -> None:
    text = (PROJECT_ROOT / "docs" / "http.md").read_text()
    header = "| code | family | HTTP | exit | class | meaning |"
    documented: dict[str, tuple[str, int, int, str]] = {}
    for line in text[text.index(header):].splitlines()[2:]:
        if not line.startswith("| `"):
            break
        code, family, status, exit_status, name = (
            c.strip().strip("`") for c in line.strip("|").split("|")[:5])
        documented[code] = (family, int(status), int(exit_status), name)
    assert documented == {cls.code: (cls.family, HTTP_STATUS[cls], EXIT_CODES[cls], cls.__name__)
                          for cls in CLASSES}
