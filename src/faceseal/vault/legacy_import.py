"""Importing a legacy AES-256-CBC ``face_encodings`` table into the vault.

Each legacy row is decrypted with the old key (held only in memory, in :class:`SecretBytes`),
checked like any encoding the vault accepts, and re-sealed as a faceseal record (AES-256-GCM under
the vault's keys) of subject ``str(user_id)``. Rows that cannot be opened or are not a valid
encoding are reported -- id, user id and a reason, never bytes -- and the import goes on.

Progress is committed per batch, together with a marker in the store's metadata
(``legacy-import/<fingerprint of source and table>``) and the batch's audit event (the vault's
``import`` operation: its subjects, template ids and the ids of the rows that failed), so an
interrupted import resumes after the last committed id, and a finished one is not imported twice
by accident.

The old key is never written anywhere: not in the vault, not in the marker, not in a log line,
an exception or a result.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import hashlib
import json
import logging
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from faceseal.crypto.legacy_cbc import (
    BLOCK_BYTES,
    KEY_BYTES,
    LegacyDecryptError,
    decrypt_cbc_pkcs7,
)
from faceseal.crypto.secret import SecretBytes
from faceseal.encoders import validate_encoding
from faceseal.errors import Conflict, InvalidEncoding, InvalidInput
from faceseal.matching.models import ModelSpec
from faceseal.storage.base import TemplateRow, TemplateStore
from faceseal.storage.legacy_source import (
    DEFAULT_TABLE,
    MAX_CIPHERTEXT_LENGTH,
    LegacyRow,
    LegacySource,
)
from faceseal.vault.records import NewTemplate, RecordSealer
from faceseal.vault.results import Result
from faceseal.vault.safe_text import printable

log = logging.getLogger(__name__)

IvLayout = Literal["auto", "column", "prepended"]
TextEncoding = Literal["auto", "hex", "base64"]
PlaintextFormat = Literal["auto", "float64", "json"]
MARKER_PREFIX = "legacy-import/"
MAX_BATCH = 1000
MAX_SUBJECT_ID = 256
_HEX = re.compile(r"^(\\x)?[0-9a-fA-F]*$")

Encoding = npt.NDArray[np.floating]
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class LegacyImportOptions:
    """How to read the legacy table (docs/legacy-import.md)."""

    table: str = DEFAULT_TABLE
    #: ``column``: the IV is in the ``iv`` column; ``prepended``: the first 16 bytes of
    #: ``encrypted_encoding``; ``auto``: the column when it holds a value, else prepended.
    iv_layout: IvLayout = "auto"
    #: How binary values stored in text columns are written (bytes columns are taken as is).
    text_encoding: TextEncoding = "auto"
    #: What the decrypted bytes are: little-endian float64s, or a JSON list of numbers.
    plaintext: PlaintextFormat = "auto"
    batch_size: int = 1000
    #: Import again even though a previous import of this source and table finished.
    again: bool = False

    def check(self) -> None:
        if self.iv_layout not in ("auto", "column", "prepended"):
            raise InvalidInput("iv_layout must be auto, column or prepended")
        if self.text_encoding not in ("auto", "hex", "base64"):
            raise InvalidInput("text_encoding must be auto, hex or base64")
        if self.plaintext not in ("auto", "float64", "json"):
            raise InvalidInput("plaintext must be auto, float64 or json")
        # At most 1,000: each batch is one audit event listing its subjects and template ids.
        if not isinstance(self.batch_size, int) or not 1 <= self.batch_size <= MAX_BATCH:
            raise InvalidInput(f"batch_size must be an integer within 1..{MAX_BATCH}")


@dataclass(frozen=True)
class FailedRow:
    """A legacy row left out, and why (no ciphertext, key or encoding bytes)."""

    row_id: str
    user_id: str
    reason: str


@dataclass(frozen=True)
class LegacyImportResult(Result):
    source: str
    table: str
    tenant: str
    model_id: str
    rows_read: int
    imported: int
    subjects: int
    failed: list[FailedRow] = field(default_factory=list)
    #: The last legacy id a previous, interrupted run had committed (None: started afresh).
    resumed_after: str | None = None

    @property
    def complete(self) -> bool:
        return not self.failed


# --- the old key ---------------------------------------------------------------------------------


def parse_legacy_key(material: bytes) -> SecretBytes:
    """32 raw bytes, 64 hex digits, or base64 of 32 bytes (whitespace around is ignored)."""
    if len(material) == KEY_BYTES:
        return SecretBytes(material)
    text = material.strip()
    if len(text) == KEY_BYTES:
        return SecretBytes(text)
    if len(text) == 2 * KEY_BYTES:
        try:
            return SecretBytes(bytes.fromhex(text.decode("ascii")))
        except (UnicodeDecodeError, ValueError):
            pass
    for decode in (base64.b64decode, base64.urlsafe_b64decode):
        try:
            decoded = decode(text, validate=True) if decode is base64.b64decode else decode(text)
        except (binascii.Error, ValueError):
            continue
        if len(decoded) == KEY_BYTES:
            return SecretBytes(decoded)
    raise InvalidInput("the legacy key must be 32 bytes (AES-256): raw, 64 hex digits or base64")


def read_legacy_key(*, key_file: Path | None = None, key_env: str | None = None) -> SecretBytes:
    """The old key from a file or an environment variable (exactly one of them)."""
    if (key_file is None) == (key_env is None):
        raise InvalidInput("give the legacy key as a file or as an environment variable (one)")
    if key_file is not None:
        try:
            material = key_file.read_bytes()
        except FileNotFoundError:
            raise InvalidInput(f"legacy key file {key_file.name} not found") from None
        except OSError as exc:
            raise InvalidInput(f"cannot read legacy key file {key_file.name}: {exc.strerror}") \
                from None
        return parse_legacy_key(material)
    assert key_env is not None
    value = os.environ.get(key_env)
    if not value:
        raise InvalidInput(f"environment variable {key_env} is not set")
    return parse_legacy_key(value.encode())


# --- one row -------------------------------------------------------------------------------------


class _RowError(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _binary(value: bytes | str | None, what: str, encoding: TextEncoding) -> bytes | None:
    if value is None:
        return None
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if not isinstance(value, str):
        raise _RowError(f"{what} is neither bytes nor text")
    text = value.strip()
    looks_hex = bool(_HEX.match(text)) and len(text.removeprefix("\\x")) % 2 == 0
    if encoding == "hex" or (encoding == "auto" and looks_hex):
        try:
            return bytes.fromhex(text.removeprefix("\\x"))
        except ValueError:
            raise _RowError(f"{what} is not valid hex") from None
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise _RowError(f"{what} is neither hex nor base64") from None


def _json_values(plaintext: bytes) -> list[Any] | None:
    """The list a JSON plaintext holds, or None when the bytes are not a JSON list."""
    text = plaintext.strip()
    if not (text.startswith(b"[") and text.endswith(b"]")):
        return None
    try:
        values = json.loads(text)
    except ValueError:  # also UnicodeDecodeError
        return None
    except RecursionError:  # [[[[...]]]]: the decoder recurses once per level
        raise _RowError("the plaintext is JSON nested too deeply to be an encoding") from None
    return values if isinstance(values, list) else None


def _plaintext_to_encoding(plaintext: bytes, form: PlaintextFormat, spec: ModelSpec) -> Encoding:
    # "auto" takes JSON only when the bytes parse as a JSON list: raw float64 bytes start with
    # "[" once in 256 rows, but never also end with "]" and parse.
    values = None if form == "float64" else _json_values(plaintext)
    if form == "json" and values is None:
        raise _RowError("the plaintext is not a JSON list of numbers")
    array: Any
    if values is not None:
        array = values
    else:
        if len(plaintext) % 8:
            raise _RowError(f"the plaintext is {len(plaintext)} bytes, not a whole number of "
                            "float64 values")
        array = np.frombuffer(plaintext, dtype="<f8").astype(np.float64)
    try:
        return validate_encoding(array, expected_dim=spec.dimension)
    except InvalidEncoding as exc:
        raise _RowError(str(exc)) from None


def _created_at(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, datetime.datetime):
        stamp = value if value.tzinfo else value.replace(tzinfo=datetime.UTC)
        return stamp.timestamp()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            parsed = datetime.datetime.fromisoformat(value.strip())
        except ValueError:
            return None
        return _created_at(parsed)
    return None


def _subject_id(user_id: Any) -> str:
    if user_id is None:
        raise _RowError("user_id is empty")
    subject = user_id if isinstance(user_id, str) else str(user_id)
    if not subject or len(subject) > MAX_SUBJECT_ID:
        raise _RowError(f"user_id must be 1..{MAX_SUBJECT_ID} characters")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in subject):
        raise _RowError("user_id contains control characters")
    return subject


def open_legacy_row(row: LegacyRow, key: SecretBytes, options: LegacyImportOptions,
                    spec: ModelSpec) -> tuple[str, Encoding, float | None]:
    """(subject id, encoding, created_at) of one legacy row, or raise with a reason."""
    subject = _subject_id(row.user_id)
    if row.length is not None and row.length > MAX_CIPHERTEXT_LENGTH:
        raise _RowError(f"encrypted_encoding is {row.length} long, over the limit of "
                        f"{MAX_CIPHERTEXT_LENGTH}")
    blob = _binary(row.ciphertext, "encrypted_encoding", options.text_encoding)
    if not blob:
        raise _RowError("encrypted_encoding is empty")
    iv = _binary(row.iv, "iv", options.text_encoding)
    layout = options.iv_layout
    if layout == "auto":
        layout = "column" if iv else "prepended"
    if layout == "column":
        if not iv:
            raise _RowError("the iv column is empty")
        ciphertext = blob
    else:
        iv, ciphertext = blob[:BLOCK_BYTES], blob[BLOCK_BYTES:]
    try:
        plaintext = decrypt_cbc_pkcs7(key, iv, ciphertext)
    except LegacyDecryptError as exc:
        raise _RowError(exc.reason) from None
    return subject, _plaintext_to_encoding(plaintext, options.plaintext, spec), \
        _created_at(row.created_at)


# --- the whole table -----------------------------------------------------------------------------


def marker_key(source: LegacySource) -> str:
    fingerprint = hashlib.sha256(source.describe().encode()).hexdigest()[:32]
    return MARKER_PREFIX + fingerprint


#: Persists one step of an import: ``(rows, encodings, marker_key, marker_value, detail)``. The
#: vault writes the rows, the progress marker and the operation's audit event (with ``detail``
#: and the rows' template ids) in one store transaction; the last call has no rows.
SaveStep = Callable[[list[TemplateRow], list[Encoding], str, str, dict[str, Any]], None]


def import_table(
    source: LegacySource,
    key: SecretBytes,
    *,
    store: TemplateStore,
    sealer: RecordSealer,
    tenant: str,
    spec: ModelSpec,
    options: LegacyImportOptions,
    save: SaveStep,
    progress: Progress | None = None,
) -> LegacyImportResult:
    """Re-seal every row of ``source`` as templates of ``tenant``, one batch per ``save``."""
    options.check()
    marker = marker_key(source)
    previous = _load_marker(store.get_meta(marker))
    resume_after: Any = None
    imported = 0
    if previous is not None:
        if previous.get("complete") and not options.again:
            raise Conflict(
                f"{source.describe()} was imported already ({previous.get('imported', 0)} rows "
                f"into tenant {previous.get('tenant')!r}); import again only on purpose "
                "(--again)"
            )
        if not previous.get("complete") and not options.again:
            resume_after = previous.get("last_id")
            imported = int(previous.get("imported", 0))
    total = source.count(resume_after)
    described = source.describe()[:2048]
    state: dict[str, Any] = {
        "source": described, "tenant": tenant, "model_id": spec.model_id,
        "last_id": resume_after, "imported": imported, "complete": False,
        "started_at": time.time(),
    }
    read = 0
    failed: list[FailedRow] = []
    subjects: set[str] = set()
    for number, batch in enumerate(source.batches(resume_after, options.batch_size), start=1):
        items: list[NewTemplate] = []
        stamps: list[float | None] = []
        batch_failed: list[str] = []
        for legacy in batch:
            try:
                subject, encoding, created = open_legacy_row(legacy, key, options, spec)
            except _RowError as exc:
                # Ids come from the legacy table: escape what a terminal would act on.
                failed.append(FailedRow(printable(str(legacy.row_id)),
                                        printable(str(legacy.user_id)), exc.reason))
                batch_failed.append(printable(str(legacy.row_id)))
                continue
            items.append(NewTemplate(tenant, subject, spec.model_id, encoding))
            stamps.append(created)
            subjects.add(subject)
        read += len(batch)
        # Sealing reserves (and commits) its encryption counts first; then the rows, the
        # progress marker and the audit event are committed together by ``save``.
        rows = [r if s is None else replace(r, created_at=s)
                for r, s in zip(sealer.seal(items), stamps, strict=True)]
        state.update(last_id=_json_id(batch[-1].row_id), imported=state["imported"] + len(rows))
        save(rows, [i.encoding for i in items], marker, json.dumps(state), {
            "source": described, "table": source.table, "batch": number, "rows": len(batch),
            "imported": len(rows), "failed_ids": batch_failed,
            "subjects": sorted({i.subject_id for i in items}),
        })
        if progress is not None:
            progress(read, total)
    state.update(complete=True, finished_at=time.time(), failed=len(failed))
    save([], [], marker, json.dumps(state), {
        "source": described, "table": source.table, "rows_read": read,
        "imported": state["imported"] - imported, "failed": len(failed),
        "subjects": len(subjects), "complete": True,
        "resumed_after": None if resume_after is None else str(resume_after),
    })
    if failed:
        log.warning("legacy import: %d row(s) could not be imported", len(failed))
    return LegacyImportResult(described, source.table, tenant, spec.model_id, read,
                              state["imported"] - imported, len(subjects), failed,
                              None if resume_after is None else str(resume_after))


def _json_id(value: Any) -> Any:
    """A legacy id as it can be stored in the marker and compared again (int or text)."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        return str(value)
    return value


def _load_marker(text: str | None) -> dict[str, Any] | None:
    if text is None:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def failed_rows_text(failed: Sequence[FailedRow]) -> list[str]:
    return [f"id {f.row_id} (user {f.user_id}): {f.reason}" for f in failed]
