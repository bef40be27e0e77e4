"""The fast gallery (int8 scan, bounded first pass, exact re-rank) against brute force.

Property-style: many random galleries (several metrics, dimensions, sizes, subjects with many
templates, exact duplicates and ties, erasures in between) and probes near and far, each searched
by the fast path (the compiled scan on the calling thread and spread over threads, and the numpy
scan) with an exact function over the original float64 vectors, and by a float64 brute force.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from numpy.typing import NDArray

from faceseal.matching import kernels
from faceseal.matching.gallery import Gallery
from faceseal.matching.memory import LockedArray, lock_status

from .gallery_oracle import brute_force, distances_to, exact_function

Matrix = NDArray[np.float64]


@pytest.fixture(params=["numba", "numba-threads", "numba-threads-int16", "numpy"])
def backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test with the compiled scan (serial and threaded; batches with the VNNI kernel
    where the CPU has it, and with the int16 one) and with the numpy scan."""
    monkeypatch.setenv(kernels.VNNI_ENV, "0" if request.param == "numba-threads-int16" else "1")
    if request.param == "numpy":
        monkeypatch.setenv(kernels.NUMBA_ENV, "0")
    else:
        monkeypatch.delenv(kernels.NUMBA_ENV, raising=False)
        if not kernels.numba_enabled():
            pytest.fail("numba is part of the dev extras; the compiled scan must be tested")
    if request.param != "numba":  # small galleries scan serially, one probe at a time:
        # force the threaded scan and the batch scan (compiled, or BLAS blocks with numpy)
        monkeypatch.setattr(kernels, "PARALLEL_FROM", 0)
        monkeypatch.setattr(kernels, "CHUNK_ROWS", 64)
    return str(request.param)


def random_case(seed: int) -> tuple[Gallery, Matrix, list[str], Matrix, int, str]:
    rng = np.random.default_rng(seed)
    metric = ["euclidean", "cosine"][seed % 2]
    dim = [2, 8, 128][seed % 3]
    n = int(rng.integers(1, 1500))
    subjects_count = int(rng.integers(1, n + 1))
    vectors = rng.standard_normal((n, dim)) * 0.1
    subjects = [f"s{int(i):04d}" for i in rng.integers(0, subjects_count, n)]
    if n > 20:  # exact duplicates across subjects: ties broken by subject id
        vectors[1:6] = vectors[0]
    gallery = Gallery(dim, metric)  # type: ignore[arg-type]
    half = n // 2
    gallery.add_many(subjects[:half], [f"t{i}" for i in range(half)], vectors[:half])
    gallery.add_many(subjects[half:], [f"t{i}" for i in range(half, n)], vectors[half:])
    for erased in set(rng.choice(subjects, size=min(3, len(subjects)))):
        assert gallery.remove_subject(erased) == subjects.count(erased)
        keep = [i for i, s in enumerate(subjects) if s != erased]
        vectors, subjects = vectors[keep], [subjects[i] for i in keep]
    near = vectors[rng.integers(0, max(1, len(vectors)), 3)] if len(vectors) else vectors
    probes = np.concatenate([near + rng.standard_normal(near.shape) * 0.01,
                             rng.standard_normal((2, dim)) * 0.1])
    top_k = int(rng.integers(1, 9))
    return gallery, vectors, subjects, probes, top_k, metric


@pytest.mark.parametrize("seed", range(24))
def test_fast_search_equals_brute_force(backend: str, seed: int) -> None:
    gallery, vectors, subjects, probes, top_k, metric = random_case(seed)
    ids = sorted(gallery.template_ids(), key=lambda t: int(t[1:]))
    exact = exact_function(vectors, subjects, ids, metric)
    if not subjects:
        assert gallery.search(probes[0], top_k, exact) == []
        return
    batch = gallery.search_many(probes, top_k, exact)
    for probe, batched in zip(probes, batch, strict=True):
        single = gallery.search(probe, top_k, exact)
        assert single == batched
        # Exactly the float64 brute-force top-k (same order, ties included, same distances).
        expected = brute_force(vectors, subjects, probe, top_k, metric)
        assert [(m.subject_id, m.distance) for m in single] == expected
        assert all(m.error == 0.0 for m in single)


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_approximate_distances_are_within_their_stated_error(backend: str, metric: str) -> None:
    """Without an exact function the gallery says how far each distance may be off, and is."""
    rng = np.random.default_rng(3)
    vectors = rng.standard_normal((3000, 128)) * 0.09
    gallery = Gallery(128, metric)  # type: ignore[arg-type]
    gallery.add_many([f"s{i}" for i in range(3000)], [f"t{i}" for i in range(3000)], vectors)
    for probe in vectors[:20] + rng.standard_normal((20, 128)) * 0.02:
        found = gallery.search(probe, 10)
        assert len(found) == 10
        for match in found:
            row = int(match.template_id[1:])
            true = float(distances_to(vectors[row:row + 1], probe, metric)[0])
            assert 0 < match.error < 0.05
            assert abs(match.distance - true) <= match.error


