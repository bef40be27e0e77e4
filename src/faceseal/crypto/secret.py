"""A byte string that refuses to show itself.

Key material travels through faceseal inside :class:`SecretBytes`. Its ``repr`` and ``str`` name
only the length, it cannot be pickled or copied by ``copy``, and comparisons are constant-time.
The bytes are reachable only through :meth:`SecretBytes.reveal`, so every place that touches raw
key material is easy to find with grep.
"""

from __future__ import annotations

import hmac
from typing import Any, NoReturn


class SecretBytes:
    """Key material. ``repr``/``str``/pickle never expose the bytes."""

    __slots__ = ("__value",)

    def __init__(self, value: bytes | bytearray | memoryview) -> None:
        # A private bytearray so that wipe() can overwrite it; Python may still hold other copies
        # (the caller's bytes object), which is why wiping is documented as best effort.
        self.__value = bytearray(value)

    def reveal(self) -> bytes:
        """The raw bytes. Call only where a primitive needs them, never to log or print."""
        return bytes(self.__value)

    def __len__(self) -> int:
        return len(self.__value)

    def __repr__(self) -> str:
        return f"SecretBytes(<redacted {len(self.__value)} bytes>)"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return repr(self)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SecretBytes):
            return NotImplemented
        return hmac.compare_digest(self.__value, other.__value)

    def __hash__(self) -> int:
        # Hashing would turn key bytes into a value stored in dicts and sets; refuse it.
        raise TypeError("SecretBytes is not hashable")

    def __bytes__(self) -> NoReturn:
        raise TypeError("use SecretBytes.reveal() to get the raw bytes explicitly")

    def __reduce__(self) -> NoReturn:
        raise TypeError("SecretBytes cannot be pickled")

    def __reduce_ex__(self, protocol: Any) -> NoReturn:
        raise TypeError("SecretBytes cannot be pickled")

    def __copy__(self) -> NoReturn:
        raise TypeError("SecretBytes cannot be copied")

    def __deepcopy__(self, memo: Any) -> NoReturn:
        raise TypeError("SecretBytes cannot be copied")

    def wipe(self) -> None:
        """Overwrite the held bytes with zeros (best effort: other copies may exist)."""
        for i in range(len(self.__value)):
            self.__value[i] = 0
