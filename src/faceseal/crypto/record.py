"""Record format v1: one sealed face encoding.

Byte layout (all integers big-endian; pinned by ``tests/test_record_format.py``, described in
``docs/format.md``)::

    offset  size  field
    0       1     format version, 0x01
    1       1     dtype code: 0x01 float32 little-endian, 0x02 float64 little-endian
    2       2     dimension (uint16)
    4       4     data-key version (uint32)
    8       12    nonce (random, per record)
    20      n     ciphertext, n = dimension * itemsize
    20+n    16    GCM tag

The associated data binds the record to its place: the 8 header bytes, the vault's keyset id, the
tenant, the subject id, the template id and the model id. A record copied onto another row,
another subject, another tenant or another vault fails to open.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from faceseal.crypto.aead import NONCE_BYTES, TAG_BYTES, AeadKey
from faceseal.crypto.encoding import length_prefixed
from faceseal.errors import DecryptionError

FORMAT_V1 = 0x01
KEYSET_ID_BYTES = 16
_HEADER = struct.Struct(">BBHI")
HEADER_BYTES = _HEADER.size  # 8
PREFIX_BYTES = HEADER_BYTES + NONCE_BYTES  # 20
OVERHEAD_BYTES = PREFIX_BYTES + TAG_BYTES  # 36
_AD_LABEL = b"faceseal-record-v1\x00"

DTYPE_CODES: dict[str, int] = {"float32": 0x01, "float64": 0x02}
_DTYPES_BY_CODE: dict[int, np.dtype[np.floating]] = {
    0x01: np.dtype("<f4"),
    0x02: np.dtype("<f8"),
}
#: Per dtype code: (name, item size). Looked up per record on the cold-start path, where numpy's
#: dtype.name (a Python-level property) showed as a fifth of the time.
_LAYOUT_BY_CODE: dict[int, tuple[str, int]] = {
    code: (dt.name, dt.itemsize) for code, dt in _DTYPES_BY_CODE.items()}
#: Little-endian stored dtype and native result dtype, by dtype name.
_OPEN_DTYPES: dict[str, tuple[np.dtype[np.floating], np.dtype[np.floating]]] = {
    dt.name: (dt, dt.newbyteorder("=")) for dt in _DTYPES_BY_CODE.values()}

FloatArray = npt.NDArray[np.floating]


@dataclass(frozen=True, slots=True)
class RecordContext:
    """Where a record belongs. Every field is bound into the associated data."""

    keyset_id: bytes
    tenant: str
    subject_id: str
    template_id: str
    model_id: str

    def associated_data(self, header: bytes) -> bytes:
        return b"".join((
            _AD_LABEL,
            header,
            self.keyset_id,
            length_prefixed(self.tenant.encode()),
            length_prefixed(self.subject_id.encode()),
            length_prefixed(self.template_id.encode()),
            length_prefixed(self.model_id.encode()),
        ))


@dataclass(frozen=True, slots=True)
class RecordHeader:
    """The clear-text front of a record (authenticated as associated data)."""

    format_version: int
    dtype: str
    dimension: int
    key_version: int

    def pack(self) -> bytes:
        return _HEADER.pack(
            self.format_version, DTYPE_CODES[self.dtype], self.dimension, self.key_version
        )


def header_for(encoding: FloatArray, key_version: int) -> RecordHeader:
    """The header a record of ``encoding`` sealed under ``key_version`` carries."""
    dtype = encoding.dtype.name
    if dtype not in DTYPE_CODES:
        raise ValueError(f"cannot seal dtype {dtype}; use float32 or float64")
    if encoding.ndim != 1 or not 0 < encoding.shape[0] <= 0xFFFF:
        raise ValueError("an encoding must be a 1-D array of 1..65535 values")
    if not 0 < key_version <= 0xFFFFFFFF:
        raise ValueError("key version out of range")
    return RecordHeader(FORMAT_V1, dtype, int(encoding.shape[0]), key_version)


def parse_header(record: bytes) -> RecordHeader:
    """Read the header of ``record``; anything malformed is the opaque :class:`DecryptionError`."""
    if len(record) < OVERHEAD_BYTES:
        raise DecryptionError()
    version, dtype_code, dimension, key_version = _HEADER.unpack_from(record)
    layout = _LAYOUT_BY_CODE.get(dtype_code)
    if version != FORMAT_V1 or layout is None:
        raise DecryptionError()
    if len(record) != OVERHEAD_BYTES + dimension * layout[1]:
        raise DecryptionError()
    return RecordHeader(version, layout[0], dimension, key_version)


def seal_record(
    key: AeadKey, key_version: int, encoding: FloatArray, context: RecordContext
) -> bytes:
    """Seal one encoding (float32 or float64, 1-D) into a v1 record."""
    header = header_for(encoding, key_version).pack()
    plaintext = np.ascontiguousarray(encoding, dtype=encoding.dtype.newbyteorder("<")).tobytes()
    return header + key.encrypt(plaintext, context.associated_data(header))


def open_record(key: AeadKey, record: bytes, context: RecordContext,
                header: RecordHeader | None = None) -> FloatArray:
    """Open a v1 record; returns the encoding with its original dtype and shape, or raises.
    ``header``: what :func:`parse_header` returned for this very record, if already parsed."""
    if header is None:
        header = parse_header(record)
    header_bytes = record[:HEADER_BYTES]
    plaintext = key.decrypt(record[HEADER_BYTES:], context.associated_data(header_bytes))
    stored, native = _OPEN_DTYPES[header.dtype]
    # Native byte order for the caller; copy() detaches it from the plaintext buffer.
    return np.frombuffer(plaintext, dtype=stored).astype(native, copy=True)


#: Per distinct 8-byte header: (dtype name, dimension, key version, record length), or None if
#: malformed.
_HeaderInfo = tuple[str, int, int, int] | None
#: "Not looked up yet" in open_tenant_records' header and key caches (None is an answer there).
_UNSET_INFO: Any = object()
_UNSET_KEY: Any = object()


def _header_info(header: bytes) -> _HeaderInfo:
    """parse_header's checks on the 8 header bytes, with the record length they imply."""
    if len(header) != HEADER_BYTES:
        return None
    version, dtype_code, dimension, key_version = _HEADER.unpack(header)
    layout = _LAYOUT_BY_CODE.get(dtype_code)
    if version != FORMAT_V1 or layout is None:
        return None
    return layout[0], dimension, key_version, OVERHEAD_BYTES + dimension * layout[1]


