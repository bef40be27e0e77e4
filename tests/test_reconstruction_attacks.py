"""Rebuilding stored encodings from match answers (issue #11, "Must show").

Two attacks, as an attacker holding only a verifier's or an identifier's key would run them:

* **origin + unit vectors**: the distance from the origin and from each unit vector gives every
  coordinate, ``x_i = (d0^2 - d_i^2 + 1) / 2`` (129 queries);
* **least squares over random plausible probes**: ``d^2 = |p|^2 - 2 p.x + |x|^2`` is linear in
  ``(x, |x|^2)``, so 129 or more answers for probes that look like faces solve for ``x``.

With the defaults (band disclosure, plausibility checks, budgets) the first is refused probe by
probe and audited as suspicious, and the second gets nothing but "no match" until the budget
refuses it: the reconstruction lands far from the real encoding (> 0.6: it would not match).
With the calibrator role (exact distances) the second attack *works* -- slowed by the per-subject
budget to three windows -- which is why that role is a documented, audited trade-off.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray

from faceseal.access.counters import MemoryCounters
from faceseal.errors import BudgetExceeded, ImplausibleProbe
from faceseal.vault import Vault
from faceseal.vault.budgets import DEFAULT_PER_PRINCIPAL, DEFAULT_PER_SUBJECT
from faceseal.vault.disclosure import STRONG_FRACTION

from .answer_support import plausible_encodings, random_plausible_probes
from .conftest import EncodingOf, make_vault, vault_keys

SUBJECTS = 20
#: What counts as a failed reconstruction: further than the match threshold from the real one.
FAR = 0.6
WINDOW = 3600.0


class Clock:
    def __init__(self) -> None:
        self.now = 10_000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class World:
    vault: Vault
    clock: Clock
    keys: dict[str, str]
    real: dict[str, NDArray[np.float64]]

    def view(self, name: str) -> Vault:
        return self.vault.as_key(self.keys[name])

    def suspicious(self, principal: str, count: int) -> list[dict[str, object]]:
        events = self.view("watch").audit_tail(count)
        return [e for e in events if e["principal"] == principal
                and e["detail"].get("suspicious") is True]  # type: ignore[union-attr]


@pytest.fixture
def world(tmp_path: Path, encoding_of: EncodingOf) -> Iterator[World]:
    """Default settings throughout: nothing here loosens a budget or the disclosure."""
    home = tmp_path / "vault"
    target = encoding_of("obama-1.jpg")
    others = plausible_encodings(np.stack([encoding_of("biden-1.jpg"),
                                           encoding_of("obama-2.jpg")]), SUBJECTS - 1, seed=5)
    real = {"target": target, **{f"p{i:02d}": e for i, e in enumerate(others)}}
    keys: dict[str, str] = {}
    with make_vault(home, tmp_path / "keys") as setup:
        for name, encoding in real.items():
            setup.enroll(name, [encoding])
        admin = setup.as_key(vault_keys(home).admin)
        for name, roles in (("door", ["verifier"]), ("search", ["identifier"]),
                            ("tuner", ["verifier", "identifier", "calibrator"]),
                            ("watch", ["auditor"])):
            keys[name] = admin.add_principal(name, roles).api_key
    clock = Clock()
    with Vault.open(home, counters=MemoryCounters(clock=clock)) as vault:
        yield World(vault, clock, keys, real)


def unit_vector_reconstruction(d0: float, distances: list[float]) -> NDArray[np.float64]:
    return np.array([(d0 ** 2 - d ** 2 + 1.0) / 2.0 for d in distances])


def least_squares(probes: NDArray[np.float64], distances: NDArray[np.float64]
                  ) -> NDArray[np.float64]:
    design = np.hstack([-2.0 * probes, np.ones((len(probes), 1))])
    target = distances ** 2 - np.einsum("ij,ij->i", probes, probes)
    solution = np.linalg.lstsq(design, target, rcond=None)[0]
    return np.asarray(solution[:-1])


def band_to_distance(score: str | None, threshold: float) -> float:
    """The attacker's best numeric reading of a band: the middle of its interval, and for
    "none" the typical distance between two different people."""
    return {"strong": STRONG_FRACTION * threshold / 2,
            "match": (1 + STRONG_FRACTION) * threshold / 2}.get(score or "none", 1.0)


# --- a verifier's key ----------------------------------------------------------------------------


def test_verifier_origin_and_unit_vectors_are_refused_and_audited(world: World) -> None:
    door = world.view("door")
    answered = 0
    for probe in [np.zeros(128), *np.eye(128)]:
        try:
            door.verify("target", probe)
            answered += 1
        except ImplausibleProbe:
            pass
    assert answered == 0, "an origin/unit-vector probe was answered"
    assert len(world.suspicious("door", 129)) == 129
    # The attack needs all 129 answers; with none the formula has nothing to work on.


def test_verifier_least_squares_over_the_default_budget_lands_far(world: World) -> None:
    door = world.view("door")
    probes = random_plausible_probes(DEFAULT_PER_PRINCIPAL, seed=21)
    answers = []
    refused = 0
    for probe in probes:
        try:
            answers.append(door.verify("target", probe))
        except BudgetExceeded:
            refused += 1
            break
    # The per-subject budget ends the attack well before the 129 answers it needs.
    assert len(answers) == DEFAULT_PER_SUBJECT
    assert refused == 1
    assert {(a.distance, a.score) for a in answers} == {(None, "none")}
    estimate = least_squares(probes[:len(answers)],
                             np.array([band_to_distance(a.score, a.threshold)
                                       for a in answers]))
    error = float(np.linalg.norm(estimate - world.real["target"]))
    assert error > FAR, f"band answers rebuilt the encoding to {error}"
    assert world.suspicious("door", 1)[0]["detail"] == {  # type: ignore[index]
        "error": "budget_exceeded", "suspicious": True}


# --- an identifier's key, through batch identify -------------------------------------------------


def test_identifier_batch_of_origin_and_unit_vectors_is_refused_and_audited(
        world: World) -> None:
    search = world.view("search")
    with pytest.raises(ImplausibleProbe):
        search.identify_many(np.vstack([np.zeros(128), np.eye(128)]), top_k=100)
    assert len(world.suspicious("search", 1)) == 1


def test_identifier_batch_least_squares_over_the_default_budget_lands_far(
        world: World) -> None:
    search = world.view("search")
    probes = random_plausible_probes(DEFAULT_PER_PRINCIPAL + 129, seed=22)
    results = search.identify_many(probes[:DEFAULT_PER_PRINCIPAL], top_k=100)
    with pytest.raises(BudgetExceeded):  # one more batch: over the principal's budget
        search.identify_many(probes[DEFAULT_PER_PRINCIPAL:], top_k=100)
    assert world.suspicious("search", 1)
    # Band disclosure shows only matches, and no random plausible probe matches anybody: the
    # attacker holds no distance for any subject.
    assert all(r.candidates == [] and r.disclosure == "band" for r in results)
    guess = probes[:DEFAULT_PER_PRINCIPAL].mean(axis=0)  # all that is left: the probes' mean
    for name, encoding in world.real.items():
        assert float(np.linalg.norm(guess - encoding)) > FAR, name


# --- with the exact-distance permission the attack works (documented trade-off) -----------------


def test_calibrator_least_squares_rebuilds_the_encoding(world: World) -> None:
    """THE ATTACK WORKS with the calibrator role: exact distances rebuild the template to
    machine precision. The per-subject budget only spreads it over three windows."""
    tuner = world.view("tuner")
    probes = random_plausible_probes(135, seed=23)
    distances: list[float] = []
    windows = 1
    while len(distances) < len(probes):
        try:
            distances.append(tuner.verify("target", probes[len(distances)]).distance or 0.0)
        except BudgetExceeded:
            windows += 1
            world.clock.now += WINDOW
    assert windows == 3
    estimate = least_squares(probes, np.array(distances))
    assert float(np.linalg.norm(estimate - world.real["target"])) < 1e-6
    events = world.view("watch").audit_tail(5)
    assert {e["detail"].get("disclosure") for e in events if e["action"] == "verify"
            and e["outcome"] == "ok"} == {"exact"}


def test_calibrator_batch_identify_rebuilds_every_subject(world: World) -> None:
    """THE ATTACK WORKS with the calibrator role through batch identify too: every subject of
    the tenant, from 135 probes (three windows of the per-subject budget)."""
    tuner = world.view("tuner")
    probes = random_plausible_probes(135, seed=24)
    seen: dict[str, list[float]] = {name: [] for name in world.real}
    done = 0
    while done < len(probes):
        batch = probes[done:done + DEFAULT_PER_SUBJECT]
        for result in tuner.identify_many(batch, top_k=100):
            for candidate in result.candidates:
                seen[candidate.subject_id].append(candidate.distance or 0.0)
        done += len(batch)
        world.clock.now += WINDOW
    for name, encoding in world.real.items():
        estimate = least_squares(probes, np.array(seen[name]))
        assert float(np.linalg.norm(estimate - encoding)) < 1e-6, name


# --- why bands rather than rounded distances (docs/threat-model.md) ----------------------------


@pytest.mark.parametrize(("rounding", "probes", "worse_than"), [(0.01, 200, 0.1),
                                                                (0.05, 500, 0.2)])
def test_rounded_distances_would_still_leak(encoding_of: EncodingOf, rounding: float,
                                            probes: int, worse_than: float) -> None:
    """Rounding is noise that least squares averages away: a few hundred rounded answers rebuild
    a matching encoding. Bands carry nothing about probes beyond the threshold."""
    real = encoding_of("obama-1.jpg")
    sent = random_plausible_probes(probes, seed=25)
    rounded = np.round(np.linalg.norm(sent - real, axis=1) / rounding) * rounding
    error = float(np.linalg.norm(least_squares(sent, rounded) - real))
    assert error < worse_than < FAR
