"""Unambiguous byte encodings used inside associated data and key derivation."""

from __future__ import annotations

import struct

_U16 = struct.Struct(">H")
MAX_FIELD_BYTES = 0xFFFF


def length_prefixed(field: bytes) -> bytes:
    """``len(field)`` as 2 bytes big-endian, then ``field``: no two field lists collide."""
    if len(field) > MAX_FIELD_BYTES:
        raise ValueError("field too long for a 16-bit length prefix")
    return _U16.pack(len(field)) + field
