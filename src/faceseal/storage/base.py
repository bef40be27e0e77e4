"""The template store contract.

A store keeps sealed records, subjects, wrapped data keys and their counters, and small metadata.
It only ever sees ciphertext, identifiers and metadata: nothing it holds can be read without the
key provider and the subject key store, which live elsewhere.

Every backend (SQLite, PostgreSQL, files) implements :class:`TemplateStore` and passes the same
contract tests.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass

from faceseal.keys.datakeys import DataKeyInfo


@dataclass(frozen=True, slots=True)
class TemplateRow:
    """One sealed template as stored."""

    template_id: str
    tenant: str
    subject_id: str
    model_id: str
    dimension: int
    dtype: str
    key_version: int
    record: bytes
    created_at: float

    def __repr__(self) -> str:
        # The record is ciphertext, but there is no reason to spill it into logs either.
        return (
            f"TemplateRow(template_id={self.template_id!r}, tenant={self.tenant!r}, "
            f"subject_id={self.subject_id!r}, model_id={self.model_id!r}, "
            f"key_version={self.key_version}, record=<{len(self.record)} bytes>)"
        )


@dataclass(frozen=True, slots=True)
class SubjectRow:
    """A subject and how many templates it has."""

    tenant: str
    subject_id: str
    created_at: float
    last_seen_at: float
    templates: int


class TemplateStore(ABC):
    """Persistent storage for sealed templates and wrapped keys."""

    #: Latest schema version this code writes.
    SCHEMA_VERSION: int = 1

    @abstractmethod
    def migrate(self) -> tuple[int, int]:
        """Apply pending migrations; returns (version before, version after)."""

    @abstractmethod
    def schema_version(self) -> int:
        """The schema version the store is at (0 for an empty store)."""

    @abstractmethod
    def transaction(self) -> AbstractContextManager[None]:
        """Group the writes inside into one atomic transaction (nesting joins the outer one)."""

    # --- metadata --------------------------------------------------------------------------------

    @abstractmethod
    def get_meta(self, key: str) -> str | None: ...

    @abstractmethod
    def set_meta(self, key: str, value: str) -> None: ...

    # --- templates and subjects ------------------------------------------------------------------

    @abstractmethod
    def add_templates(self, rows: Sequence[TemplateRow]) -> None:
        """Insert sealed templates, creating their subjects as needed, atomically."""

    @abstractmethod
    def subject_templates(self, tenant: str, subject_id: str) -> list[TemplateRow]:
        """All templates of one subject (empty if the subject does not exist)."""

    @abstractmethod
    def gallery(self, tenant: str | None, batch_size: int = 10_000) -> Iterator[list[TemplateRow]]:
        """Stream the templates of a tenant (or of every tenant when ``None``) in batches."""

    @abstractmethod
    def subjects(self, tenant: str) -> list[SubjectRow]:
        """The subjects of a tenant with their template counts, ordered by subject id."""

    @abstractmethod
    def subject_exists(self, tenant: str, subject_id: str) -> bool: ...

    @abstractmethod
    def touch_subject(self, tenant: str, subject_id: str, when: float) -> None:
        """Record that the subject was enrolled or matched at ``when`` (for retention)."""

    @abstractmethod
    def erase_subject(self, tenant: str, subject_id: str) -> list[str]:
        """Delete a subject and its templates; returns the deleted template ids."""

    @abstractmethod
    def replace_records(self, rows: Sequence[TemplateRow]) -> int:
        """Overwrite the record and key version of existing templates (re-encryption)."""

    @abstractmethod
    def key_version_counts(self) -> dict[int, int]:
        """How many records each data-key version seals."""

    # --- data keys (the DataKeyRepository protocol) ----------------------------------------------

    @abstractmethod
    def load_data_keys(self) -> list[DataKeyInfo]: ...

    @abstractmethod
    def insert_data_key(self, version: int, wrapped: bytes, created_at: float) -> bool: ...

    @abstractmethod
    def reserve_encryptions(self, version: int, count: int, limit: int) -> bool: ...

    @abstractmethod
    def replace_wrapped(self, version: int, wrapped: bytes) -> None: ...

    # --- life cycle ------------------------------------------------------------------------------

    @abstractmethod
    def close(self) -> None: ...

    @abstractmethod
    def describe(self) -> str:
        """Where the store is, without credentials."""

    def __enter__(self) -> TemplateStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
