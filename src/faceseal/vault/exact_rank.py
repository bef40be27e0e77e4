"""identify's final distances, computed exactly as verify computes them.

The gallery answers 1:N from a reduced-precision copy (within about 2e-8 of each decrypted value,
see :mod:`faceseal.matching.gallery`). That is fine for choosing candidates but not for the
numbers and decisions a caller sees: a probe within 1e-7 of the threshold could match under
verify and not under identify, and the same photo would get two different distances. So the
gallery proposes a few more candidates than asked for, and each proposed subject's records are
opened and compared in float64 by :func:`~faceseal.matching.exact.closest_exact` -- verify's own
function on verify's own inputs -- before the candidates are ranked again and cut to ``top_k``.

Only the proposed subjects are decrypted (never the whole gallery), once per batch however many
probes name them. A subject whose records are gone (erased by another process since the gallery
was loaded) drops out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from faceseal.matching.exact import closest_exact
from faceseal.matching.gallery import Match
from faceseal.matching.models import ModelSpec
from faceseal.storage.base import TemplateRow, TemplateStore
from faceseal.vault.records import RecordSealer

#: Extra gallery candidates per request: a subject ranked just past ``top_k`` by the gallery can
#: only move into it when its exact distance is within a few 1e-8 of the k-th; two spares cover
#: ties at that scale.
SPARE_CANDIDATES = 2


def proposals(top_k: int) -> int:
    """How many candidates to ask the gallery for to answer ``top_k``."""
    return top_k + SPARE_CANDIDATES


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
            rows = self._store.subject_templates(self._tenant, subject_id)
            opened, damaged = self._sealer.open(rows)
            self.damaged.extend(damaged)
            found = _Opened()
            for item in opened:
                if item.row.model_id == self._spec.model_id:
                    found.encodings.append(item.encoding)
                    found.template_ids.append(item.row.template_id)
                else:
                    item.encoding.fill(0)
            self._opened[subject_id] = found
        return found

    def rank(self, probe: np.ndarray[Any, Any], proposed: Sequence[Match],
             top_k: int) -> list[Match]:
        """The proposed subjects re-ranked by their exact distance to ``probe``, best ``top_k``."""
        exact: list[Match] = []
        for match in proposed:
            opened = self._subject(match.subject_id)
            best = closest_exact(opened.encodings, opened.template_ids, probe, self._spec.metric)
            if best is not None:
                exact.append(Match(match.subject_id, best[0], best[1]))
        exact.sort(key=lambda m: (m.distance, m.subject_id))
        return exact[:top_k]
