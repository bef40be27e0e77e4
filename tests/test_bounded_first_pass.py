"""The gallery's reduced-precision first pass never drops the true nearest neighbour (issue #14).

The first pass scans int8 codes and proves an interval for each subject's distance; every
subject it cannot exclude is re-ranked exactly. These tests hold it to a float64 brute force on
small galleries, and aim at the places where a first pass without a proof goes wrong: exact ties
(duplicates and mirror images, which quantise differently), pairs whose approximate order is the
reverse of their exact order, probes a hair either side of the decision threshold, and candidates
whose records turned out to be gone.
"""

from __future__ import annotations

import numpy as np
import pytest
from numpy.typing import NDArray

from faceseal.matching import kernels
from faceseal.matching.gallery import Bounds, Gallery

from .gallery_oracle import brute_force, distances_to, exact_function

Matrix = NDArray[np.float64]
THRESHOLD = 0.6


@pytest.fixture(params=["serial", "threads", "numpy"])
def scan(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The compiled scan on the calling thread, spread over threads, and the numpy scan."""
    if request.param == "numpy":
        monkeypatch.setenv(kernels.NUMBA_ENV, "0")
    else:
        monkeypatch.delenv(kernels.NUMBA_ENV, raising=False)
    if request.param != "serial":  # the threaded scan, and the batch scan (compiled or BLAS)
        monkeypatch.setattr(kernels, "PARALLEL_FROM", 0)
        monkeypatch.setattr(kernels, "CHUNK_ROWS", 32)
    return str(request.param)


def _gallery(vectors: Matrix, subjects: list[str], metric: str = "euclidean") -> Gallery:
    gallery = Gallery(vectors.shape[1], metric)  # type: ignore[arg-type]
    gallery.add_many(subjects, [f"t{i}" for i in range(len(subjects))], vectors)
    return gallery


def _best_per_subject(vectors: Matrix, subjects: list[str], probe: Matrix,
                      metric: str) -> dict[str, float]:
    best: dict[str, float] = {}
    for subject, distance in zip(subjects, distances_to(vectors, probe, metric), strict=True):
        best[subject] = min(best.get(subject, np.inf), float(distance))
    return best


def _check_bounds(found: list[Bounds], vectors: Matrix, subjects: list[str], probe: Matrix,
                  top_k: int, metric: str) -> None:
    """Every subject that is, or ties with, the exact k-th is a candidate; every candidate's
    interval holds its true distance; every subject left out is provably farther."""
    truth = _best_per_subject(vectors, subjects, probe, metric)
    ranked = sorted(truth.items(), key=lambda item: (item[1], item[0]))
    kth = ranked[min(top_k, len(ranked)) - 1][1]
    named = {b.subject_id for b in found}
    assert len(named) == len(found)
    assert {s for s, d in truth.items() if d <= kth} <= named
    for b in found:
        assert b.lower <= truth[b.subject_id] <= b.upper
    assert [b.lower for b in found] == sorted(b.lower for b in found)


@pytest.mark.parametrize("seed", range(12))
def test_candidates_always_hold_the_exact_top_k(scan: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    metric = ["euclidean", "cosine"][seed % 2]
    dim = [4, 32, 128][seed % 3]
    n = int(rng.integers(2, 800))
    vectors = rng.standard_normal((n, dim)) * 0.1
    subjects = [f"s{int(i):03d}" for i in rng.integers(0, max(1, n // 3), n)]
    gallery = _gallery(vectors, subjects, metric)
    exact = exact_function(vectors, subjects, [f"t{i}" for i in range(n)], metric)
    probes = np.concatenate([vectors[rng.integers(0, n, 4)] + rng.standard_normal((4, dim))
                             * 0.005, rng.standard_normal((2, dim)) * 0.1, vectors[:1]])
    for top_k in (1, 3):
        batch = gallery.search_many(probes, top_k, exact)
        for probe, batched in zip(probes, batch, strict=True):
            _check_bounds(gallery.candidates(probe, top_k), vectors, subjects, probe, top_k,
                          metric)
            expected = brute_force(vectors, subjects, probe, top_k, metric)
            assert [(m.subject_id, m.distance) for m in batched] == expected
            assert gallery.search(probe, top_k, exact) == batched


def test_exact_ties_between_duplicates_and_mirror_images(scan: str) -> None:
    """Subjects at exactly the same distance: copies of one vector (same codes) and reflections
    through the probe (different codes, different quantisation errors). The brute force breaks
    the tie by subject id; so must the gallery, however the codes rounded."""
    rng = np.random.default_rng(21)
    probe = rng.standard_normal(128) * 0.1
    offsets = rng.standard_normal((6, 128)) * 0.03
    ties = np.concatenate([probe + offsets, probe - offsets])  # pairs at equal distance
    copies = np.tile(probe + offsets[0], (5, 1))  # and copies of the first one
    noise = probe + rng.standard_normal((300, 128)) * 0.05
    vectors = np.concatenate([noise, ties, copies])
    subjects = [f"n{i:03d}" for i in range(300)] + [f"tie-{i:02d}" for i in range(12, 0, -1)] \
        + [f"copy-{i}" for i in range(5)]
    gallery = _gallery(vectors, subjects)
    exact = exact_function(vectors, subjects, [f"t{i}" for i in range(len(subjects))],
                           "euclidean")
    for top_k in (1, 2, 4, 7, 12):
        _check_bounds(gallery.candidates(probe, top_k), vectors, subjects, probe, top_k,
                      "euclidean")
        found = gallery.search(probe, top_k, exact)
        assert [(m.subject_id, m.distance) for m in found] == brute_force(
            vectors, subjects, probe, top_k, "euclidean")


def _flipped_pair(rng: np.random.Generator, probe: Matrix, radius: float,
                  gap: float) -> tuple[Matrix, Matrix]:
    """Two templates at ``radius`` and ``radius + gap`` from ``probe`` whose int8 codes put the
    farther one *closer* (chosen among random directions by what the first pass sees)."""
    near = probe + _direction(rng, probe.size) * radius
    held = _gallery(near[None, :], ["x"])
    near_approx = float(np.linalg.norm(held.vectors()[0] - probe))
    options = probe + _direction(rng, probe.size, 200) * (radius + gap)
    trial = _gallery(options, [f"o{i}" for i in range(200)])
    approx = np.linalg.norm(trial.vectors() - probe, axis=1)
    pick = int(np.argmin(approx))
    assert approx[pick] < near_approx  # the first pass has them the wrong way round
    return near, options[pick]


def _direction(rng: np.random.Generator, dim: int, count: int = 1) -> Matrix:
    raw = rng.standard_normal((count, dim))
    unit: Matrix = raw / np.linalg.norm(raw, axis=1, keepdims=True)
    return unit[0] if count == 1 else unit


@pytest.mark.parametrize("gap", [1e-12, 1e-9, 1e-6, 1e-4])
def test_approximate_order_reversed_by_quantisation(scan: str, gap: float) -> None:
    rng = np.random.default_rng(int(-np.log10(gap)))
    probe = rng.standard_normal(128) * 0.1
    near, far = _flipped_pair(rng, probe, 0.4, gap)
    others = probe + _direction(rng, 128, 400) * 0.9
    vectors = np.concatenate([others, [far, near]])
    subjects = [f"o{i:03d}" for i in range(400)] + ["far", "near"]
    gallery = _gallery(vectors, subjects)
    exact = exact_function(vectors, subjects, [f"t{i}" for i in range(402)], "euclidean")
    found = gallery.search(probe, 1, exact)
    assert [m.subject_id for m in found] == ["near"]
    assert found[0].distance == float(distances_to(near[None, :], probe, "euclidean")[0])
    assert {"near", "far"} <= {b.subject_id for b in gallery.candidates(probe, 1)}
    assert [m.subject_id for m in gallery.search_many(np.stack([probe, probe]), 2, exact)[1]] \
        == ["near", "far"]


@pytest.mark.parametrize("delta", [-1e-9, -1e-15, 0.0, 1e-15, 1e-9])
def test_near_threshold_probes_get_the_exact_distance(scan: str, delta: float) -> None:
    """A probe a hair inside or outside the threshold: the distance reported is the float64 one,
    so identify's decision is verify's (the approximate one may fall either side)."""
    rng = np.random.default_rng(9)
    vectors = rng.standard_normal((500, 128)) * 0.1
    subjects = [f"s{i // 2:03d}" for i in range(500)]
    gallery = _gallery(vectors, subjects)
    exact = exact_function(vectors, subjects, [f"t{i}" for i in range(500)], "euclidean")
    for row in (0, 77, 499):
        probe = vectors[row] + _direction(rng, 128) * (THRESHOLD + delta)
        found = gallery.search(probe, 3, exact)
        truth = brute_force(vectors, subjects, probe, 3, "euclidean")
        assert [(m.subject_id, m.distance) for m in found] == truth
        assert (found[0].distance <= THRESHOLD) == (truth[0][1] <= THRESHOLD)


def test_a_candidate_without_records_is_dropped_and_the_bound_recomputed(scan: str) -> None:
    """The closest subject's records are gone (damaged, erased elsewhere): the answer is the
    exact top-k of the others, not a short list."""
    rng = np.random.default_rng(4)
    vectors = rng.standard_normal((300, 64)) * 0.1
    subjects = [f"s{i:03d}" for i in range(300)]
    gallery = _gallery(vectors, subjects)
    probe = vectors[10] + 0.001
    exact = exact_function(vectors, subjects, [f"t{i}" for i in range(300)], "euclidean")

    def gone(subject_id: str, query: NDArray[np.floating]) -> tuple[str, float] | None:
        return None if subject_id == "s010" else exact(subject_id, query)

    found = gallery.search(probe, 3, gone)
    keep = [i for i in range(300) if i != 10]
    assert [(m.subject_id, m.distance) for m in found] == brute_force(
        vectors[keep], [subjects[i] for i in keep], probe, 3, "euclidean")


def test_the_exact_pass_opens_few_subjects_when_answers_are_clear(scan: str) -> None:
    """Genuine probe, impostors far away: one subject opened for top-1, not the gallery."""
    rng = np.random.default_rng(8)
    centres = rng.standard_normal((400, 128)) * 0.06
    vectors = np.repeat(centres, 3, axis=0) + rng.standard_normal((1200, 128)) * 0.025
    subjects = [f"s{i // 3:03d}" for i in range(1200)]
    gallery = _gallery(vectors, subjects)
    calls: list[str] = []
    exact = exact_function(vectors, subjects, [f"t{i}" for i in range(1200)], "euclidean",
                           calls)
    probe = centres[42] + rng.standard_normal(128) * 0.025
    found = gallery.search(probe, 1, exact)
    assert [m.subject_id for m in found] == ["s042"]
    assert calls == ["s042"]


@pytest.mark.parametrize("vnni", ["on", "off"])
@pytest.mark.parametrize(("metric", "dim"), [("euclidean", 128), ("cosine", 128),
                                             ("euclidean", 512), ("euclidean", 96)])
def test_the_batch_scan_selects_what_the_single_probe_scan_selects(
        metric: str, dim: int, vnni: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The compiled batch scan computes every row's value exactly as the one-probe scan does for
    the same quantised probe (int8 with VNNI, int16 otherwise), so each probe's selection
    (values, floor) and its second pass are the same whichever ran."""
    if not kernels.numba_enabled():
        pytest.fail("numba is part of the dev extras; the compiled scan must be tested")
    monkeypatch.setenv(kernels.VNNI_ENV, "1" if vnni == "on" else "0")
    if vnni == "on" and not kernels.vnni_enabled():
        pytest.skip("this CPU has no AVX-512 VNNI (the int16 batch scan is tested with 'off')")
    rng = np.random.default_rng(11)
    vectors = rng.standard_normal((5000, dim)) * 0.1
    vectors[100:140] = vectors[99]  # ties straddling the heap's edge
    gallery = _gallery(vectors, [f"s{i // 3}" for i in range(5000)], metric)
    codes, scale, norms = (gallery._arr(gallery._codes), gallery._arr(gallery._scale),
                           gallery._arr(gallery._norms))
    queries = gallery._prepare(np.vstack([vectors[99] + 1e-4, rng.standard_normal((6, dim))
                                          * 0.1]))
    cos = metric == "cosine"
    levels = kernels.INT8_LEVELS if vnni == "on" and dim % 64 == 0 else kernels.INT16_LEVELS
    many = kernels.scan_many(codes, scale, norms, len(gallery), queries, cos, 64)
    assert len(many) == len(queries)
    for query, chosen in zip(queries, many, strict=True):
        probe = kernels.quantize_probe(query, levels)
        rows, values, floor = kernels.scan_one(codes, scale, norms, len(gallery), probe, cos, 64)
        assert sorted(chosen.values.tolist()) == sorted(values.tolist())
        assert chosen.floor == floor
        assert (chosen.q_err, chosen.qnorm) == (probe.q_err, probe.qnorm)
        limit = float(np.sort(values)[-1]) * 1.01 if not cos else float(np.sort(values)[-1])
        again, again_values = chosen.more(limit)
        expected, expected_values = kernels.rows_at_most(codes, scale, norms, len(gallery),
                                                         probe, cos, limit)
        assert again.tolist() == expected.tolist()
        assert again_values.tolist() == expected_values.tolist()
        assert set(rows.tolist()) <= set(again.tolist())
        chosen.wipe()


def test_the_vnni_instruction_gives_exact_integer_dots() -> None:
    """The kernel's self-check (integer dots through the scan's own block routine against numpy
    int64 arithmetic, at the extremes of both operands and at random, 128-d and 512-d) passes,
    and fails when the instruction's result is off by one."""
    if not kernels.vnni_enabled():
        pytest.skip("this CPU has no AVX-512 VNNI")
    from faceseal.matching._compiled_vnni import build

    built = build()
    assert kernels._vnni_agrees(built)

    def off_by_one(q_u8: NDArray[np.uint8], codes: NDArray[np.int8],
                   out: NDArray[np.int32]) -> None:
        built["dots_vnni"](q_u8, codes, out)
        out[-1, -1] += 1

    assert not kernels._vnni_agrees({"dots_vnni": off_by_one})
