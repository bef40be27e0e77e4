"""Which shard owns a subject: a keyed hash of (tenant, subject id), modulo the shard count.

Pure (no I/O), in the crypto layer so that the vault can find the owning shard's snapshot of an
erased subject in every layout on disk, and the cluster package can place subjects.

The key (:meth:`faceseal.vault.Vault.partition_key`) comes from the vault's key side, so whoever
watches the cluster -- the shards' placement, their sizes, which shard an erasure goes to --
learns nothing about a subject id from its shard, and cannot steer subjects onto one shard.
Every process derives the key itself from its own open vault; only a fingerprint (a MAC of a
fixed label) is compared across processes, to refuse shards that partition differently.
"""

from __future__ import annotations

import hmac
import re

from faceseal.crypto.encoding import length_prefixed
from faceseal.crypto.secret import SecretBytes

_FINGERPRINT_LABEL = b"faceseal-partition-fingerprint-v1"
_LAYOUT = re.compile(r"([0-9a-f]{16})-(\d{4})-of-(\d{4})")


def parse_layout(name: str) -> tuple[str, int, int] | None:
    """(fingerprint, shard index, shard count) of a layout name, or None."""
    found = _LAYOUT.fullmatch(name)
    if found is None:
        return None
    return found[1], int(found[2]), int(found[3])


class Partitioner:
    """Assigns (tenant, subject id) to one of ``shards`` partitions."""

    __slots__ = ("_key", "shards")

    def __init__(self, key: SecretBytes, shards: int) -> None:
        if not 1 <= shards <= 4096:
            raise ValueError("the shard count must be within 1..4096")
        self._key = key.reveal()
        self.shards = shards

    def shard_of(self, tenant: str, subject_id: str) -> int:
        digest = hmac.digest(self._key, length_prefixed(tenant.encode())
                             + length_prefixed(subject_id.encode()), "sha256")
        return int.from_bytes(digest[:8], "big") % self.shards

    def fingerprint(self) -> str:
        """Equal in every process of one vault and layout; reveals nothing about the key."""
        tag = hmac.digest(self._key, _FINGERPRINT_LABEL + self.shards.to_bytes(4, "big"),
                          "sha256")
        return tag[:8].hex()

    def layout(self, index: int) -> str:
        """The name of shard ``index``'s snapshot directory (a new layout: new snapshots)."""
        return f"{self.fingerprint()}-{index:04d}-of-{self.shards:04d}"

    def __repr__(self) -> str:
        return f"Partitioner(shards={self.shards}, key=<redacted>)"

    def __reduce__(self) -> str | tuple[object, ...]:
        raise TypeError("a Partitioner holds a key and cannot be pickled")