@dataclass(slots=True)
class OpenedBatch:
    """What :func:`open_tenant_records` opened: per (model id, dtype name, dimension), the
    positions of the rows in the input and their plaintexts (little-endian values, in input
    order); and the positions of the rows that did not open."""

    opened: dict[tuple[str, str, int], tuple[list[int], list[bytes]]]
    failed: list[int]

    def __repr__(self) -> str:
        return f"OpenedBatch(<{sum(len(p) for p, _ in self.opened.values())} opened>, " \
               f"failed={len(self.failed)})"


def open_tenant_records(
    subject_ids: Sequence[str],
    template_ids: Sequence[str],
    model_ids: Sequence[str],
    records: Sequence[bytes],
    *,
    keyset_id: bytes,
    tenant: str,
    key_for: Callable[[int, str], AeadKey | None],
    keys: dict[tuple[int, str], AeadKey | None] | None = None,
) -> OpenedBatch:
    """Open many records of one tenant in one loop: the gallery-loading path, where one
    :func:`open_record` call per record (a context object, four length prefixes, a header
    object, an array per record) cost several times the AES-GCM work itself.

    Row i is (``subject_ids[i]``, ``template_ids[i]``, ``model_ids[i]``, ``records[i]``).
    ``key_for(key version, subject id)`` returns the subject's record key, or None when there
    is none (its secret is gone, the version unknown); it is asked once per (version, subject)
    for as long as ``keys`` (a cache the caller may keep across calls) holds the answer.
    Every record gets exactly :func:`open_record`'s checks: header, length, and the tag over
    the same associated data (a test pins the equivalence).
    """
    if len(keyset_id) != KEYSET_ID_BYTES:
        raise ValueError("keyset id must be 16 bytes")
    if not len(subject_ids) == len(template_ids) == len(model_ids) == len(records):
        raise ValueError("the row columns differ in length")
    middle = keyset_id + length_prefixed(tenant.encode())
    headers: dict[bytes, _HeaderInfo] = {}
    if keys is None:
        keys = {}
    subject_parts: dict[str, bytes] = {}
    model_parts: dict[str, bytes] = {}
    opened: dict[tuple[str, str, int], tuple[list[int], list[bytes]]] = {}
    failed: list[int] = []
    join = b"".join
    label = _AD_LABEL
    rows = zip(subject_ids, template_ids, model_ids, records, strict=True)
    for index, (subject_id, template_id, model_id, record) in enumerate(rows):
        header = record[:HEADER_BYTES]
        info = headers.get(header, _UNSET_INFO)
        if info is _UNSET_INFO:
            info = headers[header] = _header_info(header)
        if info is None or len(record) != info[3]:
            failed.append(index)
            continue
        version = info[2]
        key = keys.get((version, subject_id), _UNSET_KEY)
        if key is _UNSET_KEY:
            key = keys[(version, subject_id)] = key_for(version, subject_id)
        if key is None:
            failed.append(index)
            continue
        subject_part = subject_parts.get(subject_id)
        if subject_part is None:
            subject_part = subject_parts[subject_id] = length_prefixed(subject_id.encode())
        model_part = model_parts.get(model_id)
        if model_part is None:
            model_part = model_parts[model_id] = length_prefixed(model_id.encode())
        associated = join((label, header, middle, subject_part,
                           length_prefixed(template_id.encode()), model_part))
        try:
            plaintext = key.decrypt_with_nonce(record[HEADER_BYTES:PREFIX_BYTES],
                                               record[PREFIX_BYTES:], associated)
        except DecryptionError:
            failed.append(index)
            continue
        group = opened.get((model_id, info[0], info[1]))
        if group is None:
            group = opened[(model_id, info[0], info[1])] = ([], [])
        group[0].append(index)
        group[1].append(plaintext)
    return OpenedBatch(opened, failed)


def plaintexts_to_matrix(dtype: str, dimension: int, plaintexts: list[bytes]) -> FloatArray:
    """Plaintexts of one dtype as a native (n, dimension) matrix, in one copy."""
    return plaintext_matrix(dtype, dimension, b"".join(plaintexts))


def plaintext_matrix(dtype: str, dimension: int, joined: bytes) -> FloatArray:
    """Concatenated plaintexts of one dtype as a native (n, dimension) matrix: a read-only
    view of ``joined`` where the stored byte order is the machine's (a copy would only be one
    more plaintext to wipe; ``joined`` itself, immutable, cannot be), else a converted copy."""
    stored, native = _OPEN_DTYPES[dtype]
    matrix = np.frombuffer(joined, dtype=stored).reshape(-1, dimension)
    if stored == native:
        return matrix
    return matrix.astype(native, copy=True)
