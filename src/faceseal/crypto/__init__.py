"""Pure cryptographic building blocks: no I/O, no global state."""

from faceseal.crypto.aead import AeadKey, generate_key
from faceseal.crypto.record import RecordContext, open_record, parse_header, seal_record
from faceseal.crypto.secret import SecretBytes

__all__ = [
    "AeadKey",
    "RecordContext",
    "SecretBytes",
    "generate_key",
    "open_record",
    "parse_header",
    "seal_record",
]
