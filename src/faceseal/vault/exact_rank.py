"""identify's final distances, computed exactly as verify computes them, for every candidate
the gallery's bound cannot exclude.

The gallery holds int8 codes only (see :mod:`faceseal.matching.gallery`): its first pass proves
an interval for each subject's distance and names every subject that may be in the top-k. The
vault then opens those subjects' records -- on demand, closest lower bound first, and only until
the next lower bound exceeds the k-th exact distance found -- and compares in float64 with
:func:`~faceseal.matching.exact.closest_exact`, verify's own function on verify's own inputs. So
identify's ranking is a float64 brute force's, and its distances and decisions are verify's.

Only candidate subjects are decrypted (never the whole gallery), once per batch however many
probes name them. A subject whose records are gone (damaged, or erased by another process since
the gallery was loaded) is left out and the bound recomputed without it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from faceseal.matching.exact import closest_exact
from faceseal.matching.models import ModelSpec
from faceseal.storage.base import TemplateRow, TemplateStore
from faceseal.vault.records import RecordSealer


@dataclass
class _Opened:
    encodings: list[np.ndarray[Any, Any]] = field(default_factory=list)
    template_ids: list[str] = field(default_factory=list)


class ExactRanker:
    """Opens the records of proposed subjects (once each) and ranks candidates exactly."""

    def __init__(self, store: TemplateStore, sealer: RecordSealer, tenant: str,
                 spec: ModelSpec) -> None:
        self._store = store
        self._sealer = sealer
        self._tenant = tenant
        self._spec = spec
        self._opened: dict[str, _Opened] = {}
        #: Rows that failed to open, for the caller's damage bookkeeping.
        self.damaged: list[TemplateRow] = []

    def __enter__(self) -> ExactRanker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.forget()

    def forget(self) -> None:
        """Overwrite the decrypted copies (best effort, as everywhere else)."""
        for opened in self._opened.values():
            for encoding in opened.encodings:
                encoding.fill(0)
        self._opened.clear()

    def _subject(self, subject_id: str) -> _Opened:
        found = self._opened.get(subject_id)
        if found is None:
            self.prefetch([subject_id])
            found = self._opened[subject_id]
        return found

    def prefetch(self, subject_ids: Sequence[str]) -> None:
        """Open the records of subjects the re-rank will certainly need, in one go: their
        secrets in one read and one pass of :meth:`RecordSealer.open` (the gallery's
        ``prefetch`` function; per-subject reads cost a secrets query each)."""
        wanted = [s for s in dict.fromkeys(subject_ids) if s not in self._opened]
        if not wanted:
            return
        rows = self._store.subjects_templates(self._tenant, wanted)
        opened, damaged = self._sealer.open(rows)
        self.damaged.extend(damaged)
        for subject in wanted:
            self._opened[subject] = _Opened()
        for item in opened:
            if item.row.model_id == self._spec.model_id and item.row.subject_id in self._opened:
                found = self._opened[item.row.subject_id]
                found.encodings.append(item.encoding)
                found.template_ids.append(item.row.template_id)
            else:
                item.encoding.fill(0)

    def exact(self, subject_id: str, probe: np.ndarray[Any, Any]) -> tuple[str, float] | None:
        """The subject's closest template to ``probe`` and the float64 distance (the gallery's
        ``exact`` function); None when the subject has no readable record of this model."""
        opened = self._subject(subject_id)
        if not opened.encodings:
            return None
        return closest_exact(opened.encodings, opened.template_ids, probe, self._spec.metric)

    def opened_subjects(self) -> int:
        """How many subjects were opened so far (for benchmarks)."""
        return len(self._opened)
