"""Template stores: they only ever see ciphertext, identifiers and metadata."""

from faceseal.storage.base import SubjectRow, TemplateRow, TemplateStore
from faceseal.storage.sqlite import SQLiteStore

__all__ = ["SQLiteStore", "SubjectRow", "TemplateRow", "TemplateStore"]
