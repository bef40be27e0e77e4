"""The in-memory gallery against brute force, and kept in step with removals.

The gallery holds int8 codes only (issue #14); with an exact function (the vault opens the
records) rankings and distances equal float64 brute force (docs/performance.md). 1:1 verify
compares the decrypted records in float64 and is exact (tests/test_vault_faces.py).
"""

from __future__ import annotations

import numpy as np
import pytest

from faceseal.matching.gallery import Gallery

from .conftest import random_encodings
from .gallery_oracle import exact_function


def _brute_force(vectors: np.ndarray, subjects: list[str], probe: np.ndarray, k: int
                 ) -> list[tuple[str, float]]:
    distances = np.linalg.norm(vectors - probe, axis=1)
    best: dict[str, float] = {}
    for subject, distance in zip(subjects, distances, strict=True):
        best[subject] = min(best.get(subject, np.inf), float(distance))
    return sorted(best.items(), key=lambda item: (item[1], item[0]))[:k]


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("k", [1, 5, 40])
def test_search_equals_brute_force(seed: int, k: int) -> None:
    rng = np.random.default_rng(seed)
    vectors = random_encodings(600, seed=seed)
    subjects = [f"s{int(i)}" for i in rng.integers(0, 150, size=600)]  # several rows a subject
    gallery = Gallery(128, "euclidean")
    gallery.add_many(subjects, [f"t{i}" for i in range(600)], vectors)
    exact = exact_function(vectors, subjects, [f"t{i}" for i in range(600)], "euclidean")
    for probe in (vectors[3] + 0.01, random_encodings(1, seed=seed + 100)[0]):
        found = [(m.subject_id, m.distance) for m in gallery.search(probe, k, exact)]
        expected = _brute_force(vectors, subjects, probe, k)
        assert [s for s, _ in found] == [s for s, _ in expected]
        assert np.allclose([d for _, d in found], [d for _, d in expected], rtol=0, atol=1e-15)


def test_removal_keeps_the_index_consistent() -> None:
    vectors = random_encodings(50, seed=1)
    subjects = [f"s{i % 10}" for i in range(50)]
    gallery = Gallery(128, "euclidean")
    gallery.add_many(subjects, [f"t{i}" for i in range(50)], vectors)
    assert gallery.remove_subject("s3") == 5
    assert gallery.remove_subject("s3") == 0
    kept = [i for i in range(50) if subjects[i] != "s3"]
    for i in kept:
        match = gallery.closest_of_subject(subjects[i], vectors[i])
        assert match is not None
        assert match.distance <= match.error
    assert len(gallery) == 45
    assert gallery.closest_of_subject("s3", vectors[3]) is None
    assert "s3" not in {m.subject_id for m in gallery.search(vectors[3], 10)}


def test_cosine_metric() -> None:
    gallery = Gallery(4, "cosine")
    gallery.add_many(["a", "b"], ["ta", "tb"], np.array([[1.0, 0, 0, 0], [0, 1.0, 0, 0]]))
    vectors = np.array([[1.0, 0, 0, 0], [0, 1.0, 0, 0]])
    exact = exact_function(vectors, ["a", "b"], ["ta", "tb"], "cosine")
    found = gallery.search(np.array([2.0, 0.1, 0, 0]), 2, exact)
    assert [m.subject_id for m in found] == ["a", "b"]
    assert found[0].distance == pytest.approx(1 - 2.0 / np.linalg.norm([2.0, 0.1]), abs=1e-15)


def test_clear_overwrites() -> None:
    gallery = Gallery(128, "euclidean")
    gallery.add_many(["a"], ["t"], random_encodings(1))
    gallery.clear()
    assert len(gallery) == 0
    assert gallery.search(random_encodings(1)[0], 3) == []


@pytest.mark.parametrize("kind", ["hex16", "text", "mixed"])
def test_sections_round_trip_through_a_load(kind: str) -> None:
    """What a snapshot stores (format 3: centre, int8 codes, no residuals; ids as 16 bytes when
    the vault made them) loads back into a gallery that answers the same."""
    vectors = random_encodings(40, seed=3)
    subjects = [f"s{i % 7}" for i in range(40)]
    ids = [f"{i:032x}" for i in range(40)]
    if kind != "hex16":
        ids[5 if kind == "mixed" else 0] = "legacy-id-5"
        if kind == "text":
            ids = [f"t-{i}" for i in range(40)]
    gallery = Gallery(128, "euclidean")
    gallery.add_many(subjects[:20], ids[:20], vectors[:20])
    gallery.add_many(subjects[20:], ids[20:], vectors[20:])
    assert gallery.id_kind == ("hex16" if kind == "hex16" else "text")
    assert gallery.template_ids() == ids
    with gallery.frozen():
        sections = dict(gallery.export_sections())
    assert "residuals" not in sections
    width = sections["template_ids"].dtype.itemsize
    loaded = Gallery.for_load(128, "euclidean", 40, width, id_kind=gallery.id_kind)
    for name, target in loaded.load_targets(40).items():
        target[...] = sections[name]
    loaded.finish_load(40, sections["subject_names"].tobytes())
    assert loaded.template_ids() == ids
    assert loaded.subject_ids() == gallery.subject_ids()
    exact = exact_function(vectors, subjects, ids, "euclidean")
    probe = vectors[9] + 0.01
    assert loaded.search(probe, 5, exact) == gallery.search(probe, 5, exact)
    assert loaded.candidates(probe, 5) == gallery.candidates(probe, 5)
