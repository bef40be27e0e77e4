"""A byte string that refuses to show itself.

Key material travels through faceseal inside :class:`SecretBytes`. Its ``repr`` and ``str`` name
only the length, it cannot be pickled or copied by ``copy``, and comparisons are constant-time.
The bytes are reachable only through :meth:`SecretBytes.reveal`, so every place that touches raw
key material is easy to find with grep. They live in protected memory
(:mod:`faceseal.crypto.secure_memory`: excluded from core dumps, locked against swapping where
allowed) and are overwritten with zeros when the object goes.
"""

from __future__ import annotations

import hmac
from typing import Any, NoReturn

from faceseal.crypto.secure_memory import SecretSlot, allocate_secret


class SecretBytes:
    """Key material. ``repr``/``str``/pickle never expose the bytes."""

    __slots__ = ("__slot",)

    def __init__(self, value: bytes | bytearray | memoryview) -> None:
        # A private slot so that wipe() can overwrite it; Python may still hold other copies
        # (the caller's bytes object), which is why wiping is documented as best effort.
        self.__slot: SecretSlot = allocate_secret(value)

    def reveal(self) -> bytes:
        """The raw bytes. Call only where a primitive needs them, never to log or print."""
        return bytes(self.__slot.view())

    def __len__(self) -> int:
        return self.__slot.length

    def __repr__(self) -> str:
        return f"SecretBytes(<redacted {self.__slot.length} bytes>)"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return repr(self)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SecretBytes):
            return NotImplemented
        return hmac.compare_digest(self.__slot.view(), other.__slot.view())

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
        self.__slot.zero()

    def __del__(self) -> None:
        # At interpreter shutdown the module may be half gone; the OS reclaims the memory anyway.
        try:  # noqa: SIM105 - contextlib.suppress costs a third of a small secret's lifetime
            self.__slot.free()
        except Exception:  # noqa: S110 - nothing sensible to do in a finaliser
            pass