def test_many_exact_ties_beyond_the_scan_heap(backend: str) -> None:
    """500 subjects share one vector: the answer is decided by subject id, found by rescanning."""
    rng = np.random.default_rng(5)
    shared = rng.standard_normal(16) * 0.1
    others = rng.standard_normal((2000, 16)) * 0.1 + 1.0
    vectors = np.concatenate([np.tile(shared, (500, 1)), others])
    names = [f"twin-{i:03d}" for i in range(499, -1, -1)] + [f"o{i}" for i in range(2000)]
    gallery = Gallery(16, "euclidean")
    gallery.add_many(names, [f"t{i}" for i in range(len(names))], vectors)
    exact = exact_function(vectors, names, [f"t{i}" for i in range(len(names))], "euclidean")
    for found in (gallery.search(shared + 0.001, 7, exact), gallery.search_many(
            np.stack([shared + 0.001, shared]), 7, exact)[0]):
        assert [m.subject_id for m in found] == [f"twin-{i:03d}" for i in range(7)]
        assert len({m.distance for m in found}) == 1


def test_large_gallery_uses_chunked_scan_and_stays_exact(backend: str) -> None:
    rng = np.random.default_rng(11)
    n, dim = 70_000, 16
    vectors = rng.standard_normal((n, dim)) * 0.1
    subjects = [f"s{i // 3}" for i in range(n)]
    ids = [f"{i:032x}" for i in range(n)]  # vault-made ids: held as 16 bytes
    gallery = Gallery(dim, "euclidean")
    gallery.add_many(subjects, ids, vectors)
    assert gallery.bytes_per_template() == dim + 16 + 16
    exact = exact_function(vectors, subjects, ids, "euclidean")
    probes = vectors[[5, 50_000]] + 0.001
    for probe, found in zip(probes, gallery.search_many(probes, 5, exact), strict=True):
        assert [(m.subject_id, m.distance) for m in found] == brute_force(
            vectors, subjects, probe, 5, "euclidean")
        assert found == gallery.search(probe, 5, exact)
        assert found[0].template_id in ids


def test_closest_of_subject_is_bounded_and_erasure_is_complete() -> None:
    rng = np.random.default_rng(2)
    vectors = rng.standard_normal((6, 8))
    gallery = Gallery(8, "euclidean")
    gallery.add_many(["a", "a", "b", "b", "c", "a"], [f"t{i}" for i in range(6)], vectors)
    probe = vectors[5] + 0.01
    match = gallery.closest_of_subject("a", probe)
    assert match is not None
    assert match.template_id == "t5"
    assert abs(match.distance - np.linalg.norm(vectors[5] - probe)) <= match.error
    assert gallery.remove_subject("a") == 3
    assert not gallery.has_subject("a")
    assert gallery.closest_of_subject("a", probe) is None
    assert len(gallery) == 3
    assert sorted(gallery.subject_ids()) == ["b", "b", "c"]
    assert all(m.subject_id != "a" for m in gallery.search(probe, 5))
    assert gallery.remove_subject("a") == 0
    gallery.clear()
    assert len(gallery) == 0
    assert gallery.search(probe, 3) == []


def test_erased_rows_are_overwritten_in_memory() -> None:
    gallery = Gallery(16, "euclidean")
    vectors = np.random.default_rng(4).standard_normal((10, 16))
    gallery.add_many(["a"] * 4 + ["b"] * 6, [f"t{i}" for i in range(10)], vectors)
    parts = [gallery._codes, gallery._scale, gallery._norms, gallery._err]
    held = [part.array for part in parts if part is not None]
    gallery.remove_subject("b")
    assert len(gallery) == 4
    for array in held:  # rows 4..9 (where b lived, or where a's rows were moved from) are zero
        assert not np.any(array[4:10])
        assert np.any(array[:4])


