"""A helper process that opens record pages while its parent reads and indexes: a gallery
loaded from the records (no usable snapshot) uses both cores.

The parent (:mod:`faceseal.vault.parallel_open`) starts it as a fresh interpreter running
:func:`main` and talks to it over the anonymous stdin/stdout pipes only. Each
message is a 4-byte big-endian length and a :mod:`marshal` payload (both ends are this module's
own code; the parent reads only what its own child writes):

parent -> helper::

    ("setup", keyset_id, tenant)
    ("deks", {version: data key})           data keys the helper may use
    ("secrets", {subject id: secret})       subject secrets, each sent once
    ("secrets_from", location)              or: read the tenant's from the subject key store
    ("open", page, subject_ids, template_ids, model_ids, records)
    ("read", unit, kind, location, upto, start, stop)   read a rowid range itself

helper -> parent::

    ("ready",)
    ("opened", page, failed positions, [(model id, dtype, dimension, positions, plaintexts)])
    ("read", unit, failed rows, [(model id, dtype, dimension, subject ids, template ids,
                                  plaintexts)])   what it read and opened itself
    ("error", message)                      then the helper exits

``read`` is for stores another process can read directly (SQLite: ``("sqlite", path)``, opened
read-only, see :class:`faceseal.storage.sqlite.DirectReader`); the helper then reads the
tenant's subject secrets itself from the subject key store (read-only), so that no secret
crosses the pipe and it need not wait for the loader to read them.

A record the helper cannot open (no secret, no data key, a failed tag) comes back as failed and
the parent tries it again itself, so the helper never decides that a record is damaged. The
helper holds keys: it turns core dumps off first, exits when its input closes, and keeps
nothing on disk.
"""

from __future__ import annotations

import contextlib
import gc
import marshal
import struct
import sys
from collections.abc import Sequence
from typing import Any, BinaryIO

from faceseal.crypto.aead import AeadKey
from faceseal.crypto.derive import record_key
from faceseal.crypto.record import OpenedBatch, open_tenant_records
from faceseal.crypto.secret import SecretBytes
from faceseal.keys.process_guard import protect_process
from faceseal.keys.subject_keys import read_tenant_secrets
from faceseal.storage.sqlite import DirectReader, direct_reader

_LENGTH = struct.Struct(">I")
#: Larger frames are refused (a page of 10,000 512-d float64 records is about 41 MB).
MAX_FRAME_BYTES = 1 << 30


def write_frame(stream: BinaryIO, message: Any) -> None:
    payload = marshal.dumps(message, 4)
    stream.write(_LENGTH.pack(len(payload)))
    stream.write(payload)
    stream.flush()


def read_frame(stream: BinaryIO) -> Any:
    """The next message, or None at the end of the stream."""
    head = _read_exactly(stream, _LENGTH.size)
    if head is None:
        return None
    (length,) = _LENGTH.unpack(head)
    if length > MAX_FRAME_BYTES:
        raise ValueError("frame too large")
    payload = _read_exactly(stream, length)
    if payload is None:
        raise EOFError("the stream ended inside a frame")
    return marshal.loads(payload)  # noqa: S302 - written by this module at the other end


def _read_exactly(stream: BinaryIO, size: int) -> bytes | None:
    chunks: list[bytes] = []
    left = size
    while left:
        chunk = stream.read(left)
        if not chunk:
            if left == size:
                return None
            raise EOFError("the stream ended inside a frame")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


class _Opener:
    def __init__(self, keyset_id: bytes, tenant: str) -> None:
        self.keyset_id = keyset_id
        self.tenant = tenant
        self.deks: dict[int, SecretBytes] = {}
        self.secrets: dict[str, SecretBytes] = {}
        self.keys: dict[tuple[int, str], AeadKey | None] = {}
        self.readers: dict[tuple[str, str], DirectReader] = {}

    def key_for(self, version: int, subject_id: str) -> AeadKey | None:
        dek = self.deks.get(version)
        secret = self.secrets.get(subject_id)
        if dek is None or secret is None:
            return None
        return record_key(dek, self.tenant, subject_id, secret)

    def open(self, message: tuple[Any, ...]) -> tuple[Any, ...]:
        _, page, subject_ids, template_ids, model_ids, records = message
        batch = self._open(subject_ids, template_ids, model_ids, records)
        groups = [(model_id, dtype, dimension, positions, b"".join(plaintexts))
                  for (model_id, dtype, dimension), (positions, plaintexts)
                  in batch.opened.items()]
        return ("opened", page, batch.failed, groups)

    def _open(self, subject_ids: Sequence[str], template_ids: Sequence[str],
              model_ids: Sequence[str], records: Sequence[bytes]) -> OpenedBatch:
        return open_tenant_records(subject_ids, template_ids, model_ids, records,
                                   keyset_id=self.keyset_id, tenant=self.tenant,
                                   key_for=self.key_for, keys=self.keys)

    def read(self, message: tuple[Any, ...]) -> tuple[Any, ...]:
        """Read a rowid range itself and open it; rows as tuples in TemplateRow field order."""
        _, unit, kind, location, upto, start, stop = message
        reader = self.readers.get((kind, location))
        if reader is None:
            reader = self.readers[(kind, location)] = direct_reader(str(kind), str(location))
        rows = reader.read(self.tenant, int(upto), int(start), int(stop))
        if not rows:
            return ("read", unit, [], [])
        columns = list(zip(*rows, strict=True))
        batch = self._open(columns[2], columns[0], columns[3], columns[7])
        groups = [(model_id, dtype, dimension, [columns[2][i] for i in positions],
                   [columns[0][i] for i in positions], b"".join(plaintexts))
                  for (model_id, dtype, dimension), (positions, plaintexts)
                  in batch.opened.items()]
        return ("read", unit, [tuple(rows[i]) for i in batch.failed], groups)

    def close(self) -> None:
        for reader in self.readers.values():
            reader.close()


def serve(inbound: BinaryIO, outbound: BinaryIO) -> None:
    opener: _Opener | None = None
    write_frame(outbound, ("ready",))
    try:
        while (message := read_frame(inbound)) is not None:
            kind = message[0]
            if kind == "setup":
                opener = _Opener(bytes(message[1]), str(message[2]))
            elif opener is None:
                raise ValueError("no setup message")
            elif kind == "deks":
                opener.deks.update({int(v): SecretBytes(k) for v, k in message[1].items()})
            elif kind == "secrets":
                opener.secrets.update({str(s): SecretBytes(k) for s, k in message[1].items()})
            elif kind == "secrets_from":
                opener.secrets.update(read_tenant_secrets(str(message[1]), opener.tenant))
            elif kind == "open":
                write_frame(outbound, opener.open(message))
            elif kind == "read":
                write_frame(outbound, opener.read(message))
            else:
                raise ValueError(f"unknown message {kind!r}")
    finally:
        if opener is not None:
            opener.close()


def main() -> int:
    protect_process()
    # Short-lived and acyclic: the cyclic collector would only walk the pages again and again.
    gc.disable()
    inbound, outbound = sys.stdin.buffer, sys.stdout.buffer
    # Nothing else may write to the protocol stream.
    sys.stdout = sys.stderr
    try:
        serve(inbound, outbound)
    except Exception as exc:
        with contextlib.suppress(OSError):
            write_frame(outbound, ("error", type(exc).__name__))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