@pytest.mark.parametrize("seed", range(6))
def test_closest_of_subject_stays_right_through_adds_and_removals(seed: int) -> None:
    """A subject's rows stay right across adds and removals (swap-removal moves rows)."""
    rng = np.random.default_rng(seed)
    gallery = Gallery(8, "euclidean")
    held: dict[str, list[tuple[str, Matrix]]] = {}
    counter = 0
    for _ in range(40):
        action = rng.integers(0, 3)
        if action == 0 or not held:  # add a few templates (sometimes a big batch)
            size = int(rng.choice([1, 3, 2000]))
            names = [f"s{int(i)}" for i in rng.integers(0, 30, size)]
            vectors = rng.standard_normal((size, 8))
            ids = [f"t{counter + i}" for i in range(size)]
            counter += size
            gallery.add_many(names, ids, vectors)
            for name, template, vector in zip(names, ids, vectors, strict=True):
                held.setdefault(name, []).append((template, vector))
        elif action == 1:  # erase a subject
            name = str(rng.choice(sorted(held)))
            assert gallery.remove_subject(name) == len(held.pop(name))
        probe = rng.standard_normal(8)
        for name in list(held)[:5]:
            match = gallery.closest_of_subject(name, probe)
            distances = [np.linalg.norm(v - probe) for _, v in held[name]]
            assert match is not None
            assert abs(match.distance - min(distances)) <= match.error
            assert match.template_id in {t for t, _ in held[name]}
    for name in ("never", *held):
        assert gallery.has_subject(name) == (name in held)


@pytest.mark.parametrize(("subjects", "ids", "shape", "fill"), [
    (["a"], ["t1", "t2"], (2, 8), 0.0),          # ids do not line up
    (["a", "b"], ["t1", "t2"], (2, 7), 0.0),     # wrong dimension
    (["a", "b"], ["t1", "t2"], (2, 8), np.nan),  # not finite
    (["a", "b"], ["t1", "t2"], (2, 8), np.inf),
])
def test_bad_additions_are_refused_and_change_nothing(
        subjects: list[str], ids: list[str], shape: tuple[int, int], fill: float) -> None:
    gallery = Gallery(8, "euclidean")
    gallery.add("keep", "t0", np.ones(8))
    with pytest.raises(ValueError, match=r"line up|finite"):
        gallery.add_many(subjects, ids, np.full(shape, fill))
    assert len(gallery) == 1
    assert gallery.subject_ids() == ["keep"]


@pytest.mark.parametrize(("probes", "top_k"), [
    (np.zeros((2, 7)), 3), (np.zeros(8), 3), (np.zeros((2, 8)), 0)])
def test_bad_searches_are_refused(probes: Matrix, top_k: int) -> None:
    gallery = Gallery(8, "euclidean")
    gallery.add("a", "t0", np.ones(8))
    with pytest.raises(ValueError, match=r"probes|top_k"):
        gallery.search_many(probes, top_k)


def test_locked_array_is_wiped_and_unlocked_on_release() -> None:
    before = lock_status()
    array = LockedArray((1000, 16), np.int8)
    array.array[:] = 7
    view = array.array  # a caller that kept a view sees zeros after release
    assert array.locked, lock_status().reason  # root with CAP_IPC_LOCK, or a high memlock limit
    assert lock_status().locked_bytes == before.locked_bytes + array.nbytes
    array.release()
    assert int(np.abs(view).max()) == 0
    assert lock_status().locked_bytes == before.locked_bytes
    assert "redacted" in repr(array)


def test_gallery_memory_is_locked_and_reported() -> None:
    gallery = Gallery(128, "euclidean")
    gallery.add_many(["a"] * 10, [f"t{i}" for i in range(10)], np.ones((10, 128)))
    assert gallery.memory_locked


_REFUSED = """
import json, numpy as np
from faceseal.matching.gallery import Gallery
from faceseal.matching.memory import lock_status
g = Gallery(128, "euclidean")
g.add_many(["a"] * 100000, [f"t{i}" for i in range(100000)], np.ones((100000, 128)))
print(json.dumps({"locked": g.memory_locked, **lock_status().to_dict(),
                  "found": g.search(np.ones(128), 1)[0].subject_id}))
"""


def _low_memlock_limit() -> None:  # pragma: no cover - runs in the child
    import resource

    resource.setrlimit(resource.RLIMIT_MEMLOCK, (64 * 1024, 64 * 1024))


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("setpriv") is None, reason="util-linux setpriv is not installed")
def test_refused_lock_is_reported_and_search_still_works() -> None:
    """A real refusal: a child without CAP_IPC_LOCK and with a 64 KiB memlock limit."""
    command = ["setpriv", "--bounding-set=-ipc_lock", sys.executable, "-c", _REFUSED]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False,
                          preexec_fn=_low_memlock_limit)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["locked"] is False
    assert report["fully_locked"] is False
    assert report["unlocked_bytes"] > 0
    assert "RLIMIT_MEMLOCK" in report["reason"]
    assert report["found"] == "a"
    assert "could not be locked in memory" in done.stderr


def test_mlock_can_be_disabled_and_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FACESEAL_MLOCK", "0")
    array = LockedArray((10,), np.float32)
    try:
        assert not array.locked
        assert "FACESEAL_MLOCK" in (lock_status().reason or "")
    finally:
        array.release()
